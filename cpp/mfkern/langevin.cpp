#include "mfkern/langevin.hpp"

#include <cmath>
#include <vector>

#include "mfkern/drift.hpp"
#include "mfkern/gram.hpp"
#include "mfkern/rng.hpp"
#include "mfkern/solve.hpp"
#include "mfkern/woodbury.hpp"

namespace mfkern {

namespace {

// Row-major n x T to column-major (the layout BLAS works in).
std::vector<double> to_columns(const double* rows, long n, long t) {
    std::vector<double> cols(static_cast<std::size_t>(n * t));
    for (long j = 0; j < n; ++j)
        for (long i = 0; i < t; ++i) cols[i * n + j] = rows[j * t + i];
    return cols;
}

void to_rows(const std::vector<double>& cols, long n, long t, double* rows) {
    for (long j = 0; j < n; ++j)
        for (long i = 0; i < t; ++i) rows[j * t + i] = cols[i * n + j];
}

double mean_squared_norm(const Particles& p) {
    double total = 0.0;
    for (long i = 0; i < p.count * p.dim; ++i) total += p.w[i] * p.w[i];
    return total / double(p.count);
}

// (lam_a_bar / 2T) sum_i Y_i^T A_i.
double reduced_objective(const Targets& y, const std::vector<double>& a_cols, double lam_a_bar) {
    double total = 0.0;
    for (long i = 0; i < y.tasks; ++i)
        for (long j = 0; j < y.n; ++j) total += y.y[j * y.tasks + i] * a_cols[i * y.n + j];
    return lam_a_bar / (2.0 * double(y.tasks)) * total;
}

// Gram, factor and dual coefficients; optionally also B = S E for the label-noise procedure.
struct Solved {
    double U;
    std::vector<double> a_cols, b_cols;
};

template <class F>
Solved solve_second_layer(const Particles& p, const Inputs& x, Activation act, FeatureCache<F>& cache,
                          const Targets& y, const Hyper& hyper, const double* noise_rows, const Options& opt) {
    const long n = x.n, T = y.tasks;
    // One solve for both right-hand sides [Y, E].
    std::vector<double> rhs = to_columns(y.y, n, T);
    if (noise_rows) {
        const std::vector<double> e = to_columns(noise_rows, n, T);
        rhs.insert(rhs.end(), e.begin(), e.end());
    }
    const long m = noise_rows ? 2 * T : T;
    if (opt.solver == Solver::Woodbury) {
        woodbury_solve<F>(p, x, act, hyper.ridge(n), rhs.data(), m, 0, opt.n_threads, nullptr);
    } else {
        std::vector<double> k(static_cast<std::size_t>(n * n));
        gram_symmetric(p, x, act, opt.block_size, &cache, k.data(), opt.n_threads);
        const RidgeFactor factor(k.data(), n, hyper.ridge(n), opt.n_threads);
        k = std::vector<double>();
        factor.solve_in_place(rhs.data(), m);
    }
    Solved s;
    s.a_cols.assign(rhs.begin(), rhs.begin() + n * T);
    if (noise_rows) s.b_cols.assign(rhs.begin() + n * T, rhs.end());
    s.U = reduced_objective(y, s.a_cols, hyper.lam_a_bar());
    return s;
}

}  // namespace

void add_step_noise(const Particles& p, double eta, double lam, std::uint64_t seed, std::uint32_t step,
                    long first_index, double* w_out, int n_threads) {
    const double noise_scale = std::sqrt(2.0 * eta * lam);
    const long dim = p.dim;
#pragma omp parallel num_threads(n_threads) if (p.count * dim > 16384)
    {
        std::vector<double> xi(static_cast<std::size_t>(dim));
#pragma omp for schedule(static)
        for (long k = 0; k < p.count; ++k) {
            CounterRng(seed, step, static_cast<std::uint32_t>(first_index + k), Stream::ParticleNoise)
                .normals(xi.data(), static_cast<int>(dim));
            double* wo = w_out + k * dim;
            const double* w = p.w + k * dim;
            for (long l = 0; l < dim; ++l) wo[l] = w[l] - eta * wo[l] + noise_scale * xi[l];
        }
    }
}

namespace {

template <class F>
Diagnostics objective_in(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                         const Options& opt, double* dual_out) {
    const long n = x.n;
    const double ridge = hyper.ridge(n);
    std::vector<double> a = to_columns(y.y, n, y.tasks);
    Diagnostics d;
    if (opt.solver == Solver::Woodbury) {
        WoodburyStats stats;
        woodbury_solve<F>(p, x, act, ridge, a.data(), y.tasks, 0, opt.n_threads, &stats);
        d.dof = stats.dof;
        d.condition = stats.condition;
    } else {
        std::vector<double> k(static_cast<std::size_t>(n * n));
        gram_symmetric<F>(p, x, act, opt.block_size, nullptr, k.data(), opt.n_threads);
        const RidgeFactor factor(k.data(), n, ridge, opt.n_threads);
        factor.solve_in_place(a.data(), y.tasks);
        const auto stats = factor.inverse_stats();
        d.dof = double(n) - ridge * stats.trace;  // tr[K S] = tr[I - ridge S]
        d.condition = stats.condition;
    }
    d.U = reduced_objective(y, a, hyper.lam_a_bar());
    d.mean_sq_norm = mean_squared_norm(p);
    d.G = d.U + 0.5 * hyper.lam_w_bar() * d.mean_sq_norm;
    if (dual_out) to_rows(a, n, y.tasks, dual_out);
    return d;
}

template <class F>
DriftResult drift_in(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                     const double* label_noise_rows, double* grad_rows, double* dual_out, const Options& opt) {
    // The Woodbury path never forms the particles' features over all samples at once: nothing to keep.
    FeatureCache<F> cache(p, x, act, opt.solver == Solver::Woodbury ? 0 : opt.cache_bytes);
    const Solved s = solve_second_layer<F>(p, x, act, cache, y, hyper, label_noise_rows, opt);
    drift_from_dual<F>(p, x, act, cache, s.a_cols.data(), label_noise_rows ? s.b_cols.data() : nullptr, y.tasks,
                       hyper.lam_a_bar(), hyper.lam_w_bar(), grad_rows, opt.n_threads);
    if (dual_out) to_rows(s.a_cols, x.n, y.tasks, dual_out);
    return {s.U};
}

}  // namespace

Diagnostics objective(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                      const Options& opt, double* dual_out) {
    return opt.single_precision ? objective_in<float>(p, x, y, hyper, act, opt, dual_out)
                                : objective_in<double>(p, x, y, hyper, act, opt, dual_out);
}

DriftResult drift(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                  const double* label_noise_rows, double* grad_rows, double* dual_out, const Options& opt) {
    return opt.single_precision ? drift_in<float>(p, x, y, hyper, act, label_noise_rows, grad_rows, dual_out, opt)
                                : drift_in<double>(p, x, y, hyper, act, label_noise_rows, grad_rows, dual_out, opt);
}

DriftResult langevin_step(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper,
                          Activation act, double eta, std::uint64_t seed, std::uint32_t step,
                          double label_noise_level, long first_index, double* w_out, double* dual_out,
                          const Options& opt) {
    std::vector<double> e;
    if (label_noise_level > 0.0) {
        e.resize(static_cast<std::size_t>(x.n * y.tasks));
        label_noise(seed, step, x.n, y.tasks, label_noise_level, e.data());
    }
    const DriftResult r = drift(p, x, y, hyper, act, e.empty() ? nullptr : e.data(), w_out, dual_out, opt);
    add_step_noise(p, eta, hyper.lam, seed, step, first_index, w_out, opt.n_threads);
    return r;
}

void drift_given_dual(const Particles& p, const Inputs& x, Activation act, const double* a_rows,
                      const double* b_rows, long n_tasks, const Hyper& hyper, double* grad_rows, const Options& opt) {
    const std::vector<double> a = to_columns(a_rows, x.n, n_tasks);
    const std::vector<double> b = b_rows ? to_columns(b_rows, x.n, n_tasks) : std::vector<double>();
    if (opt.single_precision) {
        const FeatureCache<float> no_cache(p, x, act, 0);
        drift_from_dual<float>(p, x, act, no_cache, a.data(), b_rows ? b.data() : nullptr, n_tasks,
                               hyper.lam_a_bar(), hyper.lam_w_bar(), grad_rows, opt.n_threads);
    } else {
        const FeatureCache<double> no_cache(p, x, act, 0);
        drift_from_dual<double>(p, x, act, no_cache, a.data(), b_rows ? b.data() : nullptr, n_tasks,
                                hyper.lam_a_bar(), hyper.lam_w_bar(), grad_rows, opt.n_threads);
    }
}

void langevin_step_given_dual(const Particles& p, const Inputs& x, Activation act, const double* a_rows,
                              const double* b_rows, long n_tasks, const Hyper& hyper, double eta,
                              std::uint64_t seed, std::uint32_t step, long first_index, double* w_out,
                              const Options& opt) {
    drift_given_dual(p, x, act, a_rows, b_rows, n_tasks, hyper, w_out, opt);
    add_step_noise(p, eta, hyper.lam, seed, step, first_index, w_out, opt.n_threads);
}

void particle_noise(std::uint64_t seed, std::uint32_t step, long first_index, long count, long dim, double* out,
                    int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads) if (count * dim > 16384)
    for (long k = 0; k < count; ++k)
        CounterRng(seed, step, static_cast<std::uint32_t>(first_index + k), Stream::ParticleNoise)
            .normals(out + k * dim, static_cast<int>(dim));
}

void label_noise(std::uint64_t seed, std::uint32_t step, long n, long tasks, double level, double* out) {
    for (long j = 0; j < n; ++j)
        CounterRng(seed, step, static_cast<std::uint32_t>(j), Stream::LabelNoise)
            .symmetric_uniforms(out + j * tasks, static_cast<int>(tasks), level);
}

}  // namespace mfkern
