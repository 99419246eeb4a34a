"""The implementations that mfkern is measured against, and the BLAS floor.

Every implementation computes the same MFLD step as ``mfkern.core.langevin_step`` (tanh activation, squared
loss, second layer at its kernel-ridge optimum; docs/theory.md, sections 2-5):

    H = tanh(X1 W^T)  (n x N),  K = H H^T / N,  A = (K + ridge I)^{-1} Y,  ridge = n lam lam_a,
    a = H^T A,  grad = -(lam lam_a / T) ((A a^T) o (1 - H o H))^T X1 + lam lam_w W,
    W_new = W - eta grad + sqrt(2 eta lam) xi,

with the noise xi taken from ``mfkern.core.particle_noise`` so that the steps agree to rounding.

* numpy peer: the obvious vectorised code (``np.tanh(X1 @ W.T)``, ``H @ H.T / N``, ``scipy.linalg.cho_factor``
  / ``cho_solve``, the drift as dense array expressions).
* PyTorch peer: G(mu_W) written in torch (``torch.linalg.cholesky`` + ``torch.cholesky_solve``), drift = N times
  its gradient by autograd, float64.
* BLAS floor: the unavoidable dense work of a step done by numpy's BLAS alone (the n x N features product,
  numpy's tanh over them, the syrk of the Gram, the n x n Cholesky, the N x n x (d+1) drift product), with
  preallocated buffers; no implementation of the step can be faster than this on the same BLAS.
"""
from __future__ import annotations

import importlib.util
import inspect
import math
import time

import numpy as np
import scipy.linalg

from mfkern import core

__all__ = [
    "PAPER_HYPER",
    "make_problem",
    "numpy_drift",
    "numpy_step",
    "torch_available",
    "torch_drift",
    "torch_step",
    "mfkern_step",
    "solver_option_available",
    "BlasFloor",
    "max_relative_difference",
]

#: The hyper-parameters of the paper's experiment (docs/theory.md, section 11).
PAPER_HYPER = {"eta": 0.2, "lam": 0.004, "lam_a": 0.25, "lam_w": 0.25}


def _size(value, name, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def make_problem(N, n, d, *, tasks=1, seed=0):
    """A seeded random problem (W, X, Y) of the given size.

    X (n, d) is standard normal (as in the paper), Y = x_1 x_2 (the paper's target; x_1 when d = 1), repeated
    over `tasks` columns when tasks > 1 (shape (n,) when tasks == 1). Particles W (N, d+1) are normal with
    variance 1/(d+1), so pre-activations are O(1): the activation is neither saturated nor linear and the data
    term of the drift is not negligible (which keeps the agreement checks meaningful).

    Parameters
    ----------
    N, n, d : int
        Particles, samples and input dimension.
    tasks : int
        Number of target columns T.
    seed : int
        Seed of numpy's generator.

    Returns
    -------
    W, X, Y : ndarray
        C-contiguous float64 arrays.
    """
    N, n, d = _size(N, "N"), _size(n, "n"), _size(d, "d")
    tasks = _size(tasks, "tasks")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X[:, 0] * X[:, 1] if d >= 2 else X[:, 0].copy()
    Y = y if tasks == 1 else np.repeat(y[:, None], tasks, axis=1)
    W = rng.standard_normal((N, d + 1)) / math.sqrt(d + 1)
    return W, X, np.ascontiguousarray(Y)


def _check(W, X, Y):
    for name, array in (("W", W), ("X", X), ("Y", Y)):
        if not isinstance(array, np.ndarray) or array.dtype != np.float64:
            raise TypeError(f"{name} must be a float64 numpy array")
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}")
    if W.ndim != 2 or W.shape[1] != X.shape[1] + 1:
        raise ValueError(f"W must have shape (N, d+1) = (N, {X.shape[1] + 1}), got {W.shape}")
    if Y.ndim not in (1, 2) or Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y must have shape (n,) or (n, T) with n = {X.shape[0]}, got {Y.shape}")


