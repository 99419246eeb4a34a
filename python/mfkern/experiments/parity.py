"""``mfkern reproduce parity``: k-sparse parities on the hypercube, classification, MFLD against fixed kernels.

The task (docs/theory.md, section 11; the classification counterpart of ``separation``): x uniform on
{-1, 1}^d, label y = x1 * x2 * ... * xk in {-1, +1}, no label noise, k in {2, 3}. For every (k, d) and every
training size n of a grid, the test accuracy on 2000 fresh points (chance 0.5) of

* ``mfld`` -- :class:`mfkern.MeanFieldClassifier` (logistic loss; second layer = kernel logistic regression on
  the intrinsic kernel of the moving particles), configuration from :data:`MFLD_GRID` chosen per (k, d) on
  tuning seeds by the mean validation accuracy at the middle n of the grid;
* ``init_kernel_step0`` -- MFLD's own classifier before training (step 0, MFLD's regularisation): a reference,
  not a tuned baseline;
* the tuned baselines of :data:`mfkern.experiments.baselines.CLASSIFICATION` (SVC with RBF and polynomial
  kernels of degree 2 and 3, kernel logistic regression on the finite initial kernel and on random features),
  every hyper-parameter by 3-fold stratified CV inside the training set, grids widened until interior.

Claim per (k, d) (docs/protocol.md): MFLD's accuracy averaged over the n grid (a summary fixed in advance) is
higher than every tuned fixed kernel's, by paired 95% t intervals over evaluation seeds (same data).

Sizes. Full: d in {8, 16, 32}, n in {50, 100, 200, 400, 800}, N = 500, 1000 steps, 5 evaluation and 2 tuning
seeds. Quick: d in {8, 16}, n in {50, 100, 200}, N = 100, 200 steps, 2 evaluation seeds, 1 tuning seed.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from . import protocol
from ..runner import derive_seed
from .baselines import CLASSIFICATION, LABELS, grid_description
from .mfld import baseline_job, open_cache, run_jobs
from .results import markdown_table, metadata, pyplot, write_outputs
from .tasks import make_task, subspace_alignment

__all__ = ["ParityConfig", "QUICK", "FULL", "METHODS", "MFLD_GRID", "run_parity", "parity_job", "CLAIMS"]

METHODS = ("mfld", "init_kernel_step0") + CLASSIFICATION
METHOD_LABELS = dict(LABELS, mfld="MFLD (logistic)", init_kernel_step0="MFLD at step 0 (reference)")
#: MFLD candidates (lam, lam_a, lam_w, eta); one is chosen per (k, d) on tuning seeds.
MFLD_GRID = tuple(dict(lam=lam, lam_a=1.0, lam_w=lam_w, eta=0.5) for lam in (0.004, 0.01) for lam_w in (1.0, 4.0))


@dataclass(frozen=True)
class ParityConfig:
    """One suite of the parity experiment."""

    ks: tuple = (2, 3)
    ds: tuple = (8, 16)
    ns: tuple = (50, 100, 200)
    eval_seeds: int = 2
    tuning_seeds: int = 1
    n_test: int = 2000
    n_particles: int = 100
    n_steps: int = 200
    log_every: int = 50
    n_folds: int = 3


QUICK = ParityConfig()
FULL = ParityConfig(ds=(8, 16, 32), ns=(50, 100, 200, 400, 800), eval_seeds=5, tuning_seeds=2, n_particles=500,
                    n_steps=1000, log_every=100)
CLAIMS = tuple(f"parity-k{k}-d{d}" for k in FULL.ks for d in FULL.ds)


def parity_job(spec, n_threads=1):
    """One MFLD classifier run (``spec["job"] == "mfld"``) or one baseline (delegated to baseline_job)."""
    if spec["job"] == "baseline":
        return baseline_job(spec, n_threads)
    from ..classifier import MeanFieldClassifier

    task = make_task(**spec["task"])
    X, y, X_test, y_test = task.X, task.f_train, task.X_test, task.f_test
    c = spec["config"]
    trace = []

    def record(est, step, diag):
        trace.append(subspace_alignment(est.particles_, task.subspace))
        return False

    est = MeanFieldClassifier(n_particles=c["n_particles"], n_steps=c["n_steps"], log_every=c["log_every"],
                              lam=c["lam"], lam_a=c["lam_a"], lam_w=c["lam_w"], eta=c["eta"],
                              random_state=int(spec["seed"]), n_threads=n_threads, callbacks=[record],
                              input_scale=1.0)  # the inputs are the task's own
    t0 = time.perf_counter()
    est.fit(X, y, X_val=X_test, y_val=y_test)
    h = est.history_
    return dict(test_accuracy=float(np.mean(est.predict(X_test) == y_test)),
                step0_accuracy=float(h["val_accuracy"][0]), wall_time=time.perf_counter() - t0,
                history=dict(step=[int(s) for s in h["step"]], test_accuracy=[float(v) for v in h["val_accuracy"]],
                             kernel_alignment=[float(v) for v in h["kernel_alignment"]], subspace_alignment=trace))


def _task(k, d, n, seed, config):
    return dict(name="parity", n=int(n), d=int(d), k=int(k), seed=int(seed), n_test=config.n_test)


def _mfld_spec(k, d, n, seed, point, config):
    c = dict(point, n_particles=config.n_particles, n_steps=config.n_steps, log_every=config.log_every)
    return dict(job="mfld", task=_task(k, d, n, seed, config), config=c, seed=derive_seed(seed, "mfld"))


def run_parity(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, config=None, base_seed=0,
               cache_dir=None, verbose=True, cells=None):
    """Run the parity experiment; writes parity.json, parity.md and parity.png into out_dir.

    `cells`, a sequence of (k, d), restricts the run to those cells of the configuration (what one claim
    needs: every cell is tuned and evaluated on its own, so their runs are the full run's, from its cache).
    """
    config = (QUICK if quick else FULL) if config is None else config
    if cells is not None:
        cells = [(int(k), int(d)) for k, d in cells]
        unknown = [cell for cell in cells if cell[0] not in config.ks or cell[1] not in config.ds]
        if not cells or unknown:
            raise ValueError(f"cells must be (k, d) pairs with k in {config.ks} and d in {config.ds}, got {cells}")
        config = ParityConfig(**{**asdict(config), "ks": tuple(sorted({k for k, _ in cells})),
                                 "ds": tuple(sorted({d for _, d in cells}))})
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
            raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
        config = ParityConfig(**{**asdict(config), "eval_seeds": seeds})
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    cache = open_cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir, "parity")
    tune_seeds = protocol.tuning_seeds(base_seed, "parity", config.tuning_seeds)
    eval_seeds = protocol.evaluation_seeds(base_seed, "parity", config.eval_seeds)
    cells = [(k, d) for k in config.ks for d in config.ds] if cells is None else cells

    # Tuning: per (k, d), the configuration with the best mean validation accuracy at the middle n of the grid
    # over the tuning seeds (one n keeps tuning cheaper than evaluation).
    tune_n = config.ns[len(config.ns) // 2]
    specs = [_mfld_spec(k, d, tune_n, s, p, config) for (k, d) in cells for p in MFLD_GRID for s in tune_seeds]
    if verbose:
        print(f"parity: tuning ({len(specs)} MFLD runs on tuning seeds)", flush=True)
    res = iter(run_jobs(parity_job, "parity", specs, cache=cache, n_jobs=n_jobs))
    tuning, chosen = {}, {}
    for (k, d) in cells:
        rows = []
        for p in MFLD_GRID:
            accs = [next(res)["test_accuracy"] for _ in tune_seeds]
            rows.append(dict(config=p, n=tune_n, mean_validation_accuracy=float(np.mean(accs))))
        best = int(np.argmax([r["mean_validation_accuracy"] for r in rows]))
        chosen[(k, d)] = MFLD_GRID[best]
        tuning[f"k={k} d={d}"] = dict(chosen=MFLD_GRID[best], table=rows)

    specs, keys = [], []
    for (k, d) in cells:
        for n in config.ns:
            for si, s in enumerate(eval_seeds):
                spec = _mfld_spec(k, d, n, s, chosen[(k, d)], config)
                specs.append(spec)
                keys.append((k, d, n, si, "mfld"))
                for b in CLASSIFICATION:
                    specs.append(dict(job="baseline", task=spec["task"], baseline=b, n_folds=config.n_folds,
                                      grids=grid_description(),
                                      particles=dict(n_particles=config.n_particles, lam_w=chosen[(k, d)]["lam_w"],
                                                     input_scale=1.0, seed=spec["seed"], activation="tanh")))
                    keys.append((k, d, n, si, b))
    if verbose:
        print(f"parity: evaluation ({len(specs)} runs on {len(eval_seeds)} fresh seeds)", flush=True)
    out = dict(zip(keys, run_jobs(parity_job, "parity", specs, cache=cache, n_jobs=n_jobs)))
    acc = {}
    for (k, d, n, si, m), r in out.items():
        acc[(k, d, n, si, m)] = r["test_accuracy"]
        if m == "mfld":
            acc[(k, d, n, si, "init_kernel_step0")] = r["step0_accuracy"]
    S = len(eval_seeds)
    claims, summary = [], []
    for (k, d) in cells:
        avg = {m: np.array([np.mean([acc[(k, d, n, si, m)] for n in config.ns]) for si in range(S)]) for m in METHODS}
        parts = [protocol.part(f"mean accuracy over n: MFLD - {METHOD_LABELS[b]}",
                               protocol.paired_interval(avg["mfld"], avg[b]), ">", 0.0) for b in CLASSIFICATION]
        claims.append(protocol.claim(f"parity-k{k}-d{d}", f"{k}-sparse parity, d = {d}: MFLD's accuracy averaged over "
                                     f"n in {list(config.ns)} is higher than every tuned fixed kernel's",
                                     protocol.all_of(p["verdict"] for p in parts), parts=parts))
        for n in config.ns:
            row = dict(k=k, d=d, n=n)
            for m in METHODS:
                row[m] = protocol.mean_interval([acc[(k, d, n, si, m)] for si in range(S)])
            summary.append(row)
    wall = time.perf_counter() - t0
    files = [_plot(summary, config, out_dir, S)]
    result = dict(experiment="parity", quick=bool(quick), config=asdict(config), base_seed=base_seed,
                  tuning_seeds=tune_seeds, evaluation_seeds=eval_seeds, mfld_grid=list(MFLD_GRID), tuning=tuning,
                  methods=METHOD_LABELS, summary=summary, claims=claims, metadata=meta, wall_time=wall,
                  files=files, n_cached_runs=len(cache),
                  runs=[dict(k=k, d=d, n=n, seed_index=si, method=m, result=r) for (k, d, n, si, m), r in out.items()])
    write_outputs(out_dir, "parity", result, _markdown(result, summary, config, quick, wall, S))
    if verbose:
        print(protocol.claims_markdown(claims), flush=True)
    return result


def _markdown(result, summary, config, quick, wall, S):
    rows = [[r["k"], r["d"], r["n"]] + [protocol.format_interval(r[m]) for m in METHODS] for r in summary]
    chosen = "; ".join(f"{cell}: lam = {t['chosen']['lam']}, lam_w = {t['chosen']['lam_w']}"
                       for cell, t in result["tuning"].items())
    return "\n".join([
        f"# parity: k-sparse parities, MFLD (logistic) against tuned fixed kernels{' (quick)' if quick else ''}",
        "",
        f"x uniform on {{-1,1}}^d, y = x1*...*xk; test accuracy on {config.n_test} fresh points (chance 0.5), mean "
        f"[95% t interval] over {S} evaluation seeds. MFLD: N = {config.n_particles}, {config.n_steps} steps, "
        f"configuration per (k, d) chosen on {config.tuning_seeds} tuning seed(s) at n = "
        f"{config.ns[len(config.ns) // 2]} from {len(MFLD_GRID)} ({chosen}). "
        f"Baselines: {config.n_folds}-fold stratified CV in each training set. Protocol: docs/protocol.md. "
        f"Wall time {wall:.0f} s.",
        "",
        markdown_table(["k", "d", "n"] + [METHOD_LABELS[m] for m in METHODS], rows),
        "",
        "## Claims",
        "",
        protocol.claims_markdown(result["claims"]),
        "",
    ])


def _plot(summary, config, out_dir, S):
    plt = pyplot()
    fig, axes = plt.subplots(len(config.ks), len(config.ds), figsize=(4.4 * len(config.ds), 3.5 * len(config.ks)),
                             squeeze=False, sharey=True, constrained_layout=True)
    for i, k in enumerate(config.ks):
        for j, d in enumerate(config.ds):
            ax = axes[i][j]
            rows = [r for r in summary if (r["k"], r["d"]) == (k, d)]
            ns = np.array([r["n"] for r in rows])
            for mi, m in enumerate(METHODS):
                mean = np.array([r[m]["estimate"] for r in rows])
                low = np.array([max(r[m]["low"], 0.0) if math.isfinite(r[m]["low"]) else 0.0 for r in rows])
                high = np.array([min(r[m]["high"], 1.0) if math.isfinite(r[m]["high"]) else 1.0 for r in rows])
                line, = ax.plot(ns, mean, marker="o", ms=3, lw=2.2 if m == "mfld" else 1,
                                color="k" if m == "mfld" else f"C{mi}", label=METHOD_LABELS[m],
                                ls=":" if m == "init_kernel_step0" else "-")
                if S > 1:
                    ax.fill_between(ns, low, high, color=line.get_color(), alpha=0.12, lw=0)
            ax.axhline(0.5, color="grey", ls=":", lw=1)
            ax.set_xscale("log")
            ax.set_xticks(ns, [str(n) for n in ns])
            ax.minorticks_off()
            ax.set_ylim(0.4, 1.02)
            ax.set_title(f"{k}-sparse parity, d = {d}", fontsize=10)
            ax.set_xlabel("training size n")
            if j == 0:
                ax.set_ylabel("test accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    # as many legend columns as fit the figure's width (one cell, for one claim, is narrow)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, 2 * len(config.ds)), fontsize=8)
    path = os.path.join(out_dir, "parity.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
