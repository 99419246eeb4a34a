// C++ unit tests of the core without Python: the Eigen fallback for BLAS/LAPACK, checked against naive
// loops and finite differences. Run by ctest (CMake option MFKERN_BUILD_TESTS=ON).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "mfkern/mfkern.hpp"

using namespace mfkern;

namespace {

int failures = 0, checks = 0;

void check(bool ok, const char* what, double value) {
    std::printf("%s %-48s %.3e\n", ok ? "ok  " : "FAIL", what, value);
    ++checks;
    if (!ok) ++failures;
}

struct Problem {
    long n = 23, d = 3, N = 150, T = 2;  // N > kParticleTile: several tiles
    std::vector<double> x, w, y;
    Problem() {
        std::mt19937_64 gen(7);
        std::normal_distribution<double> normal;
        for (long i = 0; i < n * d; ++i) x.push_back(normal(gen));
        for (long i = 0; i < N * (d + 1); ++i) w.push_back(0.7 * normal(gen));
        for (long i = 0; i < n * T; ++i) y.push_back(normal(gen));
    }
};

// Naive objective G(W) with K = (1/N) H H^T, by Gaussian elimination (independent of the core's solver).
double naive_objective(const Problem& pb, const std::vector<double>& w, const Hyper& hy) {
    const long n = pb.n, D = pb.d + 1;
    std::vector<double> h(n * pb.N);
    for (long j = 0; j < n; ++j)
        for (long k = 0; k < pb.N; ++k) {
            double z = w[k * D + pb.d];
            for (long l = 0; l < pb.d; ++l) z += pb.x[j * pb.d + l] * w[k * D + l];
            h[j * pb.N + k] = std::tanh(z);
        }
    std::vector<double> a((n) * (n + pb.T));
    const long cols = n + pb.T;
    for (long r = 0; r < n; ++r) {
        for (long c = 0; c < n; ++c) {
            double s = 0;
            for (long k = 0; k < pb.N; ++k) s += h[r * pb.N + k] * h[c * pb.N + k];
            a[r * cols + c] = s / pb.N + (r == c ? hy.ridge(n) : 0.0);
        }
        for (long i = 0; i < pb.T; ++i) a[r * cols + n + i] = pb.y[r * pb.T + i];
    }
    for (long p = 0; p < n; ++p)  // elimination without pivoting: the matrix is SPD
        for (long r = p + 1; r < n; ++r) {
            const double f = a[r * cols + p] / a[p * cols + p];
            for (long c = p; c < cols; ++c) a[r * cols + c] -= f * a[p * cols + c];
        }
    std::vector<double> sol(n * pb.T);
    for (long i = 0; i < pb.T; ++i)
        for (long r = n - 1; r >= 0; --r) {
            double s = a[r * cols + n + i];
            for (long c = r + 1; c < n; ++c) s -= a[r * cols + c] * sol[c * pb.T + i];
            sol[r * pb.T + i] = s / a[r * cols + r];
        }
    double u = 0, sq = 0;
    for (long i = 0; i < n * pb.T; ++i) u += pb.y[i] * sol[i];
    for (double v : w) sq += v * v;
    return hy.lam_a_bar() / (2.0 * pb.T) * u + 0.5 * hy.lam_w_bar() * sq / pb.N;
}


// ---------------------------------------------------------------------------------------------------------
// More entry points against naive loops and closed forms, so that every path of the core runs under
// the sanitizers: Woodbury against dense, label-noise drift against drift_given_dual, cross Gram, output
// weights and network output, the noise generators, and n = N = d = 1.
// ---------------------------------------------------------------------------------------------------------

// Row-major n x N features by naive loops (tanh).
std::vector<double> naive_features(const std::vector<double>& x, long n, long d, const std::vector<double>& w,
                                   long N) {
    std::vector<double> h(n * N);
    for (long j = 0; j < n; ++j)
        for (long k = 0; k < N; ++k) {
            double z = w[k * (d + 1) + d];
            for (long l = 0; l < d; ++l) z += x[j * d + l] * w[k * (d + 1) + l];
            h[j * N + k] = std::tanh(z);
        }
    return h;
}

double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b, double* scale = nullptr) {
    double worst = 0, big = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(a[i] - b[i]));
        big = std::max(big, std::abs(b[i]));
    }
    if (scale) *scale = big;
    return worst;
}

