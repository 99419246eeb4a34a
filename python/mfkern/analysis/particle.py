"""Particle-discretisation error: how MFLD with N particles approaches the mean-field limit (O(1/N))."""
from __future__ import annotations

import numbers

import numpy as np

from .. import core
from .._validation import integer
from . import _runner
from ._config import PURPOSE_PARTICLE, PURPOSE_REFERENCE, DiscretizationConfig, derive_seed, initial_particles
from ._result import ErrorSweep, check_replicates, summarize
from .exact import erf_kernel, ou_stationary_variance, ou_variance_at_step

__all__ = ["particle_error", "particle_run"]


def _config(config):
    if not isinstance(config, DiscretizationConfig):
        raise TypeError(f"config must be a DiscretizationConfig, got {type(config).__name__}")
    return config


def _particle_counts(Ns):
    if isinstance(Ns, (str, bytes)) or not hasattr(Ns, "__iter__"):
        raise TypeError(f"Ns must be a sequence of positive ints, got {type(Ns).__name__}")
    counts = [integer(N, "Ns", minimum=1) for N in Ns]
    if not counts:
        raise ValueError("Ns must not be empty")
    if len(set(counts)) != len(counts):
        raise ValueError(f"Ns must be distinct, got {counts}")
    return sorted(counts)


def particle_run(spec, n_threads=None):
    """One MFLD run with N particles; returns its time-averaged and last-step statistics (JSON-ready).

    spec: {"config": DiscretizationConfig fields, "n_particles": N, "seed": run seed}. The run starts from
    :func:`initial_particles` and takes config.n_steps steps of ``mfkern.core.langevin_step``. At every
    snapshot step (config.snapshot_steps()) it records G = U + (lam_w_bar/2) mean_k |w_k|^2, U, the kernel
    Gram over the probe set and the predictor on it; it returns their window means and the last snapshot.
    """
    cfg = DiscretizationConfig(**spec["config"])
    N, seed = spec["n_particles"], spec["seed"]
    X, Y, probe = cfg.data()
    W = initial_particles(seed, N, cfg.d, cfg.lam_w)
    snapshots = cfg.snapshot_steps()
    wanted = set(snapshots)
    G, U_values, kernel_sum, predictor_sum = [], [], 0.0, 0.0
    kernel = predictor = None
    for step in range(cfg.n_steps + 1):
        if step < cfg.n_steps:
            W_next, A, U = core.langevin_step(W, X, Y, eta=cfg.eta, seed=seed, step=step, return_dual=True,
                                              n_threads=n_threads, **cfg.hyper)
        elif step in wanted:
            # The final state: one more solve for its second layer (its gradient is not needed).
            _, A, U = core.drift(W, X, Y, return_dual=True, n_threads=n_threads, **cfg.hyper)
        if step in wanted:
            G.append(float(U + 0.5 * cfg.lam_w_bar * np.mean(np.einsum("kl,kl->k", W, W))))
            U_values.append(float(U))
            kernel = core.gram(W, probe, activation=cfg.activation, n_threads=n_threads)
            weights = core.output_weights(W, X, A, cfg.activation, n_threads=n_threads)
            predictor = core.network_output(W, weights, probe, cfg.activation, n_threads=n_threads)
            kernel_sum = kernel_sum + kernel
            predictor_sum = predictor_sum + predictor
        if step < cfg.n_steps:
            W = W_next
    count = len(snapshots)
    return {
        "steps": snapshots,
        "G_snapshots": G,
        "G": float(np.mean(G)),
        "U": float(np.mean(U_values)),
        "kernel_final": kernel.tolist(),
        "kernel_mean": (kernel_sum / count).tolist(),
        "predictor_final": predictor.tolist(),
        "predictor_mean": (predictor_sum / count).tolist(),
    }


def _exact_reference(cfg):
    """G (window mean) and, for erf, the kernel of the data-free (OU) case, known in closed form."""
    steps = np.array(cfg.snapshot_steps())
    variance = ou_variance_at_step(steps, cfg.eta, cfg.lam, cfg.lam_w)
    G = 0.5 * cfg.lam_w_bar * (cfg.d + 1) * np.mean(variance)  # U = 0: the targets are zero
    _, _, probe = cfg.data()
    kernel = None
    if cfg.activation == "erf":
        kernel = erf_kernel(probe, variance=ou_variance_at_step(cfg.n_steps, cfg.eta, cfg.lam, cfg.lam_w))
    return {"kind": "exact", "G": float(G), "U": 0.0, "kernel": kernel, "predictor": np.zeros(cfg.n_probe)}


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


