// A stateful training engine: the data staged once, the particles, the step counter and the second layer's
// state owned in one object, and k Langevin steps per call with no per-step validation or Python.
//
// One step at particles W (step t):
//   features H = h(X1 W^T) (stored, n x N)  ->  second layer A = (K + r I)^{-1} Y (and B for label noise)
//   ->  drift  ->  W' = W - eta * drift + sqrt(2 eta lam) xi(seed, t, k)
// The second layer is one of three strategies, chosen at construction:
//   Dense     the Gram K = H H^T / N from the stored features, a Cholesky factor, two triangular solves;
//   Woodbury  the N x N particle-space system (N < n), streamed over sample panels;
//   Pcg       conjugate gradients on (K + r I) X = R with products K v = H (H^T v) / N from the stored
//             features (no Gram), preconditioned by the inverse of K_t0 + r I at a recent step t0 and
//             started from the previous step's solution. It refactorises (a dense step that also renews the
//             preconditioner) when the iterations of the last solve cost more than the average cost per
//             step since the last factorisation, the factor included (a deterministic count of
//             multiply-adds, so the trajectory never depends on timing), and solves densely at once when
//             CG does not reach the tolerance (never an inexact answer).
// Diagnostics at the current particles factor K + r I once; the next step solves with that factor.
//
// Reproducibility: every product is cut into fixed tiles (of particles or of samples) and every sum runs
// in a fixed order, so the trajectory is bitwise the same for any thread count and for any split of the
// steps into run() calls. With Pcg it also depends on where the factorisations fell: diagnostics always
// refactor, so a run resumed from the particles of a logged step follows the uninterrupted run exactly.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mfkern/features.hpp"
#include "mfkern/langevin.hpp"

namespace mfkern {

enum class SecondLayer { Dense, Woodbury, Pcg };

struct EngineOptions {
    SecondLayer second_layer = SecondLayer::Dense;
    bool single_precision = false;  // Dense and Woodbury only
    int n_threads = 0;
    long block_size = 0;
    double tol = 1e-10;             // Pcg: relative residual ||R - (K + rI) X|| / ||R|| of every column
    long max_iterations = 100;      // Pcg: beyond this, the step is solved densely
    long first_index = 0;           // global index of the first particle (the noise is keyed by it)
};

// Sums a buffer elementwise over the processes that share the particles, in place, with the same bits on
// every process (for particles sharded over MPI ranks; the core itself knows nothing of MPI).
using Reducer = std::function<void(double* data, long count)>;

enum class RunStatus { Completed, Stopped, NonFinite, NotPositiveDefinite };

struct RunResult {
    long steps = 0;  // steps completed by this call
    RunStatus status = RunStatus::Completed;
    std::string message;  // why a non-completed run stopped
};

struct EngineDiagnostics {
    double U, G, dof, condition, mean_sq_norm, train_mse, kernel_alignment;
};

// Counters of the second layer's work since construction (for benchmarks and tests).
struct SolverStats {
    long solves = 0;            // second-layer solves (one per step)
    long factorizations = 0;    // dense factorisations (diagnostics included)
    long cg_solves = 0;         // solves done by conjugate gradients
    long cg_iterations = 0;     // their iterations, summed
    long cg_fallbacks = 0;      // CG solves that did not converge and were redone densely
    long max_cg_iterations = 0;
};

class Engine {
  public:
    // x_rows: row-major n x d inputs; y_rows: row-major n x T targets; w_rows: row-major N x (d+1) particles
    // at step `step`. All are copied. label_noise_level s > 0 runs the label-noise procedure.
    Engine(const double* x_rows, long n, long d, const double* y_rows, long n_tasks, const double* w_rows,
           long n_particles, Hyper hyper, Activation act, double eta, std::uint64_t seed, std::uint32_t step,
           double label_noise_level, const EngineOptions& options);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    // Advance up to k steps. stop_requested (may be empty) is asked before each step; a true answer ends
    // the call with status Stopped. A step whose new particles (or objective) are not finite, or whose
    // K + r I is not positive definite, is not taken: the engine stays at the last good step.
    RunResult run(long k, const std::function<bool()>& stop_requested = {});

