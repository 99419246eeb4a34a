#include "mfkern/solve.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "mfkern/blas.hpp"

namespace mfkern {

NotPositiveDefinite::NotPositiveDefinite(long m)
    : std::runtime_error("K + ridge*I is not positive definite (Cholesky failed at leading minor " +
                         std::to_string(m) + ")"),
      minor(m) {}

namespace {
// 1-norm of a symmetric matrix given by its lower triangle (column-major).
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
}  // namespace

RidgeFactor::RidgeFactor(const double* k, long n, double ridge)
    : n_(n), ridge_(ridge), l_(k, k + n * n) {
    for (long i = 0; i < n; ++i) l_[i * n + i] += ridge;
    norm1_ = symmetric_norm1(l_.data(), n);
    const int info = blas::potrf_lower(n, l_.data(), n);
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
