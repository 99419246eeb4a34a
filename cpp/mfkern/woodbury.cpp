#include "mfkern/woodbury.hpp"

#include <algorithm>
#include <limits>
#include <type_traits>
#include <cstdio>
#include <vector>

#include "mfkern/blas.hpp"
#include "mfkern/gram.hpp"
#include "mfkern/solve.hpp"

namespace mfkern {

template <class F>
void woodbury_solve(const Particles& p, const Inputs& x, Activation act, double ridge, double* rhs, long m,
                    long sample_panel, int n_threads, WoodburyStats* stats) {
    const long n = x.n, N = p.count;
    if (sample_panel <= 0) sample_panel = default_block_size(N, n);
    std::vector<double> gram(static_cast<std::size_t>(N) * N, 0.0), proj(static_cast<std::size_t>(N) * m, 0.0);
    std::vector<F> h_t(static_cast<std::size_t>(N) * std::min(sample_panel, n));
    std::vector<F> small;  // float path: one panel's right-hand sides or products in float
    // Pass 1: M - N c I = H^T H and H^T R, summed over panels of samples in a fixed order.
    for (long j0 = 0; j0 < n; j0 += sample_panel) {
        const long b = std::min(sample_panel, n - j0);
        const Inputs rows(x, j0, b);
        features(p, rows, act, h_t.data(), n_threads);  // row-major b x N = column-major N x b: H_rows^T
        accumulate_lower(N, b, 1.0, h_t.data(), N, gram.data(), n_threads);
        if constexpr (std::is_same<F, double>::value) {
            blas::gemm(false, false, N, m, b, 1.0, h_t.data(), N, rhs + j0, n, 1.0, proj.data(), N);
        } else {
            small.resize(static_cast<std::size_t>(b) * m + static_cast<std::size_t>(N) * m);
            F* r = small.data();
            F* prod = small.data() + b * m;
            for (long i = 0; i < m; ++i)
                for (long j = 0; j < b; ++j) r[i * b + j] = static_cast<F>(rhs[i * n + j0 + j]);
            blas::gemm(false, false, N, m, b, F(1), h_t.data(), N, r, b, F(0), prod, N);
            for (long i = 0; i < N * m; ++i) proj[i] += double(prod[i]);
        }
    }
    // With N < n, K = H H^T / N is singular and K + c I has the eigenvalue c. Below machine precision
    // relative to K's scale (>= max_k (H^T H)_kk / N), K + c I is singular to working precision: the
    // identity would still return a finite but meaningless (1/c-sized) answer, so refuse as Cholesky would.
    double max_diag = 0.0;
    for (long c = 0; c < N; ++c) max_diag = std::max(max_diag, gram[c * N + c]);
    if (N < n && ridge <= std::numeric_limits<double>::epsilon() * max_diag / double(N))
    {
        char message[200];
        std::snprintf(message, sizeof message,
                      "K + ridge*I is singular to working precision (ridge %.3g is below machine precision "
                      "relative to the Gram's scale %.3g)", ridge, max_diag / double(N));
        throw NotPositiveDefinite(N, message);
    }
    for (long c = 0; c < N; ++c)
        for (long r = c + 1; r < N; ++r) gram[r * N + c] = gram[c * N + r];
    const RidgeFactor factor(gram.data(), N, double(N) * ridge, n_threads);
    gram = std::vector<double>();
    factor.solve_in_place(proj.data(), m);  // z = M^{-1} H^T R
    // Pass 2: R <- (R - H z) / c.
    for (long j0 = 0; j0 < n; j0 += sample_panel) {
        const long b = std::min(sample_panel, n - j0);
        const Inputs rows(x, j0, b);
        features(p, rows, act, h_t.data(), n_threads);
        if constexpr (std::is_same<F, double>::value) {
            blas::gemm(true, false, b, m, N, -1.0, h_t.data(), N, proj.data(), N, 1.0, rhs + j0, n);
        } else {
            small.resize(static_cast<std::size_t>(N) * m + static_cast<std::size_t>(b) * m);
            F* z = small.data();
            F* prod = small.data() + N * m;
            for (long i = 0; i < N * m; ++i) z[i] = static_cast<F>(proj[i]);
            blas::gemm(true, false, b, m, N, F(1), h_t.data(), N, z, N, F(0), prod, b);
            for (long i = 0; i < m; ++i)
                for (long j = 0; j < b; ++j) rhs[i * n + j0 + j] -= double(prod[i * b + j]);
        }
    }
    const double inv_ridge = 1.0 / ridge;
    for (long i = 0; i < n * m; ++i) rhs[i] *= inv_ridge;
    if (stats) {
        const auto inverse = factor.inverse_stats();
        stats->dof = double(N) - double(N) * ridge * inverse.trace;
        stats->condition = inverse.condition;
    }
}

template void woodbury_solve<double>(const Particles&, const Inputs&, Activation, double, double*, long, long, int,
                                     WoodburyStats*);
template void woodbury_solve<float>(const Particles&, const Inputs&, Activation, double, double*, long, long, int,
                                    WoodburyStats*);

}  // namespace mfkern
