"""The configuration of one discretisation experiment, its data, and the derivation of run seeds."""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .. import core
from .._validation import activation_name, integer, positive, seed_value

__all__ = ["DiscretizationConfig", "TASKS", "checked_config", "initial_particles", "report_times", "INIT_STEP"]

#: Tasks: "product" is the paper's experiment (y = x1 * x2, x ~ N(0, I_d), d >= 2); "ou" switches the data
#: term off (targets identically zero, so the second layer is zero and every coordinate of every particle is
#: an independent Ornstein-Uhlenbeck process: the exactly solvable case of docs/theory.md, section 10).
TASKS = ("product", "ou")

#: The Philox counter step reserved for the initial particles: trajectories use steps 0, 1, 2, ... and never
#: reach it, so the initial draw is independent of every step's noise.
INIT_STEP = 2**32 - 1

# Purposes in the derived seeds, so that particle runs, reference runs and time runs never share a stream.
PURPOSE_PARTICLE, PURPOSE_REFERENCE, PURPOSE_TIME = 0, 1, 2


def _real(value, name, *, minimum=None, open_minimum=None, maximum=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if open_minimum is not None and value <= open_minimum:
        raise ValueError(f"{name} must be > {open_minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


@dataclasses.dataclass(frozen=True)
class DiscretizationConfig:
    """One MFLD experiment: data, hyper-parameters, step size, run length and base seed.

    Frozen and picklable, so it can be hashed into cache keys and sent to worker processes. Fields are
    validated and normalised (ints stay ints, reals become floats) on construction.

    Parameters
    ----------
    task : {"product", "ou"}
        "product": targets y = x1 * x2 (the paper's experiment); "ou": targets zero, data term off.
    n, d : int
        Number of training points and input dimension; x ~ N(0, I_d).
    n_probe : int
        Size of the fixed probe set (fresh points from the input law) on which kernels and predictors
        are compared; the sup-errors are maxima over its points (pairs of points for the kernel).
    data_seed : int
        Seed of the training inputs and of the probe set (fixed across runs: all runs see the same data).
    lam, lam_a, lam_w : float
        Temperature and regularisation (docs/theory.md, section 2). Initial particles are drawn from the prior
        N(0, I / lam_w).
    eta : float
        Step size of particle sweeps (time sweeps take their own grid; their horizon defaults to
        eta * n_steps).
    n_steps : int
        Number of Langevin steps of a particle run (0: the initial draw only).
    record_every : int
        Spacing, in steps, of the snapshots averaged in the averaging window.
    average_from : float in [0, 1)
        Fraction of the run discarded as burn-in; time averages use the snapshots after it.
    activation : {"tanh", "erf"}
    seed : int
        Base seed; every run's seed is derived from it (see :func:`mfkern.runner.derive_seed`).
    n_times : int
        Number of report times at which the errors are also measured (error against time, see
        :func:`report_times`).
    """

    task: str = "product"
    n: int = 64
    d: int = 15
    n_probe: int = 16
    data_seed: int = 0
    lam: float = 0.02
    lam_a: float = 1.0
    lam_w: float = 1.0
    eta: float = 1.0
    n_steps: int = 200
    record_every: int = 5
    average_from: float = 0.5
    activation: str = "tanh"
    seed: int = 0
    n_times: int = 5

    def __post_init__(self):
        if not isinstance(self.task, str) or self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        values = {
            "n": integer(self.n, "n", minimum=1),
            "d": integer(self.d, "d", minimum=2 if self.task == "product" else 1),
            "n_probe": integer(self.n_probe, "n_probe", minimum=1),
            "data_seed": seed_value(self.data_seed, "data_seed"),
            "lam": positive(self.lam, "lam"),
            "lam_a": positive(self.lam_a, "lam_a"),
            "lam_w": positive(self.lam_w, "lam_w"),
            "eta": positive(self.eta, "eta"),
            "n_steps": integer(self.n_steps, "n_steps", minimum=0, maximum=2**32 - 2),
            "record_every": integer(self.record_every, "record_every", minimum=1),
            "average_from": _real(self.average_from, "average_from", minimum=0.0),
            "activation": activation_name(self.activation),
            "seed": seed_value(self.seed, "seed"),
            "n_times": integer(self.n_times, "n_times", minimum=1, maximum=64),
        }
        if values["average_from"] >= 1:
            raise ValueError(f"average_from must be < 1 (a fraction of the run), got {values['average_from']}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @property
    def lam_w_bar(self):
        """lam * lam_w: the rate of the weight-decay (Ornstein-Uhlenbeck) part of the drift."""
        return self.lam * self.lam_w

    @property
    def hyper(self):
        """The keyword arguments lam, lam_a, lam_w, activation taken by mfkern.core."""
        return {"lam": self.lam, "lam_a": self.lam_a, "lam_w": self.lam_w, "activation": self.activation}

    def to_dict(self):
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def data(self):
        """Training inputs X (n, d), targets Y (n,) and probe inputs (n_probe, d), fixed by data_seed."""
        X = np.random.default_rng(np.random.SeedSequence(self.data_seed, spawn_key=(0,))).standard_normal(
            (self.n, self.d))
        probe = np.random.default_rng(np.random.SeedSequence(self.data_seed, spawn_key=(1,))).standard_normal(
            (self.n_probe, self.d))
        Y = X[:, 0] * X[:, 1] if self.task == "product" else np.zeros(self.n)
        return X, Y, probe

    def snapshot_steps(self, n_steps=None):
        """Steps whose states enter the time averages: every record_every-th step counted back from the
        last one (always included), from ceil(average_from * n_steps) on."""
        n_steps = self.n_steps if n_steps is None else n_steps
        first = math.ceil(self.average_from * n_steps)
        return list(range(n_steps, first - 1, -self.record_every))[::-1]


def report_times(last, first, count, unit=1):
    """`count` report points, geometric from `first` to `last`, rounded to multiples of `unit` (distinct,
    ascending, the last always included). Used for the error-against-time curves, in steps."""
    last, unit = integer(last, "last", minimum=0), integer(unit, "unit", minimum=1)
    if last == 0:
        return [0]
    first = min(max(first, unit), last)
    values = np.geomspace(first, last, count) if count > 1 else np.array([last])
    points = sorted({max(unit, int(round(v / unit)) * unit) for v in values} | {last})
    return [p for p in points if p <= last]


def initial_particles(seed, n_particles, d, lam_w):
    """Initial particles W (N, d+1) ~ N(0, I / lam_w), drawn with the core generator at INIT_STEP.

    Particle k's draw depends only on (seed, k): a run with more particles extends one with fewer.
    """
    return core.particle_noise(seed, INIT_STEP, n_particles, d + 1) / math.sqrt(lam_w)


def checked_config(config):
    """`config` itself when it is a DiscretizationConfig (the sweeps' argument check), else TypeError."""
    if not isinstance(config, DiscretizationConfig):
        raise TypeError(f"config must be a DiscretizationConfig, got {type(config).__name__}")
    return config
