// The second layer in particle space (Woodbury identity, docs/theory.md, section 8), for N < n:
//   (K + c I)^{-1} R = (1/c) [R - H (N c I + H^T H)^{-1} H^T R],   K = H H^T / N,
// an N x N system instead of an n x n one. Streams over panels of samples, so neither the n x n Gram nor
// the n x N features ever exist: memory O(N^2 + panel * N).
#pragma once
#include "mfkern/features.hpp"

namespace mfkern {

struct WoodburyStats {
    double dof;        // tr[K (K + c I)^{-1}] = N - N c tr(M^{-1}), M = N c I + H^T H
    double condition;  // the 1-norm condition number of M (not of K + c I)
};

// rhs (column-major n x m) <- (K + ridge I)^{-1} rhs. With stats non-null, also the diagnostics (O(N^3)).
// Throws NotPositiveDefinite when N ridge I + H^T H is not numerically positive definite.
// F: precision of the features and of each panel's products (sums over panels and the factorisation are
// in double).
template <class F>
void woodbury_solve(const Particles& p, const Inputs& x, Activation act, double ridge, double* rhs, long m,
                    long sample_panel, int n_threads, WoodburyStats* stats);

}  // namespace mfkern
