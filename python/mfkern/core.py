"""Low-level API: validated, thin wrappers over the compiled core.

Conventions (docs/theory.md, sections 1-3): inputs X of shape (n, d); particles W of shape (N, d+1), one neuron per row,
w_k = (u_k, b_k) and h(x; w) = act(u.x + b); targets Y of shape (n,) or (n, T). Everything is float64.
The second layer is always at its kernel-ridge optimum for the current particles, with
ridge = n * lam * lam_a. Every function checks its arguments and raises TypeError/ValueError naming the
argument; non-contiguous or non-float64 input is converted once here, never inside the C++ core.

Threads: the core parallelises with OpenMP over fixed tiles of work, calling BLAS single-threaded inside
them; ``n_threads=None`` uses the OpenMP default (OMP_NUM_THREADS, else all cores), a number sets it for
the call. Results are bitwise identical for any thread count. Every call releases the GIL. Because
OpenBLAS's thread count is process-wide, the core pins scipy's BLAS to one thread for the duration of each
call (and restores it after) under a process-wide lock: calls from several Python threads run one at a
time, each using all its threads, and give the same bits as sequential calls.
"""
from __future__ import annotations

import contextlib
import os
import threading

import numpy as np
from threadpoolctl import ThreadpoolController

from . import _core
from ._validation import (
    MAX_SIZE,
    activation_name,
    as_float_array,
    as_targets,
    block_size_value,
    check_particles,
    integer,
    n_threads_value,
    non_negative,
    positive,
    seed_value,
    step_value,
)

__all__ = [
    "NotPositiveDefiniteError",
    "MemoryLimitError",
    "NonFiniteStepError",
    "features",
    "gram",
    "second_layer",
    "objective",
    "drift",
    "langevin_step",
    "drift_given_dual",
    "langevin_step_given_dual",
    "output_weights",
    "network_output",
    "particle_noise",
    "label_noise",
    "kernel_alignment",
    "kernel_alignment_features",
    "degrees_of_freedom",
    "parameter_alignment",
    "thread_limits",
]
# Also used by the package's other modules (mfkern.engine, the estimators), not part of the user API above:
# check_hyper, check_memory, available_memory, checked_inputs, checked_particles, checked_symmetric.

#: Raised when K + ridge*I is not numerically positive definite (a subclass of numpy.linalg.LinAlgError,
#: itself a ValueError).
NotPositiveDefiniteError = _core.NotPositiveDefiniteError

#: Features are recomputed for the drift pass by default: measured on the project's 2-core machine, that is
#: faster than keeping them (fresh memory for an n x N cache costs more than recomputing the features:
#: 43 against 64 ms per step at N = 2000, n = 1000, d = 15; 0.56 against 0.61 s at N = 8192, n = 2048).
DEFAULT_CACHE_BYTES = 0
SOLVERS = ("auto", "dense", "woodbury")
PRECISIONS = ("float64", "float32")


def _precision(precision):
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


class MemoryLimitError(MemoryError):
    """Raised before a computation whose working memory would exceed what the machine has available.

    Attributes ``bytes_needed`` and ``bytes_available`` give the estimate and the limit.
    """

    def __init__(self, what, bytes_needed, bytes_available, hint=""):
        self.bytes_needed = int(bytes_needed)
        self.bytes_available = int(bytes_available)
        msg = (f"{what} needs about {_format_bytes(bytes_needed)} of working memory but only "
               f"{_format_bytes(bytes_available)} is available")
        super().__init__(msg + (f"; {hint}" if hint else ""))


def _format_bytes(b):
    b = int(b)
    if b >= 2**80:
        return f"about 2**{b.bit_length() - 1} bytes"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if b >= size:
            return f"{b / size:.3g} {unit} ({b} bytes)"
    return f"{b} bytes"


