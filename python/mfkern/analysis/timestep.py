"""Time-discretisation error: MFLD with step eta against a much finer step, synchronously coupled (O(eta)).

Coupling: all step sizes are integer multiples r * eta_ref of the reference step and share one Brownian
path. The fine increments are sqrt(eta_ref) * xi_j with xi_j = ``core.particle_noise(seed, j, N, d+1)``
(exactly the noise ``core.langevin_step`` adds at step j, so the reference path *is* the library's
dynamics with step eta_ref). A coarse step of size eta = r eta_ref covering fine steps j0..j0+r-1 uses
their sum as its Brownian increment:

    W <- W - eta * drift(W) + sqrt(2 lam) * sum_{j=j0}^{j0+r-1} sqrt(eta_ref) xi_j.

So every path is driven by the same Brownian motion, and the strong error (distance between paths at
matched times) and the weak error (difference of expectations) can both be measured, with the coupling
shrinking the variance of the latter.
"""
from __future__ import annotations

import math

import numpy as np

from .. import core
from .._validation import integer, positive
from . import _runner
from ._config import PURPOSE_TIME, DiscretizationConfig, derive_seed, initial_particles
from ._result import ErrorSweep, check_replicates, summarize
from .stats import fit_loglog
from .exact import ou_stationary_variance, ou_variance_at_step
from .particle import _config

__all__ = ["time_error", "time_run", "coupled_paths", "step_ratios"]


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


def _simulate(cfg, X, Y, n_particles, seed, etas, ratios, reference_eta, n_fine, checkpoints, n_threads):
    """Coupled paths for all step sizes; records (G, mean w^2, distance to the reference) at checkpoints.

    Returns (records, final states, final reference). Checkpoints are fine-step indices that are multiples
    of every ratio, so every path sits at a step boundary there.
    """
    W0 = initial_particles(seed, n_particles, cfg.d, cfg.lam_w)
    reference = W0.copy()
    states = [W0.copy() for _ in ratios]
    increments = [np.zeros_like(W0) for _ in ratios]
    grads, Us = [None] * len(ratios), [None] * len(ratios)
    sqrt_fine, noise_scale = math.sqrt(reference_eta), math.sqrt(2.0 * cfg.lam)
    half_wd = 0.5 * cfg.lam_w_bar
    records = {"G": [[] for _ in ratios], "mean_sq": [[] for _ in ratios], "msd": [[] for _ in ratios],
               "G_ref": [], "mean_sq_ref": []}
    for j in range(n_fine + 1):
        # Drift at the start of each coarse step (and at the end, for the records at the final time).
        for i, r in enumerate(ratios):
            if j % r == 0:
                grads[i], _, Us[i] = core.drift(states[i], X, Y, return_dual=True, n_threads=n_threads,
                                                **cfg.hyper)
        if j < n_fine:
            # The reference: the library's own step (noise xi_j = particle_noise(seed, j)); it also returns
            # U at the pre-step state, needed for the records.
            next_reference, _, U_ref = core.langevin_step(reference, X, Y, eta=reference_eta, seed=seed, step=j,
                                                          return_dual=True, n_threads=n_threads, **cfg.hyper)
        else:
            _, _, U_ref = core.drift(reference, X, Y, return_dual=True, n_threads=n_threads, **cfg.hyper)
        if j in checkpoints:
            records["G_ref"].append(float(U_ref + half_wd * np.mean(np.einsum("kl,kl->k", reference, reference))))
            records["mean_sq_ref"].append(float(np.mean(reference * reference)))
            for i, W in enumerate(states):
                records["G"][i].append(float(Us[i] + half_wd * np.mean(np.einsum("kl,kl->k", W, W))))
                records["mean_sq"][i].append(float(np.mean(W * W)))
                diff = W - reference
                records["msd"][i].append(float(np.mean(np.einsum("kl,kl->k", diff, diff))))
        if j == n_fine:
            break
        fine_increment = sqrt_fine * core.particle_noise(seed, j, n_particles, cfg.d + 1, n_threads=n_threads)
        reference = next_reference
        for i, (eta, r) in enumerate(zip(etas, ratios)):
            increments[i] += fine_increment
            if (j + 1) % r == 0:
                states[i] = states[i] - eta * grads[i] + noise_scale * increments[i]
                increments[i][:] = 0.0
    return records, states, reference


def coupled_paths(config, *, n_particles, seed, etas, reference_eta, n_fine_steps, n_threads=None):
    """Synchronously coupled MFLD paths for several step sizes, run for n_fine_steps * reference_eta.

    Returns a dict: ``eta -> W`` at the final time for every eta, and ``"reference" -> W`` for the path with
    step reference_eta (identical to iterating ``core.langevin_step`` with this seed). n_fine_steps must be
    a multiple of every ratio eta / reference_eta.
    """
    cfg = _config(config)
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