void more_entry_point_checks() {
    std::mt19937_64 gen(11);
    std::normal_distribution<double> normal;
    const long n = 37, d = 3, N = 70, T = 2;  // N > kParticleTile, N > n
    std::vector<double> xs(n * d), ws(N * (d + 1)), ys(n * T), es(n * T);
    for (double& v : xs) v = normal(gen);
    for (double& v : ws) v = 0.8 * normal(gen);
    for (double& v : ys) v = normal(gen);
    for (double& v : es) v = 0.3 * normal(gen);
    const Inputs x(xs.data(), n, d);
    const Particles p{ws.data(), N, d + 1};
    const Targets y{ys.data(), n, T};
    const Hyper hy{0.05, 0.4, 0.9};
    Options dense;
    dense.block_size = 13;

    // Woodbury (particle space) against the dense solve, for N < n: same drift, dual and U to rounding.
    {
        const long Ns = 11;  // N < n
        const Particles ps{ws.data(), Ns, d + 1};
        std::vector<double> g_dense(Ns * (d + 1)), g_wood(g_dense.size()), a_dense(n * T), a_wood(n * T);
        Options wood = dense;
        wood.solver = Solver::Woodbury;
        const double u_dense =
            drift(ps, x, y, hy, Activation::Tanh, es.data(), g_dense.data(), a_dense.data(), dense).U;
        const double u_wood = drift(ps, x, y, hy, Activation::Tanh, es.data(), g_wood.data(), a_wood.data(), wood).U;
        double sg, sa;
        const double eg = max_abs_diff(g_wood, g_dense, &sg), ea = max_abs_diff(a_wood, a_dense, &sa);
        check(eg < 1e-9 * sg && ea < 1e-9 * sa && std::abs(u_wood - u_dense) < 1e-9 * std::abs(u_dense),
              "woodbury drift/dual/U equal dense (N < n, noise)", std::max(eg / sg, ea / sa));
    }

    // Label-noise drift: drift(Y, E) = drift_given_dual(A = S Y, B = S E) with S from RidgeFactor.
    {
        std::vector<double> k(n * n), grad(N * (d + 1)), given(grad.size());
        gram_symmetric<double>(p, x, Activation::Tanh, 0, nullptr, k.data(), 2);
        const RidgeFactor f(k.data(), n, hy.ridge(n), 2);
        std::vector<double> a_cols(n * T), b_cols(n * T), a_rows(n * T), b_rows(n * T);
        for (long j = 0; j < n; ++j)
            for (long i = 0; i < T; ++i) {
                a_cols[i * n + j] = ys[j * T + i];
                b_cols[i * n + j] = es[j * T + i];
            }
        f.solve_in_place(a_cols.data(), T);
        f.solve_in_place(b_cols.data(), T);
        for (long j = 0; j < n; ++j)
            for (long i = 0; i < T; ++i) {
                a_rows[j * T + i] = a_cols[i * n + j];
                b_rows[j * T + i] = b_cols[i * n + j];
            }
        drift(p, x, y, hy, Activation::Tanh, es.data(), grad.data(), nullptr, dense);
        drift_given_dual(p, x, Activation::Tanh, a_rows.data(), b_rows.data(), T, hy, given.data(), dense);
        double scale;
        const double e = max_abs_diff(grad, given, &scale);
        check(e < 1e-11 * scale, "label-noise drift = drift_given_dual(SY, SE)", e / scale);

        // The step for given duals is that drift plus the documented noise, bitwise.
        std::vector<double> stepped(grad.size()), xi(grad.size());
        langevin_step_given_dual(p, x, Activation::Tanh, a_rows.data(), b_rows.data(), T, hy, 0.07, 5, 9, 3,
                                 stepped.data(), dense);
        particle_noise(5, 9, 3, N, d + 1, xi.data(), 2);
        bool same = true;
        const double s = std::sqrt(2.0 * 0.07 * hy.lam);
        for (std::size_t i = 0; i < grad.size(); ++i) same = same && stepped[i] == ws[i] - 0.07 * given[i] + s * xi[i];
        check(same, "langevin_step_given_dual = w - eta g + sqrt(2 eta lam) xi", 0.0);
    }

    // Cross Gram, output weights and network output against naive loops.
    {
        const long m = 9;
        std::vector<double> x2s(m * d);
        for (double& v : x2s) v = normal(gen);
        const Inputs x2(x2s.data(), m, d);
        const std::vector<double> h = naive_features(xs, n, d, ws, N), h2 = naive_features(x2s, m, d, ws, N);
        std::vector<double> cross(n * m), want(n * m);
        gram_cross(p, x, x2, Activation::Tanh, 17, cross.data(), 2);
        for (long r = 0; r < n; ++r)
            for (long c = 0; c < m; ++c) {
                double acc = 0;
                for (long q = 0; q < N; ++q) acc += h[r * N + q] * h2[c * N + q];
                want[r * m + c] = acc / N;
            }
        check(max_abs_diff(cross, want) < 1e-13, "cross gram equals (1/N) H(X) H(X2)^T", max_abs_diff(cross, want));

        std::vector<double> a_cols(n * T), weights(N * T), weights_want(N * T, 0.0);
        for (double& v : a_cols) v = normal(gen);
        output_weights(p, x, Activation::Tanh, a_cols.data(), T, weights.data(), 2);
        for (long k = 0; k < N; ++k)
            for (long i = 0; i < T; ++i)
                for (long j = 0; j < n; ++j) weights_want[k * T + i] += h[j * N + k] * a_cols[i * n + j];
        double scale;
        double e = max_abs_diff(weights, weights_want, &scale);
        check(e < 1e-13 * std::max(1.0, scale), "output weights equal H^T A", e);

        std::vector<double> out(m * T), out_want(m * T, 0.0);
        network_output(p, weights.data(), T, x2s.data(), m, d, Activation::Tanh, 5, out.data(), 2);
        for (long j = 0; j < m; ++j)
            for (long i = 0; i < T; ++i) {
                for (long k = 0; k < N; ++k) out_want[j * T + i] += weights[k * T + i] * h2[j * N + k];
                out_want[j * T + i] /= N;
            }
        e = max_abs_diff(out, out_want, &scale);
        check(e < 1e-13 * std::max(1.0, scale), "network output equals (1/N) H(X2) a", e);
    }

    // Noise: particle k's draws depend only on (seed, step, first_index + k) and a longer row starts with the
    // shorter one; Box-Muller with u0 >= 2^-53 is bounded by sqrt(2 * 53 ln 2); label noise lies in [-s, s].
    {
        const long count = 40, dim = 5, far = 4294967295L - 50;  // indices up to 2^32 - 1
        std::vector<double> a(count * dim), b((count + 7) * (dim + 3));
        particle_noise(77, 4294967295u, far + 7, count, dim, a.data(), 2);
        particle_noise(77, 4294967295u, far, count + 7, dim + 3, b.data(), 1);
        bool prefix = true;
        double biggest = 0;
        for (long k = 0; k < count; ++k)
            for (long l = 0; l < dim; ++l) {
                prefix = prefix && a[k * dim + l] == b[(k + 7) * (dim + 3) + l];
                biggest = std::max(biggest, std::abs(a[k * dim + l]));
            }
        check(prefix && biggest <= std::sqrt(2.0 * 53.0 * std::log(2.0)), "particle noise keyed by index, bounded",
              biggest);
        std::vector<double> e(200 * 3), e1(200 * 3);
        label_noise(1, 2, 200, 3, 0.25, e.data());
        label_noise(1, 2, 200, 3, 1.0, e1.data());
        bool bounded = true, scaled = true;
        for (std::size_t i = 0; i < e.size(); ++i) {
            bounded = bounded && std::abs(e[i]) <= 0.25;
            scaled = scaled && e[i] == 0.25 * e1[i];
        }
        check(bounded && scaled, "label noise in [-s, s] and linear in s", 0.0);
    }

    // n = N = d = 1: K = h^2, A = y / (h^2 + ridge), grad = -lam_a_bar a A h'(z) (x, 1) + lam_w_bar w.
    {
        const double x1 = 0.7, y1 = 1.3, w1[2] = {0.4, -0.2};
        const Inputs xo(&x1, 1, 1);
        const Particles po{w1, 1, 2};
        const Targets yo{&y1, 1, 1};
        const double z = 0.7 * 0.4 - 0.2, h1 = std::tanh(z), hp = 1 - h1 * h1;
        const double a_dual = 1.3 / (h1 * h1 + hy.ridge(1));
        double g[2], dual;
        const double u = drift(po, xo, yo, hy, Activation::Tanh, nullptr, g, &dual, dense).U;
        const double w0 = -hy.lam_a_bar() * h1 * a_dual * a_dual * hp * 0.7 + hy.lam_w_bar() * 0.4;
        const double w1g = -hy.lam_a_bar() * h1 * a_dual * a_dual * hp + hy.lam_w_bar() * -0.2;
        const double u_want = hy.lam_a_bar() / 2 * 1.3 * a_dual;
        const double e = std::max({std::abs(g[0] - w0) / std::abs(w0), std::abs(g[1] - w1g) / std::abs(w1g),
                                   std::abs(dual - a_dual) / a_dual, std::abs(u - u_want) / u_want});
        check(e < 1e-14, "n = N = d = 1 drift, dual and U in closed form", e);
    }

    // A non-finite Gram entry is reported as not positive definite, never factored into NaNs.
    {
        std::vector<double> nan_k = {1.0, 0.0, 0.0, std::nan("")};
        bool thrown = false;
        try {
            RidgeFactor f(nan_k.data(), 2, 0.5);
        } catch (const NotPositiveDefinite&) {
            thrown = true;
        }
        check(thrown, "NaN in K raises NotPositiveDefinite", 0.0);
    }
}
}  // namespace

