"""Discretisation-error analysis of MFLD: the O(1/N) and O(eta) errors of Theorem 3.7 / Proposition 3.8.

* :func:`particle_error` -- error against the mean-field limit as the number of particles N grows.
* :func:`time_error` -- error against a much finer step as the step size eta shrinks, with the Brownian
  increments of the coarse steps built by summing those of the fine steps (synchronous coupling).
* Error against time (``by_time`` of both sweeps), a stationarity check of the averaging window
  (:func:`stationarity`), the drift's curvature and eta * L (the small-step regime), and
  :func:`path_separation` (why the strong error saturates over long horizons).
* :func:`discretization_benchmark`: the microbenchmark for one's own configuration (errors, slopes, figures).
* Every Langevin step of the sweeps goes through :func:`advance` (one system) or :func:`advance_ensemble`
  (many in one :func:`mfkern.engine.run_ensemble` call) on systems made by :func:`make_system`; by default
  (``backend="ensemble"``) a sweep's independent runs advance together as one ensemble (see BACKENDS).
* Exact checks (:mod:`mfkern.analysis.exact`): the data-free Ornstein-Uhlenbeck case, whose Euler-Maruyama
  chain has a known variance at every step, and the erf kernel in closed form.
* Slopes: :func:`seed_slope` (OLS on log errors; delta-method t, bootstrap and OLS-residual intervals),
  :func:`fit_loglog` and :func:`bootstrap_loglog` (see :mod:`mfkern.analysis.stats`).
* Sweeps show progress, derive every run's seed from (base seed, run key) and run n_jobs at a time (threads
  of the ensemble, or processes through :mod:`mfkern.runner` with backend "engine"), resuming from a
  JSON-lines cache of finished runs in out_dir (the same cache for every backend).
* Command line: ``mfkern discretization`` (:func:`add_cli_arguments`, :func:`run_cli`).
"""
from ..runner import derive_seed
from ._benchmark import BenchmarkResult, discretization_benchmark
from ._command import SUITES, add_cli_arguments, plot_by_time, plot_sweep, run_cli, run_suite
from ._config import TASKS, DiscretizationConfig, initial_particles, report_times
from ._result import CACHE_NAME, CACHE_VERSION, METRICS, ErrorSweep
from ._ensemble import BACKENDS
from ._system import SYSTEM_KINDS, advance, advance_ensemble, drift_curvature, make_system
from .exact import erf_kernel, ou_stationary_variance, ou_variance_at_step
from .particle import particle_error, particle_report_steps, particle_run, particle_runs
from .stats import (
    STATISTICS,
    abs_mean_statistic,
    bootstrap_loglog,
    fit_loglog,
    mean_interval,
    mean_statistic,
    root_mean_statistic,
    seed_slope,
    stationarity,
)
from .timestep import coupled_paths, path_separation, step_ratios, time_error, time_run, time_runs

__all__ = [
    "DiscretizationConfig",
    "TASKS",
    "METRICS",
    "CACHE_NAME",
    "CACHE_VERSION",
    "SUITES",
    "BenchmarkResult",
    "discretization_benchmark",
    "make_system",
    "advance",
    "advance_ensemble",
    "BACKENDS",
    "SYSTEM_KINDS",
    "drift_curvature",
    "path_separation",
    "stationarity",
    "report_times",
    "particle_report_steps",
    "plot_sweep",
    "plot_by_time",
    "ErrorSweep",
    "particle_error",
    "time_error",
    "particle_run",
    "particle_runs",
    "time_run",
    "time_runs",
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
