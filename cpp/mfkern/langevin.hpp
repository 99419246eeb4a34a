// Two-timescale mean-field Langevin dynamics: the reduced objective, the drift with the second layer at its
// closed-form optimum, and the Euler-Maruyama step (docs/theory.md, sections 2-6).
#pragma once
#include <cstddef>
#include <cstdint>

#include "mfkern/features.hpp"

namespace mfkern {

struct Hyper {
    double lam, lam_a, lam_w;
    double lam_a_bar() const { return lam * lam_a; }
    double lam_w_bar() const { return lam * lam_w; }
    double ridge(long n) const { return double(n) * lam * lam_a; }
};

// How the second layer is solved: the n x n Gram by Cholesky, or the N x N particle-space system.
enum class Solver { Dense, Woodbury };

struct Options {
    Solver solver = Solver::Dense;
    bool single_precision = false;             // features and their products in float (sums in double)
    int n_threads = 0;                         // OpenMP threads; 0: the OpenMP default
    long block_size = 0;                       // particles per block; 0: default_block_size
    std::size_t cache_bytes = 0;               // keep all features between the passes up to this size
};

// Targets: row-major n x T.
struct Targets {
    const double* y;
    long n, tasks;
};

struct Diagnostics {
    double U, G, dof, condition, mean_sq_norm;
};

// U, G, dof = tr[K (K + ridge I)^{-1}] and the 1-norm condition number of K + ridge I (of the particle-
// space matrix N ridge I + H^T H with the Woodbury solver).
// dual_out (row-major n x T, may be null): A = (K + ridge I)^{-1} Y.
Diagnostics objective(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                      const Options& opt, double* dual_out = nullptr);

struct DriftResult {
    double U;  // reduced objective at the current particles (clean targets)
};

// grad (row-major N x dim). label_noise: row-major n x T noise E of the label-noise procedure, or null.
// dual_out (row-major n x T, may be null): A = (K + ridge I)^{-1} Y.
DriftResult drift(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper, Activation act,
                  const double* label_noise, double* grad_rows, double* dual_out, const Options& opt);

// One step: w_out = w - eta * drift + sqrt(2 eta lam) xi, xi keyed by (seed, step, first_index + k).
// With label_noise_level > 0 the label-noise procedure draws E ~ U[-s, s]^{n x T} keyed by (seed, step, j).
DriftResult langevin_step(const Particles& p, const Inputs& x, const Targets& y, const Hyper& hyper,
                          Activation act, double eta, std::uint64_t seed, std::uint32_t step,
                          double label_noise_level, long first_index, double* w_out, double* dual_out,
                          const Options& opt);

// The drift and the step for given dual coefficients A (row-major n x T) and, for the label-noise
// procedure, B = S E (or null): no Gram, no solve. For second layers solved elsewhere (other losses,
// a Gram reduced across processes): a_k = H[:,k]^T A and the drift has the same form for any loss whose
// optimal second layer is a_mu(w) = h(X; w)^T A (docs/theory.md, section 9).
void drift_given_dual(const Particles& p, const Inputs& x, Activation act, const double* a_rows,
                      const double* b_rows, long n_tasks, const Hyper& hyper, double* grad_rows, const Options& opt);
void langevin_step_given_dual(const Particles& p, const Inputs& x, Activation act, const double* a_rows,
                              const double* b_rows, long n_tasks, const Hyper& hyper, double eta,
                              std::uint64_t seed, std::uint32_t step, long first_index, double* w_out,
                              const Options& opt);

// w_out holds the drift on entry and the stepped particles on exit: w - eta * drift + sqrt(2 eta lam) xi,
// xi keyed by (seed, step, first_index + k).
void add_step_noise(const Particles& p, double eta, double lam, std::uint64_t seed, std::uint32_t step,
                    long first_index, double* w_out, int n_threads);

// The generator's draws, for tests and for replaying a step: row-major count x dim standard normals of
// particles first_index..first_index+count-1, and the n x T label noise of a step.
void particle_noise(std::uint64_t seed, std::uint32_t step, long first_index, long count, long dim, double* out,
                    int n_threads);
void label_noise(std::uint64_t seed, std::uint32_t step, long n, long tasks, double level, double* out);

}  // namespace mfkern
