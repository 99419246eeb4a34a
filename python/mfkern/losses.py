"""Convex losses and the optimal second layer for them (docs/theory.md, section 9).

For a convex, twice-differentiable loss l(z, y) and particles with intrinsic Gram K = H H^T / N, the optimal
second layer of output i is a_i(w) = h(X; w)^T A_i, where the dual coefficients A_i (length n) minimise

    Psi_i(A_i) = (1/n) sum_j l((K A_i)_j, y_ji) + (lam_a_bar/2) A_i^T K A_i .

This is kernel-regularised empirical risk minimisation: in terms of f_i = K A_i (the network output on the
training points) it is min_f (1/n) sum_j l(f_j, y_ji) + (lam_a_bar/2) f^T K^{-1} f, kernel logistic regression
for the logistic loss. Its optimality condition is the fixed point

    n lam_a_bar A_i + l'(K A_i, y_i) = 0 ,   i.e.  A_i = -(1/(n lam_a_bar)) l'(f_i, y_i),

which is docs/theory.md section 9's a_mu(w) = -(1/(n lam_a_bar)) sum_j l'(f(x_j), y_j) h(x_j; w); the condition makes
sense (and is what is solved here) even when K is singular (N < n). The reduced data term is

    U = (1/T) sum_i min_{A_i} Psi_i(A_i) ,

the average over the T outputs. For the squared loss l(z, y) = (z - y)^2 / 2 the minimiser is
A = (K + n lam_a_bar I)^{-1} Y and U = (lam_a_bar/(2T)) sum_i Y_i^T (K + n lam_a_bar I)^{-1} Y_i, exactly
docs/theory.md section 2's U; with U, G = U + (lam_w_bar/2) mean_k ||w_k||^2 and the particle drift is
``core.drift_given_dual(W, X, A, ...)`` (N times the gradient of G in w_k, by the envelope theorem).

The solver is Newton's method on the fixed point, written with the symmetric, well-conditioned matrix
B = c I + D^{1/2} K D^{1/2} (c = n lam_a_bar, D = diag l''), as in Rasmussen and Williams, *Gaussian
Processes for Machine Learning*, algorithm 3.1. Each iteration costs one n x n Cholesky factorisation per
output and is damped by a backtracking line search on Psi, so it converges from any start; warm-started from
the previous MFLD step it usually needs one to three iterations. The linear algebra runs in LAPACK/BLAS pinned
to one thread, so the solution is bitwise identical whatever the thread settings (at n = 1000 one
factorisation takes about 30 ms).

The softmax (multinomial) loss, whose outputs are coupled, has its own solver,
:func:`solve_multinomial_second_layer` (truncated Newton on the features; see its docstring), and objective
:func:`multinomial_objective`.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.linalg.blas
import scipy.linalg.lapack
from scipy.special import expit

from . import _core, core
from ._validation import as_float_array, as_targets, integer, positive

__all__ = [
    "Loss",
    "LogisticLoss",
    "SquaredLoss",
    "LOSSES",
    "get_loss",
    "NewtonConvergenceError",
    "SecondLayerSolution",
    "solve_second_layer",
    "solve_second_layer_unchecked",
    "reduced_objective",
    "MultinomialSolution",
    "solve_multinomial_second_layer",
    "solve_multinomial_unchecked",
    "multinomial_objective",
]

_EPS = np.finfo(np.float64).eps


class Loss:
    """A convex, twice-differentiable loss l(z, y) of a prediction z and a target y, elementwise.

    Subclasses implement :meth:`value`, :meth:`derivative` (dl/dz) and :meth:`second_derivative`
    (d^2l/dz^2 >= 0), and may restrict the targets in :meth:`check_targets`.
    """

    name = "loss"

    def value(self, z, y):
        """l(z, y), elementwise."""
        raise NotImplementedError

    def derivative(self, z, y):
        """dl/dz at (z, y), elementwise."""
        raise NotImplementedError

    def second_derivative(self, z, y):
        """d^2 l / dz^2 at (z, y), elementwise (non-negative: the loss is convex)."""
        raise NotImplementedError

    def check_targets(self, Y, name):
        """Raise ValueError naming `name` when Y holds targets the loss does not accept."""

    def __repr__(self):
        return f"{type(self).__name__}()"


class LogisticLoss(Loss):
    """l(z, y) = log(1 + exp(-y z)) for labels y in {-1, +1}; p(y = +1 | z) = sigmoid(z).

    l'(z, y) = -y sigmoid(-y z) lies in (-1, 1); l''(z, y) = sigmoid(z) sigmoid(-z) lies in (0, 1/4].
    """

    name = "logistic"

    def value(self, z, y):
        """log(1 + exp(-y z)), computed without overflow."""
        return np.logaddexp(0.0, -y * z)

    def derivative(self, z, y):
        """-y sigmoid(-y z)."""
        return -y * expit(-y * z)

    def second_derivative(self, z, y):
        """sigmoid(z) sigmoid(-z) (each factor computed directly, so tiny values keep their precision)."""
        return expit(z) * expit(-z)

    def check_targets(self, Y, name):
        """Labels must be -1 or +1."""
        if not np.all((Y == 1.0) | (Y == -1.0)):
            raise ValueError(f"{name} must hold labels -1 or +1 for the logistic loss")


class SquaredLoss(Loss):
    """l(z, y) = (z - y)^2 / 2: the second layer is kernel ridge regression (docs/theory.md, section 3)."""

    name = "squared"

    def value(self, z, y):
        """(z - y)^2 / 2."""
        return 0.5 * (z - y) ** 2

    def derivative(self, z, y):
        """z - y."""
        return z - y

    def second_derivative(self, z, y):
        """1."""
        return np.ones(np.broadcast(z, y).shape)


#: The losses known by name.
LOSSES = {"logistic": LogisticLoss, "squared": SquaredLoss}


def get_loss(loss):
    """A :class:`Loss` instance from a name in :data:`LOSSES` or an instance (returned as is)."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ValueError(f"loss must be one of {tuple(LOSSES)} or a mfkern.losses.Loss instance, got {loss!r}")


