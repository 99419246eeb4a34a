"""The experiments' data: tasks with a clean test set, the initial particles, and the alignments.

Tasks (:func:`make_task`)
    ``"product"``: x ~ N(0, I_d), f(x) = x1*x2 (the paper's task; relevant subspace span(e1, e2)).
    ``"parity"``: x uniform on the hypercube {-1, 1}^d, f(x) = x1*x2*...*xk (a k-sparse parity; span(e1..ek)).
    ``"single-index"``: x ~ N(0, I_d), f(x) = (z^2 - 1)/sqrt(2) with z = e1.x (unit variance; span(e1)).
    Training labels are f(x) + Uniform[-sigma, sigma] noise; test errors are measured against the clean f on
    a fresh test set, which also serves as the fresh sample of the population alignment.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_float_array, integer, non_negative
from ..runner import derive_seed

__all__ = ["TASKS", "Task", "make_task", "initial_particles", "subspace_alignment", "population_alignment"]

TASKS = ("product", "parity", "single-index")


@dataclass
class Task:
    """One problem: training data (X, noisy y, clean f_train), a clean test set and the relevant subspace."""

    name: str
    X: np.ndarray
    y: np.ndarray
    f_train: np.ndarray
    X_test: np.ndarray
    f_test: np.ndarray
    subspace: np.ndarray
    params: dict = field(default_factory=dict)


def _target(name, X, k):
    if name == "product":
        return X[:, 0] * X[:, 1]
    if name == "parity":
        return np.prod(X[:, :k], axis=1)
    z = X[:, 0]
    return (z * z - 1.0) / math.sqrt(2.0)


def make_task(name, n, d, *, seed, sigma=0.0, n_test=2000, k=2):
    """Draw a task of :data:`TASKS`: n training points in dimension d, seeded by `seed`.

    For a given (seed, name, n, d, k) the inputs do not depend on sigma, so noise levels can be compared on
    the same inputs; the noise scales with sigma.
    """
    if name not in TASKS:
        raise ValueError(f"name must be one of {TASKS}, got {name!r}")
    n = integer(n, "n", minimum=2)
    d = integer(d, "d", minimum=2)
    k = integer(k, "k", minimum=1, maximum=d)
    n_test = integer(n_test, "n_test", minimum=1)
    sigma = non_negative(sigma, "sigma")
    rng = np.random.default_rng(derive_seed(seed, "data", name, n, d, k))
    if name == "parity":
        X = rng.choice([-1.0, 1.0], size=(n, d))
        X_test = rng.choice([-1.0, 1.0], size=(n_test, d))
        r = k
    else:
        X = rng.standard_normal((n, d))
        X_test = rng.standard_normal((n_test, d))
        r = 2 if name == "product" else 1
    f_train, f_test = _target(name, X, k), _target(name, X_test, k)
    y = f_train + sigma * rng.uniform(-1.0, 1.0, n)
    params = dict(name=name, n=n, d=d, sigma=sigma, n_test=n_test, seed=int(seed))
    if name == "parity":
        params["k"] = k
    return Task(name, X, y, f_train, X_test, f_test, np.eye(d)[:r], params)


def initial_particles(n_particles, d, lam_w, seed):
    """The initial particles of :class:`mfkern.MeanFieldRegressor` with ``random_state=seed``: draws from
    nu = N(0, I/lam_w), shape (n_particles, d+1)."""
    W = np.random.default_rng(seed).standard_normal((n_particles, d + 1))
    return W / math.sqrt(lam_w)


def subspace_alignment(W, subspace):
    """Parameter alignment with a subspace: mean over particles of ||P u_k||^2 / ||u_k||^2 (0 for u_k = 0).

    P projects onto the span of the rows of `subspace` (orthonormalised here); with one row this is
    :func:`mfkern.core.parameter_alignment`. For isotropic u_k the expected value is r/d.
    """
    W = as_float_array(W, "W", ndim=(2,))
    S = as_float_array(subspace, "subspace", ndim=(1, 2))
    S = S.reshape(-1, S.shape[-1])
    d = S.shape[1]
    if W.shape[1] not in (d, d + 1):
        raise ValueError(f"W must have d = {d} or d+1 = {d + 1} columns for a subspace in R^{d}, got {W.shape[1]}")
    Q, R = np.linalg.qr(S.T)
    if np.min(np.abs(np.diag(R))) <= 1e-12 * max(1.0, np.abs(R).max()):
        raise ValueError("subspace must have linearly independent rows")
    U = W[:, :d]
    sq = np.einsum("kl,kl->k", U, U)
    proj = U @ Q
    num = np.einsum("kl,kl->k", proj, proj)
    return float(np.divide(num, sq, out=np.zeros_like(sq), where=sq > 0).mean())


def population_alignment(K, f):
    """Population kernel alignment E[k(x,x') f(x) f(x')] / (E[f^2] sqrt(E[k(x,x')^2])) estimated from the
    Gram K of m fresh i.i.d. points and f at those points, with off-diagonal (U-statistic) averages so that
    the diagonal k(x, x) does not bias it (the in-sample alignment of docs/theory.md, section 7, keeps it)."""
    K = as_float_array(K, "K", ndim=(2,))
    f = as_float_array(f, "f", ndim=(1,))
    m = f.size
    if K.shape != (m, m) or m < 2:
        raise ValueError(f"K must be (m, m) with m = len(f) >= 2, got {K.shape} for m = {m}")
    off = m * (m - 1)
    num = (f @ K @ f - np.sum(np.diag(K) * f * f)) / off
    k2 = (np.sum(K * K) - np.sum(np.diag(K) ** 2)) / off
    return float(num / (np.mean(f * f) * math.sqrt(k2)))

