// The second layer in closed form: kernel ridge regression (K + ridge I) A = Y by Cholesky.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace mfkern {

// Raised when K + ridge I is not numerically positive definite (Cholesky breaks down at `minor`).
struct NotPositiveDefinite : std::runtime_error {
    long minor;
    explicit NotPositiveDefinite(long m);
    NotPositiveDefinite(long m, const std::string& message);
};

// 1-norm of a symmetric matrix given by its lower triangle (column-major n x n).
double symmetric_norm1(const double* a, long n);

// Lower Cholesky factor of a (column-major n x n, lower triangle read) in place, in tiles of fixed size:
// the same factor for any thread count. Returns LAPACK-style info (0, or the failing leading minor).
int tiled_cholesky(double* a, long n, int n_threads);

class RidgeFactor {
  public:
    // Factor K + ridge I (K symmetric n x n, any storage order). Throws NotPositiveDefinite. Tiled
    // right-looking Cholesky: tile boundaries are fixed, so the factor is the same for any thread count.
    RidgeFactor(const double* k, long n, double ridge, int n_threads = 0);
    long n() const { return n_; }
    double ridge() const { return ridge_; }
    // B <- (K + ridge I)^{-1} B, B column-major n x nrhs.
    void solve_in_place(double* b, long nrhs) const;
    // Diagnostics from the explicit inverse S = (K + ridge I)^{-1} (O(n^3): not for every step):
    // trace(S) and the exact 1-norm condition number of K + ridge I.
    struct InverseStats {
        double trace, condition;
    };
    InverseStats inverse_stats() const;

  private:
    long n_;
    double ridge_, norm1_;
    std::vector<double> l_;
};

}  // namespace mfkern
