"""Time-discretisation error: MFLD with step eta against a much finer step, synchronously coupled (O(eta)).

Coupling: all step sizes are integer multiples r * eta_ref of the reference step and share one Brownian
path. The fine increments are sqrt(eta_ref) * xi_j with xi_j = ``core.particle_noise(seed, j, N, d+1)``
(exactly the noise ``core.langevin_step`` adds at step j, so the reference path *is* the library's
dynamics with step eta_ref, advanced by :func:`mfkern.analysis._system.advance`). A coarse step of size
eta = r eta_ref covering fine steps j0..j0+r-1 uses their sum as its Brownian increment, so every path is
driven by the same Brownian motion: the weak error (difference of expectations, docs/theory.md, section 10)
is measured at several times with the coupling shrinking its variance, and the strong error (distance
between coupled paths) is reported without a theory slope.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .. import core, runner
from .._validation import integer, positive
from ._config import PURPOSE_TIME, DiscretizationConfig, checked_config, initial_particles, report_times
from ._result import CACHE_NAME, CACHE_VERSION, ErrorSweep, check_replicates, summarize
from ._ensemble import advance_and_record, check_backend, cpu_total, execute_runs, thread_map
from ._system import advance, advance_ensemble, drift_curvature, make_system
from .exact import ou_stationary_variance, ou_variance_at_step
from .stats import fit_loglog, stationarity

__all__ = ["time_error", "time_run", "time_runs", "coupled_paths", "step_ratios", "path_separation"]


def _step_sizes(etas):
    if isinstance(etas, (str, bytes)) or not hasattr(etas, "__iter__"):
        raise TypeError(f"etas must be a sequence of positive step sizes, got {type(etas).__name__}")
    values = [positive(eta, "etas") for eta in etas]
    if not values:
        raise ValueError("etas must not be empty")
    if len(set(values)) != len(values):
        raise ValueError(f"etas must be distinct, got {values}")
    return sorted(values)


def step_ratios(etas, reference_eta):
    """The integers r with eta = r * reference_eta (ValueError if some eta is not such a multiple)."""
    reference_eta = positive(reference_eta, "reference_eta")
    ratios = []
    for eta in etas:
        ratio = eta / reference_eta
        r = round(ratio)
        if r < 2 or abs(ratio - r) > 1e-9 * ratio:
            raise ValueError(f"every eta must be an integer multiple >= 2 of reference_eta = {reference_eta} "
                             f"(synchronous coupling sums whole fine steps), got eta = {eta} (ratio {ratio})")
        ratios.append(r)
    return ratios


#: A particle counts as "far" from its reference path beyond this fraction of the RMS particle norm.
FAR_FRACTION_OF_NORM = 0.25


def _G(U, W, cfg):
    return float(U + 0.5 * cfg.lam_w_bar * np.mean(np.einsum("kl,kl->k", W, W)))


class _ReferencePath:
    """The fine-step reference path of one replicate: its system, advanced by the caller through ``stops``,
    and what :meth:`record` keeps at each stop (G, mean(w^2) and the particles at the checkpoints, the
    drift's curvature at the first and last steps)."""

    def __init__(self, cfg, X, Y, n_particles, seed, reference_eta, n_fine, checkpoints, n_threads, curvature,
                 kind="engine"):
        self.cfg, self.X, self.Y, self.n_fine, self.n_threads = cfg, X, Y, n_fine, n_threads
        self.checkpoints, self.curvature = set(checkpoints), curvature
        self.W0 = initial_particles(seed, n_particles, cfg.d, cfg.lam_w)
        self.system = make_system(cfg, X, Y, self.W0, eta=reference_eta, seed=seed, n_threads=n_threads, kind=kind)
        self.stops = sorted(self.checkpoints | ({0, n_fine} if curvature else set()) | {n_fine})
        self.particles_at = {}  # checkpoint -> the reference particles there
        self.records = {"G_ref": [], "mean_sq_ref": [], "curvature": {}}

    def record(self, j):
        """Measure the reference path, which must be at fine step j (one of ``stops``, in order)."""
        assert self.system.step == j, (self.system.step, j)
        cfg, n_threads = self.cfg, self.n_threads
        at_ends = self.curvature and j in (0, self.n_fine)
        if j not in self.checkpoints and not at_ends:
            return
        W_ref = self.system.particles
        _, A_ref, U_ref = core.drift(W_ref, self.X, self.Y, return_dual=True, n_threads=n_threads, **cfg.hyper)
        if at_ends:
            self.records["curvature"]["initial" if j == 0 else "final"] = drift_curvature(
                W_ref, self.X, A_ref, cfg, n_threads=n_threads)
        if j in self.checkpoints:
            self.records["G_ref"].append(_G(U_ref, W_ref, cfg))
            self.records["mean_sq_ref"].append(float(np.mean(W_ref * W_ref)))
            self.particles_at[j] = W_ref


def _coarse_paths(cfg, X, Y, reference, seed, etas, ratios, reference_eta, n_fine, n_threads):
    """The coarse paths of one replicate, coupled to its (finished) reference path: they take their steps
    here, with the sums of the fine increments, and are compared with the reference particles at its
    checkpoints. Returns (records, final states)."""
    W0, checkpoints, n_particles = reference.W0, reference.checkpoints, reference.W0.shape[0]
    states = [W0.copy() for _ in ratios]
    increments = [np.zeros_like(W0) for _ in ratios]
    grads, Us = [None] * len(ratios), [None] * len(ratios)
    sqrt_fine, noise_scale = math.sqrt(reference_eta), math.sqrt(2.0 * cfg.lam)
    records = {"G": [[] for _ in ratios], "mean_sq": [[] for _ in ratios], "msd": [[] for _ in ratios],
               "median_distance": [[] for _ in ratios], "far_fraction": [[] for _ in ratios]}
    for j in range(n_fine + 1):
        # Drift at the start of each coarse step (and at the end, for the records at the final time).
        for i, r in enumerate(ratios):
            if j % r == 0:
                grads[i], _, Us[i] = core.drift(states[i], X, Y, return_dual=True, n_threads=n_threads,
                                                **cfg.hyper)
        if j in checkpoints:
            W_ref = reference.particles_at[j]
            # "Far": a particle whose coarse path is a quarter of the typical particle norm away from its
            # fine path (in another basin, not a small first-order deviation).
            far = FAR_FRACTION_OF_NORM * math.sqrt(np.mean(np.einsum("kl,kl->k", W_ref, W_ref)))
            for i, W in enumerate(states):
                records["G"][i].append(_G(Us[i], W, cfg))
                records["mean_sq"][i].append(float(np.mean(W * W)))
                diff = W - W_ref
                squared = np.einsum("kl,kl->k", diff, diff)
                records["msd"][i].append(float(np.mean(squared)))
                records["median_distance"][i].append(float(np.median(np.sqrt(squared))))
                records["far_fraction"][i].append(float(np.mean(squared > far * far)))
        if j == n_fine:
            break
        # xi_j = particle_noise(seed, j): the noise the reference system adds at its step j.
        fine_increment = sqrt_fine * core.particle_noise(seed, j, n_particles, cfg.d + 1, n_threads=n_threads)
        for i, (eta, r) in enumerate(zip(etas, ratios)):
            increments[i] += fine_increment
            if (j + 1) % r == 0:
                states[i] = states[i] - eta * grads[i] + noise_scale * increments[i]
                increments[i][:] = 0.0
    return records, states


def _simulate(cfg, X, Y, n_particles, seed, etas, ratios, reference_eta, n_fine, checkpoints, n_threads,
              curvature=False, kind="engine"):
    """Coupled paths for all step sizes; records (G, mean w^2, distance to the reference) at checkpoints.

    The reference path is a system advanced (:func:`mfkern.analysis._system.advance`) from checkpoint to
    checkpoint; the coarse paths take their steps in :func:`_coarse_paths`, with the sums of the fine
    increments. Returns (records, final states, final reference particles). Checkpoints are fine-step
    indices that are multiples of every ratio, so every path sits at a step boundary there.
    """
    reference = _ReferencePath(cfg, X, Y, n_particles, seed, reference_eta, n_fine, checkpoints, n_threads,
                               curvature, kind)
    for j in reference.stops:
        advance(reference.system, j - reference.system.step)
        reference.record(j)
    records, states = _coarse_paths(cfg, X, Y, reference, seed, etas, ratios, reference_eta, n_fine, n_threads)
    return {**records, **reference.records}, states, reference.system.particles


def coupled_paths(config, *, n_particles, seed, etas, reference_eta, n_fine_steps, n_threads=None):
    """Synchronously coupled MFLD paths for several step sizes, run for n_fine_steps * reference_eta.

    Returns a dict: ``eta -> W`` at the final time for every eta, and ``"reference" -> W`` for the path with
    step reference_eta (identical to iterating ``core.langevin_step`` with this seed). n_fine_steps must be
    a multiple of every ratio eta / reference_eta.
    """
    cfg = checked_config(config)
    etas = _step_sizes(etas)
    ratios = step_ratios(etas, reference_eta)
    n_particles = integer(n_particles, "n_particles", minimum=1)
    n_fine = integer(n_fine_steps, "n_fine_steps", minimum=0)
    lcm = math.lcm(*ratios)
    if n_fine % lcm:
        raise ValueError(f"n_fine_steps must be a multiple of every ratio eta/reference_eta (lcm {lcm}), "
                         f"got {n_fine}")
    X, Y, _ = cfg.data()
    _, states, reference = _simulate(cfg, X, Y, n_particles, seed, etas, ratios, reference_eta, n_fine, set(),
                                     n_threads)
    out = dict(zip(etas, states))
    out["reference"] = reference
    return out


def _checkpoints(average_from, n_fine, every, report_steps):
    """The window's checkpoints (multiples of `every` from ceil(average_from * n_fine)) and all checkpoints."""
    window = [j for j in range(0, n_fine + 1, every) if j >= math.ceil(average_from * n_fine)]
    return window, sorted(set(window) | set(report_steps))


def time_run(spec, n_threads=None, kind="engine"):
    """One replicate of a time sweep: all step sizes coupled to one Brownian path (JSON-ready result).

    spec: {"config", "n_particles", "seed", "etas", "reference_eta", "n_fine", "checkpoint_every",
    "report_steps"}. Records G, mean(w^2) (all coordinates) and the mean squared distance per particle to
    the reference path at every checkpoint: the window's (fine steps that are multiples of
    checkpoint_every, from ceil(average_from * n_fine)) and the report steps (error against time); and the
    curvature of the drift on the reference path at the first and last steps. The reference path is a
    system of `kind` (see :func:`mfkern.analysis.make_system`). ``cpu_s``: the CPU time the run took.
    """
    started = time.process_time()
    cfg, X, Y, ratios, checkpoints = _time_setup(spec)
    records, _, _ = _simulate(cfg, X, Y, spec["n_particles"], spec["seed"], spec["etas"], ratios,
                              spec["reference_eta"], spec["n_fine"], set(checkpoints), n_threads,
                              curvature=cfg.task != "ou", kind=kind)
    records["checkpoints"] = checkpoints
    records["cpu_s"] = time.process_time() - started
    return records


def _time_setup(spec):
    cfg = DiscretizationConfig(**spec["config"])
    X, Y, _ = cfg.data()
    ratios = step_ratios(spec["etas"], spec["reference_eta"])
    _, checkpoints = _checkpoints(cfg.average_from, spec["n_fine"], spec["checkpoint_every"], spec["report_steps"])
    return cfg, X, Y, ratios, checkpoints


def time_runs(specs, n_threads=1, *, progress=False, desc="time runs"):
    """Several replicates of one time sweep (specs differing only in seed and replicate) together: their
    reference paths advance as one ensemble (:func:`mfkern.analysis._system.advance_ensemble`, n_threads
    engines at a time) from checkpoint to checkpoint, then the replicates' coarse paths run (through a thread
    pool, but one core call at a time: each holds the core's lock). Returns what :func:`time_run` would for
    each spec, bitwise, without ``cpu_s``."""
    if not specs:
        raise ValueError("specs must hold at least one time run")
    setups = [_time_setup(spec) for spec in specs]
    references = [_ReferencePath(cfg, X, Y, spec["n_particles"], spec["seed"], spec["reference_eta"],
                                 spec["n_fine"], set(checkpoints), 1, cfg.task != "ou")
                  for spec, (cfg, X, Y, _, checkpoints) in zip(specs, setups)]
    stops = references[0].stops
    if any(reference.stops != stops for reference in references):
        raise ValueError("an ensemble of time runs needs one sweep (the same checkpoints for every replicate)")
    advance_and_record([reference.system for reference in references], references, stops, n_threads=n_threads,
                       desc=desc, progress=progress)

    def coarse(index):
        spec, (cfg, X, Y, ratios, checkpoints), reference = specs[index], setups[index], references[index]
        records, _ = _coarse_paths(cfg, X, Y, reference, spec["seed"], spec["etas"], ratios, spec["reference_eta"],
                                   spec["n_fine"], 1)
        return {**records, **reference.records, "checkpoints": checkpoints}

    return thread_map(coarse, range(len(specs)), n_threads)


def path_separation(config, *, n_particles, eta, horizon, seed=0, epsilon=1e-6, n_times=8, n_threads=None,
                    backend="ensemble"):
    """How two MFLD paths with the same noise and step eta, started epsilon apart, separate over time.

    Both paths are systems with the same seed (the same Brownian increments), advanced together in one
    ensemble (:func:`mfkern.analysis._system.advance_ensemble`, backend "ensemble") or one after the other
    by :func:`mfkern.analysis._system.advance` (backend "engine"; "core_loop": systems that step by
    ``core.langevin_step`` calls): the same bits either way. The second starts at W0 + epsilon * Z / rms(Z)
    with Z standard normal. Returns a dict with ``t`` (report times, geometric from one step to `horizon`), ``distance`` (root mean square
    over particles of |w_k - w'_k|) and ``growth`` = distance / epsilon. A contracting drift (the data-free
    OU case: growth (1 - eta lam_w_bar)^k exactly) keeps growth <= 1; growth >> 1 would mean that the
    dynamics amplifies small differences exponentially (it does not on the product task: see the suites'
    results), in which case the coupled paths' first-order errors would be amplified over time.
    """
    cfg = checked_config(config)
    backend = check_backend(backend)
    n_particles = integer(n_particles, "n_particles", minimum=1)
    eta, horizon, epsilon = positive(eta, "eta"), positive(horizon, "horizon"), positive(epsilon, "epsilon")
    n_steps = max(1, int(round(horizon / eta)))
    X, Y, _ = cfg.data()
    W0 = initial_particles(seed, n_particles, cfg.d, cfg.lam_w)
    Z = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,))).standard_normal(W0.shape)
    W1 = W0 + epsilon * Z / math.sqrt(np.mean(np.einsum("kl,kl->k", Z, Z)))
    kind = "core_loop" if backend == "core_loop" else "engine"
    first = make_system(cfg, X, Y, W0, eta=eta, seed=seed, n_threads=n_threads, kind=kind)
    second = make_system(cfg, X, Y, W1, eta=eta, seed=seed, n_threads=n_threads, kind=kind)
    steps = report_times(n_steps, 1, integer(n_times, "n_times", minimum=1))
    distance = []
    for step in steps:
        if backend == "ensemble":
            advance_ensemble([first, second], step - first.step, n_threads=n_threads)
        else:
            advance(first, step - first.step)
            advance(second, step - second.step)
        diff = first.particles - second.particles
        distance.append(float(math.sqrt(np.mean(np.einsum("kl,kl->k", diff, diff)))))
    return {"t": [k * eta for k in steps], "steps": steps, "distance": distance,
            "growth": [d / epsilon for d in distance], "epsilon": epsilon, "eta": eta, "n_particles": n_particles}


