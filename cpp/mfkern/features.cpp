#include "mfkern/features.hpp"

#include <algorithm>

#include "mfkern/blas.hpp"

namespace mfkern {

Inputs::Inputs(const double* x_rows, long n_, long d) : n(n_), dim(d + 1), x1(static_cast<std::size_t>(n_ * (d + 1))) {
    for (long j = 0; j < n; ++j)
        for (long l = 0; l < d; ++l) x1[l * n + j] = x_rows[j * d + l];
    std::fill(x1.begin() + d * n, x1.end(), 1.0);
}

long default_block_size(long n, long n_particles) {
    const long target = (8L << 20) / (8 * std::max(n, 1L));
    return std::max(1L, std::min(n_particles, std::max(64L, target)));
}

namespace {
// Apply the activation column by column (columns of length len, contiguous), in parallel.
void activate_columns(Activation act, double* z, double* deriv, long len, long cols, int n_threads) {
#pragma omp parallel for schedule(static) num_threads(n_threads) if (len * cols > 16384)
    for (long c = 0; c < cols; ++c) activate(act, z + c * len, deriv ? deriv + c * len : nullptr, len);
}
}  // namespace

void features(const Particles& p, const Inputs& x, Activation act, double* out_rows, int n_threads) {
    // Row-major n x N is column-major N x n: H^T = W X1^T.
    blas::gemm(true, true, p.count, x.n, p.dim, 1.0, p.w, p.dim, x.data(), x.n, 0.0, out_rows, p.count);
    activate_columns(act, out_rows, nullptr, p.count, x.n, n_threads);
}

FeatureBlocks::FeatureBlocks(const Particles& p, const Inputs& x, Activation act, long block_size,
                             std::size_t cache_bytes, int n_threads)
    : p_(p), x_(x), act_(act), block_(block_size > 0 ? std::min(block_size, std::max(p.count, 1L)) : default_block_size(x.n, p.count)),
      n_threads_(n_threads) {
    n_blocks_ = (p.count + block_ - 1) / block_;
    need_deriv_ = !derivative_from_value(act);
    const double bytes = 8.0 * double(x.n) * double(p.count) * (need_deriv_ ? 2.0 : 1.0);
    cache_all_ = bytes <= double(cache_bytes);
    const std::size_t len = static_cast<std::size_t>(x.n) * (cache_all_ ? p.count : block_);
    h_.resize(len);
    if (need_deriv_) deriv_.resize(len);
    done_.assign(static_cast<std::size_t>(n_blocks_), 0);
}

long FeatureBlocks::size(long b) const { return std::min(block_, p_.count - b * block_); }

void FeatureBlocks::compute(long b, double* h, double* deriv) {
    const long k0 = begin(b), m = size(b);
    // Column-major n x m pre-activations Z = X1 W_block^T (W row-major is column-major dim x N).
    blas::gemm(false, false, x_.n, m, p_.dim, 1.0, x_.data(), x_.n, p_.w + k0 * p_.dim, p_.dim, 0.0, h, x_.n);
    activate_columns(act_, h, deriv, x_.n, m, n_threads_);
}

void FeatureBlocks::get(long b, const double*& h, const double*& deriv) {
    const std::size_t offset = cache_all_ ? static_cast<std::size_t>(x_.n) * begin(b) : 0;
    double* hb = h_.data() + offset;
    double* db = need_deriv_ ? deriv_.data() + offset : nullptr;
    if (!cache_all_ || !done_[b]) {
        compute(b, hb, db);
        done_[b] = 1;
    }
    h = hb;
    deriv = db;
}

}  // namespace mfkern
