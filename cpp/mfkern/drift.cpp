#include "mfkern/drift.hpp"

#include <algorithm>
#include <vector>

#include "mfkern/blas.hpp"

namespace mfkern {

void drift_from_dual(FeatureBlocks& blocks, const Particles& p, const Inputs& x, const double* a_dual,
                     const double* b_dual, long n_tasks, double lam_a_bar, double lam_w_bar, double* grad_rows,
                     int n_threads) {
    const long n = x.n, T = n_tasks;
    const long max_block = blocks.count() ? blocks.size(0) : 0;
    std::vector<double> c(static_cast<std::size_t>(n * max_block)), a_w(static_cast<std::size_t>(max_block * T)),
        b_w(b_dual ? static_cast<std::size_t>(max_block * T) : 0);
    const bool tanh_like = derivative_from_value(blocks.activation());
    for (long b = 0; b < blocks.count(); ++b) {
        const long k0 = blocks.begin(b), m = blocks.size(b);
        const double *h, *deriv;
        blocks.get(b, h, deriv);
        // Second-layer weights of this block (column-major m x T).
        blas::gemm(true, false, m, T, n, 1.0, h, n, a_dual, n, 0.0, a_w.data(), m);
        if (b_dual) blas::gemm(true, false, m, T, n, 1.0, h, n, b_dual, n, 0.0, b_w.data(), m);
        double* cb = c.data();
        const double* aw = a_w.data();
        const double* bw = b_w.data();
#pragma omp parallel for schedule(static) num_threads(n_threads) if (n * m > 16384)
        for (long k = 0; k < m; ++k) {
            double* ck = cb + k * n;
            const double* hk = h + k * n;
            std::fill(ck, ck + n, 0.0);
            for (long i = 0; i < T; ++i) {
                const double ak = aw[i * m + k];
                const double* ai = a_dual + i * n;
                for (long j = 0; j < n; ++j) ck[j] += ai[j] * ak;
                if (b_dual) {
                    const double bk = bw[i * m + k];
                    const double* bi = b_dual + i * n;
                    for (long j = 0; j < n; ++j) ck[j] -= bi[j] * bk;
                }
            }
            if (tanh_like) {
                for (long j = 0; j < n; ++j) ck[j] *= 1.0 - hk[j] * hk[j];
            } else {
                const double* dk = deriv + k * n;
                for (long j = 0; j < n; ++j) ck[j] *= dk[j];
            }
        }
        // Row-major m x dim gradient block is column-major dim x m: -(lam_a_bar/T) X1^T C.
        double* g = grad_rows + k0 * p.dim;
        blas::gemm(true, false, p.dim, m, n, -lam_a_bar / double(T), x.data(), n, cb, n, 0.0, g, p.dim);
        const double* w = p.w + k0 * p.dim;
        for (long i = 0; i < m * p.dim; ++i) g[i] += lam_w_bar * w[i];
    }
}

void output_weights(FeatureBlocks& blocks, long n, const double* a_dual, long n_tasks, double* weights_rows) {
    for (long b = 0; b < blocks.count(); ++b) {
        const long k0 = blocks.begin(b), m = blocks.size(b);
        const double *h, *deriv;
        blocks.get(b, h, deriv);
        // Row-major m x T block is column-major T x m: A^T H_b.
        blas::gemm(true, false, n_tasks, m, n, 1.0, a_dual, n, h, n, 0.0, weights_rows + k0 * n_tasks, n_tasks);
    }
}

void network_output(const Particles& p, const double* weights_rows, long n_tasks, const Inputs& x,
                    Activation act, long block_size, double* out_rows, int n_threads) {
    FeatureBlocks blocks(p, x, act, block_size, 0, n_threads);
    std::fill(out_rows, out_rows + x.n * n_tasks, 0.0);
    const double scale = 1.0 / double(p.count);
    for (long b = 0; b < blocks.count(); ++b) {
        const long k0 = blocks.begin(b), m = blocks.size(b);
        const double *h, *deriv;
        blocks.get(b, h, deriv);
        // Row-major n x T output is column-major T x n: accumulate a_b^T H_b^T.
        blas::gemm(false, true, n_tasks, x.n, m, scale, weights_rows + k0 * n_tasks, n_tasks, h, x.n, 1.0,
                   out_rows, n_tasks);
    }
}

}  // namespace mfkern
