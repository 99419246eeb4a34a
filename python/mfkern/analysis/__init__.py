"""Discretisation-error analysis of MFLD: the O(1/N) and O(eta) errors of Theorem 3.7 / Proposition 3.8.

* :func:`particle_error` -- error against the mean-field limit as the number of particles N grows.
* :func:`time_error` -- error against a much finer step as the step size eta shrinks, with the Brownian
  increments of the coarse steps built by summing those of the fine steps (synchronous coupling).
* Exact checks (:mod:`mfkern.analysis.exact`): the data-free Ornstein-Uhlenbeck case, whose Euler-Maruyama
  chain has a known variance at every step, and the erf kernel in closed form.
* Slopes: :func:`seed_slope` (OLS on log errors; delta-method t, bootstrap and OLS-residual intervals),
  :func:`fit_loglog` and :func:`bootstrap_loglog` (see :mod:`mfkern.analysis.stats`).
* Sweeps show progress, derive every run's seed from (base seed, run key) with numpy's SeedSequence, run in
  parallel processes (n_jobs) and resume from a JSON-lines cache of finished runs in out_dir.
* Command line: ``mfkern discretization`` (:func:`add_cli_arguments`, :func:`run_cli`).
"""
from ._command import add_cli_arguments, run_cli, run_suite
from ._config import TASKS, DiscretizationConfig, derive_seed, initial_particles
from ._result import METRICS, ErrorSweep
from ._runner import CACHE_NAME
from .exact import erf_kernel, ou_stationary_variance, ou_variance_at_step
from .particle import particle_error, particle_run
from .stats import (
    STATISTICS,
    abs_mean_statistic,
    bootstrap_loglog,
    fit_loglog,
    mean_interval,
    mean_statistic,
    root_mean_statistic,
    seed_slope,
)
from .timestep import coupled_paths, step_ratios, time_error, time_run

__all__ = [
    "DiscretizationConfig",
    "TASKS",
    "METRICS",
    "CACHE_NAME",
    "ErrorSweep",
    "particle_error",
    "time_error",
    "particle_run",
    "time_run",
    "coupled_paths",
    "step_ratios",
    "derive_seed",
    "initial_particles",
    "erf_kernel",
    "ou_stationary_variance",
    "ou_variance_at_step",
    "fit_loglog",
    "bootstrap_loglog",
    "seed_slope",
    "STATISTICS",
    "root_mean_statistic",
    "mean_interval",
    "mean_statistic",
    "abs_mean_statistic",
    "add_cli_arguments",
    "run_cli",
    "run_suite",
]
