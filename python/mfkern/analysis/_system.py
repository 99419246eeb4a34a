"""The one place where the discretisation sweeps advance MFLD: a system of N particles, stepped k at a time.

Every Langevin step of every sweep goes through :func:`advance` on a system made by :func:`make_system`
(the coupled coarse paths of a time sweep, whose Brownian increments are sums of the fine ones, are the
only steps taken elsewhere, in :mod:`mfkern.analysis.timestep`). A system holds its particles, its data
and hyper-parameters, its seed and its step counter; ``run(k)`` takes k steps of ``core.langevin_step``
(the noise of step s is keyed by (seed, s), so k steps at once equal k single steps). A faster engine with
the same contract (construct from X, Y, the particles, the hyper-parameters, eta and the seed; ``run(k)``;
``particles`` and ``step`` readable) can be swapped in by changing :func:`make_system` alone.
"""
from __future__ import annotations

import numpy as np

from .. import core
from .._validation import integer

__all__ = ["LangevinSystem", "make_system", "advance", "drift_curvature"]


class LangevinSystem:
    """N particles of MFLD on fixed data (X, Y), advanced by ``run(k)``: k Euler-Maruyama steps of size eta.

    Step s adds the noise ``core.particle_noise(seed, s, N, d+1)`` (that of ``core.langevin_step``), so
    the trajectory does not depend on how the steps are grouped into calls.
    """

    def __init__(self, X, Y, particles, *, eta, lam, lam_a, lam_w, activation, seed, step=0, n_threads=None):
        self.X, self.Y = X, Y
        self._W = np.array(particles, dtype=float, copy=True)
        self.eta, self.seed, self.step = eta, seed, step
        self.hyper = {"lam": lam, "lam_a": lam_a, "lam_w": lam_w, "activation": activation}
        self.n_threads = n_threads

    @property
    def particles(self):
        """The current particles W (N, d+1) (a copy: the system's state is not changed through it)."""
        return self._W.copy()

    def run(self, k):
        """Take k steps (k >= 0)."""
        for _ in range(k):
            self._W = core.langevin_step(self._W, self.X, self.Y, eta=self.eta, seed=self.seed, step=self.step,
                                         n_threads=self.n_threads, **self.hyper)
            self.step += 1
        return self


def make_system(cfg, X, Y, particles, *, eta, seed, n_threads=None):
    """The system the sweeps advance: `particles` on data (X, Y) with cfg's hyper-parameters and step eta."""
    return LangevinSystem(X, Y, particles, eta=eta, seed=seed, n_threads=n_threads, **cfg.hyper)


def advance(system, k):
    """Advance `system` by k steps; returns it. The sweeps step MFLD only through this function."""
    system.run(integer(k, "k", minimum=0))
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
