#include "mfkern/skinny.hpp"

#include <algorithm>
#include <cstring>

#include "mfkern/activation.hpp"

namespace mfkern {

// One copy of the loops per instruction set (skinny_<isa>.cpp), chosen with the activation loops.
#define MFKERN_DECLARE_SKINNY(isa)                                                                                \
    namespace isa {                                                                                               \
    void multi_dot(const double*, long, long, long, const double*, long, long, double*, long);                    \
    void multi_dot(const float*, long, long, long, const float*, long, long, float*, long);                       \
    void multi_axpy(const double*, long, long, long, const double*, long, long, double*, long, bool);             \
    void multi_axpy(const float*, long, long, long, const float*, long, long, float*, long, bool);                \
    }
MFKERN_DECLARE_SKINNY(generic)
#if defined(MFKERN_HAVE_X86_KERNELS)
MFKERN_DECLARE_SKINNY(avx2)
MFKERN_DECLARE_SKINNY(avx512)
#endif

namespace {

enum class Isa { Generic, Avx2, Avx512 };

Isa chosen_isa() {
    static const Isa isa = [] {
        const char* name = activation_isa();
        if (std::strcmp(name, "avx512") == 0) return Isa::Avx512;
        if (std::strcmp(name, "avx2") == 0) return Isa::Avx2;
        return Isa::Generic;
    }();
    return isa;
}

template <class T>
void dot_serial(const T* a, long rows, long cols, long lda, const T* x, long ldx, long m, T* y, long ldy) {
#if defined(MFKERN_HAVE_X86_KERNELS)
    switch (chosen_isa()) {
        case Isa::Avx512: return avx512::multi_dot(a, rows, cols, lda, x, ldx, m, y, ldy);
        case Isa::Avx2: return avx2::multi_dot(a, rows, cols, lda, x, ldx, m, y, ldy);
        default: break;
    }
#endif
    generic::multi_dot(a, rows, cols, lda, x, ldx, m, y, ldy);
}

template <class T>
void axpy_serial(const T* a, long rows, long cols, long lda, const T* g, long ldg, long m, T* y, long ldy,
                 bool accumulate) {
#if defined(MFKERN_HAVE_X86_KERNELS)
    switch (chosen_isa()) {
        case Isa::Avx512: return avx512::multi_axpy(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate);
        case Isa::Avx2: return avx2::multi_axpy(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate);
        default: break;
    }
#endif
    generic::multi_axpy(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate);
}

// Shares of work: rows in chunks of kDotRows; columns in chunks of kAxpyColumns, a multiple of every
// variant's vector block (16 floats), so a thread's share never changes which columns take the scalar tail.
constexpr long kDotRows = 32;
constexpr long kAxpyColumns = 128;

template <class T>
void dot_parallel(const T* a, long rows, long cols, long lda, const T* x, long ldx, long m, T* y, long ldy,
                  int n_threads) {
    const long chunks = (rows + kDotRows - 1) / kDotRows;
    if (n_threads <= 1 || chunks <= 1) return dot_serial(a, rows, cols, lda, x, ldx, m, y, ldy);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(std::min<long>(n_threads, chunks)))
    for (long c = 0; c < chunks; ++c) {
        const long r0 = c * kDotRows;
        dot_serial(a + r0 * lda, std::min(kDotRows, rows - r0), cols, lda, x, ldx, m, y + r0, ldy);
    }
}

template <class T>
void axpy_parallel(const T* a, long rows, long cols, long lda, const T* g, long ldg, long m, T* y, long ldy,
                   bool accumulate, int n_threads) {
    const long chunks = (cols + kAxpyColumns - 1) / kAxpyColumns;
    if (n_threads <= 1 || chunks <= 1) return axpy_serial(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate);
#pragma omp parallel for schedule(static) num_threads(static_cast<int>(std::min<long>(n_threads, chunks)))
    for (long c = 0; c < chunks; ++c) {
        const long k0 = c * kAxpyColumns;
        axpy_serial(a + k0, rows, std::min(kAxpyColumns, cols - k0), lda, g, ldg, m, y + k0, ldy, accumulate);
    }
}

}  // namespace

void multi_dot(const double* a, long rows, long cols, long lda, const double* x, long ldx, long m, double* y, long ldy,
               int n_threads) {
    dot_parallel(a, rows, cols, lda, x, ldx, m, y, ldy, n_threads);
}
void multi_dot(const float* a, long rows, long cols, long lda, const float* x, long ldx, long m, float* y, long ldy,
               int n_threads) {
    dot_parallel(a, rows, cols, lda, x, ldx, m, y, ldy, n_threads);
}
void multi_axpy(const double* a, long rows, long cols, long lda, const double* g, long ldg, long m, double* y, long ldy,
                bool accumulate, int n_threads) {
    axpy_parallel(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate, n_threads);
}
void multi_axpy(const float* a, long rows, long cols, long lda, const float* g, long ldg, long m, float* y, long ldy,
                bool accumulate, int n_threads) {
    axpy_parallel(a, rows, cols, lda, g, ldg, m, y, ldy, accumulate, n_threads);
}

}  // namespace mfkern
