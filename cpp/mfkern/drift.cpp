#include "mfkern/drift.hpp"

#include <algorithm>
#include <vector>

#include "mfkern/blas.hpp"

namespace mfkern {

void drift_from_dual(const Particles& p, const Inputs& x, Activation act, const FeatureCache& cache,
                     const double* a_dual, const double* b_dual, long n_tasks, double lam_a_bar, double lam_w_bar,
                     double* grad_rows, int n_threads) {
    const long n = x.n, T = n_tasks, tiles = (p.count + kParticleTile - 1) / kParticleTile;
    const bool tanh_like = derivative_from_value(act);
#pragma omp parallel num_threads(n_threads) if (tiles > 1)
    {
        const std::size_t len = static_cast<std::size_t>(n) * kParticleTile;
        std::vector<double> c(len), a_w(kParticleTile * T), b_w(b_dual ? kParticleTile * T : 0);
        std::vector<double> h_buf(cache.enabled() ? 0 : len), d_buf(cache.enabled() || tanh_like ? 0 : len);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tiles; ++t) {
            const long k0 = t * kParticleTile, m = std::min(kParticleTile, p.count - k0);
            const double *h, *deriv;
            if (cache.enabled()) {
                h = cache.h(k0);
                deriv = cache.deriv(k0);
            } else {
                feature_tile(p, x, act, k0, m, h_buf.data(), tanh_like ? nullptr : d_buf.data());
                h = h_buf.data();
                deriv = tanh_like ? nullptr : d_buf.data();
            }
            // Second-layer weights of this tile (column-major m x T).
            blas::gemm(true, false, m, T, n, 1.0, h, n, a_dual, n, 0.0, a_w.data(), m);
            if (b_dual) blas::gemm(true, false, m, T, n, 1.0, h, n, b_dual, n, 0.0, b_w.data(), m);
            for (long k = 0; k < m; ++k) {
                double* ck = c.data() + k * n;
                const double* hk = h + k * n;
                std::fill(ck, ck + n, 0.0);
                for (long i = 0; i < T; ++i) {
                    const double ak = a_w[i * m + k];
                    const double* ai = a_dual + i * n;
                    for (long j = 0; j < n; ++j) ck[j] += ai[j] * ak;
                    if (b_dual) {
                        const double bk = b_w[i * m + k];
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
            // Row-major m x dim gradient tile is column-major dim x m: -(lam_a_bar/T) X1^T C.
            double* g = grad_rows + k0 * p.dim;
            blas::gemm(true, false, p.dim, m, n, -lam_a_bar / double(T), x.data(), n, c.data(), n, 0.0, g, p.dim);
            const double* w = p.w + k0 * p.dim;
            for (long i = 0; i < m * p.dim; ++i) g[i] += lam_w_bar * w[i];
        }
    }
}

void output_weights(const Particles& p, const Inputs& x, Activation act, const double* a_dual, long n_tasks,
                    double* weights_rows, int n_threads) {
    const long n = x.n, tiles = (p.count + kParticleTile - 1) / kParticleTile;
#pragma omp parallel num_threads(n_threads) if (tiles > 1)
    {
        std::vector<double> h(static_cast<std::size_t>(n) * kParticleTile);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tiles; ++t) {
            const long k0 = t * kParticleTile, m = std::min(kParticleTile, p.count - k0);
            feature_tile(p, x, act, k0, m, h.data(), nullptr);
            // Row-major m x T tile is column-major T x m: A^T H_tile.
            blas::gemm(true, false, n_tasks, m, n, 1.0, a_dual, n, h.data(), n, 0.0, weights_rows + k0 * n_tasks,
                       n_tasks);
        }
    }
}

void network_output(const Particles& p, const double* weights_rows, long n_tasks, const double* x_rows, long m,
                    long d, Activation act, long panel, double* out_rows, int n_threads) {
    // Parallel over fixed tiles of samples; within a tile, the sum over particles runs in a fixed order.
    const long sample_tile = kGramTile, tiles = (m + sample_tile - 1) / sample_tile;
    if (panel <= 0) panel = default_block_size(std::min(m, sample_tile), p.count);
    const double scale = 1.0 / double(p.count);
#pragma omp parallel num_threads(n_threads) if (tiles > 1)
    {
        std::vector<double> h;
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tiles; ++t) {
            const long j0 = t * sample_tile, len = std::min(sample_tile, m - j0);
            const Inputs xt(x_rows + j0 * d, len, d);
            h.resize(static_cast<std::size_t>(len) * std::min(panel, p.count));
            double* out = out_rows + j0 * n_tasks;
            std::fill(out, out + len * n_tasks, 0.0);
            for (long k0 = 0; k0 < p.count; k0 += panel) {
                const long mk = std::min(panel, p.count - k0);
                feature_tile(p, xt, act, k0, mk, h.data(), nullptr);
                // Row-major len x T output is column-major T x len: accumulate a^T H^T.
                blas::gemm(false, true, n_tasks, len, mk, scale, weights_rows + k0 * n_tasks, n_tasks, h.data(),
                           len, 1.0, out, n_tasks);
            }
        }
    }
}

}  // namespace mfkern
