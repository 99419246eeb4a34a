"""The one place where the discretisation sweeps advance MFLD: a system of N particles, stepped k at a time.

Every Langevin step of every sweep goes through :func:`advance` (one system) or :func:`advance_ensemble`
(many independent systems in one call) on systems made by :func:`make_system` (the coupled coarse paths of a
time sweep, whose Brownian increments are sums of the fine ones, are the only steps taken elsewhere, in
:mod:`mfkern.analysis.timestep`). A system is a training engine (:class:`mfkern.engine.Engine`): its data,
particles, seed and step counter live in C++, ``run(k)`` takes k steps there under one GIL release, and
:func:`mfkern.engine.run_ensemble` advances many engines in one call, in parallel across them. It uses the
second-layer solver of ``core.langevin_step``'s default (Woodbury when N < n, else the dense factorisation),
so a system's trajectory is bitwise that of the same number of ``core.langevin_step`` calls (the noise of
step s is keyed by (seed, s)).

``kind="core_loop"`` makes instead a system that calls ``core.langevin_step`` once per step from Python (how
the sweeps stepped before the engine existed): the same bits, kept to time the two against each other.
"""
from __future__ import annotations

import numpy as np

from .. import core
from .._validation import integer
from ..engine import Engine, RunResult, run_ensemble

__all__ = ["make_system", "advance", "advance_ensemble", "drift_curvature", "SYSTEM_KINDS", "CoreLoopSystem"]

#: "engine": a :class:`mfkern.engine.Engine`; "core_loop": one ``core.langevin_step`` call per step.
SYSTEM_KINDS = ("engine", "core_loop")


class CoreLoopSystem:
    """MFLD advanced by a Python loop of ``core.langevin_step`` calls (the stateless step), with the
    interface of an engine that :func:`advance` uses: ``run(k)``, ``particles`` and ``step``."""

    def __init__(self, X, Y, particles, *, lam, lam_a, lam_w, eta, seed, activation="tanh", n_threads=None,
                 solver="auto"):
        self._X, self._Y = core.checked_inputs(X), np.asarray(Y, dtype=float)
        self._W = core.checked_particles(particles, self._X, "particles").copy()
        self._hyper = {"lam": lam, "lam_a": lam_a, "lam_w": lam_w, "activation": activation}
        self.eta, self.seed, self.n_threads, self.solver = eta, seed, n_threads, solver
        self._step = 0

    def run(self, k):
        """k steps, one ``core.langevin_step`` call each; stops at the last good step when one fails."""
        for done in range(integer(k, "k", minimum=0)):
            try:
                W = core.langevin_step(self._W, self._X, self._Y, eta=self.eta, seed=self.seed, step=self._step,
                                       n_threads=self.n_threads, solver=self.solver, **self._hyper)
            except FloatingPointError as exc:
                return RunResult(done, "nonfinite", str(exc))
            except (np.linalg.LinAlgError, core.NotPositiveDefiniteError) as exc:  # as the engine reports it
                return RunResult(done, "not_positive_definite", str(exc))
            self._W, self._step = W, self._step + 1
        return RunResult(k, "completed", "")

    @property
    def particles(self):
        return self._W.copy()

    @property
    def step(self):
        return self._step


def make_system(cfg, X, Y, particles, *, eta, seed, n_threads=None, kind="engine"):
    """The system the sweeps advance: an engine (or, with kind="core_loop", a loop of ``core.langevin_step``)
    with `particles` on data (X, Y), cfg's hyper-parameters and step eta, solving the second layer as
    ``core.langevin_step`` does by default."""
    if kind not in SYSTEM_KINDS:
        raise ValueError(f"kind must be one of {SYSTEM_KINDS}, got {kind!r}")
    solver = "woodbury" if np.shape(particles)[0] < np.shape(X)[0] else "dense"
    if kind == "core_loop":
        return CoreLoopSystem(X, Y, particles, eta=eta, seed=seed, n_threads=n_threads, solver=solver, **cfg.hyper)
    return Engine(X, Y, particles, eta=eta, seed=seed, n_threads=n_threads, solver=solver, **cfg.hyper)


def _diverged(system, result):
    return FloatingPointError(f"the MFLD system diverged at step {system.step + 1}: {result.message}")


def advance(system, k):
    """Advance `system` by k steps; returns it. The sweeps step MFLD only through this function and
    :func:`advance_ensemble`.

    Raises FloatingPointError (the system left at its last good step) when a step diverges.
    """
    result = system.run(integer(k, "k", minimum=0))
    if result.failed:
        raise _diverged(system, result)
    return system


def advance_ensemble(systems, k, *, n_threads=None):
    """Advance independent engines k steps each in one :func:`mfkern.engine.run_ensemble` call (n_threads
    engines at a time, each single-threaded); returns them. Every engine ends bitwise where
    :func:`advance` would have left it.

    Raises FloatingPointError naming the first engine (by position) whose step diverged; the others have
    taken their k steps, the failed one stays at its last good step.
    """
    systems = list(systems)
    results = run_ensemble(systems, integer(k, "k", minimum=0), n_threads=n_threads)
    for index, (system, result) in enumerate(zip(systems, results)):
        if result.failed:
            raise FloatingPointError(f"systems[{index}]: {_diverged(system, result)}")
    return systems


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