def numpy_drift(W, X, Y, *, lam, lam_a, lam_w):
    """The drift N * grad G(mu_W) at every particle, shape (N, d+1), written as plain numpy.

    Parameters
    ----------
    W, X, Y : ndarray
        Particles (N, d+1), inputs (n, d), targets (n,) or (n, T).
    lam, lam_a, lam_w : float
        Hyper-parameters (ridge = n lam lam_a).

    Returns
    -------
    ndarray of shape (N, d+1)
    """
    _check(W, X, Y)
    n, N = X.shape[0], W.shape[0]
    Y2 = Y.reshape(n, -1)
    T = Y2.shape[1]
    X1 = np.hstack([X, np.ones((n, 1))])
    H = np.tanh(X1 @ W.T)
    K = H @ H.T / N
    K[np.diag_indices(n)] += n * lam * lam_a
    A = scipy.linalg.cho_solve(scipy.linalg.cho_factor(K), Y2)
    a = H.T @ A
    D = 1 - H * H
    return -(lam * lam_a / T) * (((A @ a.T) * D).T @ X1) + (lam * lam_w) * W


def numpy_step(W, X, Y, *, eta, lam, lam_a, lam_w, seed, step, n_threads=None):
    """One MFLD step W - eta * drift + sqrt(2 eta lam) xi in plain numpy, xi from mfkern's particle_noise.

    Parameters
    ----------
    W, X, Y : ndarray
        Particles (N, d+1), inputs (n, d), targets (n,) or (n, T).
    eta, lam, lam_a, lam_w : float
        Step size and hyper-parameters.
    seed, step : int
        Key of the noise (as in ``mfkern.core.langevin_step``).
    n_threads : int or None
        Threads of the noise generator.

    Returns
    -------
    ndarray of shape (N, d+1)
    """
    grad = numpy_drift(W, X, Y, lam=lam, lam_a=lam_a, lam_w=lam_w)
    xi = core.particle_noise(seed, step, W.shape[0], W.shape[1], n_threads=n_threads)
    return W - eta * grad + math.sqrt(2 * eta * lam) * xi


def torch_available():
    """True when PyTorch can be imported (the PyTorch peer is skipped otherwise)."""
    return importlib.util.find_spec("torch") is not None


def _torch_drift_tensor(torch, W, X, Y, lam, lam_a, lam_w):
    n, N = X.shape[0], W.shape[0]
    Wt = torch.from_numpy(W).requires_grad_(True)
    X1 = torch.cat([torch.from_numpy(X), torch.ones((n, 1), dtype=torch.float64)], dim=1)
    Y2 = torch.from_numpy(Y).reshape(n, -1)
    T = Y2.shape[1]
    H = torch.tanh(X1 @ Wt.T)
    K = H @ H.T / N + (n * lam * lam_a) * torch.eye(n, dtype=torch.float64)
    L = torch.linalg.cholesky(K)
    A = torch.cholesky_solve(Y2, L)
    U = (lam * lam_a / (2 * T)) * (Y2 * A).sum()
    G = U + (lam * lam_w / 2) * (Wt * Wt).sum(dim=1).mean()
    (grad,) = torch.autograd.grad(G, Wt)
    return N * grad


def torch_drift(W, X, Y, *, lam, lam_a, lam_w):
    """The drift N * grad G(mu_W) by PyTorch autograd through the Cholesky solve (float64, CPU).

    Same parameters and result as `numpy_drift`. Raises ModuleNotFoundError when torch is not installed.
    """
    import torch

    _check(W, X, Y)
    return _torch_drift_tensor(torch, W, X, Y, lam, lam_a, lam_w).numpy()


def torch_step(W, X, Y, *, eta, lam, lam_a, lam_w, seed, step, n_threads=None):
    """One MFLD step in PyTorch (drift by autograd), xi from mfkern's particle_noise.

    Same parameters and result as `numpy_step`. PyTorch's own thread count is left to the caller
    (``torch.set_num_threads``).
    """
    import torch

    _check(W, X, Y)
    drift = _torch_drift_tensor(torch, W, X, Y, lam, lam_a, lam_w)
    xi = torch.from_numpy(core.particle_noise(seed, step, W.shape[0], W.shape[1], n_threads=n_threads))
    with torch.no_grad():
        out = torch.from_numpy(W) - eta * drift + math.sqrt(2 * eta * lam) * xi
    return out.numpy()