    // For second layers solved outside the engine (other losses): the Gram K = H H^T / N of the current
    // particles (column-major n x n, both triangles; reduced over shards), keeping their features for the
    // step; then one step with given dual coefficients A (and B for label noise, or null), column-major
    // n x T, as returned by that solver. Returns the step's status (Completed, or NonFinite with the
    // engine left where it was). Not with the Woodbury solver.
    void gram(double* k_out);
    // The features H of the current particles divided by `divisor` (e.g. sqrt(N)), row-major n x N,
    // kept stored for the step (a second layer that works from the features, not the Gram). Not with the
    // Woodbury solver, and not on shards (each holds only its particles' columns).
    // With h_rows_single, also its single-precision copy (each entry the double one rounded).
    void features(double* h_rows, double divisor, float* h_rows_single = nullptr);
    RunStatus step_given_dual(const double* a_cols, const double* b_cols);

    // U, G, dof, condition of K + r I, train MSE, alignment of K with Y at the current particles; sets the
    // dual coefficients of the current particles. Throws NotPositiveDefinite.
    EngineDiagnostics diagnostics();

    long n() const { return n_; }
    long n_particles() const { return N_; }
    long dim() const { return dim_; }
    long n_tasks() const { return T_; }
    std::uint32_t step() const { return step_; }
    const double* particles() const { return w_.data(); }  // row-major N x dim
    // Replace the particles (row-major N x dim) and the step counter; the second layer's state is reset.
    void set_particles(const double* w_rows, std::uint32_t step);
    // Shard this engine's particles: the intrinsic kernel averages over total_particles, of which this
    // engine holds N; every sum over particles (the Gram, K v, ||w||^2, the finiteness of a step) goes
    // through `reduce`, so every process holds the same second layer and takes the same decisions.
    // Not with the Woodbury solver. Call before the first step.
    void set_reducer(Reducer reduce, long total_particles);
    // What diagnostics() measures the kernel alignment against (row-major n x cols); default: the targets.
    void set_alignment_target(const double* rows, long cols);
    // After a step that failed at its solve (the dual of the previous particles is still held): return to
    // those particles. Returns false (and changes nothing) otherwise.
    bool roll_back();
    // Dual coefficients A (column-major n x T) at the current particles, when known (after diagnostics, or
    // of the pre-step particles of the last step when has_current_dual() is false).
    const double* dual() const { return a_.data(); }
    bool has_current_dual() const { return a_step_ == static_cast<long>(step_); }
    // Second-layer weights H^T A at the current particles (row-major N x T) for the dual of dual().
    void output_weights(double* weights_rows);
    double last_U() const { return last_u_; }  // U at the particles of the last step taken
    const SolverStats& stats() const { return stats_; }
    SecondLayer second_layer() const { return opt_.second_layer; }

  private:
    void fill_features();  // the current particles' features into the cache, unless already there
    void gram_into_factor();
    void cholesky_factor();
    void invert(bool keep_preconditioner);
    void solve_step(long m);
    bool conjugate_gradients(long m);
    RunStatus take_step(const double* b_cols);
    struct Impl;
    std::unique_ptr<Impl> impl_;
    long n_, N_, dim_, T_;
    Hyper hyper_;
    Activation act_;
    double eta_, level_;
    std::uint64_t seed_;
    std::uint32_t step_;
    EngineOptions opt_;
    std::vector<double> w_, w_next_, a_;
    long a_step_ = -1;
    Reducer reduce_;
    long total_particles_;
    double last_u_ = 0.0;
    SolverStats stats_;
};

// Advance independent engines (seeds, particle counts or step sizes of one sweep) k steps each, in parallel
// across engines on n_threads threads, each engine single-threaded inside: for many small systems, where
// one system cannot use the threads. Every engine's trajectory is the one run() would give; engines that
// shard over processes (a reducer) cannot be run this way.
std::vector<RunResult> run_ensemble(const std::vector<Engine*>& engines, long k, int n_threads);

}  // namespace mfkern
