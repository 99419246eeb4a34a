// Products of a large matrix with a few vectors ("skinny" products), the inner loop of every iterative
// second-layer solve: A V and A^T G with A (rows x cols) row-major and V, G holding m <= a few dozen vectors.
// BLAS gemm is slow at this shape (it packs A for every call); these loops stream A once per few vectors
// from cache with the accumulators in registers. Vectorised per instruction set, chosen at run time with
// the activation loops (activation_isa()).
//
// Determinism: each output entry is one fixed-order sum, whatever the thread count and wherever a thread's
// share of rows (multi_dot) or columns (multi_axpy) starts.
#pragma once

namespace mfkern {

// y[i * ldy + r] = sum_k a[r * lda + k] * x[i * ldx + k]  for r < rows, i < m   (y = (A X^T)^T, column-major)
void multi_dot(const double* a, long rows, long cols, long lda, const double* x, long ldx, long m, double* y, long ldy,
               int n_threads);
void multi_dot(const float* a, long rows, long cols, long lda, const float* x, long ldx, long m, float* y, long ldy,
               int n_threads);

// y[i * ldy + k] = (accumulate ? y[i * ldy + k] : 0) + sum_r a[r * lda + k] * g[i * ldg + r]  for k < cols, i < m
void multi_axpy(const double* a, long rows, long cols, long lda, const double* g, long ldg, long m, double* y, long ldy,
                bool accumulate, int n_threads);
void multi_axpy(const float* a, long rows, long cols, long lda, const float* g, long ldg, long m, float* y, long ldy,
                bool accumulate, int n_threads);

}  // namespace mfkern