def time_run(spec, n_threads=None):
    """One replicate of a time sweep: all step sizes coupled to one Brownian path (JSON-ready result).

    spec: {"config", "n_particles", "seed", "etas", "reference_eta", "n_fine", "checkpoint_every"}.
    Records, at every checkpoint of the window (fine steps that are multiples of checkpoint_every, from
    ceil(average_from * n_fine)), G, mean(w^2) (all coordinates) and the mean squared distance per particle
    to the reference path.
    """
    cfg = DiscretizationConfig(**spec["config"])
    X, Y, _ = cfg.data()
    etas, eta_ref = spec["etas"], spec["reference_eta"]
    ratios = step_ratios(etas, eta_ref)
    n_fine, every = spec["n_fine"], spec["checkpoint_every"]
    checkpoints = [j for j in range(0, n_fine + 1, every) if j >= math.ceil(cfg.average_from * n_fine)]
    records, _, _ = _simulate(cfg, X, Y, spec["n_particles"], spec["seed"], etas, ratios, eta_ref, n_fine,
                              set(checkpoints), n_threads)
    records["checkpoints"] = checkpoints
    return records


def time_error(config, etas=(0.25, 0.5, 1.0, 2.0), seeds=4, *, n_particles=128, reference_eta=None,
               reference_ratio=8, horizon=None, n_jobs=1, out_dir=None, progress=False, n_threads=None,
               level=0.95, n_boot=2000):
    """Time-discretisation error of MFLD against a finer step with the same Brownian path, and its rate.

    For every replicate, runs the paths of all step sizes in `etas` and the reference step together
    (synchronous coupling, see the module docstring) up to `horizon`, and averages over the checkpoints of
    the window after burn-in (config.average_from): ``G_weak`` = |E (G(W_eta) - G(W_ref))| (weak error,
    theory slope +1), ``strong`` = sqrt(E (1/N) sum_k |w_k^eta - w_k^ref|^2) (strong error; Euler-Maruyama
    with additive noise has strong order 1, slope +1). For task "ou" also ``variance_weak_exact`` =
    |E mean(w^2) - 1/lam_w|, the weak error of the variance against the exact continuous answer (slope +1),
    estimated with the reference path as a control variate (its expected variance is known exactly); for
    task "ou" the table's ``exact`` column holds the exact expected errors of G_weak and
    variance_weak_exact, and the slopes their ``exact_slope`` on the grid (PAPER.md section 6). The
    slopes of G_weak and strong also have ``slope_vs_eta_minus_reference``, the OLS slope against
    eta - reference_eta (an error c (eta - reference_eta) gives exactly 1 there).

    Parameters
    ----------
    config : DiscretizationConfig
        Data and hyper-parameters (config.eta and config.n_steps only set the default horizon).
    etas : sequence of float
        Step sizes (distinct, > 0), each an integer multiple >= 2 of reference_eta.
    seeds : int or sequence of int
        Replicates; run seeds are derived from (config.seed, replicate) by :func:`derive_seed` and shared
        by all step sizes of the replicate (that is the coupling).
    n_particles : int
        N, the same for all step sizes.
    reference_eta : float, optional
        The reference step; default min(etas) / reference_ratio.
    reference_ratio : int
        See reference_eta. The reference's own O(reference_eta) error biases the fitted slope slightly
        upward (the error measured is c (eta - reference_eta)): keep the ratio >= 8.
    horizon : float, optional
        Time at which the paths stop; must be a multiple of every eta and of the checkpoint spacing.
        Default: config.eta * config.n_steps rounded up to the next multiple of lcm(etas).
    n_jobs, out_dir, progress, n_threads, level, n_boot :
        As in :func:`particle_error` (a replicate is one run).

    Returns
    -------
    ErrorSweep
    """
    cfg = _config(config)
    etas = _step_sizes(etas)
    replicates = check_replicates(seeds)
    n_particles = integer(n_particles, "n_particles", minimum=1)
    reference_ratio = integer(reference_ratio, "reference_ratio", minimum=2)
    if reference_eta is None:
        reference_eta = etas[0] / reference_ratio
    reference_eta = positive(reference_eta, "reference_eta")
    if reference_eta >= etas[0]:
        raise ValueError(f"reference_eta must be smaller than min(etas) = {etas[0]}, got {reference_eta}")
    ratios = step_ratios(etas, reference_eta)
    if cfg.task == "ou":
        ou_stationary_variance(etas[-1], cfg.lam, cfg.lam_w)  # the exact answers need eta lam_w_bar < 2
    every = math.lcm(*ratios)  # checkpoints: common step boundaries of all paths
    if horizon is None:
        n_fine = max(every, math.ceil(cfg.eta * cfg.n_steps / (every * reference_eta) - 1e-9) * every)
    else:
        horizon = positive(horizon, "horizon")
        ratio = horizon / (every * reference_eta)
        if abs(ratio - round(ratio)) > 1e-9 * ratio or round(ratio) < 1:
            raise ValueError(f"horizon must be a positive multiple of every eta (of {every * reference_eta}), "
                             f"got {horizon}")
        n_fine = round(ratio) * every
    n_jobs = _runner.n_jobs_value(n_jobs)
    base = cfg.to_dict()
    specs = [{"config": base, "n_particles": n_particles, "replicate": r,
              "seed": derive_seed(cfg.seed, PURPOSE_TIME, r), "etas": etas, "reference_eta": reference_eta,
              "n_fine": n_fine, "checkpoint_every": every} for r in replicates]
    results = _runner.execute(time_run, "time", specs, n_jobs=n_jobs, cache=_runner.RunCache(out_dir),
                              progress=progress, desc=f"time sweep ({cfg.task})", n_threads=n_threads)

    metrics = ["G_weak", "strong"] + (["variance_weak_exact"] if cfg.task == "ou" else [])
    checkpoints = np.asarray(results[0]["checkpoints"])
    if cfg.task == "ou":
        v_ref = ou_variance_at_step(checkpoints, reference_eta, cfg.lam, cfg.lam_w)
        v_ref_exact_bias = float(np.mean(v_ref) - 1.0 / cfg.lam_w)
    runs = []
    for spec, result in zip(specs, results):
        G_ref = np.asarray(result["G_ref"])
        v_ref_measured = np.asarray(result["mean_sq_ref"])
        for i, eta in enumerate(etas):
            row = {"eta": eta, "replicate": spec["replicate"], "seed": spec["seed"],
                   "G_weak": float(np.mean(np.asarray(result["G"][i]) - G_ref)),
                   "strong": float(np.mean(result["msd"][i]))}
            if cfg.task == "ou":
                # Control variate: the reference path's exact expected variance is known, so
                # (v_eta - v_ref) + (E v_ref - 1/lam_w) is unbiased for E v_eta - 1/lam_w, with the low noise
                # of the coupled difference (v_eta - 1/lam_w alone carries the full O(N^-1/2) noise).
                row["variance_weak_exact"] = float(np.mean(np.asarray(result["mean_sq"][i]) - v_ref_measured)
                                                   + v_ref_exact_bias)
            runs.append(row)
    extra = {}
    if cfg.task == "ou":
        # Exact expected error: the chain's variance at the checkpoint (step j / r of path eta) minus 1/lam_w,
        # averaged over the checkpoints like the measurement.
        extra["variance_weak_exact"] = {
            eta: {"exact": float(abs(np.mean(ou_variance_at_step(checkpoints // r, eta, cfg.lam, cfg.lam_w))
                                     - 1.0 / cfg.lam_w))}
            for eta, r in zip(etas, ratios)}
        # G = (lam_w_bar/2) (d+1) mean(w^2) exactly (U = 0), so its coupled weak error is known as well.
        extra["G_weak"] = {
            eta: {"exact": float(abs(0.5 * cfg.lam_w_bar * (cfg.d + 1) * np.mean(
                ou_variance_at_step(checkpoints // r, eta, cfg.lam, cfg.lam_w) - v_ref)))}
            for eta, r in zip(etas, ratios)}
    theory = {"G_weak": 1.0, "strong": 1.0, "variance_weak_exact": 1.0}
    table, slopes = summarize("eta", etas, runs, metrics, theory, level=level, n_boot=n_boot, boot_seed=cfg.seed,
                              extra_columns=extra)
    for metric in ("G_weak", "strong"):  # the errors measured against the reference path
        fit = slopes[metric]
        errors = [row["error"] for row in table if row["metric"] == metric]
        if math.isfinite(fit["slope"]):
            # Against eta - reference_eta: a first-order error measured against a finite reference step is
            # c (eta - reference_eta), whose slope in log eta exceeds 1 by a little; this fit removes that.
            fit["slope_vs_eta_minus_reference"] = fit_loglog(np.subtract(etas, reference_eta), errors)["slope"]
    reference_info = {"kind": "coupled fine-step path", "reference_eta": reference_eta,
                      "ratios": ratios, "horizon": n_fine * reference_eta, "n_fine_steps": n_fine,
                      "checkpoint_times": (checkpoints * reference_eta).tolist()}
    settings = {"etas": etas, "seeds": replicates, "n_particles": n_particles, "reference_ratio": reference_ratio,
                "level": level, "n_boot": n_boot,
                "seed_derivation": "SeedSequence(config.seed, spawn_key=(2, replicate)), shared by all etas"}
    return ErrorSweep(kind="time", grid_name="eta", grid=etas, config=base, table=table, slopes=slopes,
                      runs=runs, reference=reference_info, settings=settings)