// The engine without Python: the cg and dense solvers agree, the cg dual solves its system to the tolerance,
// a split run equals a whole one, and a divergent step leaves the last good particles.
void engine_checks() {
    std::mt19937_64 gen(11);
    std::normal_distribution<double> normal;
    const long n = 300, d = 4, N = 320, T = 1;
    std::vector<double> x(n * d), y(n * T), w(N * (d + 1));
    for (double& v : x) v = normal(gen) / 2.0;
    for (long j = 0; j < n; ++j) y[j] = x[j * d] * x[j * d + 1];
    for (double& v : w) v = 2.0 * normal(gen);
    const Hyper hy{0.004, 0.25, 0.25};
    auto make = [&](SecondLayer sl, double eta) {
        EngineOptions o;
        o.second_layer = sl;
        o.n_threads = 2;
        return std::make_unique<Engine>(x.data(), n, d, y.data(), T, w.data(), N, hy, Activation::Tanh, eta, 5, 0,
                                        0.5, o);
    };
    auto dense = make(SecondLayer::Dense, 0.2), cg = make(SecondLayer::Pcg, 0.2);
    dense->run(40);
    cg->run(40);
    double diff = 0, scale = 0;
    for (long i = 0; i < N * (d + 1); ++i) {
        diff = std::max(diff, std::abs(dense->particles()[i] - cg->particles()[i]));
        scale = std::max(scale, std::abs(dense->particles()[i]));
    }
    check(diff < 1e-9 * scale && cg->stats().cg_solves > 0, "engine: cg particles match dense (40 steps)",
          diff / scale);
    // The dual of the last cg solve solves (K + r I) A = Y at the particles before that step.
    auto split = make(SecondLayer::Pcg, 0.2);
    split->run(15);
    split->run(24);
    std::vector<double> before(split->particles(), split->particles() + N * (d + 1));
    split->run(1);
    bool same = true;
    for (long i = 0; i < N * (d + 1); ++i) same = same && split->particles()[i] == cg->particles()[i];
    check(same, "engine: run(15)+run(24)+run(1) equals run(40) bitwise", 0.0);
    const Particles pb{before.data(), N, d + 1};
    const Inputs xi(x.data(), n, d);
    std::vector<double> k(n * n);
    gram_symmetric<double>(pb, xi, Activation::Tanh, 0, nullptr, k.data(), 2);
    double res = 0, ynorm = 0;
    for (long r = 0; r < n; ++r) {
        double acc = hy.ridge(n) * split->dual()[r];
        for (long c = 0; c < n; ++c) acc += k[r * n + c] * split->dual()[c];
        res += (acc - y[r]) * (acc - y[r]);
        ynorm += y[r] * y[r];
    }
    check(std::sqrt(res / ynorm) < 2e-10, "engine: cg dual residual below tol", std::sqrt(res / ynorm));
    // The engine's stored features, divided, row-major: the stateless features' bits.
    std::vector<double> h_engine(n * N), h_direct(n * N);
    dense->features(h_engine.data(), std::sqrt(double(N)));
    const Particles pd{dense->particles(), N, d + 1};
    features(pd, xi, Activation::Tanh, h_direct.data(), 1);
    bool same_features = true;
    for (long i = 0; i < n * N; ++i) same_features = same_features && h_engine[i] == h_direct[i] / std::sqrt(double(N));
    check(same_features, "engine: features() equals features() / sqrt(N) bitwise", 0.0);
    auto wild = make(SecondLayer::Dense, 1e150);
    const RunResult r = wild->run(50);
    bool finite = true;
    for (long i = 0; i < N * (d + 1); ++i) finite = finite && std::isfinite(wild->particles()[i]);
    check(r.status == RunStatus::NonFinite && r.steps < 50 && wild->step() == r.steps && finite,
          "engine: divergence keeps the last good step", double(r.steps));
}

