"""Closed forms for the exactly solvable cases (docs/theory.md, section 10).

With the data term off (targets zero) the drift is lam_w_bar * w, so every coordinate of every particle is
an independent Euler-Maruyama chain of the Ornstein-Uhlenbeck process dw = -lam_w_bar w dt + sqrt(2 lam) dB:

    w_{k+1} = (1 - eta lam_w_bar) w_k + sqrt(2 eta lam) xi_k.

Started from the prior N(0, 1/lam_w) (the continuous process's stationary law), every particle stays an
exact Gaussian N(0, v_k I) with the variance of :func:`ou_variance_at_step`; hence the kernel of the erf
network is known in closed form at every step (:func:`erf_kernel` with s^2 = v_k).
"""
from __future__ import annotations

import numpy as np

from .._validation import as_float_array, positive

__all__ = ["ou_stationary_variance", "ou_variance_at_step", "erf_kernel"]


def _eta_rate(eta, lam_w_bar):
    eta = positive(eta, "eta")
    lam_w_bar = positive(lam_w_bar, "lam_w_bar")
    if eta * lam_w_bar >= 2:
        raise ValueError(f"eta * lam_w_bar must be < 2 for a stationary chain, got {eta * lam_w_bar}")
    return eta, lam_w_bar


def ou_stationary_variance(eta, lam, lam_w):
    """Stationary variance 2 lam / (lam_w_bar (2 - eta lam_w_bar)) of the Euler-Maruyama OU chain.

    lam_w_bar = lam * lam_w. As eta -> 0 it tends to 1/lam_w (the continuous process); the relative bias is
    eta lam_w_bar / (2 - eta lam_w_bar) = O(eta).
    """
    lam, lam_w = positive(lam, "lam"), positive(lam_w, "lam_w")
    eta, rate = _eta_rate(eta, lam * lam_w)
    return 2.0 * lam / (rate * (2.0 - eta * rate))


def ou_variance_at_step(step, eta, lam, lam_w, initial_variance=None):
    """Variance of each coordinate after `step` chain steps from N(0, initial_variance) (default 1/lam_w).

    v_k = v_inf + (v_0 - v_inf) (1 - eta lam_w_bar)^(2k), v_inf = :func:`ou_stationary_variance`.
    `step` may be an integer or an array of integers.
    """
    v_inf = ou_stationary_variance(eta, lam, lam_w)
    v0 = 1.0 / lam_w if initial_variance is None else positive(initial_variance, "initial_variance")
    steps = np.asarray(step)
    if steps.dtype.kind not in "iu" or (steps < 0).any():
        raise ValueError(f"step must be a non-negative integer (or array of them), got {step!r}")
    contraction = (1.0 - eta * lam * lam_w) ** 2
    out = v_inf + (v0 - v_inf) * contraction ** steps.astype(float)
    return float(out) if out.ndim == 0 else out


def erf_kernel(X, X2=None, variance=1.0):
    """Infinite-width kernel of h(x; w) = erf(u.x + b) with (u, b) ~ N(0, variance I) (docs/theory.md, section 10).

    k(x, x') = (2/pi) arcsin( 2 s^2 (x.x' + 1) / sqrt((1 + 2 s^2 (|x|^2 + 1)) (1 + 2 s^2 (|x'|^2 + 1))) ),
    s^2 = variance. Returns the (m, m2) matrix over the rows of X and X2 (X2 None: X itself).
    """
    X = as_float_array(X, "X", ndim=(2,))
    X2 = X if X2 is None else as_float_array(X2, "X2", ndim=(2,))
    if X2.shape[1] != X.shape[1]:
        raise ValueError(f"X2 must have d = {X.shape[1]} columns like X, got {X2.shape[1]}")
    s2 = positive(variance, "variance")
    cross = 2.0 * s2 * (X @ X2.T + 1.0)
    norm1 = 1.0 + 2.0 * s2 * (np.einsum("ij,ij->i", X, X) + 1.0)
    norm2 = 1.0 + 2.0 * s2 * (np.einsum("ij,ij->i", X2, X2) + 1.0)
    ratio = cross / np.sqrt(np.outer(norm1, norm2))
    return (2.0 / np.pi) * np.arcsin(np.clip(ratio, -1.0, 1.0))
