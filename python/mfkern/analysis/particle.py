"""Particle-discretisation error: how MFLD with N particles approaches the mean-field limit (O(1/N))."""
from __future__ import annotations

import numbers
import time

import numpy as np

from .. import core, runner
from .._validation import integer
from ._config import (PURPOSE_PARTICLE, PURPOSE_REFERENCE, DiscretizationConfig, checked_config, initial_particles,
                      report_times)
from ._result import CACHE_NAME, CACHE_VERSION, ErrorSweep, check_replicates, summarize
from ._ensemble import advance_and_record, check_backend, cpu_total, execute_runs
from ._system import advance, drift_curvature, make_system
from .exact import erf_kernel, ou_stationary_variance, ou_variance_at_step
from .stats import stationarity

__all__ = ["particle_error", "particle_run", "particle_runs", "particle_report_steps"]


def _particle_counts(Ns):
    if isinstance(Ns, (str, bytes)) or not hasattr(Ns, "__iter__"):
        raise TypeError(f"Ns must be a sequence of positive ints, got {type(Ns).__name__}")
    counts = [integer(N, "Ns", minimum=1) for N in Ns]
    if not counts:
        raise ValueError("Ns must not be empty")
    if len(set(counts)) != len(counts):
        raise ValueError(f"Ns must be distinct, got {counts}")
    return sorted(counts)


def particle_report_steps(cfg):
    """Steps at which a particle run records its kernel, predictor and G for the error-against-time curves:
    config.n_times steps geometric from n_steps / 2^(n_times - 1) to n_steps (the last always included)."""
    return report_times(cfg.n_steps, cfg.n_steps / 2 ** (cfg.n_times - 1), cfg.n_times)


def _measure(W, X, Y, probe, cfg, n_threads):
    """G, U, the probe kernel and the predictor on the probe set at particles W."""
    _, A, U = core.drift(W, X, Y, return_dual=True, n_threads=n_threads, **cfg.hyper)
    G = float(U + 0.5 * cfg.lam_w_bar * np.mean(np.einsum("kl,kl->k", W, W)))
    kernel = core.gram(W, probe, activation=cfg.activation, n_threads=n_threads)
    weights = core.output_weights(W, X, A, cfg.activation, n_threads=n_threads)
    predictor = core.network_output(W, weights, probe, cfg.activation, n_threads=n_threads)
    return G, float(U), kernel, predictor, A


class _ParticleRun:
    """One particle run's system and records: :meth:`record` at every step of ``schedule`` in turn (the
    system advanced there by the caller), then :meth:`result`."""

    def __init__(self, spec, n_threads, kind="engine"):
        cfg = DiscretizationConfig(**spec["config"])
        N, seed = spec["n_particles"], spec["seed"]
        self.cfg, self.n_threads = cfg, n_threads
        self.X, self.Y, self.probe = cfg.data()
        self.system = make_system(cfg, self.X, self.Y, initial_particles(seed, N, cfg.d, cfg.lam_w), eta=cfg.eta,
                                  seed=seed, n_threads=n_threads, kind=kind)
        self.snapshots, self.reports = cfg.snapshot_steps(), particle_report_steps(cfg)
        self.in_window, self.in_reports = set(self.snapshots), set(self.reports)
        self.schedule = sorted(self.in_window | self.in_reports | {0})
        self.window = {"G": [], "U": []}
        self.kernel_sum = self.predictor_sum = 0.0
        self.at_reports = {"G": [], "U": [], "kernel": [], "predictor": []}
        self.curvature = {}

    def record(self, step):
        """Measure the system, which must be at `step` (one of the schedule's, in order)."""
        cfg, n_threads = self.cfg, self.n_threads
        assert self.system.step == step, (self.system.step, step)
        W = self.system.particles
        G, U, kernel, predictor, A = _measure(W, self.X, self.Y, self.probe, cfg, n_threads)
        if step in (0, cfg.n_steps) and cfg.task != "ou":
            self.curvature["initial" if step == 0 else "final"] = drift_curvature(W, self.X, A, cfg,
                                                                                  n_threads=n_threads)
        if step in self.in_window:
            self.window["G"].append(G)
            self.window["U"].append(U)
            self.kernel_sum = self.kernel_sum + kernel
            self.predictor_sum = self.predictor_sum + predictor
        if step in self.in_reports:
            for name, value in (("G", G), ("U", U), ("kernel", kernel.tolist()), ("predictor", predictor.tolist())):
                self.at_reports[name].append(value)

    def result(self):
        count = len(self.snapshots)
        return {
            "steps": self.snapshots,
            "G_snapshots": self.window["G"],
            "U_snapshots": self.window["U"],
            "G": float(np.mean(self.window["G"])),
            "U": float(np.mean(self.window["U"])),
            "kernel_mean": (self.kernel_sum / count).tolist(),
            "predictor_mean": (self.predictor_sum / count).tolist(),
            "report_steps": self.reports,
            "report": self.at_reports,
            "curvature": self.curvature,
        }


