// Features H[j,k] = h(x_j . u_k + b_k), evaluated a block of particles at a time.
#pragma once
#include <cstddef>
#include <vector>

#include "mfkern/activation.hpp"

namespace mfkern {

// Inputs with the bias column appended, X1 = [X, 1], stored column-major (n x dim, dim = d + 1).
struct Inputs {
    long n = 0, dim = 0;
    std::vector<double> x1;
    Inputs(const double* x_rows, long n, long d);  // x_rows: row-major n x d
    const double* data() const { return x1.data(); }
};

// Particles: row-major N x dim (rows w_k = (u_k, b_k)), not owned.
struct Particles {
    const double* w;
    long count, dim;
};

// The default number of particles per block for n samples: about 8 MiB of features per block. It depends
// only on the problem's size, never on the thread count, so blocked sums are reproducible.
long default_block_size(long n, long n_particles);

// Row-major n x N features of all particles (the whole matrix: for small problems and tests).
void features(const Particles& p, const Inputs& x, Activation act, double* out_rows, int n_threads);

// Iterates over blocks of particles, giving each block's features (column-major n x size) and, when the
// activation needs it, its derivative. Keeps every block in memory when they fit in cache_bytes, so that
// a second pass over the blocks (the drift after the Gram) costs nothing; otherwise recomputes them.
class FeatureBlocks {
  public:
    FeatureBlocks(const Particles& p, const Inputs& x, Activation act, long block_size, std::size_t cache_bytes,
                  int n_threads);
    long count() const { return n_blocks_; }
    long begin(long b) const { return b * block_; }
    long size(long b) const;
    // Features (and derivatives, or nullptr when h' follows from h) of block b. Valid until the next call.
    void get(long b, const double*& h, const double*& deriv);
    bool cached() const { return cache_all_; }
    Activation activation() const { return act_; }

  private:
    void compute(long b, double* h, double* deriv);
    Particles p_;
    const Inputs& x_;
    Activation act_;
    long block_, n_blocks_;
    bool cache_all_, need_deriv_;
    int n_threads_;
    std::vector<double> h_, deriv_;
    std::vector<char> done_;
};

}  // namespace mfkern
