// Intrinsic-kernel Gram matrices K = (1/N) H H^T, accumulated over blocks of particles.
#pragma once
#include "mfkern/features.hpp"

namespace mfkern {

// K (n x n, symmetric, both triangles filled) = (1/N) sum over blocks H_b H_b^T. Memory: the n x n output
// plus the blocks' features (all of them only when `blocks` caches them).
void gram_symmetric(FeatureBlocks& blocks, long n, long n_particles, double* k);

// Row-major na x nb cross-Gram (1/N) H(Xa) H(Xb)^T.
void gram_cross(const Particles& p, const Inputs& xa, const Inputs& xb, Activation act, long block_size,
                double* out_rows, int n_threads);

}  // namespace mfkern