def particle_run(spec, n_threads=None, kind="engine"):
    """One MFLD run with N particles; returns its window-averaged and per-time statistics (JSON-ready).

    spec: {"config": DiscretizationConfig fields, "n_particles": N, "seed": run seed}. The run starts from
    :func:`initial_particles` and is advanced with :func:`mfkern.analysis._system.advance` (on a system of
    `kind`, see :func:`mfkern.analysis.make_system`). It records G = U + (lam_w_bar/2) mean_k |w_k|^2 and U
    at every window snapshot (config.snapshot_steps()), and the window means of the probe kernel and the
    predictor; at every report step (:func:`particle_report_steps`, the last one being config.n_steps) it
    records G, U, the kernel and the predictor; and the curvature L of the drift (:func:`drift_curvature`) at
    the first and last steps. ``cpu_s``: the CPU time the run took.
    """
    started = time.process_time()
    run = _ParticleRun(spec, n_threads, kind)
    for step in run.schedule:
        advance(run.system, step - run.system.step)
        run.record(step)
    return dict(run.result(), cpu_s=time.process_time() - started)


def particle_runs(specs, n_threads=1, *, progress=False, desc="particle runs"):
    """Several particle runs of one configuration (any N and seeds) as one ensemble: their engines advance
    together by :func:`mfkern.analysis._system.advance_ensemble` from one recorded step to the next, on
    n_threads threads, and are measured there (one core call at a time: each holds the core's lock). Returns
    what :func:`particle_run` would for each spec, bitwise, without ``cpu_s`` (the runs share their threads)."""
    if not specs:
        raise ValueError("specs must hold at least one particle run")
    # Largest systems first: the ensemble hands engines to threads in order (dynamic), so this balances it.
    order = sorted(range(len(specs)), key=lambda i: -specs[i]["n_particles"])
    runs = [_ParticleRun(specs[i], 1) for i in order]
    schedule = runs[0].schedule
    if any(run.schedule != schedule for run in runs):
        raise ValueError("an ensemble of particle runs needs one configuration (one schedule of recorded steps)")
    advance_and_record([run.system for run in runs], runs, schedule, n_threads=n_threads, desc=desc,
                       progress=progress)
    results = [None] * len(specs)
    for i, run in zip(order, runs):
        results[i] = run.result()
    return results


def _exact_reference(cfg, reports):
    """The data-free (OU) case in closed form: G and, for erf, the kernel at every report step and averaged
    over the window like the runs' (E k_W(s) is the closed form at the chain's variance v_s)."""
    steps = np.array(cfg.snapshot_steps())
    variance = ou_variance_at_step(steps, cfg.eta, cfg.lam, cfg.lam_w)
    _, _, probe = cfg.data()
    G_of = lambda v: 0.5 * cfg.lam_w_bar * (cfg.d + 1) * v  # noqa: E731  (U = 0: the targets are zero)
    out = {"kind": "exact", "G": float(np.mean(G_of(variance))), "U": 0.0,
           "predictor_mean": np.zeros(cfg.n_probe),
           "report": {"G": [float(G_of(ou_variance_at_step(s, cfg.eta, cfg.lam, cfg.lam_w))) for s in reports],
                      "U": [0.0] * len(reports), "predictor": [np.zeros(cfg.n_probe)] * len(reports)}}
    if cfg.activation == "erf":
        out["kernel_mean"] = np.mean([erf_kernel(probe, variance=v) for v in variance], axis=0)
        out["report"]["kernel"] = [erf_kernel(probe, variance=ou_variance_at_step(s, cfg.eta, cfg.lam, cfg.lam_w))
                                   for s in reports]
    return out


