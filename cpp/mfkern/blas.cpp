#include "mfkern/blas.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>
#include <string>
#include <climits>
#include <mutex>
#include <stdexcept>

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>
#define MFKERN_HAVE_DLADDR 1
#endif

namespace mfkern::blas {
namespace {

Routines g_routines;
using get_threads_t = int();
using set_threads_t = void(int);
get_threads_t* g_get_threads = nullptr;
set_threads_t* g_set_threads = nullptr;
std::mutex g_session_mutex;

// The thread-count controls exported by the shared library that contains `symbol`, if any.
void find_thread_control(void* symbol) {
    g_get_threads = nullptr;
    g_set_threads = nullptr;
#ifdef MFKERN_HAVE_DLADDR
    Dl_info info;
    if (!symbol || !dladdr(symbol, &info) || !info.dli_fname) return;
    void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) return;
    static const char* const prefixes[] = {"scipy_openblas", "openblas", "scipy_openblas64_"};
    for (const char* prefix : prefixes) {
        const std::string p(prefix);
        void* get = dlsym(lib, (p + "_get_num_threads").c_str());
        void* set = dlsym(lib, (p + "_set_num_threads").c_str());
        if (get && set) {
            g_get_threads = reinterpret_cast<get_threads_t*>(get);
            g_set_threads = reinterpret_cast<set_threads_t*>(set);
            break;
        }
    }
    dlclose(lib);  // RTLD_NOLOAD took a reference of its own: the library stays loaded by its owner
#endif
}

template <class F>
using MatrixT = Eigen::Matrix<F, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
template <class F>
using ConstMapT = Eigen::Map<const MatrixT<F>, 0, Eigen::OuterStride<>>;
template <class F>
using MapT = Eigen::Map<MatrixT<F>, 0, Eigen::OuterStride<>>;
using Matrix = MatrixT<double>;
using ConstMap = ConstMapT<double>;
using Map = MapT<double>;

template <class F>
void eigen_gemm(bool trans_a, bool trans_b, long m, long n, long k, F alpha, const F* a, long lda, const F* b,
                long ldb, F beta, F* c, long ldc) {
    MapT<F> C(c, m, n, Eigen::OuterStride<>(ldc));
    if (beta == F(0)) C.setZero(); else if (beta != F(1)) C *= beta;
    if (k == 0) return;
    ConstMapT<F> A(a, trans_a ? k : m, trans_a ? m : k, Eigen::OuterStride<>(lda));
    ConstMapT<F> B(b, trans_b ? n : k, trans_b ? k : n, Eigen::OuterStride<>(ldb));
    if (trans_a && trans_b) C.noalias() += alpha * A.transpose() * B.transpose();
    else if (trans_a) C.noalias() += alpha * A.transpose() * B;
    else if (trans_b) C.noalias() += alpha * A * B.transpose();
    else C.noalias() += alpha * A * B;
}

template <class F>
void eigen_syrk_lower(long n, long k, F alpha, const F* a, long lda, F beta, F* c, long ldc) {
    MapT<F> C(c, n, n, Eigen::OuterStride<>(ldc));
    if (beta == F(0)) C.template triangularView<Eigen::Lower>().setZero();
    else if (beta != F(1)) C.template triangularView<Eigen::Lower>() *= beta;
    if (k == 0) return;
    ConstMapT<F> A(a, n, k, Eigen::OuterStride<>(lda));
    C.template selfadjointView<Eigen::Lower>().rankUpdate(A, alpha);
}

int to_int(long v) {
    // Fortran BLAS takes 32-bit integers: refuse (rather than wrap) sizes it cannot represent.
    if (v < 0 || v > INT_MAX) throw std::length_error("mfkern: matrix dimension exceeds the BLAS integer range");
    return static_cast<int>(v);
}

}  // namespace

void set_routines(const Routines& routines) {
    std::lock_guard<std::mutex> lock(g_session_mutex);
    g_routines = routines;
    find_thread_control(reinterpret_cast<void*>(routines.dgemm));
}

bool has_thread_control() { return g_get_threads && g_set_threads; }