def time_error(config, etas=(0.25, 0.5, 1.0, 2.0), seeds=4, *, n_particles=128, reference_eta=None,
               reference_ratio=8, horizon=None, n_checkpoints=100, n_jobs=1, out_dir=None, progress=False,
               n_threads=None, level=0.95, n_boot=2000, backend="ensemble"):
    """Time-discretisation error of MFLD against a finer step with the same Brownian path, and its rate.

    For every replicate, runs the paths of all step sizes in `etas` and the reference step together
    (synchronous coupling, see the module docstring) up to `horizon`, and measures

    * over the window after burn-in (config.average_from), averaged over its checkpoints: ``G_weak`` =
      |E (G(W_eta) - G(W_ref))| (the weak error the theorem bounds, O(eta) uniformly in time: theory slope
      +1) and ``strong`` = sqrt(E (1/N) sum_k |w_k^eta - w_k^ref|^2) (the strong error: no theory slope
      at long horizons, see below); for task "ou" also ``variance_weak_exact`` = |E mean(w^2) - 1/lam_w|,
      the weak error of the variance against the exact continuous answer (slope +1), estimated with the
      reference path as a control variate (its expected variance is known exactly);
    * against time (``by_time``): ``G_weak_at_t`` and ``strong_at_t`` at config.n_times report times,
      geometric from one step of the largest eta to the horizon, each with its slope.

    * the distribution of the particles' distances to their reference paths, against time:
      ``median_distance_at_t`` (the bulk) and ``far_fraction_at_t`` (the fraction of particles farther than
      a quarter of the RMS particle norm from their fine-step counterpart).

    The strong error: Euler-Maruyama with additive noise and a smooth drift has strong order 1 at a fixed
    horizon, so at short times ``strong_at_t`` has slope 1. Over long horizons on a non-convex landscape a
    particle's coarse and fine paths can end up in different regions (an O(1) distance); if that happens
    to a fraction of the particles proportional to eta, the mean square distance is proportional to eta
    and the RMS strong error to eta^(1/2). The by-time median distance and far fraction show whether this
    is what happens; the strong error is reported with no theory slope. For task "ou" (a contraction) the table's ``exact`` column holds the exact
    expected errors of G_weak and variance_weak_exact, and the slopes their ``exact_slope`` on the grid
    (docs/theory.md, section 10). The slopes of G_weak and strong also have
    ``slope_vs_eta_minus_reference``, the OLS slope against eta - reference_eta (an error
    c (eta - reference_eta) gives exactly 1 there). ``stationarity`` checks the window on the reference
    path's G (and on every eta's), and ``diagnostics`` gives the drift's curvature L on the reference path
    and eta * L for every eta (small-step regime: eta * L << 1).

    Parameters
    ----------
    config : DiscretizationConfig
        Data and hyper-parameters (config.eta and config.n_steps only set the default horizon).
    etas : sequence of float
        Step sizes (distinct, > 0), each an integer multiple >= 2 of reference_eta.
    seeds : int or sequence of int
        Replicates; run seeds are derived from (config.seed, 2, replicate) by
        :func:`mfkern.runner.derive_seed` and shared by all step sizes of the replicate (the coupling).
    n_particles : int
        N, the same for all step sizes.
    reference_eta : float, optional
        The reference step; default min(etas) / reference_ratio.
    reference_ratio : int
        See reference_eta. The reference's own O(reference_eta) error biases the fitted slope slightly
        upward (the error measured is c (eta - reference_eta)): see slope_vs_eta_minus_reference.
    horizon : float, optional
        Time at which the paths stop; must be a multiple of every eta. Default: config.eta *
        config.n_steps rounded up to the next multiple of lcm(etas).
    n_checkpoints : int
        About how many checkpoints the window is averaged over (spaced by a multiple of lcm(ratios)).
    n_jobs, out_dir, progress, n_threads, level, n_boot :
        As in :func:`mfkern.analysis.particle_error` (a replicate is one run).
    backend : {"ensemble", "engine", "core_loop"}
        "ensemble" (default): the replicates' reference paths advance as one engine ensemble in this process
        (n_jobs at a time), then their coarse paths run one after another (each core call holds the core's
        lock); "engine": each replicate alone
        (its reference path an engine) in n_jobs worker processes; "core_loop": likewise, its reference path
        a Python loop of ``core.langevin_step``. The results are bitwise the same.

    Returns
    -------
    ErrorSweep
    """
    cfg = checked_config(config)
    backend = check_backend(backend)
    etas = _step_sizes(etas)
    replicates = check_replicates(seeds)
    n_particles = integer(n_particles, "n_particles", minimum=1)
    reference_ratio = integer(reference_ratio, "reference_ratio", minimum=2)
    n_checkpoints = integer(n_checkpoints, "n_checkpoints", minimum=4)
    if reference_eta is None:
        reference_eta = etas[0] / reference_ratio
    reference_eta = positive(reference_eta, "reference_eta")
    if reference_eta >= etas[0]:
        raise ValueError(f"reference_eta must be smaller than min(etas) = {etas[0]}, got {reference_eta}")
    ratios = step_ratios(etas, reference_eta)
    if cfg.task == "ou":
        ou_stationary_variance(etas[-1], cfg.lam, cfg.lam_w)  # the exact answers need eta lam_w_bar < 2
    lcm = math.lcm(*ratios)  # common step boundaries of all paths
    if horizon is None:
        n_fine = max(lcm, math.ceil(cfg.eta * cfg.n_steps / (lcm * reference_eta) - 1e-9) * lcm)
    else:
        horizon = positive(horizon, "horizon")
        ratio = horizon / (lcm * reference_eta)
        if abs(ratio - round(ratio)) > 1e-9 * ratio or round(ratio) < 1:
            raise ValueError(f"horizon must be a positive multiple of every eta (of {lcm * reference_eta}), "
                             f"got {horizon}")
        n_fine = round(ratio) * lcm
    window_length = n_fine - math.ceil(cfg.average_from * n_fine)
    every = lcm * max(1, window_length // (lcm * n_checkpoints))
    reports = report_times(n_fine, lcm, cfg.n_times, unit=lcm)
    n_jobs = runner.n_jobs_value(n_jobs)
    base = cfg.to_dict()
    specs = [{"config": base, "n_particles": n_particles, "replicate": r,
              "seed": runner.derive_seed(cfg.seed, PURPOSE_TIME, r), "etas": etas, "reference_eta": reference_eta,
              "n_fine": n_fine, "checkpoint_every": every, "report_steps": reports} for r in replicates]
    results = execute_runs(time_run, time_runs, "time", specs, backend=backend, n_jobs=n_jobs,
                           cache=runner.RunCache(out_dir, name=CACHE_NAME), progress=progress,
                           desc=f"time sweep ({cfg.task})", n_threads=n_threads, version=CACHE_VERSION,
                           group_key=lambda spec: {k: v for k, v in spec.items() if k not in ("seed", "replicate")})

    window, checkpoints = _checkpoints(cfg.average_from, n_fine, every, reports)
    checkpoints = np.asarray(checkpoints)
    in_window = np.isin(checkpoints, window)
    at_report = [int(np.flatnonzero(checkpoints == j)[0]) for j in reports]
    window_steps = checkpoints[in_window]
    metrics = ["G_weak", "strong"] + (["variance_weak_exact"] if cfg.task == "ou" else [])
    if cfg.task == "ou":
        v_ref = ou_variance_at_step(window_steps, reference_eta, cfg.lam, cfg.lam_w)
        v_ref_exact_bias = float(np.mean(v_ref) - 1.0 / cfg.lam_w)
    runs, per_time = [], [[] for _ in reports]
    for spec, result in zip(specs, results):
        G_ref = np.asarray(result["G_ref"])
        v_ref_measured = np.asarray(result["mean_sq_ref"])
        for i, eta in enumerate(etas):
            G_diff = np.asarray(result["G"][i]) - G_ref
            msd = np.asarray(result["msd"][i])
            row = {"eta": eta, "replicate": spec["replicate"], "seed": spec["seed"],
                   "G_weak": float(np.mean(G_diff[in_window])), "strong": float(np.mean(msd[in_window]))}
            if cfg.task == "ou":
                # Control variate: the reference path's exact expected variance is known, so
                # (v_eta - v_ref) + (E v_ref - 1/lam_w) is unbiased for E v_eta - 1/lam_w, with the low noise
                # of the coupled difference (v_eta - 1/lam_w alone carries the full O(N^-1/2) noise).
                v_diff = np.asarray(result["mean_sq"][i]) - v_ref_measured
                row["variance_weak_exact"] = float(np.mean(v_diff[in_window]) + v_ref_exact_bias)
            runs.append(row)
            for at, k in zip(per_time, at_report):
                at.append({"eta": eta, "G_weak_at_t": float(G_diff[k]), "strong_at_t": float(msd[k]),
                           "median_distance_at_t": float(result["median_distance"][i][k]),
                           "far_fraction_at_t": float(result["far_fraction"][i][k])})
    extra = {}
    if cfg.task == "ou":
        # Exact expected error: the chain's variance at the checkpoint (step j / r of path eta) minus 1/lam_w,
        # averaged over the window's checkpoints like the measurement.
        extra["variance_weak_exact"] = {
            eta: {"exact": float(abs(np.mean(ou_variance_at_step(window_steps // r, eta, cfg.lam, cfg.lam_w))
                                     - 1.0 / cfg.lam_w))}
            for eta, r in zip(etas, ratios)}
        # G = (lam_w_bar/2) (d+1) mean(w^2) exactly (U = 0), so its coupled weak error is known as well.
        extra["G_weak"] = {
            eta: {"exact": float(abs(0.5 * cfg.lam_w_bar * (cfg.d + 1) * np.mean(
                ou_variance_at_step(window_steps // r, eta, cfg.lam, cfg.lam_w) - v_ref)))}
            for eta, r in zip(etas, ratios)}
    # The strong error has no theory slope over long horizons (see the docstring); the weak ones have +1.
    theory = {"G_weak": 1.0, "strong": None, "variance_weak_exact": 1.0, "G_weak_at_t": 1.0, "strong_at_t": None,
              "median_distance_at_t": None, "far_fraction_at_t": None}
    table, slopes = summarize("eta", etas, runs, metrics, theory, level=level, n_boot=n_boot, boot_seed=cfg.seed,
                              extra_columns=extra)
    for metric in ("G_weak", "strong"):  # the errors measured against the reference path
        fit = slopes[metric]
        errors = [row["error"] for row in table if row["metric"] == metric]
        if math.isfinite(fit["slope"]):
            # Against eta - reference_eta: a first-order error measured against a finite reference step is
            # c (eta - reference_eta), whose slope in log eta exceeds 1 by a little; this fit removes that.
            fit["slope_vs_eta_minus_reference"] = fit_loglog(np.subtract(etas, reference_eta), errors)["slope"]
    by_time = {}
    for metric in ("G_weak_at_t", "strong_at_t", "median_distance_at_t", "far_fraction_at_t"):
        by_time[metric] = []
        for step, at in zip(reports, per_time):
            rows, fits = summarize("eta", etas, at, [metric], theory, level=level, n_boot=n_boot,
                                   boot_seed=cfg.seed)
            by_time[metric].append({"t": step * reference_eta, "step": step, "table": rows, "slope": fits[metric]})

    stationarity_info = {"window_times": [float(window_steps[0] * reference_eta), n_fine * reference_eta],
                         "by_eta": {}, "reference": None}
    if window_steps.shape[0] >= 4:
        times = window_steps * reference_eta
        stationarity_info["reference"] = {"G": stationarity([np.asarray(r["G_ref"])[in_window] for r in results],
                                                            times, level)}
        for i, eta in enumerate(etas):
            stationarity_info["by_eta"][eta] = {"G": stationarity(
                [np.asarray(r["G"][i])[in_window] for r in results], times, level)}
    verdicts = [c["G"]["stationary"] for c in [stationarity_info["reference"]] if c is not None
                and c["G"]["stationary"] is not None]
    stationarity_info["all_stationary"] = bool(all(verdicts)) if verdicts else None

    diagnostics = {}
    curvatures = [r["curvature"] for r in results if r.get("curvature")]
    if curvatures:
        L0 = float(np.median([c["initial"] for c in curvatures]))
        L1 = float(np.median([c["final"] for c in curvatures]))
        diagnostics = {"curvature_initial": L0, "curvature_final": L1,
                       "eta_L_initial": {eta: eta * L0 for eta in etas},
                       "eta_L_final": {eta: eta * L1 for eta in etas},
                       "max_eta_L_final": etas[-1] * L1, "max_eta_L_initial": etas[-1] * L0,
                       "description": "L: largest |eigenvalue| of the Hessian of the first variation over 32 "
                                      "particles of the reference path (median over replicates), at the first "
                                      "and last steps"}
    reference_info = {"kind": "coupled fine-step path", "reference_eta": reference_eta,
                      "ratios": ratios, "horizon": n_fine * reference_eta, "n_fine_steps": n_fine,
                      "window_checkpoint_times": (window_steps * reference_eta).tolist(),
                      "report_times": [j * reference_eta for j in reports]}
    diagnostics["cpu_s_total"] = cpu_total(results)
    settings = {"etas": etas, "seeds": replicates, "n_particles": n_particles, "reference_ratio": reference_ratio,
                "backend": backend,
                "n_checkpoints": n_checkpoints, "level": level, "n_boot": n_boot,
                "seed_derivation": "mfkern.runner.derive_seed(config.seed, 2, replicate), shared by all etas"}
    return ErrorSweep(kind="time", grid_name="eta", grid=etas, config=base, table=table, slopes=slopes,
                      runs=runs, reference=reference_info, settings=settings, by_time=by_time,
                      stationarity=stationarity_info, diagnostics=diagnostics)