class NewtonConvergenceError(RuntimeError):
    """Newton's method for the second layer did not reach its tolerance within the iteration cap.

    Attributes
    ----------
    iterations : int
        Newton iterations done.
    residual : float
        The optimality residual max_j |n lam_a_bar A_j + l'(f_j, y_j)| reached (NaN when it was not finite).
    tol : float
        The tolerance asked for.
    output : int
        The (0-based) output column that failed.
    """

    def __init__(self, message, *, iterations, residual, tol, output):
        super().__init__(message)
        self.iterations = iterations
        self.residual = residual
        self.tol = tol
        self.output = output


@dataclass(frozen=True)
class SecondLayerSolution:
    """Result of :func:`solve_second_layer`.

    Attributes
    ----------
    A : ndarray of shape (n,) or (n, T)
        Dual coefficients (like Y): the second layer is a_k = H[:, k]^T A and f(X) = K A.
    objective : float
        U = (1/T) sum_i [(1/n) sum_j l((K A_i)_j, y_ji) + (lam_a_bar/2) A_i^T K A_i] at A.
    iterations : int
        Newton iterations done, summed over the outputs (0: the start already met the tolerance).
    residual : float
        max over outputs and samples of |n lam_a_bar A + l'(K A, Y)| at A (at most `tol`, or at rounding level).
    outputs : ndarray like A
        f(X) = K A, the network's outputs on the training points.
    """

    A: np.ndarray
    objective: float
    iterations: int
    residual: float
    outputs: np.ndarray


def _check_gram(K):
    """K as a square, symmetric float64 array (the checks of ``core.second_layer``)."""
    return core.checked_symmetric(K)


def _column_objective(loss, f, y, A, ridge):
    """n * Psi_i = sum_j l(f_j, y_j) + (ridge/2) A^T f, with f = K A."""
    return float(np.sum(loss.value(f, y)) + 0.5 * ridge * np.dot(A, f))


def _rounding_floor(K, A, ridge):
    """The residual below which rounding of f = K A and ridge * A leaves nothing to gain (|l''| <= 1 assumed).

    Only reached when tol is near machine precision relative to the coefficients (tiny ridges make A large).
    """
    scale = float(np.max(np.abs(K) @ np.abs(A))) + ridge * float(np.max(np.abs(A)))
    return 64 * _EPS * scale


def _newton_column(K, y, A, loss, ridge, tol, max_iter, output):
    """Damped Newton iterations for one output; returns (A, f, iterations, residual)."""
    iterations = 0
    while True:
        f = K @ A
        g = loss.derivative(f, y)
        gradient = ridge * A + g  # K times this is the gradient of n*Psi in A
        residual = float(np.max(np.abs(gradient)))
        if residual <= tol or residual <= _rounding_floor(K, A, ridge):
            return A, f, iterations, residual
        if iterations == max_iter or not math.isfinite(residual):
            why = ("the residual is not finite" if not math.isfinite(residual)
                   else f"not converged after {iterations} iterations")
            raise NewtonConvergenceError(
                f"Newton's method for the second layer ({loss.name} loss, output {output}): {why}; "
                f"residual max|n lam_a_bar A + l'(KA, y)| = {residual:.3g} > tol {tol:.3g}",
                iterations=iterations, residual=residual if math.isfinite(residual) else math.nan, tol=tol,
                output=output)
        # Newton step on c A + l'(K A) = 0: A_new = (cI + D K)^{-1} (D f - g), evaluated as
        # (1/c) [b - D^{1/2} (D^{1/2} K D^{1/2} + c I)^{-1} D^{1/2} K b], b = D f - g, which needs only the
        # SPD matrix D^{1/2} K D^{1/2} + c I (eigenvalues >= c) even when D has tiny entries or K is singular.
        D = loss.second_derivative(f, y)
        root = np.sqrt(D)
        b = D * f - g
        system = (root[:, None] * K) * root[None, :]
        system[np.diag_indices_from(system)] += ridge
        try:
            factor = scipy.linalg.cho_factor(system, lower=True, overwrite_a=True, check_finite=False)
            v = scipy.linalg.cho_solve(factor, root * (K @ b), check_finite=False)
        except np.linalg.LinAlgError as exc:
            raise NewtonConvergenceError(
                f"Newton's method for the second layer ({loss.name} loss, output {output}): the Newton system "
                f"D^(1/2) K D^(1/2) + {ridge:.3g} I is not positive definite at iteration {iterations + 1}",
                iterations=iterations, residual=residual, tol=tol, output=output) from exc
        step = (b - root * v) / ridge - A
        K_step = K @ step
        # Backtracking (Armijo) on n*Psi; its directional derivative along the Newton step is <= 0. The
        # 8 eps |Psi| slack accepts a full step whose change is below rounding, near the optimum.
        current = _column_objective(loss, f, y, A, ridge)
        slope = float(np.dot(gradient, K_step))
        t = 1.0
        while True:
            trial = A + t * step
            value = _column_objective(loss, f + t * K_step, y, trial, ridge)
            if value <= current + 1e-4 * t * min(slope, 0.0) + 8 * _EPS * abs(current):
                break
            t *= 0.5
            if t < 1e-12:
                raise NewtonConvergenceError(
                    f"Newton's method for the second layer ({loss.name} loss, output {output}): the line search "
                    f"found no decrease at iteration {iterations + 1}; residual {residual:.3g} > tol {tol:.3g}",
                    iterations=iterations, residual=residual, tol=tol, output=output)
        A = trial
        iterations += 1