def particle_error(config, Ns=(16, 32, 64, 128, 256), seeds=8, reference=None, *, reference_seeds=2,
                   reference_factor=8, n_jobs=1, out_dir=None, progress=False, n_threads=None, level=0.95,
                   n_boot=2000):
    """Particle-discretisation error of MFLD against the mean-field limit, and its log-log rate in N.

    For every N in `Ns` and every replicate in `seeds`, runs MFLD with N particles from the prior for
    config.n_steps steps of size config.eta (same data, independent seeds) and compares it with the
    reference: ``kernel_sq_sup`` (E max over probe pairs of the squared kernel error at the last step) and,
    for the product task, ``G_gap`` (|E G - G_ref|, with G averaged over the window of snapshots after
    burn-in), ``U_gap`` (the same for the data term U of G) and ``predictor_sq_sup`` (E max over probe
    points of the squared predictor error). PAPER.md section 6: all are O(1/N), slope -1. (For task "ou" the
    G gap has no bias at all, E G being the same for every N, and the predictor is zero: they are omitted.)

    Parameters
    ----------
    config : DiscretizationConfig
    Ns : sequence of int
        Numbers of particles (distinct, >= 1; sorted here).
    seeds : int or sequence of int
        Replicates: an int s means 0..s-1. Run seeds are derived from (config.seed, N, replicate) by
        :func:`mfkern.analysis.derive_seed`, so the runs at different N are independent.
    reference : None, "exact" or int
        "exact": closed forms (task "ou" with activation "erf": the particles are exactly Gaussian with
        known variance at every step). An int: reference runs with that many particles. None: exact when
        available, else reference_factor * max(Ns) particles. Reference runs average their kernel,
        predictor and G over the window and over `reference_seeds` replicates; their own O(1/N_ref)
        error is a floor under the measured errors.
    reference_seeds : int
        Replicates of the reference run.
    reference_factor : int
        N_ref = reference_factor * max(Ns) when `reference` is None and no exact answer exists.
    n_jobs : int
        Worker processes for the independent runs (-1: one per CPU).
    out_dir : path, optional
        Directory of the resume cache (discretization_runs.jsonl): finished runs are read back, not rerun.
    progress : bool
        Show a tqdm progress bar (when tqdm is installed).
    n_threads : int, optional
        Core threads per run (default 1: the parallelism is over runs, see n_jobs).
    level, n_boot : float, int
        Confidence level and bootstrap resamples of the intervals (see :mod:`mfkern.analysis.stats`).

    Returns
    -------
    ErrorSweep
        Tidy table (metric, N, error, CI), slopes with bootstrap and OLS-t intervals, per-run values.
    """
    cfg = _config(config)
    Ns = _particle_counts(Ns)
    replicates = check_replicates(seeds)
    reference_seeds = integer(reference_seeds, "reference_seeds", minimum=1)
    reference_factor = integer(reference_factor, "reference_factor", minimum=2)
    n_jobs = _runner.n_jobs_value(n_jobs)
    mode = _reference_mode(cfg, reference, Ns, reference_factor)
    cache = _runner.RunCache(out_dir)
    base = cfg.to_dict()

    specs = [{"config": base, "n_particles": N, "replicate": r, "seed": derive_seed(cfg.seed, PURPOSE_PARTICLE, N, r)}
             for N in Ns for r in replicates]
    ref_specs = []
    if mode != "exact":
        ref_specs = [{"config": base, "n_particles": mode, "replicate": r,
                      "seed": derive_seed(cfg.seed, PURPOSE_REFERENCE, mode, r)} for r in range(reference_seeds)]
    # Reference runs first: they are the longest, so starting them first balances the workers best.
    results = _runner.execute(particle_run, "particle", ref_specs + specs, n_jobs=n_jobs, cache=cache,
                              progress=progress, desc=f"particle sweep ({cfg.task})", n_threads=n_threads)
    ref_results, results = results[:len(ref_specs)], results[len(ref_specs):]

    if mode == "exact":
        ref = _exact_reference(cfg)
        reference_info = {"kind": "exact", "G": ref["G"],
                          "description": "closed form: OU variance at every step, erf kernel (PAPER.md 6)"}
    else:
        ref = {
            "G": float(np.mean([r["G"] for r in ref_results])),
            "U": float(np.mean([r["U"] for r in ref_results])),
            "kernel": np.mean([r["kernel_mean"] for r in ref_results], axis=0),
            "predictor": np.mean([r["predictor_mean"] for r in ref_results], axis=0),
        }
        reference_info = {"kind": "runs", "n_particles": mode, "replicates": reference_seeds,
                          "seeds": [s["seed"] for s in ref_specs], "G": ref["G"], "U": ref["U"],
                          "G_per_run": [r["G"] for r in ref_results],
                          "description": "window- and replicate-averaged large-N runs"}

    # Task "ou": E G(mu_N) is the same for every N (independent Gaussian particles), so the G gap has no
    # rate to measure (it is pure noise), and the predictor is identically zero: only the kernel is compared.
    metrics = ["kernel_sq_sup"] if cfg.task == "ou" else ["G_gap", "U_gap", "kernel_sq_sup", "predictor_sq_sup"]
    theory = {"G_gap": -1.0, "U_gap": -1.0, "kernel_sq_sup": -1.0, "predictor_sq_sup": -1.0}
    runs = []
    for spec, result in zip(specs, results):
        row = {"N": spec["n_particles"], "replicate": spec["replicate"], "seed": spec["seed"],
               "G": result["G"], "U": result["U"], "G_gap": result["G"] - ref["G"],
               "U_gap": result["U"] - ref.get("U", 0.0)}
        if "kernel_sq_sup" in metrics:
            row["kernel_sq_sup"] = float(np.max((np.asarray(result["kernel_final"]) - ref["kernel"]) ** 2))
        if "predictor_sq_sup" in metrics:
            row["predictor_sq_sup"] = float(np.max((np.asarray(result["predictor_final"]) - ref["predictor"])
                                                   ** 2))
        runs.append(row)
    table, slopes = summarize("N", Ns, runs, metrics, theory, level=level, n_boot=n_boot, boot_seed=cfg.seed)
    settings = {"Ns": Ns, "seeds": replicates, "reference": reference, "reference_seeds": reference_seeds,
                "reference_factor": reference_factor,
                "level": level, "n_boot": n_boot, "seed_derivation": "SeedSequence(config.seed, spawn_key="
                "(0, N, replicate)); reference runs (1, N_ref, replicate)"}
    return ErrorSweep(kind="particle", grid_name="N", grid=Ns, config=base, table=table, slopes=slopes,
                      runs=runs, reference=reference_info, settings=settings)
