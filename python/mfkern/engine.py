"""The stateful training engine: data staged once in C++, k Langevin steps per call.

:class:`Engine` holds the inputs, the targets, the particles, the step counter and the state of the
second layer's solver (docs/theory.md: section 5 for the step, sections 3, 8 and 12 for the solvers).
``run(k)`` advances k steps inside the compiled core with the GIL released and no per-step validation;
``diagnostics()`` gives U,
G, dof, the training MSE and the kernel alignment at the current particles from one factorisation, which
the next step reuses. The estimators train through it; it is public for users who write their own loops
with many steps per call.

Second-layer solvers (``solver``):

- ``"dense"``: the Gram K = H H^T / N and its Cholesky factor every step;
- ``"woodbury"``: the N x N particle-space system (for N < n), no n x n matrix;
- ``"cg"``: preconditioned conjugate gradients with products K v = H (H^T v) / N from the stored features
  (no Gram), the inverse of K + ridge I at a recent step as preconditioner and the previous step's dual as
  the starting point; every column is solved to the relative residual ``tol``, a solve that does not get
  there is redone densely, and the factor is renewed when the iterations cost more than refactoring would;
- ``"auto"``: woodbury when N < n, cg when n >= :data:`CG_MIN_SAMPLES` in float64, dense otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _core
from ._validation import (
    activation_name,
    as_float_array,
    as_targets,
    block_size_value,
    integer,
    n_threads_value,
    non_negative,
    positive,
    seed_value,
    step_value,
)
from .core import MemoryLimitError, check_hyper, check_memory, checked_inputs, checked_particles

__all__ = ["Engine", "RunResult", "run_ensemble", "ENGINE_SOLVERS", "CG_MIN_SAMPLES", "choose_solver", "engine_bytes"]

ENGINE_SOLVERS = ("auto", "dense", "woodbury", "cg")
#: Below this many samples the Gram is cheap enough that "auto" factors it every step (bench/engine.py).
CG_MIN_SAMPLES = 256
_STATUSES = ("completed", "stopped", "nonfinite", "not_positive_definite")


def choose_solver(solver, n, N, precision="float64"):
    """The second-layer solver that ``solver`` (one of :data:`ENGINE_SOLVERS`) means for n samples and N
    particles: "auto" picks woodbury when N < n, cg for n >= CG_MIN_SAMPLES in float64, dense otherwise."""
    if not isinstance(solver, str) or solver not in ENGINE_SOLVERS:
        raise ValueError(f"solver must be one of {ENGINE_SOLVERS}, got {solver!r}")
    if solver == "cg" and precision != "float64":
        raise ValueError("solver='cg' runs in float64 only (its residuals are exact to tol); "
                         "use precision='float64' or solver='dense'")
    if solver != "auto":
        return solver
    if N < n:
        return "woodbury"
    return "cg" if precision == "float64" and n >= CG_MIN_SAMPLES else "dense"


def engine_bytes(solver, n, N, dim, T, activation="tanh", precision="float64", label_noise=False):
    """Working memory of an engine (the estimate behind MemoryLimitError): particles twice, the staged
    inputs, and per solver the stored features, the n x n factor and (cg) the preconditioner."""
    m = 2 * T if label_noise else T
    common = 8 * (2 * N * dim + 2 * n * dim + 4 * n * m)
    if solver == "woodbury":
        panel = max(64, min(n, (8 << 20) // (8 * max(N, 1))))
        return common + 8 * N * N * 3 + 8 * N * (panel + 2 * m)
    per_feature = 4 if precision == "float32" else 8
    features = per_feature * n * N * (2 if activation == "erf" else 1)
    total = common + features + 8 * n * n * 2  # the factor, and the inverse taken for diagnostics
    if solver == "cg":
        total += 8 * (N * m + 12 * n * m)
    return total


@dataclass(frozen=True)
class RunResult:
    """What one :meth:`Engine.run` call did.

    steps : steps completed by the call; status : "completed", "stopped" (the stop callable said so),
    "nonfinite" (the next step's particles or objective were not finite) or "not_positive_definite"
    (K + ridge I could not be factored); message : why a run that did not complete stopped.
    """

    steps: int
    status: str
    message: str

    @property
    def failed(self):
        return self.status in ("nonfinite", "not_positive_definite")


class Engine:
    """MFLD on fixed data, many steps per call (see the module docstring).

    Parameters
    ----------
    X : array-like (n, d); Y : array-like (n,) or (n, T); particles : array-like (N, d+1)
        Copied once into the engine.
    lam, lam_a, lam_w, eta : float
        Hyper-parameters (ridge n*lam*lam_a; noise sqrt(2 eta lam)).
    seed : int
        uint64 key of the Langevin and label noise; step ``step`` draws the noise keyed by (seed, step).
    step : int, default=0
        The step count of ``particles``.
    activation : {"tanh", "erf"}; label_noise : float, default 0 (the label-noise level s)
    solver : {"auto", "dense", "woodbury", "cg"}; precision : {"float64", "float32"} (not with cg)
    n_threads : int or None; block_size : int or None (particles per Gram panel)
    tol : float, default 1e-10
        cg: relative residual every column of every solve reaches.
    max_iterations : int, default 100
        cg: iterations after which a solve is redone densely.
    first_index : int, default 0
        Global index of the first particle (the noise is keyed by it; for particles sharded over processes).
    alignment_target : array-like (n,) or (n, T'), optional
        What ``diagnostics()["kernel_alignment"]`` measures the kernel against (default: Y).

    The trajectory is bitwise the same for any thread count and any split of the steps into run() calls.
    With cg it also depends on where the factorisations fell: ``diagnostics()`` refactors, so two runs
    agree bitwise when they took diagnostics at the same steps, and otherwise to about ``tol``.
    """

    def __init__(self, X, Y, particles, *, lam, lam_a, lam_w, eta, seed, step=0, activation="tanh",
                 label_noise=0.0, solver="auto", precision="float64", n_threads=None, block_size=None, tol=1e-10,
                 max_iterations=100, first_index=0, alignment_target=None):
        X = checked_inputs(X)
        W = checked_particles(particles, X, "particles")
        Y, _ = as_targets(Y, "Y", X.shape[0])
        n, N = X.shape[0], W.shape[0]
        self.lam, self.lam_a, self.lam_w = check_hyper(lam, lam_a, lam_w, n)
        self.eta = positive(eta, "eta")
        self.seed, self.activation = seed_value(seed), activation_name(activation)
        step = step_value(step)
        self.label_noise = non_negative(label_noise, "label_noise")
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
        self.solver = choose_solver(solver, n, N, precision)
        self.precision = precision
        self.n_threads = n_threads_value(n_threads)
        bs = block_size_value(block_size)
        self.tol = positive(tol, "tol")
        if not self.tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {tol}")
        max_iterations = integer(max_iterations, "max_iterations", minimum=1)
        first_index = integer(first_index, "first_index", minimum=0)
        if first_index + N - 1 > 2**32 - 1:
            raise ValueError("first_index + N must be at most 2**32 (particle indices are 32-bit)")
        check_memory("Engine", engine_bytes(self.solver, n, N, W.shape[1], Y.shape[1], self.activation, precision,
                                            self.label_noise > 0),
                     "use fewer particles or samples, solver='woodbury' when N < n, or precision='float32'")
        self._engine = _core.Engine(X, Y, W, self.lam, self.lam_a, self.lam_w, self.activation, self.eta, self.seed,
                                    step, self.label_noise, self.solver, precision, self.n_threads, bs, self.tol,
                                    max_iterations, first_index)
        if alignment_target is not None:
            target, _ = as_targets(alignment_target, "alignment_target", n)
            self._engine.set_alignment_target(target)
        self.n_samples, self.n_particles, self.n_tasks = n, N, Y.shape[1]
        self._sharded = False

    def run(self, k, stop=None):
        """Advance up to k steps (GIL released). ``stop``: a callable asked before each step; True ends the
        call. Pending signals are handled before each step too: under Python's default handler Ctrl-C
        raises KeyboardInterrupt at a step boundary, the engine left at the last complete step. A step whose
        result would not be finite (or whose K + ridge I cannot be factored) is not taken: the returned
        status says so and the engine stays at its last good step."""
        k = integer(k, "k", minimum=0)
        if self.step + k > 2**32:
            raise ValueError(f"k={k} would take the step counter past 2**32 (at step {self.step})")
        if stop is not None and not callable(stop):
            raise TypeError(f"stop must be None or a callable, got {type(stop).__name__}")
        out = self._engine.run(k, stop)
        return RunResult(int(out["steps"]), out["status"], out["message"])

    def diagnostics(self):
        """dict of U, G, dof, condition, mean_sq_norm, train_mse, kernel_alignment at the current particles
        (kernel_alignment is NaN with solver="woodbury": it needs the n x n Gram). Sets ``dual`` to the
        current particles' dual coefficients. Raises NotPositiveDefiniteError."""
        return dict(self._engine.diagnostics())

    def gram(self):
        """The Gram K = H H^T / N (n, n) of the current particles, for a second layer solved outside the
        engine (another loss); their features stay stored for :meth:`step_given_dual`."""
        if self.solver == "woodbury":
            raise ValueError("gram() needs the stored features of solver 'dense' or 'cg', not 'woodbury'")
        return self._engine.gram()

    def features(self, divide_by=1.0, *, with_float32=False):
        """The features H (n, N) of the current particles divided by `divide_by` (e.g. sqrt(N): Phi with
        K = Phi Phi^T), for a second layer that works from the features; they stay stored for
        :meth:`step_given_dual`. With ``with_float32=True``, the pair (Phi, Phi.astype(np.float32)), the
        second written in the same pass. Not on a sharded engine."""
        if self.solver == "woodbury":
            raise ValueError("features() needs the stored features of solver 'dense' or 'cg', not 'woodbury'")
        divide_by = positive(divide_by, "divide_by")
        return self._engine.features(divide_by, bool(with_float32))

    def step_given_dual(self, A, B=None):
        """One Langevin step whose second layer was solved outside the engine: A (and, for the label-noise
        procedure, B) of shape (n, T) (docs/theory.md, section 9: the drift has the same form for any loss
        whose optimal second layer is h(X; w)^T A). Returns False, taking no step, when the new particles
        would not be finite."""
        A, _ = as_targets(A, "A", self.n_samples)
        if A.shape[1] != self.n_tasks:
            raise ValueError(f"A must have {self.n_tasks} column(s) like the engine's targets, got {A.shape[1]}")
        if B is not None:
            B, _ = as_targets(B, "B", self.n_samples)
            if B.shape != A.shape:
                raise ValueError(f"B must have the shape of A {A.shape}, got {B.shape}")
        return bool(self._engine.step_given_dual(A, B))

    def output_weights(self):
        """Second-layer weights a_k = H[:, k]^T A (N, T) of the current particles for the dual held."""
        return self._engine.output_weights()

    def set_particles(self, particles, step):
        """Move to other particles (N, d+1) at step count `step`; the solver's state starts afresh."""
        W = as_float_array(particles, "particles", ndim=(2,))
        if W.shape != (self.n_particles, self._engine.particles.shape[1]):
            raise ValueError(f"particles must have shape {(self.n_particles, self._engine.particles.shape[1])}, "
                             f"got {W.shape}")
        if not np.isfinite(W).all():
            raise ValueError("particles must be finite")
        self._engine.set_particles(W, step_value(step))

    def shard(self, reduce, total_particles):
        """Make this engine one shard of `total_particles` particles (for MPI): ``reduce(buffer)`` must sum
        a float64 array in place over all shards with the same bits on every shard; the Gram, the products
        K v, the sum of ||w||^2 and each step's finiteness go through it, so all shards hold the same second
        layer and stop at the same step. Call it on every shard before the first step; not with woodbury."""
        if not callable(reduce):
            raise TypeError(f"reduce must be callable, got {type(reduce).__name__}")
        total = integer(total_particles, "total_particles", minimum=self.n_particles)
        self._engine.set_reducer(reduce, total)
        self._sharded = True

    def roll_back(self):
        """Return to the previous step's particles when the last step failed at its solve (the dual of
        those particles is known); returns whether it did."""
        return bool(self._engine.roll_back())

    @property
    def particles(self):
        """Current particles (N, d+1), a copy."""
        return self._engine.particles

    @property
    def step(self):
        """Steps done (the step counter of the noise)."""
        return int(self._engine.step)

    @property
    def dual(self):
        """Dual coefficients A (n, T) of the last solve: of the current particles when ``has_current_dual``,
        else of the particles before the last step."""
        return self._engine.dual

    @property
    def has_current_dual(self):
        return bool(self._engine.has_current_dual)

    @property
    def last_U(self):
        """U at the particles of the last step taken."""
        return float(self._engine.last_U)

    @property
    def stats(self):
        """Counters of the second layer's work: solves, factorizations, cg_solves, cg_iterations,
        cg_fallbacks, max_cg_iterations."""
        return dict(self._engine.stats)


def run_ensemble(engines, k, *, n_threads=None):
    """Advance independent engines k steps each in one call, in parallel across engines (GIL released).

    For sweeps of many small systems (seeds, particle counts, step sizes), where one system cannot keep
    the threads busy: each engine runs single-threaded, ``n_threads`` engines at a time. Every engine ends
    exactly where ``engine.run(k)`` would have left it (the same bits), and a failing engine stops alone
    (its RunResult says why). Signals are not looked at inside the call: advance in chunks of k to stay
    responsive to Ctrl-C. Returns one :class:`RunResult` per engine.
    """
    engines = list(engines)
    for i, engine in enumerate(engines):
        if not isinstance(engine, Engine):
            raise TypeError(f"engines[{i}] must be an mfkern.engine.Engine, got {type(engine).__name__}")
        if engine._sharded:
            raise ValueError(f"engines[{i}] is a shard of an MPI run: its sums go through its processes, "
                             "not an ensemble")
    if len({id(e) for e in engines}) != len(engines):
        raise ValueError("engines must be distinct (the same engine twice would be advanced by two threads)")
    k = integer(k, "k", minimum=0)
    for i, engine in enumerate(engines):
        if engine.step + k > 2**32:
            raise ValueError(f"k={k} would take engines[{i}]'s step counter past 2**32")
    out = _core.run_ensemble([e._engine for e in engines], k, n_threads_value(n_threads))
    return [RunResult(int(r["steps"]), r["status"], r["message"]) for r in out]

