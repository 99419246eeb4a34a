#include "mfkern/drift.hpp"

#include <algorithm>
#include <memory>
#include <type_traits>
#include <vector>

#include "mfkern/blas.hpp"
#include "mfkern/skinny.hpp"

namespace mfkern {

template <class F>
void drift_from_dual(const Particles& p, const Inputs& x, Activation act, const FeatureCache<F>& cache,
                     const double* a_dual, const double* b_dual, long n_tasks, double lam_a_bar, double lam_w_bar,
                     double* grad_rows, int n_threads) {
    const long n = x.n, T = n_tasks, tiles = (p.count + kParticleTile - 1) / kParticleTile;
    const bool tanh_like = derivative_from_value(act);
    // The dual coefficients in the features' precision (a copy only for float).
    auto in_precision = [n, T](const double* src, std::vector<F>& copy) -> const F* {
        if (!src) return nullptr;
        if constexpr (std::is_same<F, double>::value) {
            return src;
        } else {
            copy.assign(src, src + n * T);
            return copy.data();
        }
    };
    std::vector<F> a_copy, b_copy;
    const F* a = in_precision(a_dual, a_copy);
    const F* bd = in_precision(b_dual, b_copy);
    const double grad_scale = -lam_a_bar / double(T);
#pragma omp parallel num_threads(n_threads) if (tiles > 1)
    {
        const std::size_t len = static_cast<std::size_t>(n) * kParticleTile;
        std::unique_ptr<F[]> c(new F[len]);  // every entry is written before it is read
        std::vector<F> a_w(kParticleTile * T), b_w(bd ? kParticleTile * T : 0);
        std::vector<F> w_rows(T > 1 ? kParticleTile * T : 0), v_rows(T > 1 && bd ? kParticleTile * T : 0);
        std::vector<F> h_buf(cache.enabled() ? 0 : len), d_buf(cache.enabled() || tanh_like ? 0 : len);
        std::vector<F> g_tile(static_cast<std::size_t>(p.dim) * kParticleTile);
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tiles; ++t) {
            const long k0 = t * kParticleTile, m = std::min(kParticleTile, p.count - k0);
            const F *h, *deriv;
            if (cache.enabled()) {
                h = cache.h(k0);
                deriv = cache.deriv(k0);
            } else {
                feature_tile(p, x, act, k0, m, h_buf.data(), tanh_like ? nullptr : d_buf.data());
                h = h_buf.data();
                deriv = tanh_like ? nullptr : d_buf.data();
            }
            // Second-layer weights of this tile (column-major m x T).
            blas::gemm(true, false, m, T, n, F(1), h, n, a, n, F(0), a_w.data(), m);
            if (bd) blas::gemm(true, false, m, T, n, F(1), h, n, bd, n, F(0), b_w.data(), m);
            if (T > 1) {  // C = A a_w^T - B b_w^T (column k: particle k), every task in each pass over A
                for (long k = 0; k < m; ++k)
                    for (long i = 0; i < T; ++i) {
                        w_rows[k * T + i] = a_w[i * m + k];
                        if (bd) v_rows[k * T + i] = -b_w[i * m + k];
                    }
                multi_axpy(a, T, n, n, w_rows.data(), T, m, c.get(), n, false, 1);
                if (bd) multi_axpy(bd, T, n, n, v_rows.data(), T, m, c.get(), n, true, 1);
            }
            for (long k = 0; k < m; ++k) {
                F* ck = c.get() + k * n;
                const F* hk = h + k * n;
                if (T == 1 && tanh_like) {  // one pass: C = (A a_k - B b_k) o (1 - h^2), the same numbers
                    const F ak = a_w[k];
                    if (bd) {
                        const F bk = b_w[k];
                        for (long j = 0; j < n; ++j) ck[j] = (a[j] * ak - bd[j] * bk) * (F(1) - hk[j] * hk[j]);
                    } else {
                        for (long j = 0; j < n; ++j) ck[j] = a[j] * ak * (F(1) - hk[j] * hk[j]);
                    }
                    continue;
                }
                if (T == 1) {  // (the same operations as the loops over tasks had: bitwise unchanged)
                    std::fill(ck, ck + n, F(0));
                    const F ak = a_w[k];
                    for (long j = 0; j < n; ++j) ck[j] += a[j] * ak;
                    if (bd) {
                        const F bk = b_w[k];
                        for (long j = 0; j < n; ++j) ck[j] -= bd[j] * bk;
                    }
                }
                if (tanh_like) {
                    for (long j = 0; j < n; ++j) ck[j] *= F(1) - hk[j] * hk[j];
                } else {
                    const F* dk = deriv + k * n;
                    for (long j = 0; j < n; ++j) ck[j] *= dk[j];
                }
            }
            // Row-major m x dim gradient tile is column-major dim x m: -(lam_a_bar/T) X1^T C + lam_w_bar W.
            double* g = grad_rows + k0 * p.dim;
            const double* w = p.w + k0 * p.dim;
            if constexpr (std::is_same<F, double>::value) {
                blas::gemm(true, false, p.dim, m, n, grad_scale, x.data(), n, c.get(), n, 0.0, g, p.dim);
                for (long i = 0; i < m * p.dim; ++i) g[i] += lam_w_bar * w[i];
            } else {
                blas::gemm(true, false, p.dim, m, n, 1.0f, x.columns<float>(), n, c.get(), n, 0.0f, g_tile.data(),
                           p.dim);
                for (long i = 0; i < m * p.dim; ++i) g[i] = grad_scale * double(g_tile[i]) + lam_w_bar * w[i];
            }
        }
    }
}

template void drift_from_dual<double>(const Particles&, const Inputs&, Activation, const FeatureCache<double>&,
                                      const double*, const double*, long, double, double, double*, int);
template void drift_from_dual<float>(const Particles&, const Inputs&, Activation, const FeatureCache<float>&,
                                     const double*, const double*, long, double, double, double*, int);

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
