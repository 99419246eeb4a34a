#include "mfkern/engine.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "mfkern/blas.hpp"
#include "mfkern/drift.hpp"
#include "mfkern/gram.hpp"
#include "mfkern/rng.hpp"
#include "mfkern/skinny.hpp"
#include "mfkern/solve.hpp"
#include "mfkern/woodbury.hpp"

namespace mfkern {

namespace {

// Rows (samples) per tile of the products K v and P v: fixed, so each output entry is one BLAS call's sum
// over all particles (or samples) whatever the thread count.
constexpr long kRowTile = 256;
// Particle tiles of the product K v: fixed groups of tiles (partial sums added in order), each tile small
// enough (about 256 KiB of features) to be reused from cache between H_t^T v and H_t (H_t^T v).
constexpr long kProductGroups = 8;
long product_tile(long n) { return std::max(8L, std::min(256L, (32768L / std::max(n, 1L)) / 8 * 8)); }
// Explicit preconditioners are kept in single precision up to this condition number of K0 + r I (half
// the memory traffic per iteration; the residual is always computed in double, so this only affects how
// fast CG converges, never the answer).
constexpr double kSinglePrecisionCondition = 1e5;
// Cost model of the refactorisation rule, in multiply-adds: a CG iteration streams the features and the
// preconditioner through memory (matrix-vector work) while a factorisation runs at matrix-matrix speed;
// kVectorWeight converts the former into the latter's units, and the further columns of a product cost
// kExtraColumnWeight of the first (they reuse each tile of features from cache). Measured on the project's
// 2-core machine at the paper's size: a factorisation costs about 85 products (bench/results/engine.md).
constexpr double kVectorWeight = 3.5;
constexpr double kExtraColumnWeight = 0.5;

double dot(const double* a, const double* b, long n) {
    double s = 0.0;
    for (long j = 0; j < n; ++j) s += a[j] * b[j];
    return s;
}

// (lam_a_bar / 2T) sum_i Y_i^T A_i (column-major Y and A).
double reduced_objective(const double* y_cols, const double* a_cols, long n, long T, double lam_a_bar) {
    double total = 0.0;
    for (long i = 0; i < T; ++i) total += dot(y_cols + i * n, a_cols + i * n, n);
    return lam_a_bar / (2.0 * double(T)) * total;
}

double sum_squares(const double* w, long count) {
    double total = 0.0;
    for (long i = 0; i < count; ++i) total += w[i] * w[i];
    return total;
}

bool all_finite(const double* w, long count) {
    for (long i = 0; i < count; ++i)
        if (!std::isfinite(w[i])) return false;
    return true;
}

}  // namespace

struct Engine::Impl {
    Inputs x;
    std::vector<double> y_cols;  // n x T
    std::vector<double> align_cols;  // alignment target, column-major n x align_tasks (empty: y_cols)
    long align_tasks = 0;
    bool previous_held = false;  // w_next_ holds the particles before the last step, a_ their dual
    Particles parts;             // points into Engine::w_
    FeatureCache<double> cache_d;
    FeatureCache<float> cache_f;
    long features_step = -1;  // the step whose particles' features are in the cache

    // Dense factor of K + r I (lower, column-major n x n) and the step whose particles it belongs to.
    std::vector<double> factor;
    long factor_step = -1;
    double norm1 = 0.0;
    // Pcg: explicit (K0 + r I)^{-1}, full symmetric n x n, in float or double.
    std::vector<double> inverse;
    std::vector<float> inverse_f;
    bool precondition_single = false, have_preconditioner = false, refactor_due = false;
    double trace_inverse = 0.0, inverse_norm1 = 0.0;
    // Refactorisation rule: cost of the last factorisation and of the solves since.
    double factor_cost = 0.0, cost_since_factor = 0.0;
    long steps_since_factor = 0;

    // Work buffers (sized once).
    std::vector<double> rhs, noise_rows, r, z, p, q, u, partial, vf_tmp, pa, qa;
    std::vector<float> vf, zf;

