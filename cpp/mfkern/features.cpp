#include "mfkern/features.hpp"

#include <algorithm>

#include "mfkern/blas.hpp"

namespace mfkern {

Inputs::Inputs(const double* x_rows, long n_, long d) : n(n_), dim(d + 1), x1(static_cast<std::size_t>(n_ * (d + 1))) {
    for (long j = 0; j < n; ++j)
        for (long l = 0; l < d; ++l) x1[l * n + j] = x_rows[j * d + l];
    std::fill(x1.begin() + d * n, x1.end(), 1.0);
    x1f.assign(x1.begin(), x1.end());
}

Inputs::Inputs(const Inputs& all, long j0, long count)
    : n(count), dim(all.dim), x1(static_cast<std::size_t>(count * all.dim)) {
    for (long l = 0; l < dim; ++l)
        std::copy(all.x1.begin() + l * all.n + j0, all.x1.begin() + l * all.n + j0 + count, x1.begin() + l * count);
    x1f.assign(x1.begin(), x1.end());
}

long default_block_size(long n, long n_particles) {
    // At least 8 MiB of features per panel, and at least n particles: every panel's rank-m update streams
    // the n x n output through memory once, so panels of m >= n keep that traffic below the update's
    // arithmetic, while the panel's memory stays below the output's own (n x m <= n x n).
    const long target = std::max((8L << 20) / (8 * std::max(n, 1L)), n);
    const long rounded = std::max(kParticleTile, target / kParticleTile * kParticleTile);
    return std::max(1L, std::min({n_particles, rounded, 8192L}));
}

void feature_tile(const Particles& p, const Inputs& x, Activation act, long k0, long m, double* h, double* deriv) {
    // Column-major n x m pre-activations Z = X1 W_tile^T (W row-major is column-major dim x N).
    blas::gemm(false, false, x.n, m, p.dim, 1.0, x.data(), x.n, p.w + k0 * p.dim, p.dim, 0.0, h, x.n);
    activate(act, h, deriv, x.n * m);
}

void feature_tile(const Particles& p, const Inputs& x, Activation act, long k0, long m, float* h, float* deriv) {
    float w[kParticleTile * 64];  // the tile's weights in float (dim <= 64 on this path, else heap)
    std::vector<float> heap;
    float* wt = w;
    if (m * p.dim > kParticleTile * 64) {
        heap.resize(static_cast<std::size_t>(m * p.dim));
        wt = heap.data();
    }
    for (long i = 0; i < m * p.dim; ++i) wt[i] = static_cast<float>(p.w[k0 * p.dim + i]);
    blas::gemm(false, false, x.n, m, p.dim, 1.0f, x.columns<float>(), x.n, wt, p.dim, 0.0f, h, x.n);
    activate(act, h, deriv, x.n * m);
}

void features(const Particles& p, const Inputs& x, Activation act, double* out_rows, int n_threads) {
    // Row-major n x N is column-major N x n (H^T = W X1^T): tile over particles = blocks of its rows.
    const long tiles = (p.count + kParticleTile - 1) / kParticleTile;
#pragma omp parallel for schedule(dynamic) num_threads(n_threads)
    for (long t = 0; t < tiles; ++t) {
        const long k0 = t * kParticleTile, m = std::min(kParticleTile, p.count - k0);
        blas::gemm(true, true, m, x.n, p.dim, 1.0, p.w + k0 * p.dim, p.dim, x.data(), x.n, 0.0, out_rows + k0,
                   p.count);
        for (long j = 0; j < x.n; ++j) activate(act, out_rows + j * p.count + k0, nullptr, m);
    }
}

void features(const Particles& p, const Inputs& x, Activation act, float* out_rows, int n_threads) {
    const long tiles = (p.count + kParticleTile - 1) / kParticleTile;
#pragma omp parallel num_threads(n_threads)
    {
        std::vector<float> w(static_cast<std::size_t>(kParticleTile * p.dim));
#pragma omp for schedule(dynamic)
        for (long t = 0; t < tiles; ++t) {
            const long k0 = t * kParticleTile, m = std::min(kParticleTile, p.count - k0);
            for (long i = 0; i < m * p.dim; ++i) w[i] = static_cast<float>(p.w[k0 * p.dim + i]);
            blas::gemm(true, true, m, x.n, p.dim, 1.0f, w.data(), p.dim, x.columns<float>(), x.n, 0.0f,
                       out_rows + k0, p.count);
            for (long j = 0; j < x.n; ++j) activate(act, out_rows + j * p.count + k0, static_cast<float*>(nullptr), m);
        }
    }
}

template <class F>
FeatureCache<F>::FeatureCache(const Particles& p, const Inputs& x, Activation act, std::size_t cache_bytes)
    : p_(p), x_(x), act_(act), n_(x.n) {
    need_deriv_ = !derivative_from_value(act);
    const double bytes = double(sizeof(F)) * double(x.n) * double(p.count) * (need_deriv_ ? 2.0 : 1.0);
    enabled_ = bytes <= double(cache_bytes);
    if (enabled_) {
        h_.resize(static_cast<std::size_t>(x.n) * p.count);
        if (need_deriv_) deriv_.resize(h_.size());
    }
}

template <class F>
void FeatureCache<F>::fill(long k0, long m, int n_threads) {
    const long tiles = (m + kParticleTile - 1) / kParticleTile;
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (tiles > 1)
    for (long t = 0; t < tiles; ++t) {
        const long a = k0 + t * kParticleTile, len = std::min(kParticleTile, k0 + m - a);
        F* d = need_deriv_ ? deriv_.data() + static_cast<std::size_t>(n_) * a : nullptr;
        feature_tile(p_, x_, act_, a, len, h_.data() + static_cast<std::size_t>(n_) * a, d);
    }
}

template class FeatureCache<double>;
template class FeatureCache<float>;

}  // namespace mfkern
