// C++ unit tests of the core without Python: the Eigen fallback for BLAS/LAPACK, checked against naive
// loops and finite differences. Run by ctest (CMake option MFKERN_BUILD_TESTS=ON).
#include <cmath>
#include <cstdio>
#include <random>
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

}  // namespace

int main() {
    std::printf("activation kernels: %s\n", activation_isa());
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

    std::printf("%d passed, %d failed\n", checks - failures, failures);
    return failures ? 1 : 0;
}