// The skinny products against plain loops (sizes with row, column and vector tails), the same bits for 1
// and 3 threads, and accumulation.
template <class T>
void test_skinny(const char* name, double tol, long m) {
    const long rows = 37, cols = 203;
    std::vector<T> a(rows * cols), x(m * cols), g(m * rows);
    for (long i = 0; i < rows * cols; ++i) a[i] = T(std::sin(0.37 * double(i)));
    for (long i = 0; i < m * cols; ++i) x[i] = T(std::cos(0.11 * double(i)));
    for (long i = 0; i < m * rows; ++i) g[i] = T(std::sin(0.05 * double(i) + 1.0));
    std::vector<T> y1(m * rows), y3(m * rows), z1(m * cols), z3(m * cols, T(1)), z_acc(m * cols, T(1));
    multi_dot(a.data(), rows, cols, cols, x.data(), cols, m, y1.data(), rows, 1);
    multi_dot(a.data(), rows, cols, cols, x.data(), cols, m, y3.data(), rows, 3);
    multi_axpy(a.data(), rows, cols, cols, g.data(), rows, m, z1.data(), cols, false, 1);
    multi_axpy(a.data(), rows, cols, cols, g.data(), rows, m, z3.data(), cols, false, 3);
    multi_axpy(a.data(), rows, cols, cols, g.data(), rows, m, z_acc.data(), cols, true, 2);
    double e_dot = 0, e_axpy = 0, e_acc = 0;
    for (long i = 0; i < m; ++i) {
        for (long r = 0; r < rows; ++r) {
            double s = 0;
            for (long k = 0; k < cols; ++k) s += double(a[r * cols + k]) * double(x[i * cols + k]);
            e_dot = std::max(e_dot, std::abs(s - double(y1[i * rows + r])));
        }
        for (long k = 0; k < cols; ++k) {
            double s = 0;
            for (long r = 0; r < rows; ++r) s += double(a[r * cols + k]) * double(g[i * rows + r]);
            e_axpy = std::max(e_axpy, std::abs(s - double(z1[i * cols + k])));
            e_acc = std::max(e_acc, std::abs(s + 1.0 - double(z_acc[i * cols + k])));
        }
    }
    const std::string vectors = ", " + std::to_string(m) + " vectors";
    std::string what = std::string("skinny products (") + name + vectors + ") match plain loops";
    check(e_dot < tol && e_axpy < tol && e_acc < tol, what.c_str(), std::max(e_dot, std::max(e_axpy, e_acc)));
    what = std::string("skinny products (") + name + vectors + ") bitwise the same for 1 and 3 threads";
    check(y1 == y3 && z1 == z3, what.c_str(), 0.0);
}