def solve_second_layer(K, Y, *, ridge, loss="logistic", start=None, tol=1e-8, max_iter=50):
    """The optimal dual coefficients A of the second layer for a convex loss, by damped Newton's method.

    Minimises, for every output column i independently,
    (1/n) sum_j l((K A_i)_j, y_ji) + (lam_a_bar/2) A_i^T K A_i with ridge = n * lam_a_bar (the convention of
    ``core.second_layer``; see the module docstring). With the squared loss the answer is
    ``core.second_layer(K, Y, ridge)`` after one iteration.

    Parameters
    ----------
    K : array-like of shape (n, n)
        Symmetric PSD Gram matrix (``core.gram(W, X)``).
    Y : array-like of shape (n,) or (n, T)
        Targets (labels -1/+1 for the logistic loss).
    ridge : float
        n * lam * lam_a (> 0).
    loss : str or Loss, default="logistic"
    start : array-like like Y, optional
        Warm start (e.g. the previous MFLD step's A); zeros when None. A start that already meets `tol` is
        returned unchanged (bit for bit), which makes resumed runs replay exactly.
    tol : float, default=1e-8
        Stop when max_j |ridge * A_j + l'((K A)_j, y_j)| <= tol: the optimality residual, in units of the
        loss derivative (in (-1, 1) for the logistic loss). Also stops when the residual is at the rounding
        level of the products, 64 eps max_j (|K| |A|)_j (only reachable with tol near machine precision
        relative to A, whose size grows like 1/ridge).
    max_iter : int, default=50
        Newton iterations allowed per output.

    Returns
    -------
    SecondLayerSolution

    Raises
    ------
    NewtonConvergenceError
        When an output does not reach `tol` within `max_iter` iterations (or its line search stalls).
    """
    loss = get_loss(loss)
    K = _check_gram(K)
    n = K.shape[0]
    Y, one_d = as_targets(Y, "Y", n)
    loss.check_targets(Y, "Y")
    ridge = positive(ridge, "ridge")
    tol = positive(tol, "tol")
    max_iter = integer(max_iter, "max_iter", minimum=0)
    if start is not None:
        start, _ = as_targets(start, "start", n)
        if start.shape != Y.shape:
            raise ValueError(f"start must have the shape of Y {Y.shape}, got {start.shape}")
    A, F, objective, iterations, residual = solve_second_layer_unchecked(K, Y, loss, ridge, start, tol, max_iter)
    if one_d:
        A, F = A[:, 0], F[:, 0]
    return SecondLayerSolution(A=A, objective=objective, iterations=iterations, residual=residual, outputs=F)


def solve_second_layer_unchecked(K, Y, loss, ridge, start, tol, max_iter):
    """solve_second_layer without its input checks, for callers that validated once (the classifier's
    per-step solve): K (n, n) symmetric float64, Y (n, T), start (n, T) or None, loss a Loss instance.

    Returns (A, F, objective, iterations, residual) with A and F of shape (n, T).
    """
    n = K.shape[0]
    A0 = np.zeros_like(Y) if start is None else start
    A = np.empty_like(Y)
    F = np.empty_like(Y)
    total_iterations, worst, objective = 0, 0.0, 0.0
    # BLAS and LAPACK on one thread: every product and factorisation then has one summation order whatever
    # the thread settings, so the solution (and an MFLD trajectory built on it) is bitwise reproducible.
    with core.thread_limits(1):
        for i in range(Y.shape[1]):
            column, f, iterations, residual = _newton_column(K, Y[:, i], A0[:, i].copy(), loss, ridge, tol, max_iter,
                                                             i)
            A[:, i] = column
            F[:, i] = f
            total_iterations += iterations
            worst = max(worst, residual)
            objective += _column_objective(loss, f, Y[:, i], column, ridge)
    objective /= n * Y.shape[1]
    return A, F, float(objective), total_iterations, worst