Session::Session() : previous_(0) {
    g_session_mutex.lock();
    if (g_get_threads && g_set_threads) {
        previous_ = g_get_threads();
        if (previous_ != 1) g_set_threads(1);
    }
}

Session::~Session() {
    if (g_get_threads && g_set_threads && previous_ != 1 && previous_ > 0) g_set_threads(previous_);
    g_session_mutex.unlock();
}

bool using_external() {
    return g_routines.dgemm && g_routines.dsyrk && g_routines.dpotrf && g_routines.dpotrs && g_routines.dpotri &&
           g_routines.dtrsm && g_routines.sgemm && g_routines.ssyrk && g_routines.dgemv && g_routines.sgemv;
}

void gemm(bool trans_a, bool trans_b, long m, long n, long k, double alpha, const double* a, long lda,
          const double* b, long ldb, double beta, double* c, long ldc) {
    if (m == 0 || n == 0) return;
    if (g_routines.dgemm) {
        const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
        const int im = to_int(m), in = to_int(n), ik = to_int(k), ilda = to_int(lda), ildb = to_int(ldb),
                  ildc = to_int(ldc);
        g_routines.dgemm(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
        return;
    }
    eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(bool trans_a, bool trans_b, long m, long n, long k, float alpha, const float* a, long lda,
          const float* b, long ldb, float beta, float* c, long ldc) {
    if (m == 0 || n == 0) return;
    if (g_routines.sgemm) {
        const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
        const int im = to_int(m), in = to_int(n), ik = to_int(k), ilda = to_int(lda), ildb = to_int(ldb),
                  ildc = to_int(ldc);
        g_routines.sgemm(&ta, &tb, &im, &in, &ik, &alpha, a, &ilda, b, &ildb, &beta, c, &ildc);
        return;
    }
    eigen_gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <class F>
void eigen_gemv(bool trans, long rows, long cols, F alpha, const F* a, long lda, const F* x, F beta, F* y) {
    ConstMapT<F> A(a, rows, cols, Eigen::OuterStride<>(lda));
    const long out = trans ? cols : rows, in = trans ? rows : cols;
    Eigen::Map<const Eigen::Matrix<F, Eigen::Dynamic, 1>> X(x, in);
    Eigen::Map<Eigen::Matrix<F, Eigen::Dynamic, 1>> Y(y, out);
    if (beta == F(0)) Y.setZero();
    else Y *= beta;
    if (trans) Y.noalias() += alpha * A.transpose() * X;
    else Y.noalias() += alpha * A * X;
}

void gemv(bool trans, long rows, long cols, double alpha, const double* a, long lda, const double* x, double beta,
          double* y) {
    if (rows == 0 || cols == 0) return;
    if (g_routines.dgemv) {
        const char t = trans ? 'T' : 'N';
        const int ir = to_int(rows), ic = to_int(cols), ilda = to_int(lda), one = 1;
        g_routines.dgemv(&t, &ir, &ic, &alpha, a, &ilda, x, &one, &beta, y, &one);
        return;
    }
    eigen_gemv(trans, rows, cols, alpha, a, lda, x, beta, y);
}

void gemv(bool trans, long rows, long cols, float alpha, const float* a, long lda, const float* x, float beta,
          float* y) {
    if (rows == 0 || cols == 0) return;
    if (g_routines.sgemv) {
        const char t = trans ? 'T' : 'N';
        const int ir = to_int(rows), ic = to_int(cols), ilda = to_int(lda), one = 1;
        g_routines.sgemv(&t, &ir, &ic, &alpha, a, &ilda, x, &one, &beta, y, &one);
        return;
    }
    eigen_gemv(trans, rows, cols, alpha, a, lda, x, beta, y);
}

void syrk_lower(long n, long k, double alpha, const double* a, long lda, double beta, double* c, long ldc) {
    if (n == 0) return;
    if (g_routines.dsyrk) {
        const char uplo = 'L', trans = 'N';
        const int in = to_int(n), ik = to_int(k), ilda = to_int(lda), ildc = to_int(ldc);
        g_routines.dsyrk(&uplo, &trans, &in, &ik, &alpha, a, &ilda, &beta, c, &ildc);
        return;
    }
    eigen_syrk_lower(n, k, alpha, a, lda, beta, c, ldc);
}

void syrk_lower(long n, long k, float alpha, const float* a, long lda, float beta, float* c, long ldc) {
    if (n == 0) return;
    if (g_routines.ssyrk) {
        const char uplo = 'L', trans = 'N';
        const int in = to_int(n), ik = to_int(k), ilda = to_int(lda), ildc = to_int(ldc);
        g_routines.ssyrk(&uplo, &trans, &in, &ik, &alpha, a, &ilda, &beta, c, &ildc);
        return;
    }
    eigen_syrk_lower(n, k, alpha, a, lda, beta, c, ldc);
}

void trsm_right_lower_trans(long m, long n, const double* l, long ldl, double* b, long ldb) {
    if (m == 0 || n == 0) return;
    if (g_routines.dtrsm) {
        const char side = 'R', uplo = 'L', trans = 'T', diag = 'N';
        const double one = 1.0;
        const int im = to_int(m), in = to_int(n), ildl = to_int(ldl), ildb = to_int(ldb);
        g_routines.dtrsm(&side, &uplo, &trans, &diag, &im, &in, &one, l, &ildl, b, &ildb);
        return;
    }
    ConstMap L(l, n, n, Eigen::OuterStride<>(ldl));
    Map B(b, m, n, Eigen::OuterStride<>(ldb));
    L.transpose().triangularView<Eigen::Upper>().solveInPlace<Eigen::OnTheRight>(B);
}

int potrf_lower(long n, double* a, long lda) {
    if (n == 0) return 0;
    if (g_routines.dpotrf) {
        const char uplo = 'L';
        const int in = to_int(n), ilda = to_int(lda);
        int info = 0;
        g_routines.dpotrf(&uplo, &in, a, &ilda, &info);
        return info;
    }
    Map A(a, n, n, Eigen::OuterStride<>(lda));
    // Eigen's in-place LLT reports failure without the minor's index; report the first non-positive pivot.
    Eigen::LLT<Eigen::Ref<Matrix, 0, Eigen::OuterStride<>>, Eigen::Lower> llt(A);
    if (llt.info() == Eigen::Success) return 0;
    for (long i = 0; i < n; ++i)
        if (!(A(i, i) > 0.0)) return static_cast<int>(i + 1);
    return static_cast<int>(n);
}

void potrs_lower(long n, long nrhs, const double* l, long ldl, double* b, long ldb) {
    if (n == 0 || nrhs == 0) return;
    if (g_routines.dpotrs) {
        const char uplo = 'L';
        const int in = to_int(n), inrhs = to_int(nrhs), ildl = to_int(ldl), ildb = to_int(ldb);
        int info = 0;
        g_routines.dpotrs(&uplo, &in, &inrhs, l, &ildl, b, &ildb, &info);
        return;
    }
    ConstMap L(l, n, n, Eigen::OuterStride<>(ldl));
    Map B(b, n, nrhs, Eigen::OuterStride<>(ldb));
    L.triangularView<Eigen::Lower>().solveInPlace(B);
    L.transpose().triangularView<Eigen::Upper>().solveInPlace(B);
}

int potri_lower(long n, double* a, long lda) {
    if (n == 0) return 0;
    if (g_routines.dpotri) {
        const char uplo = 'L';
        const int in = to_int(n), ilda = to_int(lda);
        int info = 0;
        g_routines.dpotri(&uplo, &in, a, &ilda, &info);
        return info;
    }
    Map A(a, n, n, Eigen::OuterStride<>(lda));
    Matrix inverse = Matrix::Identity(n, n);
    A.triangularView<Eigen::Lower>().solveInPlace(inverse);
    inverse = (inverse.transpose() * inverse).eval();
    A.triangularView<Eigen::Lower>() = inverse;
    return 0;
}

}  // namespace mfkern::blas