def solver_option_available():
    """True when ``mfkern.core.langevin_step`` takes a ``solver`` argument ("auto", "dense", "woodbury")."""
    return "solver" in inspect.signature(core.langevin_step).parameters


def mfkern_step(W, X, Y, *, eta, lam, lam_a, lam_w, seed, step, n_threads=None, solver=None):
    """One step of ``mfkern.core.langevin_step`` (the signature of the peers, plus `solver`).

    With `solver` None the library's default path is used; otherwise it is passed on, and a TypeError is
    raised when this mfkern has no ``solver`` option.
    """
    kwargs = {}
    if solver is not None:
        if not solver_option_available():
            raise TypeError("this mfkern.core.langevin_step has no 'solver' option")
        kwargs["solver"] = solver
    return core.langevin_step(W, X, Y, eta=eta, lam=lam, lam_a=lam_a, lam_w=lam_w, seed=seed, step=step,
                              n_threads=n_threads, **kwargs)


class BlasFloor:
    """The dense work no step can avoid, done by numpy's BLAS alone in preallocated buffers.

    ``run()`` computes, in order: Z = X1 W^T (n x N x (d+1) product), tanh(Z) in place (numpy's tanh), the
    syrk K = Z Z^T (numpy detects ``Z @ Z.T``), the Cholesky of K + N ridge I (LAPACK dpotrf in place) and the
    N x n x (d+1) drift product C^T X1 (C a stand-in n x N matrix of drift weights); it returns the seconds
    each took. The sum is the BLAS floor of the step.

    Parameters
    ----------
    W, X : ndarray
        Particles (N, d+1) and inputs (n, d), float64.
    ridge : float
        The ridge added to the Gram's diagonal (keeps the Cholesky well-posed, as in the step).
    """

    COMPONENTS = ("features_product", "tanh", "syrk", "cholesky", "drift_product")

    def __init__(self, W, X, ridge):
        _check(W, X, np.zeros(X.shape[0]))
        n, N = X.shape[0], W.shape[0]
        self.W = W
        self.X1 = np.hstack([X, np.ones((n, 1))])
        self.Z = np.empty((n, N))
        self.K = np.empty((n, n))
        self.C = np.tanh(self.X1 @ W.T)  # realistic values for the stand-in drift weights
        self.G = np.empty(W.shape)
        self.shift = N * float(ridge)  # K here is H H^T, not divided by N
        self._diagonal = self.K.reshape(-1)[:: n + 1]

    def run(self):
        """Run the floor's work once; returns a dict {component: seconds}."""
        clock = time.perf_counter
        t0 = clock()
        np.matmul(self.X1, self.W.T, out=self.Z)
        t1 = clock()
        np.tanh(self.Z, out=self.Z)
        t2 = clock()
        np.matmul(self.Z, self.Z.T, out=self.K)
        t3 = clock()
        self._diagonal += self.shift
        # K is symmetric and C-ordered, so K.T is the same matrix in Fortran order: factored in place.
        _, info = scipy.linalg.lapack.dpotrf(self.K.T, lower=1, overwrite_a=1, clean=0)
        t4 = clock()
        np.matmul(self.C.T, self.X1, out=self.G)
        t5 = clock()
        if info != 0:
            raise np.linalg.LinAlgError(f"BLAS floor: dpotrf failed (info={info})")
        return dict(zip(self.COMPONENTS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)))


def max_relative_difference(result, reference):
    """max |result - reference| / max |reference| (0 when both are zero).

    Parameters
    ----------
    result, reference : array_like
        Arrays of the same shape.

    Returns
    -------
    float
    """
    result, reference = np.asarray(result, dtype=float), np.asarray(reference, dtype=float)
    if result.shape != reference.shape:
        raise ValueError(f"result has shape {result.shape}, reference has shape {reference.shape}")
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    diff = float(np.max(np.abs(result - reference))) if reference.size else 0.0
    if scale == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return diff / scale