def reduced_objective(K, Y, A, *, ridge, loss="logistic"):
    """U = (1/T) sum_i [(1/n) sum_j l((K A_i)_j, y_ji) + (ridge/(2n)) A_i^T K A_i] at given A (any A).

    At the optimum (``solve_second_layer``) this is the data term of the reduced objective G; for the
    squared loss it is docs/theory.md section 2's U.
    """
    loss = get_loss(loss)
    K = _check_gram(K)
    n = K.shape[0]
    Y, _ = as_targets(Y, "Y", n)
    A, _ = as_targets(A, "A", n)
    if A.shape != Y.shape:
        raise ValueError(f"A must have the shape of Y {Y.shape}, got {A.shape}")
    ridge = positive(ridge, "ridge")
    with core.thread_limits(1):
        F = K @ A
    return float((np.sum(loss.value(F, Y)) + 0.5 * ridge * np.sum(A * F)) / (n * Y.shape[1]))


# ---------------------------------------------------------------------------------------- multinomial
# The softmax (multinomial) logistic loss couples the T outputs of a sample, so its second layer is one
# problem in all outputs at once rather than T independent columns. A full Newton system would be nT x nT;
# instead the solver is a truncated Newton method (conjugate gradients on the Hessian, which needs only
# products with the features) in the primal variables beta = Phi^T A, where Phi = H / sqrt(N) are the
# scaled features, so K = Phi Phi^T. Each product costs n m T (m = number of features) and the n x n Gram
# is never needed. The products are the core's skinny-product loops, each output entry one fixed-order sum
# (threads share whole rows or columns), and the sketch's Gram is summed over fixed blocks of rows in order:
# every bit of the solution is the same for any number of threads.

# Blocks of rows of the sketch's Gram: fixed (the sums do not depend on the threads), few (syrk is efficient
# on tall blocks).
_GRAM_BLOCKS = 2
# Inexact-Newton forcing: CG stops at a residual of min(_FORCING, |g|) |g| (quadratic convergence near the
# optimum) after a Newton iteration whose CG took at most _QUADRATIC_FORCING_CG iterations, else (and at the
# first) min(_FORCING, sqrt|g|) |g| (superlinear). Tighter solves pay where CG is cheap, i.e. where the
# deflation preconditioner fits, as along MFLD runs: on 12 digits solves from an MFLD run (n = 1347, T = 10,
# N = 2000, tol 1e-8, rank 32) 3.5 Newton and 12 CG iterations per solve against 4.0 and 9.0 with the sqrt
# term alone (105 against 122 ms); with the ridge / 30, 9.1 and 61 against 10.6 and 72. Where CG is slow
# (flat spectra, many eigenvalues above the ridge) the quadratic term alone cost 1.1-1.6x the CG iterations
# for one Newton iteration less or none, so there the sqrt term stays.
_FORCING = 0.1
_QUADRATIC_FORCING_CG = 4
# The Newton system is preconditioned by its exact inverse on a sketched top subspace of the features (see
# _Deflation). Its dimension is rank x T; building it (its Gram grows as (rank T)^2, its factorisation as
# (rank T)^3) should stay a small part of a step, so the rank aims at a dimension of _DEFLATION_TARGET_DIM:
# with 10 classes on digits (the setting of bench/multiclass.py, 150 steps, the medians of two sets of three
# interleaved rounds) rank 32 (dimension 320) took 114 and 116 ms per step against 129 and 123 ms for rank 48
# (480); up to 6 classes the rank stays 48. It is never below _DEFLATION_MIN_RANK (many classes: 8 directions
# each) while the dimension stays within _DEFLATION_MAX_DIM; beyond that, no preconditioner.
_DEFLATION_RANK = 48
_DEFLATION_TARGET_DIM = 320
_DEFLATION_MAX_DIM = 1024
_DEFLATION_MIN_RANK = 8
# B is built from the probabilities of the first Newton iteration; it is rebuilt at a later one when the
# previous one needed more CG iterations than this (measured: from a cold start the probabilities move far
# and rebuilding cut CG iterations 2-4x; along an MFLD run the solves rarely need it).
_DEFLATION_REBUILD_CG = 4


_GRAM_POOL = None
_GRAM_POOL_LOCK = threading.Lock()


def _forget_gram_pool():
    """In a forked child: the parent's pool threads do not exist there, so start afresh."""
    global _GRAM_POOL, _GRAM_POOL_LOCK
    _GRAM_POOL, _GRAM_POOL_LOCK = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_gram_pool)


def _gram_pool():
    """The threads that compute the sketch's Gram blocks: started once per process (starting threads for
    every solve cost as much as the work) and shared by all solves."""
    global _GRAM_POOL
    with _GRAM_POOL_LOCK:
        if _GRAM_POOL is None:
            from concurrent.futures import ThreadPoolExecutor

            _GRAM_POOL = ThreadPoolExecutor(max_workers=_GRAM_BLOCKS, thread_name_prefix="mfkern-gram")
        return _GRAM_POOL


