// The particle drift (gradient of the first variation, docs/theory.md, sections 4 and 6) and the network's
// second-layer weights and output. Work is split over fixed tiles of particles (or samples).
#pragma once
#include "mfkern/features.hpp"

namespace mfkern {

// grad (row-major N x dim) = -(lam_a_bar/T) C^T X1 + lam_w_bar W with
//   C = (A a^T - B b^T) o h'(Z),  a = H^T A,  b = H^T B.
// A = S Y and (label-noise procedure) B = S E are column-major n x T; B may be null (no label noise).
// Features come from `cache` when it is enabled (and filled), and are recomputed otherwise. With F = float
// the features and the tile products are single precision and the gradient is accumulated in double.
template <class F>
void drift_from_dual(const Particles& p, const Inputs& x, Activation act, const FeatureCache<F>& cache,
                     const double* a_dual, const double* b_dual, long n_tasks, double lam_a_bar, double lam_w_bar,
                     double* grad_rows, int n_threads);

// Second-layer weights a_k = H[:,k]^T A (row-major N x T) from the dual coefficients A (column-major n x T).
void output_weights(const Particles& p, const Inputs& x, Activation act, const double* a_dual, long n_tasks,
                    double* weights_rows, int n_threads);

// Network output f(x) = (1/N) sum_k a_k h(x; w_k) at the rows of x_rows (row-major m x d): row-major m x T.
void network_output(const Particles& p, const double* weights_rows, long n_tasks, const double* x_rows, long m,
                    long d, Activation act, long panel, double* out_rows, int n_threads);

}  // namespace mfkern
