"""The one place where the discretisation sweeps advance MFLD: a system of N particles, stepped k at a time.

Every Langevin step of every sweep goes through :func:`advance` on a system made by :func:`make_system`
(the coupled coarse paths of a time sweep, whose Brownian increments are sums of the fine ones, are the
only steps taken elsewhere, in :mod:`mfkern.analysis.timestep`). A system is a training engine
(:class:`mfkern.engine.Engine`): its data, particles, seed and step counter live in C++, and ``run(k)``
takes k steps there under one GIL release. It uses the second-layer solver of ``core.langevin_step``'s
default (Woodbury when N < n, else the dense factorisation), so a system's trajectory is bitwise that of
the same number of ``core.langevin_step`` calls (the noise of step s is keyed by (seed, s)).
"""
from __future__ import annotations

import numpy as np

from .. import core
from .._validation import integer
from ..engine import Engine

__all__ = ["make_system", "advance", "drift_curvature"]


def make_system(cfg, X, Y, particles, *, eta, seed, n_threads=None):
    """The system the sweeps advance: an engine with `particles` on data (X, Y), cfg's hyper-parameters and
    step eta, solving the second layer as ``core.langevin_step`` does by default."""
    solver = "woodbury" if np.shape(particles)[0] < np.shape(X)[0] else "dense"
    return Engine(X, Y, particles, eta=eta, seed=seed, n_threads=n_threads, solver=solver, **cfg.hyper)


def advance(system, k):
    """Advance `system` by k steps; returns it. The sweeps step MFLD only through this function.

    Raises FloatingPointError (the system left at its last good step) when a step diverges.
    """
    result = system.run(integer(k, "k", minimum=0))
    if result.failed:
        raise FloatingPointError(f"the MFLD system diverged at step {system.step + 1}: {result.message}")
    return system


def drift_curvature(W, X, A, cfg, *, n_sample=32, h=1e-4, n_threads=None):
    """Largest |eigenvalue| of the Hessian of the first variation, over a sample of particles.

    The Hessian at particle w (for the measure whose dual coefficients are A, held fixed) is the Jacobian
    of ``core.drift_given_dual`` in w, by central differences with step h, symmetrised. Its spectral norm L
    is the local Lipschitz constant of the drift: Euler-Maruyama is in its small-step regime when
    eta * L << 1 (the contraction factor per step, 1 - eta * L, stays near 1).
    """
    step = max(1, W.shape[0] // n_sample)
    P = np.ascontiguousarray(W[::step][:n_sample])
    D = P.shape[1]
    columns = []
    for j in range(D):
        plus, minus = P.copy(), P.copy()
        plus[:, j] += h
        minus[:, j] -= h
        columns.append((core.drift_given_dual(plus, X, A, n_threads=n_threads, **cfg.hyper)
                        - core.drift_given_dual(minus, X, A, n_threads=n_threads, **cfg.hyper)) / (2 * h))
    hessians = np.stack(columns, axis=2)  # (p, D, D): [k, i, j] = d grad_i / d w_j at particle k
    hessians = 0.5 * (hessians + np.transpose(hessians, (0, 2, 1)))
    return float(np.abs(np.linalg.eigvalsh(hessians)).max())
