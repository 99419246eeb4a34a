// Intrinsic-kernel Gram matrices K = (1/N) H H^T, summed over panels of particles in a fixed order.
#pragma once
#include "mfkern/features.hpp"

namespace mfkern {

// K (column-major = row-major, n x n, symmetric, both triangles filled) = (1/N) sum over panels of
// `panel` particles of H_p H_p^T. Each panel's update is split into fixed output tiles computed in parallel.
// Memory: the n x n output plus one panel of features, unless `cache` is enabled, in which case the
// features of every particle are stored there for a later pass. F is the precision of the features and of
// each panel's product; the sum over panels is in double.
template <class F>
void gram_symmetric(const Particles& p, const Inputs& x, Activation act, long panel, FeatureCache<F>* cache,
                    double* k, int n_threads);

// Lower triangle of out (column-major n x n, double) += scale * h h^T, h column-major n x k (leading
// dimension ldh), split into fixed output tiles computed in parallel (the same result for any thread count).
// For float h, each tile's product is formed in float and added to out in double.
void accumulate_lower(long n, long k, double scale, const double* h, long ldh, double* out, int n_threads);
void accumulate_lower(long n, long k, double scale, const float* h, long ldh, double* out, int n_threads);

// Row-major na x nb cross-Gram (1/N) H(Xa) H(Xb)^T (double precision).
void gram_cross(const Particles& p, const Inputs& xa, const Inputs& xb, Activation act, long panel,
                double* out_rows, int n_threads);

}  // namespace mfkern