    Impl(const double* x_rows, long n, long d, const double* w, long N, long dim, Activation act, bool pcg_or_dense,
         bool single)
        : x(x_rows, n, d),
          parts{w, N, dim},
          cache_d(parts, x, act, pcg_or_dense && !single ? std::numeric_limits<std::size_t>::max() : 0),
          cache_f(parts, x, act, pcg_or_dense && single ? std::numeric_limits<std::size_t>::max() : 0) {}
};

Engine::Engine(const double* x_rows, long n, long d, const double* y_rows, long n_tasks, const double* w_rows,
               long n_particles, Hyper hyper, Activation act, double eta, std::uint64_t seed, std::uint32_t step,
               double label_noise_level, const EngineOptions& options)
    : n_(n), N_(n_particles), dim_(d + 1), T_(n_tasks), hyper_(hyper), act_(act), eta_(eta),
      level_(label_noise_level), seed_(seed), step_(step), opt_(options),
      w_(w_rows, w_rows + n_particles * (d + 1)), w_next_(w_.size()), a_(static_cast<std::size_t>(n * n_tasks), 0.0),
      total_particles_(n_particles) {
    if (opt_.second_layer == SecondLayer::Pcg && opt_.single_precision)
        throw std::invalid_argument("the conjugate-gradient second layer runs in double precision only");
    const bool stored = opt_.second_layer != SecondLayer::Woodbury;
    impl_ = std::make_unique<Impl>(x_rows, n, d, w_.data(), N_, dim_, act, stored, opt_.single_precision);
    auto& s = *impl_;
    s.y_cols.resize(static_cast<std::size_t>(n * T_));
    for (long j = 0; j < n; ++j)
        for (long i = 0; i < T_; ++i) s.y_cols[i * n + j] = y_rows[j * T_ + i];
    const long m = level_ > 0.0 ? 2 * T_ : T_;
    s.rhs.resize(static_cast<std::size_t>(n * m));
    if (level_ > 0.0) s.noise_rows.resize(static_cast<std::size_t>(n * T_));
    if (stored) s.factor.resize(static_cast<std::size_t>(n * n));
    if (opt_.second_layer == SecondLayer::Pcg) {
        for (auto* v : {&s.r, &s.z, &s.p, &s.q, &s.pa, &s.qa}) v->resize(static_cast<std::size_t>(n * m));
        s.u.resize(static_cast<std::size_t>(N_ * m));
        s.partial.resize(static_cast<std::size_t>(kProductGroups * n * m));
        s.vf.resize(static_cast<std::size_t>(n * m));
        s.zf.resize(static_cast<std::size_t>(n * m));
    }
    const double nd = double(n), Nd = double(N_);
    s.factor_cost = 0.5 * nd * nd * Nd + 0.5 * nd * nd * nd;
}

void Engine::set_reducer(Reducer reduce, long total_particles) {
    if (opt_.second_layer == SecondLayer::Woodbury)
        throw std::invalid_argument("the Woodbury solver cannot be sharded: its system is over the particles");
    if (total_particles < N_) throw std::invalid_argument("total_particles must be at least this shard's count");
    reduce_ = std::move(reduce);
    total_particles_ = total_particles;
    // Costs are in terms of the whole problem, so every shard takes the same refactorisation decisions.
    const double nd = double(n_), Nd = double(total_particles_);
    impl_->factor_cost = 0.5 * nd * nd * Nd + 0.5 * nd * nd * nd;
}

Engine::~Engine() = default;

void Engine::set_alignment_target(const double* rows, long cols) {
    auto& s = *impl_;
    s.align_tasks = cols;
    s.align_cols.resize(static_cast<std::size_t>(n_ * cols));
    for (long j = 0; j < n_; ++j)
        for (long i = 0; i < cols; ++i) s.align_cols[i * n_ + j] = rows[j * cols + i];
}

bool Engine::roll_back() {
    auto& s = *impl_;
    if (!s.previous_held || a_step_ != static_cast<long>(step_) - 1) return false;
    std::swap(w_, w_next_);
    s.parts.w = w_.data();
    step_ -= 1;
    s.features_step = -1;
    s.factor_step = -1;
    s.previous_held = false;
    return true;
}

void Engine::set_particles(const double* w_rows, std::uint32_t step) {
    std::copy(w_rows, w_rows + N_ * dim_, w_.begin());
    step_ = step;
    auto& s = *impl_;
    s.parts.w = w_.data();
    s.features_step = -1;
    s.factor_step = -1;
    s.have_preconditioner = false;
    s.refactor_due = false;
    s.previous_held = false;
    a_step_ = -1;
}

namespace {

struct Work {
    long n, N, m;
    int threads;
};

// out = (K + ridge I) v for the m columns of v (column-major n x m), K = H H^T / N from features h
// (column-major n x N), in one pass over the features: each tile of particles forms H_t^T v and adds
// H_t (H_t^T v) while the tile is still in cache. The tiles are dealt to kProductGroups fixed groups whose
// partial sums are added in order, so the result does not depend on the thread count.
// partial: kProductGroups * n * m scratch; u: N x m scratch.
void kernel_product(const double* h, const Work& w, double ridge, const double* v, double* u, double* partial,
                    double* out, const Reducer& reduce, double scale) {
    const long n = w.n, N = w.N, m = w.m;
    const long tile = product_tile(n), tiles = (N + tile - 1) / tile, groups = std::min(kProductGroups, tiles);
#pragma omp parallel for schedule(static, 1) num_threads(w.threads) if (groups > 1)
    for (long g = 0; g < groups; ++g) {
        double* pg = partial + g * n * m;
        std::fill(pg, pg + n * m, 0.0);
        for (long t = g; t < tiles; t += groups) {
            const long k0 = t * tile, len = std::min(tile, N - k0);
            if (m == 1) {
                blas::gemv(true, n, len, 1.0, h + k0 * n, n, v, 0.0, u + k0);
                blas::gemv(false, n, len, 1.0, h + k0 * n, n, u + k0, 1.0, pg);
            } else {  // several columns (tasks, label noise): each pass over the tile serves all of them
                multi_dot(h + k0 * n, len, n, n, v, n, m, u + k0, N, 1);
                multi_axpy(h + k0 * n, len, n, n, u + k0, N, m, pg, n, true, 1);
            }
        }
    }
    for (long i = 0; i < n * m; ++i)
        for (long g = 1; g < groups; ++g) partial[i] += partial[g * n * m + i];
    if (reduce) reduce(partial, n * m);  // the n x m sums of the other shards' particles
    for (long i = 0; i < n * m; ++i) out[i] = scale * partial[i] + ridge * v[i];
}

// out = P v, P a full symmetric n x n matrix (double).
void preconditioner_product(const double* pinv, const Work& w, const double* v, double* out) {
    const long n = w.n, m = w.m, rtiles = (n + kRowTile - 1) / kRowTile;
#pragma omp parallel for schedule(static) num_threads(w.threads)
    for (long t = 0; t < rtiles; ++t) {
        const long r0 = t * kRowTile, len = std::min(kRowTile, n - r0);
        if (m == 1) blas::gemv(false, len, n, 1.0, pinv + r0, n, v, 0.0, out + r0);
        else multi_dot(pinv + r0 * n, len, n, n, v, n, m, out + r0, n, 1);  // P symmetric: its rows are its columns
    }
}

void preconditioner_product(const float* pinv, const Work& w, const double* v, float* vf, float* zf, double* out) {
    const long n = w.n, m = w.m, rtiles = (n + kRowTile - 1) / kRowTile;
    for (long i = 0; i < n * m; ++i) vf[i] = static_cast<float>(v[i]);
#pragma omp parallel for schedule(static) num_threads(w.threads)
    for (long t = 0; t < rtiles; ++t) {
        const long r0 = t * kRowTile, len = std::min(kRowTile, n - r0);
        if (m == 1) blas::gemv(false, len, n, 1.0f, pinv + r0, n, vf, 0.0f, zf + r0);
        else multi_dot(pinv + r0 * n, len, n, n, vf, n, m, zf + r0, n, 1);
        for (long i = 0; i < m; ++i)
            for (long j = r0; j < r0 + len; ++j) out[i * n + j] = double(zf[i * n + j]);
    }
}

}  // namespace

void Engine::gram_into_factor() {
    auto& s = *impl_;
    if (opt_.single_precision)
        gram_symmetric<float>(s.parts, s.x, act_, opt_.block_size, &s.cache_f, s.factor.data(), opt_.n_threads);
    else
        gram_symmetric<double>(s.parts, s.x, act_, opt_.block_size, &s.cache_d, s.factor.data(), opt_.n_threads);
    s.features_step = step_;
    s.factor_step = -1;
    if (reduce_) {  // the shard's Gram averages over its own particles: weight it, then sum the shards
        const double weight = double(N_) / double(total_particles_);
        for (auto& v : s.factor) v *= weight;
        reduce_(s.factor.data(), n_ * n_);
    }
}

void Engine::cholesky_factor() {
    auto& s = *impl_;
    const long n = n_;
    const double ridge = hyper_.ridge(n);
    for (long i = 0; i < n; ++i) s.factor[i * n + i] += ridge;
    s.norm1 = symmetric_norm1(s.factor.data(), n);
    const int info = tiled_cholesky(s.factor.data(), n, opt_.n_threads);
    if (info != 0) throw NotPositiveDefinite(info);
    for (long i = 0; i < n; ++i)
        if (!(s.factor[i * n + i] > 0.0) || !std::isfinite(s.factor[i * n + i])) throw NotPositiveDefinite(i + 1);
    s.factor_step = step_;
    ++stats_.factorizations;
}

void Engine::invert(bool keep_preconditioner) {
    auto& s = *impl_;
    const long n = n_;
    s.inverse.assign(s.factor.begin(), s.factor.end());
    if (blas::potri_lower(n, s.inverse.data(), n) != 0) throw NotPositiveDefinite(n);
    s.trace_inverse = 0.0;
    for (long i = 0; i < n; ++i) s.trace_inverse += s.inverse[i * n + i];
    s.inverse_norm1 = symmetric_norm1(s.inverse.data(), n);
    if (!keep_preconditioner) {
        s.inverse = std::vector<double>();
        return;
    }
    for (long c = 0; c < n; ++c)
        for (long r = c + 1; r < n; ++r) s.inverse[r * n + c] = s.inverse[c * n + r];
    s.precondition_single = s.norm1 * s.inverse_norm1 < kSinglePrecisionCondition;
    if (s.precondition_single) {
        s.inverse_f.assign(s.inverse.begin(), s.inverse.end());
        s.inverse = std::vector<double>();
    } else {
        s.inverse_f = std::vector<float>();
    }
    s.have_preconditioner = true;
    s.refactor_due = false;
    s.steps_since_factor = 0;
    s.cost_since_factor = s.factor_cost;
}

void Engine::solve_step(long m) {
    auto& s = *impl_;
    const long n = n_;
    const double ridge = hyper_.ridge(n);
    if (opt_.second_layer == SecondLayer::Woodbury) {
        if (opt_.single_precision)
            woodbury_solve<float>(s.parts, s.x, act_, ridge, s.rhs.data(), m, 0, opt_.n_threads, nullptr);
        else
            woodbury_solve<double>(s.parts, s.x, act_, ridge, s.rhs.data(), m, 0, opt_.n_threads, nullptr);
        return;
    }
    const bool pcg = opt_.second_layer == SecondLayer::Pcg;
    if (s.factor_step != static_cast<long>(step_)) {
        bool dense = !pcg || !s.have_preconditioner || s.refactor_due;
        if (!dense) {
            if (s.features_step != static_cast<long>(step_)) {
                s.cache_d.fill(0, N_, opt_.n_threads);
                s.features_step = step_;
            }
            if (conjugate_gradients(m)) {
                ++stats_.cg_solves;
                return;
            }
            ++stats_.cg_fallbacks;
            dense = true;
        }
        gram_into_factor();
        cholesky_factor();
        if (pcg) invert(true);
    }
    blas::potrs_lower(n, m, s.factor.data(), n, s.rhs.data(), n);
}

bool Engine::conjugate_gradients(long m) {
    auto& s = *impl_;
    const long n = n_;
    const double ridge = hyper_.ridge(n);
    const Work w{n, N_, m, opt_.n_threads};
    const double* h = s.cache_d.h(0);
    std::vector<double>& x = s.vf_tmp;  // the iterate
    x.assign(static_cast<std::size_t>(n * m), 0.0);
    if (a_step_ >= 0) std::copy(a_.begin(), a_.end(), x.begin());  // previous dual: start of the Y columns
    double *r = s.r.data(), *z = s.z.data(), *p = s.p.data(), *q = s.q.data(), *u = s.u.data();
    const double* b = s.rhs.data();
    auto precondition = [&](const double* v, double* out) {
        if (s.precondition_single) preconditioner_product(s.inverse_f.data(), w, v, s.vf.data(), s.zf.data(), out);
        else preconditioner_product(s.inverse.data(), w, v, out);
    };
    auto residual = [&]() {  // r = b - (K + rI) x
        kernel_product(h, w, ridge, x.data(), u, s.partial.data(), q, reduce_, 1.0 / double(total_particles_));
        for (long i = 0; i < n * m; ++i) r[i] = b[i] - q[i];
    };
    std::vector<double> target(m), rz(m);
    std::vector<char> active(m);
    for (long i = 0; i < m; ++i) target[i] = opt_.tol * std::sqrt(dot(b + i * n, b + i * n, n));
    residual();
    long products = 1, iterations = 0, column_products = m;
    auto refresh = [&](bool restart) {  // z = P r; new directions for the active columns
        precondition(r, z);
        for (long i = 0; i < m; ++i) {
            if (!active[i]) continue;
            const double rz_new = dot(r + i * n, z + i * n, n);
            const double beta = restart ? 0.0 : rz_new / rz[i];
            for (long j = 0; j < n; ++j) p[i * n + j] = z[i * n + j] + beta * p[i * n + j];
            rz[i] = rz_new;
        }
    };
    long remaining = 0;
    for (long i = 0; i < m; ++i) {
        active[i] = std::sqrt(dot(r + i * n, r + i * n, n)) > target[i];
        remaining += active[i];
    }
    bool converged = remaining == 0;
    if (!converged) refresh(true);
    while (!converged) {
        if (iterations >= opt_.max_iterations) break;
        // The product for the columns still iterating only (converged columns are frozen).
        long ma = 0;
        for (long i = 0; i < m; ++i)
            if (active[i]) std::copy(p + i * n, p + (i + 1) * n, s.pa.data() + (ma++) * n);
        const Work wa{n, N_, ma, opt_.n_threads};
        column_products += ma;
        kernel_product(h, wa, ridge, s.pa.data(), u, s.partial.data(), s.qa.data(), reduce_,
                       1.0 / double(total_particles_));
        for (long i = 0, c = 0; i < m; ++i)
            if (active[i]) std::copy(s.qa.data() + c * n, s.qa.data() + (c + 1) * n, q + i * n), ++c;
        ++products;
        ++iterations;
        remaining = 0;
        bool breakdown = false;
        for (long i = 0; i < m; ++i) {
            if (!active[i]) continue;
            const double pq = dot(p + i * n, q + i * n, n);
            if (!(pq > 0.0) || !std::isfinite(pq)) {
                breakdown = true;
                break;
            }
            const double alpha = rz[i] / pq;
            for (long j = 0; j < n; ++j) {
                x[i * n + j] += alpha * p[i * n + j];
                r[i * n + j] -= alpha * q[i * n + j];
            }
            if (std::sqrt(dot(r + i * n, r + i * n, n)) > target[i]) ++remaining;
        }
        if (breakdown) break;
        if (remaining == 0) {
            // The recurrence says every column converged: check with the true residual (the recurrence
            // drifts from it in floating point), and restart the columns that did not.
            residual();
            ++products;
            column_products += m;
            for (long i = 0; i < m; ++i) {
                active[i] = std::sqrt(dot(r + i * n, r + i * n, n)) > target[i];
                remaining += active[i];
            }
            if (remaining == 0) {
                converged = true;
                break;
            }
            refresh(true);
            continue;
        }
        refresh(false);
    }
    stats_.cg_iterations += iterations;
    stats_.max_cg_iterations = std::max(stats_.max_cg_iterations, iterations);
    if (!converged) return false;
    std::copy(x.begin(), x.end(), s.rhs.begin());
    // The refactorisation rule: refactor once this solve cost more than the average cost per step since
    // the last factorisation (that factorisation included).
    const double nd = double(n), Nd = double(total_particles_);
    const double column_cost = double(products) + kExtraColumnWeight * double(column_products - products);
    const double cost = kVectorWeight * (column_cost * 2.0 * nd * Nd + double(iterations + 1) * double(m) * nd * nd);
    ++s.steps_since_factor;
    s.cost_since_factor += cost;
    if (cost > s.cost_since_factor / double(s.steps_since_factor + 1)) s.refactor_due = true;
    return true;
}

RunResult Engine::run(long k, const std::function<bool()>& stop_requested) {
    RunResult result;
    auto& s = *impl_;
    const long n = n_, T = T_, m = level_ > 0.0 ? 2 * T : T;
    for (; result.steps < k; ++result.steps) {
        if (stop_requested && stop_requested()) {
            result.status = RunStatus::Stopped;
            return result;
        }
        const std::uint32_t t = step_;
        // Right-hand sides [Y, E_t].
        std::copy(s.y_cols.begin(), s.y_cols.end(), s.rhs.begin());
        if (level_ > 0.0) {
            label_noise(seed_, t, n, T, level_, s.noise_rows.data());
            for (long j = 0; j < n; ++j)
                for (long i = 0; i < T; ++i) s.rhs[(T + i) * n + j] = s.noise_rows[j * T + i];
        }
        try {
            solve_step(m);
        } catch (const NotPositiveDefinite& e) {
            result.status = RunStatus::NotPositiveDefinite;
            result.message = e.what();
            return result;
        }
        const double U = reduced_objective(s.y_cols.data(), s.rhs.data(), n, T, hyper_.lam_a_bar());
        if (!std::isfinite(U) || !all_finite(s.rhs.data(), n * m)) {
            result.status = RunStatus::NonFinite;
            result.message = "the objective U is not finite";
            return result;
        }
        std::copy(s.rhs.begin(), s.rhs.begin() + n * T, a_.begin());
        a_step_ = t;
        last_u_ = U;
        const RunStatus status = take_step(level_ > 0.0 ? s.rhs.data() + n * T : nullptr);
        if (status != RunStatus::Completed) {
            result.status = status;
            result.message = "the particles became non-finite";
            return result;
        }
    }
    return result;
}

// The drift at the current particles for the dual held in a_ (and B), the noise, and the step's commit.
RunStatus Engine::take_step(const double* b) {
    auto& s = *impl_;
    const std::uint32_t t = step_;
    const long T = T_;
    const int threads = opt_.n_threads;
    // Drift into w_next_ (the previous particles are gone from there), then the step.
    s.previous_held = false;
    const bool stored = s.features_step == static_cast<long>(t);  // else (Woodbury) the drift recomputes them
    if (opt_.single_precision) {
        const FeatureCache<float> none(s.parts, s.x, act_, 0);
        drift_from_dual<float>(s.parts, s.x, act_, stored ? s.cache_f : none, a_.data(), b, T, hyper_.lam_a_bar(),
                               hyper_.lam_w_bar(), w_next_.data(), threads);
    } else {
        const FeatureCache<double> none(s.parts, s.x, act_, 0);
        drift_from_dual<double>(s.parts, s.x, act_, stored ? s.cache_d : none, a_.data(), b, T, hyper_.lam_a_bar(),
                                hyper_.lam_w_bar(), w_next_.data(), threads);
    }
    add_step_noise(s.parts, eta_, hyper_.lam, seed_, t, opt_.first_index, w_next_.data(), threads);
    const long count = N_ * dim_;
    double bad = (!all_finite(w_next_.data(), count) ||
                  !std::isfinite(0.5 * hyper_.lam_w_bar() * sum_squares(w_next_.data(), count) / double(N_)))
                     ? 1.0 : 0.0;
    if (reduce_) reduce_(&bad, 1);  // every shard stops at the same step
    if (bad > 0.0) return RunStatus::NonFinite;
    std::swap(w_, w_next_);
    s.parts.w = w_.data();
    step_ = t + 1;
    s.previous_held = true;
    ++stats_.solves;
    return RunStatus::Completed;
}

void Engine::gram(double* k_out) {
    if (opt_.second_layer == SecondLayer::Woodbury)
        throw std::invalid_argument("gram() needs stored features: not with the Woodbury solver");
    auto& s = *impl_;
    gram_into_factor();
    std::copy(s.factor.begin(), s.factor.end(), k_out);
}

void Engine::fill_features() {
    auto& s = *impl_;
    if (s.features_step != static_cast<long>(step_) && opt_.second_layer != SecondLayer::Woodbury) {
        if (opt_.single_precision) s.cache_f.fill(0, N_, opt_.n_threads);
        else s.cache_d.fill(0, N_, opt_.n_threads);
        s.features_step = step_;
    }
}

void Engine::features(double* h_rows, double divisor, float* h_rows_single) {
    if (opt_.second_layer == SecondLayer::Woodbury)
        throw std::invalid_argument("features() needs stored features: not with the Woodbury solver");
    if (reduce_) throw std::invalid_argument("features() holds one shard's columns only: not on a sharded engine");
    auto& s = *impl_;
    fill_features();
    // A transpose of the cache (column i: particle i) into rows (row j: sample j) in square tiles, so that
    // both the columns read and the rows written stay in cache; each thread writes whole rows. The single
    // precision copy, when asked for, is the double value rounded (the bits of a cast of the first).
    const long n = n_, N = N_, tile = 64, row_tiles = (n + tile - 1) / tile;
    auto transpose = [&](auto column) {
#pragma omp parallel for schedule(static) num_threads(opt_.n_threads) if (row_tiles > 1)
        for (long rt = 0; rt < row_tiles; ++rt) {
            const long j0 = rt * tile, j1 = std::min(n, j0 + tile);
            for (long i0 = 0; i0 < N; i0 += tile) {
                const long i1 = std::min(N, i0 + tile);
                for (long i = i0; i < i1; ++i) {
                    const auto* h = column(i);
                    for (long j = j0; j < j1; ++j) h_rows[j * N + i] = static_cast<double>(h[j]) / divisor;
                }
                if (h_rows_single)
                    for (long j = j0; j < j1; ++j)
                        for (long i = i0; i < i1; ++i) h_rows_single[j * N + i] = static_cast<float>(h_rows[j * N + i]);
            }
        }
    };
    if (opt_.single_precision) transpose([&](long i) { return s.cache_f.h(i); });
    else transpose([&](long i) { return s.cache_d.h(i); });
}

RunStatus Engine::step_given_dual(const double* a_cols, const double* b_cols) {
    auto& s = *impl_;
    fill_features();
    std::copy(a_cols, a_cols + n_ * T_, a_.begin());
    a_step_ = step_;
    if (b_cols) {
        s.rhs.resize(std::max(s.rhs.size(), static_cast<std::size_t>(2 * n_ * T_)));
        std::copy(b_cols, b_cols + n_ * T_, s.rhs.begin() + n_ * T_);
    }
    return take_step(b_cols ? s.rhs.data() + n_ * T_ : nullptr);
}

EngineDiagnostics Engine::diagnostics() {
    auto& s = *impl_;
    const long n = n_, T = T_;
    const double ridge = hyper_.ridge(n);
    EngineDiagnostics d{};
    double sum_sq = sum_squares(w_.data(), N_ * dim_);
    if (reduce_) reduce_(&sum_sq, 1);
    const double mean_sq = sum_sq / double(total_particles_);
    if (opt_.second_layer == SecondLayer::Woodbury) {
        std::vector<double> y_rows(static_cast<std::size_t>(n * T)), a_rows(y_rows.size());
        for (long j = 0; j < n; ++j)
            for (long i = 0; i < T; ++i) y_rows[j * T + i] = s.y_cols[i * n + j];
        Options o;
        o.solver = Solver::Woodbury;
        o.single_precision = opt_.single_precision;
        o.n_threads = opt_.n_threads;
        const Diagnostics g = objective(s.parts, s.x, Targets{y_rows.data(), n, T}, hyper_, act_, o, a_rows.data());
        for (long j = 0; j < n; ++j)
            for (long i = 0; i < T; ++i) a_[i * n + j] = a_rows[j * T + i];
        d.U = g.U;
        d.dof = g.dof;
        d.condition = g.condition;
        d.kernel_alignment = std::numeric_limits<double>::quiet_NaN();  // needs the n x n Gram: not here
    } else {
        gram_into_factor();
        // Alignment of K with Y: sum_i Y_i^T K Y_i / (||Y||_F^2 ||K||_F), from the full Gram before factoring.
        double num = 0.0, k_norm2 = 0.0;
        const double* k = s.factor.data();
        std::vector<double> ky(static_cast<std::size_t>(n));
        const double* f = s.align_tasks ? s.align_cols.data() : s.y_cols.data();
        const long tf = s.align_tasks ? s.align_tasks : T;
        for (long i = 0; i < tf; ++i) {
            blas::gemv(false, n, n, 1.0, k, n, f + i * n, 0.0, ky.data());
            num += dot(f + i * n, ky.data(), n);
        }
        for (long i = 0; i < n * n; ++i) k_norm2 += k[i] * k[i];
        const double y_norm2 = dot(f, f, n * tf);
        d.kernel_alignment = (y_norm2 > 0.0 && k_norm2 > 0.0) ? num / (y_norm2 * std::sqrt(k_norm2))
                                                               : std::numeric_limits<double>::quiet_NaN();
        cholesky_factor();
        std::copy(s.y_cols.begin(), s.y_cols.end(), a_.begin());
        blas::potrs_lower(n, T, s.factor.data(), n, a_.data(), n);
        invert(opt_.second_layer == SecondLayer::Pcg);
        d.dof = double(n) - ridge * s.trace_inverse;
        d.condition = s.norm1 * s.inverse_norm1;
        d.U = reduced_objective(s.y_cols.data(), a_.data(), n, T, hyper_.lam_a_bar());
    }
    a_step_ = step_;
    d.mean_sq_norm = mean_sq;
    d.G = d.U + 0.5 * hyper_.lam_w_bar() * mean_sq;
    // The network's fit on the training inputs is K A = Y - r A exactly.
    d.train_mse = ridge * ridge * dot(a_.data(), a_.data(), n * T) / double(n * T);
    return d;
}

void Engine::output_weights(double* weights_rows) {
    auto& s = *impl_;
    const bool cached = !opt_.single_precision && opt_.second_layer != SecondLayer::Woodbury &&
                        s.features_step == static_cast<long>(step_) && s.cache_d.enabled();
    if (!cached) {
        ::mfkern::output_weights(s.parts, s.x, act_, a_.data(), T_, weights_rows, opt_.n_threads);
        return;
    }
    // The current particles' features are stored: the same tiles and products as output_weights(), without
    // recomputing the features (so the same bits).
    const long n = n_, tiles = (N_ + kParticleTile - 1) / kParticleTile;
#pragma omp parallel for schedule(dynamic) num_threads(opt_.n_threads) if (tiles > 1)
    for (long t = 0; t < tiles; ++t) {
        const long k0 = t * kParticleTile, m = std::min(kParticleTile, N_ - k0);
        blas::gemm(true, false, T_, m, n, 1.0, a_.data(), n, s.cache_d.h(k0), n, 0.0, weights_rows + k0 * T_, T_);
    }
}

std::vector<RunResult> run_ensemble(const std::vector<Engine*>& engines, long k, int n_threads) {
    std::vector<RunResult> results(engines.size());
    const long count = static_cast<long>(engines.size());
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (count > 1)
    for (long i = 0; i < count; ++i) results[i] = engines[i]->run(k);  // nested regions run on one thread
    return results;
}

}  // namespace mfkern
