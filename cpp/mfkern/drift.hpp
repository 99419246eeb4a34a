// The particle drift (gradient of the first variation, PAPER.md sections 3 and 5) and the network's
// second-layer weights and output, all computed a block of particles at a time.
#pragma once
#include "mfkern/features.hpp"

namespace mfkern {

// grad (row-major N x dim) = -(lam_a_bar/T) C^T X1 + lam_w_bar W with
//   C = (A a^T - B b^T) o h'(Z),  a = H^T A,  b = H^T B.
// A = S Y and (label-noise procedure) B = S E are column-major n x T; B may be null (no label noise).
void drift_from_dual(FeatureBlocks& blocks, const Particles& p, const Inputs& x, const double* a_dual,
                     const double* b_dual, long n_tasks, double lam_a_bar, double lam_w_bar, double* grad_rows,
                     int n_threads);

// Second-layer weights a_k = H[:,k]^T A (row-major N x T) from the dual coefficients A (column-major n x T).
void output_weights(FeatureBlocks& blocks, long n, const double* a_dual, long n_tasks, double* weights_rows);

// Network output f(x) = (1/N) sum_k a_k h(x; w_k) at the rows of x, row-major m x T.
void network_output(const Particles& p, const double* weights_rows, long n_tasks, const Inputs& x,
                    Activation act, long block_size, double* out_rows, int n_threads);

}  // namespace mfkern
