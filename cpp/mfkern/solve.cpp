#include "mfkern/solve.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "mfkern/blas.hpp"

namespace mfkern {

NotPositiveDefinite::NotPositiveDefinite(long m)
    : std::runtime_error("K + ridge*I is not positive definite (Cholesky failed at leading minor " +
                         std::to_string(m) + ")"),
      minor(m) {}

NotPositiveDefinite::NotPositiveDefinite(long m, const std::string& message) : std::runtime_error(message), minor(m) {}

double symmetric_norm1(const double* a, long n) {
    std::vector<double> col(static_cast<std::size_t>(n), 0.0);
    for (long c = 0; c < n; ++c)
        for (long r = c; r < n; ++r) {
            const double v = std::abs(a[c * n + r]);
            col[c] += v;
            if (r != c) col[r] += v;
        }
    return n ? *std::max_element(col.begin(), col.end()) : 0.0;
}
namespace {
constexpr long kCholeskyTile = 128;
}  // namespace

int tiled_cholesky(double* a, long n, int n_threads) {
    const long tiles = (n + kCholeskyTile - 1) / kCholeskyTile;
    for (long kk = 0; kk < tiles; ++kk) {
        const long k0 = kk * kCholeskyTile, kb = std::min(kCholeskyTile, n - k0);
        const int info = blas::potrf_lower(kb, a + k0 * n + k0, n);
        if (info != 0) return static_cast<int>(k0) + info;
        const long below = tiles - kk - 1;
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (below > 1)
        for (long i = kk + 1; i < tiles; ++i) {
            const long i0 = i * kCholeskyTile, ib = std::min(kCholeskyTile, n - i0);
            blas::trsm_right_lower_trans(ib, kb, a + k0 * n + k0, n, a + k0 * n + i0, n);
        }
        std::vector<std::pair<long, long>> updates;
        for (long i = kk + 1; i < tiles; ++i)
            for (long j = kk + 1; j <= i; ++j) updates.emplace_back(i, j);
        const long count = static_cast<long>(updates.size());
#pragma omp parallel for schedule(dynamic) num_threads(n_threads) if (count > 1)
        for (long t = 0; t < count; ++t) {
            const long i0 = updates[t].first * kCholeskyTile, j0 = updates[t].second * kCholeskyTile;
            const long ib = std::min(kCholeskyTile, n - i0), jb = std::min(kCholeskyTile, n - j0);
            if (i0 == j0)
                blas::syrk_lower(ib, kb, -1.0, a + k0 * n + i0, n, 1.0, a + i0 * n + i0, n);
            else
                blas::gemm(false, true, ib, jb, kb, -1.0, a + k0 * n + i0, n, a + k0 * n + j0, n, 1.0,
                           a + j0 * n + i0, n);
        }
    }
    return 0;
}

RidgeFactor::RidgeFactor(const double* k, long n, double ridge, int n_threads)
    : n_(n), ridge_(ridge), l_(k, k + n * n) {
    for (long i = 0; i < n; ++i) l_[i * n + i] += ridge;
    norm1_ = symmetric_norm1(l_.data(), n);
    const int info = tiled_cholesky(l_.data(), n, n_threads);
    if (info != 0) throw NotPositiveDefinite(info);
    for (long i = 0; i < n; ++i)
        if (!(l_[i * n + i] > 0.0) || !std::isfinite(l_[i * n + i])) throw NotPositiveDefinite(i + 1);
}

void RidgeFactor::solve_in_place(double* b, long nrhs) const { blas::potrs_lower(n_, nrhs, l_.data(), n_, b, n_); }

RidgeFactor::InverseStats RidgeFactor::inverse_stats() const {
    std::vector<double> inv(l_);
    if (blas::potri_lower(n_, inv.data(), n_) != 0) throw NotPositiveDefinite(n_);
    double trace = 0.0;
    for (long i = 0; i < n_; ++i) trace += inv[i * n_ + i];
    return {trace, norm1_ * symmetric_norm1(inv.data(), n_)};
}

}  // namespace mfkern