def _reference_mode(cfg, reference, Ns, reference_factor):
    if reference is None:
        if cfg.task == "ou" and cfg.activation == "erf":
            return _reference_mode(cfg, "exact", Ns, reference_factor)
        return reference_factor * max(Ns)
    if isinstance(reference, str):
        if reference != "exact":
            raise ValueError(f"reference must be None, 'exact' or a number of particles, got {reference!r}")
        if cfg.task != "ou" or cfg.activation != "erf":
            raise ValueError("reference='exact' needs config.task='ou' and config.activation='erf' (the only "
                             f"case with a closed-form kernel), got task={cfg.task!r}, "
                             f"activation={cfg.activation!r}")
        ou_stationary_variance(cfg.eta, cfg.lam, cfg.lam_w)  # the chain must be stable: eta lam_w_bar < 2
        return "exact"
    if isinstance(reference, numbers.Integral) and not isinstance(reference, bool):
        n_ref = integer(reference, "reference", minimum=1)
        if n_ref <= max(Ns):
            raise ValueError(f"reference (number of particles) must exceed max(Ns) = {max(Ns)}, got {n_ref}")
        return n_ref
    raise TypeError(f"reference must be None, 'exact' or an int, got {type(reference).__name__}")


def _sq_sup(a, b):
    return float(np.max((np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) ** 2))


def _stationarity(results, cfg, level):
    """Stationarity of G and U over the averaging window, from independent runs."""
    if len(results[0]["steps"]) < 4:
        return None
    times = np.asarray(results[0]["steps"], dtype=float) * cfg.eta
    return {name: stationarity([r[f"{name}_snapshots"] for r in results], times, level) for name in ("G", "U")}