class _Products:
    """Products with the features Phi (n, m): Phi @ V and Phi^T @ G in float64, the same in float32, and the
    Hessian product Phi^T S(Phi v) in float32, each bitwise the same for any thread count (gram32, the
    preconditioner's Gram, under core.thread_limits(1)).

    The products are the core's skinny-product loops (``_core.rows_dot`` / ``_core.rows_axpy``: every output
    entry one fixed-order sum, the threads sharing rows or columns), which stream Phi once per few columns
    where BLAS gemm would pack it for every call. The Hessian product only steers the Newton direction
    (inexact Newton), so single precision suffices there and halves the memory traffic, which is what these
    products are bound by; the gradient and the optimality residual, which decide convergence, are float64.
    """

    def __init__(self, Phi, n_threads, Phi32=None):
        self.Phi = Phi
        self.Phi32 = Phi.astype(np.float32) if Phi32 is None else Phi32
        self.n_threads = max(1, int(n_threads))

    def _run(self, jobs):
        if self.n_threads == 1:
            return [job() for job in jobs]
        pool = _gram_pool()
        return [future.result() for future in [pool.submit(job) for job in jobs]]

    def _by_rows(self, matrix, V, dtype):
        """matrix @ V (matrix is Phi or Phi32), shape (n, k)."""
        return np.ascontiguousarray(_core.rows_dot(matrix, np.ascontiguousarray(V.T, dtype=dtype), self.n_threads).T)

    def _by_columns(self, matrix, G, dtype):
        """matrix^T @ G (matrix is Phi or Phi32), shape (m, k)."""
        return np.ascontiguousarray(_core.rows_axpy(matrix, np.ascontiguousarray(G.T, dtype=dtype), self.n_threads).T)

    def forward(self, V):
        """Phi @ V, shape (n, T)."""
        return self._by_rows(self.Phi, V, np.float64)

    def backward(self, G):
        """Phi^T @ G, shape (m, T)."""
        return self._by_columns(self.Phi, G, np.float64)

    def forward32(self, V):
        """Phi @ V in single precision, shape (n, k)."""
        return self._by_rows(self.Phi32, V, np.float32)

    def backward32(self, G):
        """Phi^T @ G in single precision, shape (m, k)."""
        return self._by_columns(self.Phi32, G, np.float32)

    def gram32(self, Z):
        """Z^T Z (float32) for Z (n, k) float32, C-contiguous: BLAS syrk on each of _GRAM_BLOCKS fixed blocks of
        rows (calls over the pool), added in block order. numpy's ``B.T @ B`` is that syrk and, unlike scipy's
        BLAS wrappers, releases the GIL, so the blocks do run in parallel. Call under core.thread_limits(1),
        as the solver does: a multi-threaded BLAS would change the bits with the thread count."""
        size = -(-Z.shape[0] // _GRAM_BLOCKS)

        def job(a):
            block = Z[a:a + size]
            return lambda: block.T @ block

        partials = self._run([job(a) for a in range(0, Z.shape[0], size)])
        out = partials[0]
        for part in partials[1:]:
            out += part
        return out

    def hessian(self, P, v):
        """(Phi^T S(Phi v), Phi v) with S the per-sample softmax Jacobian diag(p_j) - p_j p_j^T (float32
        products, float64 result)."""
        Fv = _core.rows_dot(self.Phi32, np.ascontiguousarray(v.T, dtype=np.float32), self.n_threads)  # (T, n)
        Pt = P.T
        s = Pt * Fv
        s -= Pt * s.sum(axis=0)
        out = _core.rows_axpy(self.Phi32, np.ascontiguousarray(s, dtype=np.float32), self.n_threads)
        return out.T.astype(np.float64), Fv.T.astype(np.float64)


class _Deflation:
    """Preconditioner of the Newton system H = Phi^T S Phi + c I (primal, per class blocks coupled by S):
    exact on a sketched top subspace of the features, c I on its complement.

    MFLD's Grams are numerically low-rank against the ridge (on digits, 36 of 1347 eigenvalues of K exceed
    c), so the few directions where H is far from c I are those of Phi's top right singular vectors. With V
    (m, r) an orthonormal basis of a randomised range sketch of Phi^T (fixed Gaussian test matrix, so V is a
    function of Phi alone and the solve of a resumed run replays bit for bit),

        M^{-1} v = V B^{-1} V^T v + (v - V V^T v) / c,    B = (Phi V)^T S (Phi V) + c I  (r T x r T),

    whose class coupling -p p^T matters: without it (per-class blocks) CG needed 5x more iterations.
    B is built from the probabilities of the first Newton iteration and rebuilt at a later one that follows
    an iteration with many CG iterations (_DEFLATION_REBUILD_CG); it only steers CG, so its products are
    single precision. Measured on digits at step 60 of a run (rank 32, that of 10 classes): 4 Newton and 15
    CG iterations against 4 and 32 without it. Where many eigenvalues of K exceed the ridge the deflated subspace is too small and
    the preconditioner can slow CG down: a Newton iteration whose CG reaches max_cg_iter drops it for the
    rest of the solve.
    """

    def __init__(self, products, P, c, rank):
        n, m = products.Phi.shape
        T = P.shape[1]
        self.c, self.T, self.r = c, T, rank
        sketch = products.forward32(_test_matrix(m, rank))                      # Phi Omega (n, r)
        self.V = _orthonormal_basis(products.backward32(sketch).astype(np.float64))  # range of Phi^T Phi Omega
        self.U = products.forward32(self.V.astype(np.float32))                  # Phi V (n, r)
        self.products = products
        self.update(P)

    def update(self, P):
        """Rebuild B for the probabilities P (n, T); the subspace stays."""
        U, T, rank = self.U, self.T, self.r
        P32 = P.astype(np.float32)
        Z = (P32[:, :, None] * U[:, None, :]).reshape(U.shape[0], T * rank)    # column k r + i: p_k u_i
        B = -self.products.gram32(Z).astype(np.float64)
        for k in range(T):
            block = slice(k * rank, (k + 1) * rank)
            B[block, block] += (U.T @ (U * P32[:, [k]])).astype(np.float64)
        B[np.diag_indices_from(B)] += self.c
        factor, info = scipy.linalg.lapack.dpotrf(B, lower=1, clean=1)
        if info != 0 or not np.all(np.isfinite(factor)) or not np.all(np.diag(factor) > 0):
            raise np.linalg.LinAlgError("the deflated block is not positive definite")
        self.factor = factor

    def apply(self, v):
        """M^{-1} v for v (m, T): V B^{-1} V^T v + (v - V V^T v) / c."""
        coords = self.V.T @ v                                                    # (r, T)
        # LAPACK's solve directly: scipy.linalg.cho_solve's checks cost more than its arithmetic here
        solved, info = scipy.linalg.lapack.dpotrs(self.factor, coords.T.reshape(-1), lower=1)
        if info != 0:
            raise ValueError(f"LAPACK dpotrs rejected its arguments (info {info})")
        return self.V @ (solved.reshape(self.T, self.r).T - coords / self.c) + v / self.c


def _orthonormal_basis(Y):
    """An orthonormal basis (m, r) of the range of Y (m, r), m >> r: Cholesky QR twice (two r x r Grams and
    triangular solves: a few times cheaper than Householder QR at this shape, and orthonormal to rounding while
    Y's condition number is below about 1e7), Householder QR when that fails or leaves Q^T Q - I above 1e-10."""
    Q = Y
    for _ in range(2):
        R, info = scipy.linalg.lapack.dpotrf(Q.T @ Q, lower=0, clean=1)
        if info != 0 or not np.all(np.isfinite(R)) or not np.all(np.diag(R) > 0):
            return np.linalg.qr(Y)[0]
        Q = scipy.linalg.blas.dtrsm(1.0, R, Q, side=1, lower=0)  # Q R^{-1}
    if not np.all(np.abs(Q.T @ Q - np.eye(Q.shape[1])) <= 1e-10):
        return np.linalg.qr(Y)[0]
    return Q


def _deflation(products, P, c):
    """The preconditioner for this system, or None: rank min(48, n, m, max(320 // T, 8)), none when rank x T
    exceeds 1024 or the rank is below 8 without covering all m features (when it covers them, it is the exact
    inverse Hessian at P)."""
    n, m = products.Phi.shape
    T = P.shape[1]
    rank = min(_DEFLATION_RANK, n, m, max(_DEFLATION_TARGET_DIM // T, _DEFLATION_MIN_RANK))
    if rank * T > _DEFLATION_MAX_DIM or (rank < _DEFLATION_MIN_RANK and rank < m):
        return None
    try:
        return _Deflation(products, P, c, rank)
    except (np.linalg.LinAlgError, ValueError):  # rounding made B indefinite: plain CG is still exact
        return None


_TEST_MATRICES = {}


def _test_matrix(m, r):
    """The fixed Gaussian sketching matrix (m, r), float32 (cached: the same bits for every call)."""
    key = (m, r)
    matrix = _TEST_MATRICES.get(key)
    if matrix is None:  # built into a local: another thread may clear the cache meanwhile
        matrix = np.random.default_rng(20240721).standard_normal((m, r)).astype(np.float32)
        _TEST_MATRICES.clear()
        _TEST_MATRICES[key] = matrix
    return matrix


def _softmax(F):
    Z = F - F.max(axis=1, keepdims=True)
    np.exp(Z, out=Z)
    Z /= Z.sum(axis=1, keepdims=True)
    return Z


def _cross_entropy_sum(F, Y):
    """sum_j [logsumexp(F_j) - F_j . y_j] for one-hot (or probability) rows Y."""
    top = F.max(axis=1)
    lse = top + np.log(np.exp(F - top[:, None]).sum(axis=1))
    return float(np.sum(lse) - np.sum(F * Y))


def multinomial_objective(K, Y, A, *, ridge):
    """U = (1/n) sum_j CE((K A)_j, y_j) + (ridge/(2n)) tr(A^T K A) at given dual coefficients A (n, T).

    CE(f, y) = log sum_i exp(f_i) - f . y is the softmax cross-entropy of one-hot labels y. This is the data
    term of the multinomial classifier's reduced objective G (the ridge term sums over the T outputs: one
    loss for all of them, unlike the one-vs-rest average).
    """
    K = _check_gram(K)
    n = K.shape[0]
    Y, A = _one_hot(Y, "Y", n), as_targets(A, "A", n)[0]
    if A.shape != Y.shape:
        raise ValueError(f"A must have the shape of Y {Y.shape}, got {A.shape}")
    ridge = positive(ridge, "ridge")
    with core.thread_limits(1):
        F = K @ A
    return float((_cross_entropy_sum(F, Y) + 0.5 * ridge * np.sum(A * F)) / n)


def _one_hot(Y, name, n):
    Y, _ = as_targets(Y, name, n)
    if Y.shape[1] < 2:
        raise ValueError(f"{name} must have at least 2 columns (one per class) for the multinomial loss, "
                         f"got {Y.shape[1]}")
    if not (np.all((Y == 0.0) | (Y == 1.0)) and np.all(Y.sum(axis=1) == 1.0)):
        raise ValueError(f"{name} must be one-hot: rows of 0/1 with exactly one 1 (the class of the sample)")
    return Y


@dataclass(frozen=True)
class MultinomialSolution:
    """Result of :func:`solve_multinomial_second_layer`.

    Attributes
    ----------
    A : ndarray of shape (n, T)
        Dual coefficients: A = -(P - Y) / ridge with P the softmax of the outputs; the second layer is
        a_k = H[:, k]^T A and f(X) = K A.
    objective : float
        U at A (see :func:`multinomial_objective`).
    iterations : int
        Newton iterations (0: the start already met the tolerance).
    cg_iterations : int
        Conjugate-gradient iterations (Hessian products) over all Newton iterations.
    residual : float
        max_j,i |ridge A + softmax(K A) - Y| at A: the optimality residual, in units of probabilities.
    outputs : ndarray of shape (n, T)
        f(X) = K A.
    """

    A: np.ndarray
    objective: float
    iterations: int
    cg_iterations: int
    residual: float
    outputs: np.ndarray


def solve_multinomial_second_layer(features, Y, *, ridge, start=None, tol=1e-8, max_iter=50, max_cg_iter=200,
                                   n_threads=1):
    """The optimal second layer of the softmax (multinomial) logistic loss, by truncated Newton.

    Minimises over dual coefficients A (n, T)

        (1/n) sum_j CE((K A)_j, y_j) + (lam_a_bar/2) tr(A^T K A),   K = Phi Phi^T,  ridge = n lam_a_bar,

    i.e. multinomial kernel logistic regression with the Gram K of the features Phi (for MFLD:
    Phi = H / sqrt(N), so K is the intrinsic Gram). Equivalently, in the primal variables beta = Phi^T A
    (m, T), scikit-learn's ``LogisticRegression(C=1/ridge, fit_intercept=False)`` on Phi with its multinomial
    loss. The optimum satisfies ridge * A + softmax(K A) - Y = 0: the optimal second layer is
    a_mu(w) = -(1/(n lam_a_bar)) sum_j l'(f(x_j), y_j) h(x_j; w) with l' = softmax - one-hot, as for the
    elementwise losses (module docstring).

    Newton's method on beta with the Hessian system solved by conjugate gradients (each CG iteration a
    single-precision product with Phi and one with Phi^T), an inexact-Newton forcing term and a
    backtracking line search: it converges from any start; warm-started along an MFLD run it takes a few Newton iterations per step. CG is
    preconditioned by the exact inverse Hessian on a randomised sketch of Phi's top right singular subspace
    (min(48, n, m, max(320 // T, 8)) directions per class, none below 8 unless that covers every feature, none
    beyond 1024 in all; the ridge
    on the rest), which suits MFLD's Grams: few of their eigenvalues exceed the ridge. The sketch uses a fixed
    test matrix, so the result is a function of the inputs.

    Parameters
    ----------
    features : array-like of shape (n, m)
        Phi, with K = Phi Phi^T.
    Y : array-like of shape (n, T), T >= 2
        One-hot labels.
    ridge : float
        n * lam * lam_a (> 0).
    start : array-like of shape (n, T), optional
        Warm start for A (zeros when None). A start that already meets `tol` is returned unchanged (bit for
        bit), which makes resumed runs replay exactly.
    tol : float, default=1e-8
        Stop when max |ridge A + softmax(K A) - Y| <= tol (or when that residual is at the rounding level of
        the products).
    max_iter : int, default=50
        Newton iterations allowed.
    max_cg_iter : int, default=200
        Conjugate-gradient iterations allowed per Newton iteration (the Newton step is then inexact, which the
        line search tolerates).
    n_threads : int, default=1
        Threads for the products (the result is the same for any value).

    Returns
    -------
    MultinomialSolution

    Raises
    ------
    NewtonConvergenceError
        When the tolerance is not reached within `max_iter` Newton iterations (or the line search stalls).
    """
    Phi = as_float_array(features, "features", ndim=(2,))
    n = Phi.shape[0]
    Y = _one_hot(Y, "Y", n)
    ridge = positive(ridge, "ridge")
    tol = positive(tol, "tol")
    max_iter = integer(max_iter, "max_iter", minimum=0)
    max_cg_iter = integer(max_cg_iter, "max_cg_iter", minimum=1)
    n_threads = integer(n_threads, "n_threads", minimum=1, maximum=1024)
    if start is not None:
        start, _ = as_targets(start, "start", n)
        if start.shape != Y.shape:
            raise ValueError(f"start must have the shape of Y {Y.shape}, got {start.shape}")
    return solve_multinomial_unchecked(Phi, Y, ridge, start, tol, max_iter, max_cg_iter, n_threads)


def solve_multinomial_unchecked(Phi, Y, ridge, start, tol, max_iter, max_cg_iter, n_threads, features32=None):
    """solve_multinomial_second_layer without its input checks, for callers that validated once: Phi (n, m)
    float64 features, Y (n, T) one-hot, start (n, T) or None; features32, if given, Phi.astype(np.float32)."""
    with core.thread_limits(1):
        return _truncated_newton(_Products(Phi, n_threads, features32), Y, ridge, start, tol, max_iter, max_cg_iter)


def _multinomial_floor(F_A, A, ridge):
    """Residual below which rounding of the products leaves nothing to gain (cf. _rounding_floor)."""
    return 64 * _EPS * (float(np.max(np.abs(F_A))) + ridge * float(np.max(np.abs(A))) + 1.0)


def _finish(A, F_A, Y, ridge, iterations, cg_iterations, residual):
    n = Y.shape[0]
    objective = (_cross_entropy_sum(F_A, Y) + 0.5 * ridge * float(np.sum(A * F_A))) / n
    return MultinomialSolution(A=A, objective=float(objective), iterations=iterations, cg_iterations=cg_iterations,
                               residual=residual, outputs=F_A)


def _truncated_newton(products, Y, ridge, start, tol, max_iter, max_cg_iter):
    def fail(why, iterations, residual):
        raise NewtonConvergenceError(
            f"Newton's method for the second layer (multinomial loss): {why}; residual "
            f"max|n lam_a_bar A + softmax(KA) - Y| = {residual:.3g} > tol {tol:.3g}",
            iterations=iterations, residual=residual if math.isfinite(residual) else math.nan, tol=tol, output=0)

    c = ridge
    if start is None:
        beta = np.zeros((products.Phi.shape[1], Y.shape[1]))
        F = np.zeros_like(Y)
    else:
        A = np.array(start, dtype=np.float64)
        beta = products.backward(A)
        F = products.forward(beta)
        residual = float(np.max(np.abs(c * A + _softmax(F) - Y)))
        if residual <= tol or residual <= _multinomial_floor(F, A, c):
            return _finish(A, F, Y, c, 0, 0, residual)
    iterations = cg_total = 0
    # A start was just checked: the dual its primal point implies (A = -G/c below) is not checked again
    # before the first Newton step (a product saved; along an MFLD run it never met the tolerance), unless
    # no Newton step is allowed.
    check = start is None or max_iter == 0
    while True:
        P = _softmax(F)
        G = P - Y
        A = -G / c
        g = products.backward(G) + c * beta          # gradient of the primal objective
        if check:
            F_A = F - products.forward(g) / c        # = K A
            residual = float(np.max(np.abs(c * A + _softmax(F_A) - Y)))
            if residual <= tol or residual <= _multinomial_floor(F_A, A, c):
                return _finish(A, F_A, Y, c, iterations, cg_total, residual)
        check = True
        if iterations == max_iter or not math.isfinite(residual):
            fail("the residual is not finite" if not math.isfinite(residual)
                 else f"not converged after {iterations} iterations", iterations, residual)
        # Hessian of the primal objective: v -> Phi^T S(Phi v) + c v, S the per-sample softmax Jacobian
        # diag(p) - p p^T. Conjugate gradients from 0, preconditioned by _Deflation (built at the first
        # Newton iteration), with the inexact-Newton forcing term min(_FORCING, |g|) |g| after a Newton
        # iteration with few CG iterations (quadratic near the optimum), else min(_FORCING, sqrt|g|) |g|.
        if iterations == 0:
            preconditioner = _deflation(products, P, c)
        elif preconditioner is not None and last_cg > _DEFLATION_REBUILD_CG:
            try:  # the probabilities moved since B was built (a far start): rebuild it for these
                preconditioner.update(P)
            except (np.linalg.LinAlgError, ValueError):
                preconditioner = None
        g_norm = math.sqrt(float(np.sum(g * g)))
        cheap_cg = iterations > 0 and last_cg <= _QUADRATIC_FORCING_CG
        target = min(_FORCING, g_norm if cheap_cg else math.sqrt(g_norm)) * g_norm
        last_cg = cg_total
        precondition = (lambda v: v.copy()) if preconditioner is None else preconditioner.apply
        step = np.zeros_like(beta)
        F_step = np.zeros_like(F)                     # Phi @ step, accumulated
        r = -g
        z = precondition(r)
        p = z.copy()
        rz = float(np.sum(r * z))
        for _ in range(max_cg_iter):
            q, Fp = products.hessian(P, p)
            q += c * p
            alpha = rz / float(np.sum(p * q))
            step += alpha * p
            F_step += alpha * Fp
            r -= alpha * q
            cg_total += 1
            if math.sqrt(float(np.sum(r * r))) <= target:
                break
            z = precondition(r)
            rz_new = float(np.sum(r * z))
            p *= rz_new / rz
            p += z
            rz = rz_new
        last_cg = cg_total - last_cg  # this Newton iteration's CG iterations
        if last_cg >= max_cg_iter and preconditioner is not None:
            preconditioner = None  # it did not help this system (see _Deflation): plain CG from here on
        # Backtracking (Armijo) on the primal objective sum_j CE + (c/2)|beta|^2; its slope along the
        # step is -g^T H^{-1} g < 0 up to the CG error, which the slack of 8 eps |objective| absorbs.
        current = _cross_entropy_sum(F, Y) + 0.5 * c * float(np.sum(beta * beta))
        slope = float(np.sum(g * step))
        t = 1.0
        while True:
            trial = beta + t * step
            F_trial = F + t * F_step
            value = _cross_entropy_sum(F_trial, Y) + 0.5 * c * float(np.sum(trial * trial))
            if value <= current + 1e-4 * t * min(slope, 0.0) + 8 * _EPS * abs(current):
                break
            t *= 0.5
            if t < 1e-12:
                fail(f"the line search found no decrease at iteration {iterations + 1}", iterations, residual)
        beta = trial
        F = products.forward(beta)  # afresh rather than F_trial, so rounding does not accumulate over iterations
        iterations += 1