def available_memory():
    """Bytes of memory available to a new allocation now (MemAvailable of /proc/meminfo, else physical)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**63


def check_memory(what, bytes_needed, hint=""):
    limit = available_memory()
    if bytes_needed > limit:
        raise MemoryLimitError(what, bytes_needed, limit, hint)


def _choose_solver(solver, n, N):
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "auto":
        # The N x N particle-space system is cheaper (n N^2 + N^3 against n^2 N + n^3) when N < n.
        return "woodbury" if N < n else "dense"
    return solver


def _solver_bytes(solver, n, N, D, T, activation, cache_bytes, inverse=False):
    """Working memory of a Gram-solve-drift computation (the estimate behind MemoryLimitError)."""
    per_feature = 16 if activation == "erf" else 8
    common = 8 * (n * D + 2 * N * D + 4 * n * T)
    if solver == "woodbury":
        panel = max(64, min(n, (8 << 20) // (8 * max(N, 1))))
        return common + 8 * N * N * (3 if inverse else 2) + 8 * N * (panel + 2 * T)
    features = min(cache_bytes, per_feature * n * N)
    panel = max(64, min(N, (8 << 20) // (8 * max(n, 1))))
    return common + 8 * n * n * (3 if inverse else 2) + features + 8 * n * panel


_controller = None
_controller_lock = threading.Lock()


def _blas_controller():
    global _controller
    with _controller_lock:
        if _controller is None:
            _controller = ThreadpoolController()
        return _controller


def thread_limits(n_threads):
    """Context manager limiting numpy/scipy's BLAS to `n_threads` (None: no change).

    For numpy code run around the core (diagnostics, baselines); the core's own calls pin scipy's BLAS to
    one thread regardless, since they parallelise with OpenMP themselves.
    """
    if n_threads is None:
        return contextlib.nullcontext()
    return _blas_controller().limit(limits=n_threads_value(n_threads), user_api="blas")


def checked_inputs(X, name="X"):
    return as_float_array(X, name, ndim=(2,))


# Pre-activations above this bound could overflow (or lose the sign of) u.x + b in floating point.
_MAX_PRE_ACTIVATION = 1e300


def checked_particles(W, X, name="W"):
    W = as_float_array(W, name, ndim=(2,))
    check_particles(W, X, name)
    # |u.x + b| <= max|w| (d max|x| + 1): refuse inputs whose pre-activations could overflow, rather than
    # return features of inf - inf.
    if W.size and X.size:
        bound = float(np.abs(W).max()) * (X.shape[1] * float(np.abs(X).max()) + 1.0)
        if not bound <= _MAX_PRE_ACTIVATION:
            raise ValueError(f"{name} and X are too large: the pre-activations u.x + b may overflow a float "
                             f"(max |{name}| = {np.abs(W).max():.3g}, max |X| = {np.abs(X).max():.3g}); rescale them")
    return W


def check_hyper(lam, lam_a, lam_w, n=None):
    """lam, lam_a, lam_w as floats; the products the core uses (lam*lam_a, lam*lam_w and the ridge
    n*lam*lam_a) must be finite and > 0 too, and the error names the parameters that broke them."""
    lam, lam_a, lam_w = positive(lam, "lam"), positive(lam_a, "lam_a"), positive(lam_w, "lam_w")
    for label, value in (("lam * lam_a", lam * lam_a), ("lam * lam_w", lam * lam_w),
                         ("n * lam * lam_a (the ridge)", (n or 1) * lam * lam_a)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{label} = {value} is not a finite number > 0 (lam={lam}, lam_a={lam_a}, "
                             f"lam_w={lam_w}{'' if n is None else f', n={n}'}): choose lam, lam_a, lam_w in a "
                             f"range whose products stay representable")
    return lam, lam_a, lam_w


class NonFiniteStepError(FloatingPointError):
    """A Langevin step whose new particles are not finite (the chain diverged).

    ``dual`` and ``U`` hold the second layer at the pre-step particles, which was still finite, so that a
    caller can keep the last good state.
    """

    def __init__(self, message, *, dual, U):
        super().__init__(message)
        self.dual = dual
        self.U = U


def _finite(result, what, hint):
    """Refuse to return a non-finite result silently."""
    arrays = result if isinstance(result, tuple) else (result,)
    for a in arrays:
        if isinstance(a, np.ndarray) and not np.isfinite(a).all():
            raise FloatingPointError(f"{what} is not finite: {hint}")
        if isinstance(a, float) and not np.isfinite(a):
            raise FloatingPointError(f"{what} is not finite: {hint}")
    return result


def _restore(A, one_d):
    return A[:, 0] if one_d else A


def features(W, X, activation="tanh", *, n_threads=None):
    """Features H of shape (n, N): H[j, k] = h(x_j; w_k) = act(u_k . x_j + b_k)."""
    X = checked_inputs(X)
    W = checked_particles(W, X)
    nt = n_threads_value(n_threads)
    check_memory("features", 8 * X.shape[0] * W.shape[0], "use gram() or the estimator, which never form H whole")
    return _core.features(W, X, activation_name(activation), nt)


def gram(W, X, X2=None, activation="tanh", *, block_size=None, n_threads=None):
    """Intrinsic-kernel Gram matrix (1/N) H(X) H(X2)^T of the particle measure.

    Accumulated over blocks of `block_size` particles (default: about 8 MiB of features per block), so the
    n x N feature matrix never exists whole: memory O(n * n2 + block_size * (n + n2)). With X2 None the
    symmetric Gram of X is computed with a rank-k update (half the work) and returned with both triangles.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    if X2 is not None:
        X2 = checked_inputs(X2, "X2")
        if X2.shape[1] != X.shape[1]:
            raise ValueError(f"X2 must have d = {X.shape[1]} columns like X, got {X2.shape[1]}")
    act = activation_name(activation)
    bs, nt = block_size_value(block_size), n_threads_value(n_threads)
    n1, n2 = X.shape[0], (X2 if X2 is not None else X).shape[0]
    panel = min(bs or max(64, (8 << 20) // (8 * max(n1, n2)), n1, n2), W.shape[0])
    check_memory("gram", 8 * (n1 * n2 + (n1 + n2) * (panel + W.shape[1])))
    return _core.gram(W, X, X2, act, bs, nt)


def checked_symmetric(K, name="K"):
    K = as_float_array(K, name, ndim=(2,))
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be square (n, n), got shape {K.shape}")
    scale = max(1.0, float(np.abs(K).max()))
    if not np.allclose(K, K.T, rtol=0, atol=1e-10 * scale):
        raise ValueError(f"{name} must be symmetric")
    return K


def second_layer(K, Y, ridge, *, n_threads=None):
    """Dual coefficients A = (K + ridge I)^{-1} Y of kernel ridge regression, by Cholesky.

    This is scikit-learn's ``KernelRidge(alpha=ridge, kernel="precomputed").fit(K, Y).dual_coef_``; in the
    trainer ridge = n * lam * lam_a. Y of shape (n,) or (n, T); A has the same shape. Raises
    NotPositiveDefiniteError when K + ridge I is not numerically positive definite.
    """
    K = checked_symmetric(K)
    Y, one_d = as_targets(Y, "Y", K.shape[0])
    ridge = positive(ridge, "ridge")
    check_memory("second_layer", 8 * K.shape[0] * (K.shape[0] + 3 * Y.shape[1]))
    return _restore(_core.second_layer(K, Y, ridge, n_threads_value(n_threads)), one_d)


def objective(W, X, Y, *, lam, lam_a, lam_w, activation="tanh", block_size=None, n_threads=None, solver="auto",
              precision="float64"):
    """The reduced objective and diagnostics at particles W (docs/theory.md, sections 2 and 7).

    Returns a dict: ``U`` = (lam*lam_a/(2T)) sum_i Y_i^T (K + ridge I)^{-1} Y_i, ``G`` = U +
    (lam*lam_w/2) mean_k ||w_k||^2, ``dof`` = tr[K (K + ridge I)^{-1}], ``condition`` = the (exact) 1-norm
    condition number of K + ridge I, ``ridge`` = n*lam*lam_a, and ``dual`` = A = (K + ridge I)^{-1} Y (shape
    of Y). Costs O(n^3) (an explicit inverse).
    With ``solver="woodbury"`` (the default "auto" picks it when N < n) everything is computed in particle
    space at O(n N^2 + N^3); ``condition`` is then that of the N x N matrix N*ridge*I + H^T H.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    Y, one_d = as_targets(Y, "Y", X.shape[0])
    lam, lam_a, lam_w = check_hyper(lam, lam_a, lam_w, X.shape[0])
    act = activation_name(activation)
    bs, nt = block_size_value(block_size), n_threads_value(n_threads)
    solver = _choose_solver(solver, X.shape[0], W.shape[0])
    check_memory("objective", _solver_bytes(solver, X.shape[0], W.shape[0], W.shape[1], Y.shape[1], act, 0, True))
    out = _core.objective(W, X, Y, lam, lam_a, lam_w, act, bs, nt, solver, _precision(precision))
    _finite((out["U"], out["G"], out["dual"]), "the objective", "lam, lam_a, lam_w or the particles are too large")
    out.pop("mean_sq_norm")
    out["ridge"] = X.shape[0] * lam * lam_a
    out["dual"] = _restore(out["dual"], one_d)
    return out


def drift(W, X, Y, *, lam, lam_a, lam_w, activation="tanh", label_noise=None, block_size=None,
          cache_bytes=DEFAULT_CACHE_BYTES, n_threads=None, return_dual=False, solver="auto",
          precision="float64"):
    """Gradient of the first variation at every particle, shape (N, d+1) (docs/theory.md, section 4).

    Equals N times the gradient of G(mu_W) in w_k. With `label_noise` an (n, T) (or (n,)) noise matrix E,
    the drift of the label-noise functional G_E (docs/theory.md, section 6). Features are kept between the Gram
    and the drift pass when they fit in `cache_bytes` (default 0: recomputing them was faster in every
    measured case; a cache can pay off for costly activations on warm memory), and recomputed otherwise. With ``return_dual`` also
    returns the dual coefficients A = (K + ridge I)^{-1} Y and U.

    ``solver``: "dense" solves the n x n system K + ridge I by Cholesky (memory O(n^2)); "woodbury" solves
    the N x N particle-space system (docs/theory.md, section 8; memory O(N^2), no n x n matrix); "auto" picks
    woodbury when N < n. A computation that would not fit in the available memory raises
    MemoryLimitError before allocating.

    ``precision="float32"`` evaluates the features and their products in single precision (about twice
    as fast for large problems, half the feature memory) while every sum over panels or tiles, the
    factorisation and the solve stay in double: relative differences from float64 are about 1e-6.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    Y, one_d = as_targets(Y, "Y", X.shape[0])
    lam, lam_a, lam_w = check_hyper(lam, lam_a, lam_w, X.shape[0])
    E = None
    if label_noise is not None:
        E, _ = as_targets(label_noise, "label_noise", X.shape[0])
        if E.shape != Y.shape:
            raise ValueError(f"label_noise must have the shape of Y {Y.shape}, got {E.shape}")
    act = activation_name(activation)
    bs, nt = block_size_value(block_size), n_threads_value(n_threads)
    cb = integer(cache_bytes, "cache_bytes", minimum=0, maximum=MAX_SIZE)
    solver = _choose_solver(solver, X.shape[0], W.shape[0])
    check_memory("drift", _solver_bytes(solver, X.shape[0], W.shape[0], W.shape[1], Y.shape[1], act, cb))
    grad, A, U = _core.drift(W, X, Y, lam, lam_a, lam_w, act, E, bs, cb, nt, solver, _precision(precision))
    _finite((grad, A, float(U)), "the drift", "lam, lam_a, lam_w or the particles are too large")
    if return_dual:
        return grad, _restore(A, one_d), U
    return grad


def langevin_step(W, X, Y, *, eta, lam, lam_a, lam_w, seed, step, activation="tanh", label_noise_level=0.0,
                  first_index=0, block_size=None, cache_bytes=DEFAULT_CACHE_BYTES, n_threads=None,
                  return_dual=False, solver="auto", precision="float64"):
    """One Euler-Maruyama step of MFLD: W - eta * drift + sqrt(2 eta lam) xi.

    xi is standard normal, drawn by a counter-based generator (Philox4x32-10) keyed by
    (seed, step, first_index + k) for particle k, so the result is bitwise identical for any thread count
    and any step can be replayed alone. With ``label_noise_level`` s > 0, the label-noise procedure: fresh
    E ~ Uniform[-s, s]^{n x T} keyed by (seed, step, sample), the second layer fitted to Y + E, scored with Y.
    With ``return_dual`` also returns A = (K + ridge I)^{-1} Y at W (the pre-step particles) and U.
    ``solver`` and ``precision`` as in `drift` (the dense and Woodbury paths agree to rounding, about 1e-10
    relative; float32 to about 1e-6).
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    Y, one_d = as_targets(Y, "Y", X.shape[0])
    eta = positive(eta, "eta")
    lam, lam_a, lam_w = check_hyper(lam, lam_a, lam_w, X.shape[0])
    seed, step = seed_value(seed), step_value(step)
    level = non_negative(label_noise_level, "label_noise_level")
    first = integer(first_index, "first_index", minimum=0)
    if first + W.shape[0] - 1 > 2**32 - 1:
        raise ValueError("first_index + N must be at most 2**32 (particle indices are 32-bit)")
    act = activation_name(activation)
    bs, nt = block_size_value(block_size), n_threads_value(n_threads)
    cb = integer(cache_bytes, "cache_bytes", minimum=0, maximum=MAX_SIZE)
    solver = _choose_solver(solver, X.shape[0], W.shape[0])
    check_memory("langevin_step",
                  _solver_bytes(solver, X.shape[0], W.shape[0], W.shape[1], Y.shape[1], act, cb))
    W_new, A, U = _core.langevin_step(W, X, Y, eta, lam, lam_a, lam_w, seed, step, act, level, first, bs, cb,
                                      nt, solver, _precision(precision))
    if np.isfinite(A).all() and np.isfinite(U) and not np.isfinite(W_new).all():
        raise NonFiniteStepError(
            "the stepped particles are not finite: the step size eta, the temperature lam or the drift is too "
            "large (the chain diverges)", dual=_restore(A, one_d), U=float(U))
    _finite((W_new, A, float(U)), "the stepped particles",
            "the step size eta, the temperature lam or the drift is too large (the chain diverges)")
    if return_dual:
        return W_new, _restore(A, one_d), U
    return W_new


def _dual(A, name, n, like=None):
    A, one_d = as_targets(A, name, n)
    if like is not None and A.shape != like.shape:
        raise ValueError(f"{name} must have the shape of A {like.shape}, got {A.shape}")
    return A, one_d


def drift_given_dual(W, X, A, *, lam, lam_a, lam_w, B=None, activation="tanh", n_threads=None,
                     precision="float64"):
    """The drift for given dual coefficients A (n,) or (n, T): no Gram and no solve.

    grad_k = -(lam*lam_a/T) sum_i a_{k,i} J_k^T A_i + lam*lam_w w_k with a_k = H[:,k]^T A, and, with
    B = (K + ridge I)^{-1} E (label-noise procedure), the extra term +(lam*lam_a/T) sum_i b_{k,i} J_k^T B_i.
    For second layers solved elsewhere: any loss whose optimal second layer is a_mu(w) = h(X; w)^T A
    (docs/theory.md, section 9: A = -l'(f(X), Y) / (n lam lam_a)), or a Gram reduced across processes.
    ``drift(W, X, Y, ...)`` equals ``drift_given_dual(W, X, second_layer(gram(W, X), Y, ridge), ...)``.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    A, _ = _dual(A, "A", X.shape[0])
    if B is not None:
        B, _ = _dual(B, "B", X.shape[0], like=A)
    lam, lam_a, lam_w = check_hyper(lam, lam_a, lam_w, X.shape[0])
    act = activation_name(activation)
    return _finite(_core.drift_given_dual(W, X, A, B, lam, lam_a, lam_w, act, n_threads_value(n_threads),
                                          _precision(precision)),
                   "the drift", "lam, lam_a, lam_w, A or the particles are too large")


def langevin_step_given_dual(W, X, A, *, eta, lam, lam_a, lam_w, seed, step, B=None, activation="tanh",
                             first_index=0, n_threads=None, precision="float64"):
    """One MFLD step W - eta * drift_given_dual(W, X, A) + sqrt(2 eta lam) xi, with the same noise as
    `langevin_step` (keyed by (seed, step, first_index + k))."""
    X = checked_inputs(X)
    W = checked_particles(W, X)
    A, _ = _dual(A, "A", X.shape[0])
    if B is not None:
        B, _ = _dual(B, "B", X.shape[0], like=A)
    eta = positive(eta, "eta")
    lam, lam_a, lam_w = check_hyper(lam, lam_a, lam_w, X.shape[0])
    seed, step = seed_value(seed), step_value(step)
    first = integer(first_index, "first_index", minimum=0)
    if first + W.shape[0] - 1 > 2**32 - 1:
        raise ValueError("first_index + N must be at most 2**32 (particle indices are 32-bit)")
    act = activation_name(activation)
    return _finite(_core.langevin_step_given_dual(W, X, A, B, eta, lam, lam_a, lam_w, seed, step, first, act,
                                                  n_threads_value(n_threads), _precision(precision)),
                   "the stepped particles", "the step size eta, the temperature lam or the drift is too large")


def output_weights(W, X, A, activation="tanh", *, block_size=None, n_threads=None):
    """Second-layer weights a_k = H[:, k]^T A of every particle: shape (N,) or (N, T) like A.

    ``block_size`` is validated and accepted for symmetry with :func:`gram` but has no effect: the weights
    are computed per fixed tile of particles, never over a panel.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    A, one_d = as_targets(A, "A", X.shape[0])
    act = activation_name(activation)
    block_size_value(block_size)
    nt = n_threads_value(n_threads)
    return _restore(_finite(_core.output_weights(W, X, A, act, nt), "the output weights",
                            "A is too large"), one_d)


def network_output(W, weights, X, activation="tanh", *, block_size=None, n_threads=None):
    """The network f(x) = (1/N) sum_k a_k h(x; w_k) at the rows of X: shape (m,) or (m, T) like weights."""
    X = checked_inputs(X)
    W = checked_particles(W, X)
    weights, one_d = as_targets(weights, "weights", W.shape[0])
    act = activation_name(activation)
    bs, nt = block_size_value(block_size), n_threads_value(n_threads)
    return _restore(_finite(_core.network_output(W, weights, X, act, bs, nt), "the network output",
                            "the weights are too large"), one_d)


def particle_noise(seed, step, count, dim, *, first_index=0, n_threads=None):
    """The standard normals xi (count, dim) that `langevin_step` adds for particles first_index.. at `step`."""
    seed, step = seed_value(seed), step_value(step)
    count = integer(count, "count", minimum=0, maximum=2**32)
    dim = integer(dim, "dim", minimum=1, maximum=2**31 - 1)
    first = integer(first_index, "first_index", minimum=0)
    if count and first + count - 1 > 2**32 - 1:
        raise ValueError("first_index + count must be at most 2**32 (particle indices are 32-bit)")
    check_memory("particle_noise", 8 * count * dim)
    return _core.particle_noise(seed, step, first, count, dim, n_threads_value(n_threads))


def label_noise(seed, step, n, tasks=1, level=1.0):
    """The label noise E (n, tasks) ~ Uniform[-level, level] that `langevin_step` draws at `step`."""
    seed, step = seed_value(seed), step_value(step)
    n = integer(n, "n", minimum=1, maximum=2**32)
    tasks = integer(tasks, "tasks", minimum=1, maximum=2**30)
    level = non_negative(level, "level")
    check_memory("label_noise", 8 * n * tasks)
    return _core.label_noise(seed, step, n, tasks, level)


def kernel_alignment(K, f):
    """Kernel-target alignment f^T K f / (||f||^2 ||K||_F), in [0, 1] for a PSD K (docs/theory.md, section 7).

    f of shape (n,) or (n, T); with several columns, the sum over columns of f_i^T K f_i divided by
    ||f||_F^2 ||K||_F (the alignment of K with F F^T measured the same way).
    """
    K = checked_symmetric(K)
    F, _ = as_targets(f, "f", K.shape[0])
    return kernel_alignment_unchecked(K, F)


def kernel_alignment_unchecked(K, F):
    """kernel_alignment for a K already checked symmetric (n, n) and F (n, T) float64, e.g. a trainer's Gram."""
    # The alignment does not change when f or K is scaled: normalise both first, so that neither huge nor
    # tiny values overflow or underflow on the way.
    f_max, k_max = float(np.abs(F).max()), float(np.abs(K).max())
    if f_max == 0:
        raise ValueError("f must not be identically zero")
    if k_max == 0:
        raise ValueError("K must not be identically zero")
    F, K = F / f_max, K / k_max
    return float(np.einsum("ji,jk,ki->", F, K, F) / (float(np.sum(F * F)) * float(np.linalg.norm(K))))


def kernel_alignment_features(W, X, f, activation="tanh", *, n_threads=None):
    """`kernel_alignment` of the intrinsic Gram K = H H^T / N of particles W on X, without forming K.

    Computed in particle space: f^T K f = ||H^T f||^2 / N and ||K||_F = ||H^T H||_F / N, with H^T H
    accumulated over panels of samples: O(n N^2) time and O(N^2) memory, for n too large for an n x n Gram.
    """
    X = checked_inputs(X)
    W = checked_particles(W, X)
    F, _ = as_targets(f, "f", X.shape[0])
    f_max = float(np.abs(F).max())
    if f_max == 0:
        raise ValueError("f must not be identically zero")
    F = F / f_max  # scale-invariant: keeps huge or tiny f representable
    f_norm2 = float(np.sum(F * F))
    N = W.shape[0]
    check_memory("kernel_alignment_features", 8 * N * (2 * N + 1024))
    HtF = output_weights(W, X, F, activation, n_threads=n_threads)
    HtH = np.zeros((N, N))
    panel = max(1, min(X.shape[0], (64 << 20) // (8 * N)))
    for j0 in range(0, X.shape[0], panel):
        H = features(W, X[j0:j0 + panel], activation, n_threads=n_threads)
        HtH += H.T @ H
    k_norm = float(np.linalg.norm(HtH)) / N
    if k_norm == 0:
        raise ValueError("K must not be identically zero")
    return float(np.sum(HtF * HtF) / N / (f_norm2 * k_norm))


def degrees_of_freedom(K, ridge, *, n_threads=None):
    """Effective degrees of freedom tr[K (K + ridge I)^{-1}] (in the trainer ridge = n*lam*lam_a)."""
    K = checked_symmetric(K)
    ridge = positive(ridge, "ridge")
    return degrees_of_freedom_unchecked(K, ridge, n_threads_value(n_threads))


def degrees_of_freedom_unchecked(K, ridge, n_threads):
    """degrees_of_freedom for a K already checked symmetric, ridge > 0 and a thread count, e.g. a trainer's."""
    trace_inv, _ = _core.ridge_inverse_stats(K, ridge, n_threads)
    return float(K.shape[0] - ridge * trace_inv)


def parameter_alignment(W, u_star):
    """Parameter alignment (1/N) sum_k (u_k . u*)^2 / ||u_k||^2 with a unit direction u* (0 for u_k = 0).

    W is (N, d+1) (the last column, the bias, is ignored) or (N, d); u_star of length d is normalised here.
    """
    W = as_float_array(W, "W", ndim=(2,))
    u = as_float_array(u_star, "u_star", ndim=(1,))
    d = u.shape[0]
    if W.shape[1] not in (d, d + 1):
        raise ValueError(f"W must have d = {d} or d+1 = {d + 1} columns for u_star of length {d}, "
                         f"got {W.shape[1]}")
    # Each term is invariant to scaling u_k and u*: normalise them by their largest entries first, so that
    # neither huge nor tiny weights overflow or underflow.
    u_max = float(np.abs(u).max())
    if u_max == 0:
        raise ValueError("u_star must not be the zero vector")
    u = u / u_max
    u = u / np.linalg.norm(u)
    U = W[:, :d]
    row_max = np.abs(U).max(axis=1, keepdims=True)
    U = np.divide(U, row_max, out=np.zeros_like(U), where=row_max > 0)
    sq = np.einsum("kl,kl->k", U, U)
    proj = U @ u
    ratio = np.divide(proj * proj, sq, out=np.zeros_like(sq), where=sq > 0)
    return float(ratio.mean())
