// Where mfkern reaches BLAS/LAPACK.
//
// The core never links a BLAS. A host (the Python bindings) may register function pointers to a tuned,
// Fortran-ABI BLAS/LAPACK at run time (the ones scipy ships, taken from scipy.linalg.cython_blas), which
// inherits that library's run-time CPU dispatch from a portable binary. Without registration every routine
// falls back to Eigen, so the core stays usable and testable on its own. All matrices are column-major.
#pragma once

namespace mfkern::blas {

using dgemm_t = void(const char*, const char*, const int*, const int*, const int*, const double*,
                     const double*, const int*, const double*, const int*, const double*, double*,
                     const int*);
using dsyrk_t = void(const char*, const char*, const int*, const int*, const double*, const double*,
                     const int*, const double*, double*, const int*);
using dpotrf_t = void(const char*, const int*, double*, const int*, int*);
using dpotrs_t = void(const char*, const int*, const int*, const double*, const int*, double*, const int*,
                      int*);
using dpotri_t = void(const char*, const int*, double*, const int*, int*);

struct Routines {
    dgemm_t* dgemm = nullptr;
    dsyrk_t* dsyrk = nullptr;
    dpotrf_t* dpotrf = nullptr;
    dpotrs_t* dpotrs = nullptr;
    dpotri_t* dpotri = nullptr;
};

// Register external routines (any may be null: that routine then uses the Eigen fallback).
void set_routines(const Routines& routines);
// True when every routine is external (tuned) rather than the Eigen fallback.
bool using_external();

// C = alpha * op(A) op(B) + beta * C; op(A) is m x k, op(B) is k x n.
void gemm(bool trans_a, bool trans_b, long m, long n, long k, double alpha, const double* a, long lda,
          const double* b, long ldb, double beta, double* c, long ldc);
// Lower triangle of C = alpha * A A^T + beta * C; A is n x k. The strict upper triangle is not touched.
void syrk_lower(long n, long k, double alpha, const double* a, long lda, double beta, double* c, long ldc);
// Cholesky factor (lower) in place; returns LAPACK's info (0 on success, i > 0: leading minor i not PD).
int potrf_lower(long n, double* a, long lda);
// Solve (L L^T) X = B in place of B (n x nrhs), L from potrf_lower.
void potrs_lower(long n, long nrhs, const double* l, long ldl, double* b, long ldb);
// Lower triangle of (L L^T)^{-1} in place of L; returns info.
int potri_lower(long n, double* a, long lda);

}  // namespace mfkern::blas
