#include "mfkern/gram.hpp"

#include <algorithm>
#include <vector>

#include "mfkern/blas.hpp"

namespace mfkern {

void gram_symmetric(FeatureBlocks& blocks, long n, long n_particles, double* k) {
    std::fill(k, k + n * n, 0.0);
    const double scale = 1.0 / double(n_particles);
    for (long b = 0; b < blocks.count(); ++b) {
        const double *h, *deriv;
        blocks.get(b, h, deriv);
        blas::syrk_lower(n, blocks.size(b), scale, h, n, 1.0, k, n);
    }
    for (long c = 0; c < n; ++c)
        for (long r = c + 1; r < n; ++r) k[r * n + c] = k[c * n + r];
}

void gram_cross(const Particles& p, const Inputs& xa, const Inputs& xb, Activation act, long block_size,
                double* out_rows, int n_threads) {
    const long block = block_size > 0 ? block_size : default_block_size(std::max(xa.n, xb.n), p.count);
    FeatureBlocks ba(p, xa, act, block, 0, n_threads), bb(p, xb, act, block, 0, n_threads);
    std::fill(out_rows, out_rows + xa.n * xb.n, 0.0);
    const double scale = 1.0 / double(p.count);
    for (long b = 0; b < ba.count(); ++b) {
        const double *ha, *hb, *unused;
        ba.get(b, ha, unused);
        bb.get(b, hb, unused);
        // Row-major na x nb is column-major nb x na: accumulate H_b(Xb) H_b(Xa)^T.
        blas::gemm(false, true, xb.n, xa.n, ba.size(b), scale, hb, xb.n, ha, xa.n, 1.0, out_rows, xb.n);
    }
}

}  // namespace mfkern
