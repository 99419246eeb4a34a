// Features H[j,k] = h(x_j . u_k + b_k), evaluated a block of particles at a time.
//
// Reproducibility: all work is cut into pieces whose boundaries depend only on the problem's size and the
// block size, never on the thread count, and every sum over particles is taken in a fixed order. Threads
// only decide who computes a piece, so results are bitwise identical for any number of threads. BLAS is
// always called single-threaded (blas::Session pins it), from inside these pieces.
//
// Precision: features can be evaluated in double or in float (the float32 option: half the memory traffic
// and twice the SIMD width for the dominant products), in which case every sum over panels or tiles and
// every factorisation is still accumulated in double.
#pragma once
#include <cstddef>
#include <vector>

#include "mfkern/activation.hpp"

namespace mfkern {

// Inputs with the bias column appended, X1 = [X, 1], stored column-major (n x dim, dim = d + 1), in double
// and in float.
struct Inputs {
    long n = 0, dim = 0;
    std::vector<double> x1;
    std::vector<float> x1f;
    Inputs(const double* x_rows, long n, long d);  // x_rows: row-major n x d
    Inputs(const Inputs& all, long j0, long count);  // rows j0 .. j0+count-1 of another Inputs
    const double* data() const { return x1.data(); }
    template <class F>
    const F* columns() const;
};

template <>
inline const double* Inputs::columns<double>() const { return x1.data(); }
template <>
inline const float* Inputs::columns<float>() const { return x1f.data(); }

// Particles: row-major N x dim (rows w_k = (u_k, b_k)), not owned.
struct Particles {
    const double* w;
    long count, dim;
};

// Particles per unit of parallel work on features and drift.
constexpr long kParticleTile = 64;
// Rows/columns per tile of an output Gram matrix.
constexpr long kGramTile = 512;
// Up to this n, the Gram is summed as kGramGroups partial Grams over particles (few output tiles to share).
constexpr long kSmallGram = 512;
constexpr long kGramGroups = 8;

// The default number of particles per panel of the Gram's sum for n samples: about 8 MiB of features, and
// at least n (at most 8192, at most N).
long default_block_size(long n, long n_particles);

// Single-threaded: column-major n x m features of particles k0..k0+m-1 (and h' if deriv is non-null).
void feature_tile(const Particles& p, const Inputs& x, Activation act, long k0, long m, double* h, double* deriv);
void feature_tile(const Particles& p, const Inputs& x, Activation act, long k0, long m, float* h, float* deriv);

// Row-major n x N features of all particles (the whole matrix: for small problems and tests).
void features(const Particles& p, const Inputs& x, Activation act, double* out_rows, int n_threads);
void features(const Particles& p, const Inputs& x, Activation act, float* out_rows, int n_threads);

// The features of every particle kept in memory (column-major n x N) when they fit in cache_bytes, so that
// the drift pass after the Gram does not recompute them; otherwise nothing is stored.
template <class F>
class FeatureCache {
  public:
    FeatureCache(const Particles& p, const Inputs& x, Activation act, std::size_t cache_bytes);
    bool enabled() const { return enabled_; }
    // Compute the features of particles k0..k0+m-1 into the cache (in parallel over particle tiles).
    void fill(long k0, long m, int n_threads);
    const F* h(long k0) const { return h_.data() + static_cast<std::size_t>(n_) * k0; }
    const F* deriv(long k0) const { return need_deriv_ ? deriv_.data() + static_cast<std::size_t>(n_) * k0 : nullptr; }

  private:
    const Particles& p_;
    const Inputs& x_;
    Activation act_;
    long n_;
    bool enabled_, need_deriv_;
    std::vector<F> h_, deriv_;
};

}  // namespace mfkern