def particle_error(config, Ns=(16, 32, 64, 128, 256), seeds=8, reference=None, *, reference_seeds=2,
                   reference_factor=8, n_jobs=1, out_dir=None, progress=False, n_threads=None, level=0.95,
                   n_boot=2000, backend="ensemble"):
    """Particle-discretisation error of MFLD against the mean-field limit, and its log-log rate in N.

    For every N in `Ns` and every replicate in `seeds`, runs MFLD with N particles from the prior for
    config.n_steps steps of size config.eta (same data, independent seeds) and compares it with the
    reference, always like with like (docs/theory.md, section 10: every error is O(1/N), slope -1):

    * at the last step (time T = eta n_steps): ``kernel_sq_sup`` = E max over probe pairs of
      (k_W(T) - k_ref(T))^2 and ``predictor_sq_sup`` = E max over probe points of (f_W(T) - f_ref(T))^2,
      where k_ref(T), f_ref(T) are the reference runs' values at the same last step (mean over reference
      replicates: an estimate of the limit's value at T);
    * over the averaging window (snapshots after config.average_from): ``G_gap`` = |E Gbar_N - Gbar_ref|,
      ``U_gap`` likewise for the data term, ``kernel_sq_sup_window`` and ``predictor_sq_sup_window`` (window
      mean of the run against window mean of the reference);
    * against time: the same last-step errors (and the G gap) at each report step
      (:func:`particle_report_steps`), each with its slope (``by_time``).

    For task "ou" only the kernel errors are kept (E G is the same for every N and the predictor is zero).
    The sweep also checks that the window is stationary (``stationarity``: first against second half, and
    the trend, of G and U, per N and for the reference) and reports the drift's curvature L and eta * L
    (``diagnostics``; Euler-Maruyama is in its small-step regime when eta * L << 1).

    Parameters
    ----------
    config : DiscretizationConfig
    Ns : sequence of int
        Numbers of particles (distinct, >= 1; sorted here).
    seeds : int or sequence of int
        Replicates: an int s means 0..s-1. Run seeds are derived from (config.seed, 0, N, replicate) by
        :func:`mfkern.runner.derive_seed`, so the runs at different N are independent.
    reference : None, "exact" or int
        "exact": closed forms (task "ou" with activation "erf": the particles are exactly Gaussian with
        known variance at every step). An int: reference runs with that many particles. None: exact when
        available, else reference_factor * max(Ns) particles. The reference's own O(1/N_ref) error and the
        noise of its replicate mean are a floor under the measured errors.
    reference_seeds : int
        Replicates of the reference run.
    reference_factor : int
        N_ref = reference_factor * max(Ns) when `reference` is None and no exact answer exists.
    n_jobs : int
        Runs advanced at a time (-1: one per CPU): threads of the ensemble (backend "ensemble"), else worker
        processes of :func:`mfkern.runner.execute`.
    out_dir : path, optional
        Directory of the resume cache (discretization_runs.jsonl): finished runs are read back, not rerun.
    progress : bool
        Show a tqdm progress bar (when tqdm is installed).
    n_threads : int, optional
        Core threads per run with backend "engine" or "core_loop" (default 1: the parallelism is over runs,
        see n_jobs); an ensemble's runs are single-threaded.
    level, n_boot : float, int
        Confidence level and bootstrap resamples of the intervals (see :mod:`mfkern.analysis.stats`).
    backend : {"ensemble", "engine", "core_loop"}
        How the runs are advanced (see :mod:`mfkern.analysis._ensemble`): all together as one engine ensemble
        in this process (default), one engine per run in worker processes, or (to time the difference) one
        Python loop of ``core.langevin_step`` per run. The results are bitwise the same.

    Returns
    -------
    ErrorSweep
    """
    cfg = checked_config(config)
    backend = check_backend(backend)
    Ns = _particle_counts(Ns)
    replicates = check_replicates(seeds)
    reference_seeds = integer(reference_seeds, "reference_seeds", minimum=1)
    reference_factor = integer(reference_factor, "reference_factor", minimum=2)
    n_jobs = runner.n_jobs_value(n_jobs)
    mode = _reference_mode(cfg, reference, Ns, reference_factor)
    cache = runner.RunCache(out_dir, name=CACHE_NAME)
    base = cfg.to_dict()

    specs = [{"config": base, "n_particles": N, "replicate": r,
              "seed": runner.derive_seed(cfg.seed, PURPOSE_PARTICLE, N, r)} for N in Ns for r in replicates]
    ref_specs = []
    if mode != "exact":
        ref_specs = [{"config": base, "n_particles": mode, "replicate": r,
                      "seed": runner.derive_seed(cfg.seed, PURPOSE_REFERENCE, mode, r)}
                     for r in range(reference_seeds)]
    # Reference runs first: they are the longest, so starting them first balances the workers best.
    results = execute_runs(particle_run, particle_runs, "particle", ref_specs + specs, backend=backend,
                           n_jobs=n_jobs, cache=cache, progress=progress, desc=f"particle sweep ({cfg.task})",
                           n_threads=n_threads, version=CACHE_VERSION, group_key=lambda spec: spec["config"])
    ref_results, results = results[:len(ref_specs)], results[len(ref_specs):]
    reports = particle_report_steps(cfg)

    if mode == "exact":
        ref = _exact_reference(cfg, reports)
        reference_info = {"kind": "exact", "G": ref["G"],
                          "description": "closed form: OU variance at every step, erf kernel "
                                         "(docs/theory.md, section 10)"}
    else:
        ref = {"G": float(np.mean([r["G"] for r in ref_results])),
               "U": float(np.mean([r["U"] for r in ref_results])),
               "kernel_mean": np.mean([r["kernel_mean"] for r in ref_results], axis=0),
               "predictor_mean": np.mean([r["predictor_mean"] for r in ref_results], axis=0),
               "report": {name: list(np.mean([r["report"][name] for r in ref_results], axis=0))
                          for name in ("G", "U", "kernel", "predictor")}}
        reference_info = {"kind": "runs", "n_particles": mode, "replicates": reference_seeds,
                          "seeds": [s["seed"] for s in ref_specs], "G": ref["G"], "U": ref["U"],
                          "G_per_run": [r["G"] for r in ref_results],
                          "description": "large-N runs; at each report step the mean over replicates of their "
                                         "values at that step, over the window the mean of their window means"}

    if cfg.task == "ou":
        final_metrics, window_metrics, time_metrics = ["kernel_sq_sup"], ["kernel_sq_sup_window"], ["kernel_sq_sup"]
    else:
        final_metrics = ["kernel_sq_sup", "predictor_sq_sup"]
        window_metrics = ["G_gap", "U_gap", "kernel_sq_sup_window", "predictor_sq_sup_window"]
        time_metrics = ["G_gap_at_t", "kernel_sq_sup", "predictor_sq_sup"]
    metrics = final_metrics + window_metrics
    theory = dict.fromkeys(metrics + time_metrics, -1.0)

    runs, per_time = [], [[] for _ in reports]
    for spec, result in zip(specs, results):
        row = {"N": spec["n_particles"], "replicate": spec["replicate"], "seed": spec["seed"],
               "G": result["G"], "U": result["U"]}
        if "G_gap" in metrics:
            row["G_gap"] = result["G"] - ref["G"]
            row["U_gap"] = result["U"] - ref["U"]
            row["predictor_sq_sup_window"] = _sq_sup(result["predictor_mean"], ref["predictor_mean"])
        row["kernel_sq_sup_window"] = _sq_sup(result["kernel_mean"], ref["kernel_mean"])
        for j, at in enumerate(per_time):
            values = {"N": row["N"], "kernel_sq_sup": _sq_sup(result["report"]["kernel"][j], ref["report"]["kernel"][j])}
            if cfg.task != "ou":
                values["predictor_sq_sup"] = _sq_sup(result["report"]["predictor"][j], ref["report"]["predictor"][j])
                values["G_gap_at_t"] = result["report"]["G"][j] - ref["report"]["G"][j]
            at.append(values)
        # The last report step is the last step: the matched last-step errors.
        row.update((m, per_time[-1][-1][m]) for m in final_metrics)
        runs.append(row)
    table, slopes = summarize("N", Ns, runs, metrics, theory, level=level, n_boot=n_boot, boot_seed=cfg.seed)
    by_time = {}
    for metric in time_metrics:
        by_time[metric] = []
        for step, at in zip(reports, per_time):
            rows, fits = summarize("N", Ns, at, [metric], theory, level=level, n_boot=n_boot, boot_seed=cfg.seed)
            by_time[metric].append({"t": step * cfg.eta, "step": step, "table": rows, "slope": fits[metric]})

    stationarity_info = {"window_times": [s * cfg.eta for s in (cfg.snapshot_steps()[0], cfg.n_steps)],
                         "by_N": {}}
    for N in Ns:
        stationarity_info["by_N"][N] = _stationarity([res for s, res in zip(specs, results)
                                                      if s["n_particles"] == N], cfg, level)
    if ref_results:
        stationarity_info["reference"] = _stationarity(ref_results, cfg, level)
    verdicts = [v["G"]["stationary"] and v["U"]["stationary"] for v in stationarity_info["by_N"].values()
                if v is not None and v["G"]["stationary"] is not None]
    stationarity_info["all_stationary"] = bool(all(verdicts)) if verdicts else None

    diagnostics = {}
    curvatures = [r["curvature"] for r in ref_results + results if r.get("curvature")]
    if curvatures:
        L0 = float(np.median([c["initial"] for c in curvatures]))
        L1 = float(np.median([c["final"] for c in curvatures]))
        diagnostics = {"curvature_initial": L0, "curvature_final": L1, "eta_L_initial": cfg.eta * L0,
                       "eta_L_final": cfg.eta * L1,
                       "description": "L: largest |eigenvalue| of the Hessian of the first variation over 32 "
                                      "particles (median over runs), at the first and last steps"}
    diagnostics["cpu_s_total"] = cpu_total(ref_results + results)
    settings = {"Ns": Ns, "seeds": replicates, "reference": reference, "backend": backend,
                "reference_seeds": reference_seeds,
                "reference_factor": reference_factor, "report_steps": reports, "level": level, "n_boot": n_boot,
                "seed_derivation": "mfkern.runner.derive_seed(config.seed, 0, N, replicate); reference runs "
                                   "(1, N_ref, replicate)"}
    return ErrorSweep(kind="particle", grid_name="N", grid=Ns, config=base, table=table, slopes=slopes,
                      runs=runs, reference=reference_info, settings=settings, by_time=by_time,
                      stationarity=stationarity_info, diagnostics=diagnostics)
