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
using sgemm_t = void(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                     const int*, const float*, const int*, const float*, float*, const int*);
using ssyrk_t = void(const char*, const char*, const int*, const int*, const float*, const float*, const int*,
                     const float*, float*, const int*);
using dgemv_t = void(const char*, const int*, const int*, const double*, const double*, const int*, const double*,
                     const int*, const double*, double*, const int*);
using sgemv_t = void(const char*, const int*, const int*, const float*, const float*, const int*, const float*,
                     const int*, const float*, float*, const int*);
using dpotrf_t = void(const char*, const int*, double*, const int*, int*);
using dpotrs_t = void(const char*, const int*, const int*, const double*, const int*, double*, const int*,
                      int*);
using dpotri_t = void(const char*, const int*, double*, const int*, int*);
using dtrsm_t = void(const char*, const char*, const char*, const char*, const int*, const int*, const double*,
                     const double*, const int*, double*, const int*);

struct Routines {
    dgemm_t* dgemm = nullptr;
    dsyrk_t* dsyrk = nullptr;
    dpotrf_t* dpotrf = nullptr;
    dpotrs_t* dpotrs = nullptr;
    dpotri_t* dpotri = nullptr;
    dtrsm_t* dtrsm = nullptr;
    sgemm_t* sgemm = nullptr;
    ssyrk_t* ssyrk = nullptr;
    dgemv_t* dgemv = nullptr;
    sgemv_t* sgemv = nullptr;
};

// Register external routines (any may be null: that routine then uses the Eigen fallback). Also looks for
// the thread-count controls of the library that provides dgemm (OpenBLAS's, under its plain or scipy
// names), which Session uses.
void set_routines(const Routines& routines);
// Whether the registered BLAS's thread count can be controlled (so Session can pin it).
bool has_thread_control();

// Scope of one core computation. The core calls BLAS from inside its own parallel tiles, and a
// multi-threaded BLAS would both oversubscribe the cores and make results depend on its thread count
// (OpenBLAS splits work by thread). OpenBLAS's thread count is process-wide, so a Session takes a
// process-wide lock, pins the registered BLAS to one thread, and restores the previous count on exit:
// concurrent core calls from several host threads run one after another, each with all its OpenMP threads.
class Session {
  public:
    Session();
    ~Session();
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

  private:
    int previous_;
};
// True when every routine is external (tuned) rather than the Eigen fallback.
bool using_external();

// C = alpha * op(A) op(B) + beta * C; op(A) is m x k, op(B) is k x n.
void gemm(bool trans_a, bool trans_b, long m, long n, long k, double alpha, const double* a, long lda,
          const double* b, long ldb, double beta, double* c, long ldc);
void gemm(bool trans_a, bool trans_b, long m, long n, long k, float alpha, const float* a, long lda,
          const float* b, long ldb, float beta, float* c, long ldc);
// y = alpha * op(A) x + beta * y; A is stored rows x cols (op(A) = A^T when trans), x and y contiguous.
// (A matrix-vector product reads A once, where gemm with one column would first pack it.)
void gemv(bool trans, long rows, long cols, double alpha, const double* a, long lda, const double* x, double beta,
          double* y);
void gemv(bool trans, long rows, long cols, float alpha, const float* a, long lda, const float* x, float beta,
          float* y);
// Lower triangle of C = alpha * A A^T + beta * C; A is n x k. The strict upper triangle is not touched.
void syrk_lower(long n, long k, double alpha, const double* a, long lda, double beta, double* c, long ldc);
void syrk_lower(long n, long k, float alpha, const float* a, long lda, float beta, float* c, long ldc);
// B <- B L^{-T} (B is m x n, L lower triangular n x n).
void trsm_right_lower_trans(long m, long n, const double* l, long ldl, double* b, long ldb);
// Cholesky factor (lower) in place; returns LAPACK's info (0 on success, i > 0: leading minor i not PD).
int potrf_lower(long n, double* a, long lda);
// Solve (L L^T) X = B in place of B (n x nrhs), L from potrf_lower.
void potrs_lower(long n, long nrhs, const double* l, long ldl, double* b, long ldb);
// Lower triangle of (L L^T)^{-1} in place of L; returns info.
int potri_lower(long n, double* a, long lda);

}  // namespace mfkern::blas