int main() {
    std::printf("activation kernels: %s\n", activation_isa());
    for (long m : {1, 2, 3, 4, 5, 7, 11}) {
        test_skinny<double>("float64", 1e-12, m);
        test_skinny<float>("float32", 1e-4, m);
    }
    const Problem pb;
    const Hyper hy{0.1, 0.3, 0.7};
    const Inputs x(pb.x.data(), pb.n, pb.d);
    const Particles p{pb.w.data(), pb.N, pb.d + 1};
    const Targets y{pb.y.data(), pb.n, pb.T};
    Options opt;
    opt.block_size = 40;  // several panels

    // Gram against naive loops.
    std::vector<double> k(pb.n * pb.n), h(pb.n * pb.N);
    gram_symmetric<double>(p, x, Activation::Tanh, opt.block_size, nullptr, k.data(), 2);
    features(p, x, Activation::Tanh, h.data(), 2);
    double err = 0;
    for (long r = 0; r < pb.n; ++r)
        for (long c = 0; c < pb.n; ++c) {
            double s = 0;
            for (long q = 0; q < pb.N; ++q) s += h[r * pb.N + q] * h[c * pb.N + q];
            err = std::max(err, std::abs(s / pb.N - k[r * pb.n + c]));
        }
    check(err < 1e-13, "gram equals (1/N) H H^T", err);

    // Objective against the naive solver.
    const Diagnostics dg = objective(p, x, y, hy, Activation::Tanh, opt);
    const double g_naive = naive_objective(pb, pb.w, hy);
    check(std::abs(dg.G - g_naive) < 1e-11 * std::abs(g_naive), "objective G equals naive G", std::abs(dg.G - g_naive));

    // Drift against N times the finite-difference gradient of G, with and without the feature cache.
    for (std::size_t cache : {std::size_t(0), std::size_t(1) << 30}) {
        opt.cache_bytes = cache;
        std::vector<double> grad(pb.N * (pb.d + 1));
        drift(p, x, y, hy, Activation::Tanh, nullptr, grad.data(), nullptr, opt);
        double worst = 0, scale = 0;
        for (long i = 0; i < pb.N * (pb.d + 1); i += 7) {
            std::vector<double> wp(pb.w), wm(pb.w);
            const double eps = 1e-5;
            wp[i] += eps;
            wm[i] -= eps;
            const double fd = pb.N * (naive_objective(pb, wp, hy) - naive_objective(pb, wm, hy)) / (2 * eps);
            worst = std::max(worst, std::abs(fd - grad[i]));
            scale = std::max(scale, std::abs(fd));
        }
        check(worst < 1e-6 * scale, cache ? "drift = N dG/dw (cached features)" : "drift = N dG/dw (streamed)",
              worst / scale);
    }

    // float32 option: features and products in float, sums and factorisation in double.
    {
        opt.cache_bytes = std::size_t(1) << 30;
        std::vector<double> g64(pb.N * (pb.d + 1)), g32(g64.size());
        drift(p, x, y, hy, Activation::Tanh, nullptr, g64.data(), nullptr, opt);
        Options single = opt;
        single.single_precision = true;
        drift(p, x, y, hy, Activation::Tanh, nullptr, g32.data(), nullptr, single);
        double worst = 0, scale = 0;
        for (std::size_t i = 0; i < g64.size(); ++i) {
            worst = std::max(worst, std::abs(g64[i] - g32[i]));
            scale = std::max(scale, std::abs(g64[i]));
        }
        check(worst < 1e-4 * scale && worst > 0, "float32 drift within 1e-4 of float64 (and not identical)",
              worst / scale);
        const Diagnostics d32 = objective(p, x, y, hy, Activation::Tanh, single);
        check(std::abs(d32.G - dg.G) < 1e-5 * std::abs(dg.G), "float32 objective within 1e-5", std::abs(d32.G - dg.G));
    }

    // The step is reproducible for any thread count, and noise is standard normal.
    std::vector<double> w1(pb.w.size()), w2(pb.w.size());
    opt.n_threads = 1;
    langevin_step(p, x, y, hy, Activation::Tanh, 0.1, 42, 3, 0.5, 0, w1.data(), nullptr, opt);
    opt.n_threads = 2;
    langevin_step(p, x, y, hy, Activation::Tanh, 0.1, 42, 3, 0.5, 0, w2.data(), nullptr, opt);
    check(w1 == w2, "step bitwise identical with 1 and 2 threads", 0.0);
    const long count = 200000;
    std::vector<double> xi(count);
    particle_noise(1, 0, 0, count / 4, 4, xi.data(), 2);
    double m1 = 0, m2 = 0;
    for (double v : xi) { m1 += v; m2 += v * v; }
    m1 /= count;
    m2 /= count;
    check(std::abs(m1) < 5.0 / std::sqrt(double(count)) && std::abs(m2 - 1) < 5.0 * std::sqrt(2.0 / count),
          "particle noise has mean 0 and variance 1", m2 - 1);

    // A Gram that is not positive definite after the ridge is reported, not silently solved.
    std::vector<double> bad(pb.n * pb.n, 0.0);
    for (long i = 0; i < pb.n; ++i) bad[i * pb.n + i] = -1.0;
    bool thrown = false;
    try {
        RidgeFactor f(bad.data(), pb.n, 0.5);
    } catch (const NotPositiveDefinite&) {
        thrown = true;
    }
    check(thrown, "non-PD K + ridge I raises NotPositiveDefinite", 0.0);

    // Activations against the C library, over the whole range (saturation included).
    {
        std::vector<double> z, h;
        for (long i = -400000; i <= 400000; ++i) z.push_back(i * 1e-4);
        for (double v : {1e-300, -1e-300, 1e-12, -7e-9, 19.06, 30.0, -800.0, 1e300}) z.push_back(v);
        h = z;
        std::vector<double> dh(z.size());
        activate(Activation::Tanh, h.data(), dh.data(), static_cast<long>(h.size()));
        double abs_err = 0, rel_err = 0, d_err = 0;
        for (std::size_t i = 0; i < z.size(); ++i) {
            const double t = std::tanh(z[i]);
            abs_err = std::max(abs_err, std::abs(h[i] - t));
            if (t != 0) rel_err = std::max(rel_err, std::abs(h[i] - t) / std::abs(t));
            d_err = std::max(d_err, std::abs(dh[i] - (1 - t * t)));
        }
        check(rel_err < 1e-15 && abs_err < 5e-16, "tanh relative error vs std::tanh", rel_err);
        check(d_err < 1e-15, "tanh derivative error", d_err);
        h = z;
        activate(Activation::Erf, h.data(), dh.data(), static_cast<long>(h.size()));
        double e_err = 0;
        for (std::size_t i = 0; i < z.size(); ++i) {
            const double ref = 1.12837916709551257390 * std::exp(-z[i] * z[i]);
            e_err = std::max(e_err, std::abs(dh[i] - ref) / std::max(ref, 1e-300) * (ref > 1e-300));
            e_err = std::max(e_err, std::abs(h[i] - std::erf(z[i])));
        }
        check(e_err < 1e-14, "erf and its derivative vs the C library", e_err);
        // NaN in (an overflowed pre-activation) stays NaN out: never a plausible +-1.
        for (Activation act : {Activation::Tanh, Activation::Erf}) {
            double zn[3] = {std::nan(""), 1.0, -std::nan("")}, dn[3];
            float zf[3] = {std::nanf(""), 1.0f, -std::nanf("")}, df[3];
            activate(act, zn, dn, 3);
            activate(act, zf, df, 3);
            check(std::isnan(zn[0]) && std::isnan(zn[2]) && std::isnan(dn[0]) && !std::isnan(zn[1]) &&
                      std::isnan(zf[0]) && std::isnan(zf[2]) && std::isnan(df[0]) && !std::isnan(zf[1]),
                  act == Activation::Tanh ? "tanh propagates NaN (double, float)" : "erf propagates NaN (double, float)",
                  0.0);
        }
    }

    // Large n: the output-tiled Gram and the tiled Cholesky (n spans several 256-tiles) against loops.
    {
        const long n = 600, d = 2, N = 90;
        std::mt19937_64 gen(3);
        std::normal_distribution<double> normal;
        std::vector<double> xs(n * d), ws(N * (d + 1)), kk(n * n), hh(n * N);
        for (double& v : xs) v = normal(gen);
        for (double& v : ws) v = normal(gen);
        const Inputs xl(xs.data(), n, d);
        const Particles pl{ws.data(), N, d + 1};
        gram_symmetric<double>(pl, xl, Activation::Tanh, 32, nullptr, kk.data(), 2);
        features(pl, xl, Activation::Tanh, hh.data(), 2);
        double gerr = 0;
        for (long r = 0; r < n; ++r)
            for (long c = 0; c <= r; ++c) {
                double acc = 0;
                for (long q = 0; q < N; ++q) acc += hh[r * N + q] * hh[c * N + q];
                gerr = std::max(gerr, std::abs(acc / N - kk[r * n + c]));
            }
        check(gerr < 1e-13, "tiled gram (n = 600) equals (1/N) H H^T", gerr);
        std::vector<double> rhs(n), sol;
        for (double& v : rhs) v = normal(gen);
        sol = rhs;
        RidgeFactor f(kk.data(), n, 0.05, 2);
        f.solve_in_place(sol.data(), 1);
        double res = 0, scale = 0;
        for (long r = 0; r < n; ++r) {
            double acc = 0.05 * sol[r];
            for (long c = 0; c < n; ++c) acc += kk[r * n + c] * sol[c];
            res = std::max(res, std::abs(acc - rhs[r]));
            scale = std::max(scale, std::abs(rhs[r]));
        }
        check(res < 1e-10 * scale, "tiled Cholesky solve residual (n = 600)", res / scale);
    }

    more_entry_point_checks();
    engine_checks();

    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
