"""``mfkern demo``: MFLD against the fixed kernels on the paper's task f(x) = x1*x2, d = 15, n = 100.

What it runs (docs/protocol.md)
    Data: x ~ N(0, I_15), clean labels y = x1*x2, n = 100 training points, 2000 test points per seed.
    MFLD (:class:`mfkern.MeanFieldRegressor`, N = 1000 particles, 2000 steps, lam = 0.004, lam_a = 0.25,
    eta = 0.2): the input scale and lam_w are chosen from :data:`MFLD_GRID` (the paper's exact setting and
    three settings on inputs / sqrt(d)) on 2 tuning seeds, by the final validation MSE; nothing about the
    choice looks at the evaluation data.
    Baselines (:mod:`mfkern.experiments.baselines`): kernel ridge with RBF, Laplacian, polynomial (degree 2 and
    3) and arc-sine kernels, the finite initial kernel of MFLD's particles and random features, every
    hyper-parameter by 5-fold CV inside each training set, grids widened until the choice is interior.
    Evaluation: 5 fresh seeds (data, initial particles, noise); test MSE against the clean target; the claim
    "MFLD beats every fixed kernel" by paired 95% t intervals of test MSE(kernel) - test MSE(MFLD).
    Diagnostics of MFLD at initialisation and at the end: kernel alignment of the Gram with f(X_train),
    degrees of freedom, parameter alignment with span(e1, e2) (2/15 = 0.133 for isotropic particles).

The tuning budget: MFLD sees 4 configurations on 2 tuning seeds (8 trainings); each baseline scores at least
20 configurations by 5-fold CV on every training set. The budget favours the baselines.

Why n = 100: the separation in docs/theory.md, section 11 is about n between d log d (about 40 for d = 15)
and d^2 (225); n = 100 lies in between. ``mfkern reproduce separation`` maps the sample size needed against d.
Runs are cached in ``<out>/cache/demo.jsonl``: a second ``mfkern demo`` with the same output folder reuses them.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import protocol
from ..runner import derive_seed
from .baselines import LABELS, REGRESSION, grid_description
from .mfld import PAPER_SETTING, config_dict, job, open_cache, run_jobs, tune
from .results import markdown_table, metadata, pyplot, write_json

__all__ = ["run_demo", "DEMO_SETTINGS", "QUICK_SETTINGS", "MFLD_GRID", "CLAIMS"]

#: The demo's sizes.
DEMO_SETTINGS = dict(task="product", d=15, n=100, n_test=2000, sigma=0.0, n_particles=1000, n_steps=2000,
                     log_every=100, eval_seeds=5, tuning_seeds=2, n_folds=5)
#: ``--quick``: a smoke test (seconds), same task, far fewer particles and steps.
QUICK_SETTINGS = dict(DEMO_SETTINGS, n=60, n_test=500, n_particles=100, n_steps=100, log_every=25, eval_seeds=2,
                      tuning_seeds=1, n_folds=3)
#: MFLD's candidate settings: (lam_w, input scale), "1/sqrt(d)" meaning inputs / sqrt(d).
MFLD_GRID = ((0.25, "1"), (0.25, "1/sqrt(d)"), (1.0, "1/sqrt(d)"), (4.0, "1/sqrt(d)"))
CLAIMS = ("demo-mfld-beats-every-kernel",)


def _config(point, s):
    lam_w, scale = point
    values = dict(PAPER_SETTING, lam_w=lam_w, input_scale=1.0 if scale == "1" else 1.0 / math.sqrt(s["d"]))
    return config_dict(n_particles=s["n_particles"], n_steps=s["n_steps"], log_every=s["log_every"], **values)


def _task(s, seed):
    return dict(name=s["task"], n=s["n"], d=s["d"], seed=seed, sigma=s["sigma"], n_test=s["n_test"])


def run_demo(out_dir="mfkern-results", quick=False, seed=0, *, n_jobs=1, n_threads=None, cache_dir=None,
             verbose=True):
    """Run the demo; writes demo.json, demo.md, demo_training.png and demo_comparison.png into out_dir.

    Parameters
    ----------
    seed : int
        Base seed; tuning and evaluation seeds derive from it.
    n_jobs : int
        Processes for independent runs.
    n_threads : int or None
        Threads of the core in each run (default 1).
    """
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    s = dict(QUICK_SETTINGS if quick else DEMO_SETTINGS)
    cache = open_cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir, "demo")
    tune_seeds = protocol.tuning_seeds(seed, "demo", s["tuning_seeds"])
    eval_seeds = protocol.evaluation_seeds(seed, "demo", s["eval_seeds"])
    configs = [_config(p, s) for p in MFLD_GRID]
    if verbose:
        print(f"mfkern demo: x1*x2, d = {s['d']}, n = {s['n']}; tuning MFLD ({len(configs)} settings x "
              f"{len(tune_seeds)} tuning seeds, N = {s['n_particles']}, {s['n_steps']} steps) ...", flush=True)
    tuning = tune(configs, [_task(s, t) for t in tune_seeds], [derive_seed(t, "mfld") for t in tune_seeds],
                  cache=cache, n_jobs=n_jobs, kind="demo", n_threads=n_threads)
    config = tuning["config"]
    specs = []
    for e in eval_seeds:
        mseed = derive_seed(e, "mfld")
        specs.append(dict(job="mfld", task=_task(s, e), config=config, seed=mseed, n_fresh=0))
        for b in REGRESSION:
            specs.append(dict(job="baseline", task=_task(s, e), baseline=b, n_folds=s["n_folds"],
                              grids=grid_description(),
                              particles=dict(n_particles=config["n_particles"], lam_w=config["lam_w"],
                                             input_scale=config["input_scale"], seed=mseed, activation="tanh")))
    if verbose:
        print(f"  chosen: lam_w = {config['lam_w']}, input scale {config['input_scale']:.3g}; evaluation on "
              f"{len(eval_seeds)} fresh seeds ({len(specs)} runs) ...", flush=True)
    results_list = run_jobs(job, "demo", specs, cache=cache, n_jobs=n_jobs, n_threads=n_threads)
    per = len(REGRESSION) + 1
    mfld = [results_list[i * per] for i in range(len(eval_seeds))]
    base = {b: [results_list[i * per + 1 + j] for i in range(len(eval_seeds))] for j, b in enumerate(REGRESSION)}
    mfld_mse = np.array([r["final"]["test_mse"] for r in mfld])
    parts = [protocol.part(f"test MSE({LABELS[b]}) - test MSE(MFLD)",
                           protocol.paired_interval([r["test_mse"] for r in base[b]], mfld_mse), ">", 0.0)
             for b in REGRESSION]
    claims = [protocol.claim("demo-mfld-beats-every-kernel", f"x1*x2, d = {s['d']}, n = {s['n']}: MFLD's test MSE is "
                             "below every tuned fixed kernel's", protocol.all_of(p["verdict"] for p in parts),
                             parts=parts)]
    results = dict(experiment="demo", quick=bool(quick), settings=s, base_seed=int(seed), tuning_seeds=tune_seeds,
                   evaluation_seeds=eval_seeds, mfld_grid=[list(p) for p in MFLD_GRID],
                   tuning=dict(index=tuning["index"], table=tuning["table"]), mfld_config=config, mfld=mfld,
                   baselines=base, claims=claims, metadata=meta, n_cached_runs=len(cache))
    results["files"] = [os.path.join(out_dir, name) for name in ("demo.json", "demo.md")]
    try:
        results["files"] += _plot(results, out_dir)
    except ImportError as exc:  # matplotlib is optional: the tables and JSON do not need it
        print(f"  no figures: {exc}", flush=True)
    comparison, diag = _tables(results)
    results["tables"] = dict(comparison=comparison, diagnostics=diag)
    results["wall_time"] = time.perf_counter() - t0
    tuned = ", ".join(f"(lam_w {p[0]:g}, inputs x {p[1]}): {row['mean']:.3g}"
                      for p, row in zip(MFLD_GRID, tuning["table"]))
    header = (f"# mfkern demo\n\nf(x) = x1*x2, x ~ N(0, I_{s['d']}), n = {s['n']} clean training points, "
              f"{s['n_test']} test points, {len(eval_seeds)} evaluation seeds; MFLD N = {s['n_particles']}, "
              f"{s['n_steps']} steps, lam = 0.004, lam_a = 0.25, eta = 0.2, lam_w = {config['lam_w']:g}, inputs "
              f"x {config['input_scale']:.3g}, chosen on {len(tune_seeds)} tuning seed(s) (mean validation MSE: "
              f"{tuned}). Baselines: {s['n_folds']}-fold CV in each training set. Protocol: docs/protocol.md. "
              f"Wall time {results['wall_time']:.0f} s ({results['n_cached_runs']} runs in the cache).\n")
    with open(os.path.join(out_dir, "demo.md"), "w", encoding="utf-8") as fh:
        fh.write(header + "\n" + comparison + "\n\n" + diag + "\n\n## Claim\n\n" + protocol.claims_markdown(claims)
                 + "\n")
    write_json(os.path.join(out_dir, "demo.json"), results)
    if verbose:
        print()
        print(comparison)
        print()
        print(diag)
        print()
        print(protocol.claims_markdown(claims))
        print(f"\nwall time {results['wall_time']:.1f} s; wrote " + ", ".join(results["files"]))
    return results


def placement_text(runs):
    """Where the CV choices fell over seeds, e.g. 'alpha: interior 5/5; gamma: interior 4/5, edge 1/5'."""
    out = []
    for param in runs[0]["placement"]:
        counts = {}
        for r in runs:
            counts[r["placement"][param]] = counts.get(r["placement"][param], 0) + 1
        out.append(f"{param.split('__')[-1]}: " + ", ".join(f"{k} {v}/{len(runs)}" for k, v in sorted(counts.items())))
    return "; ".join(out)


def _tables(results):
    mfld = results["mfld"]
    rows = [["MFLD (two-timescale)", protocol.format_interval(protocol.mean_interval(
        [r["final"]["test_mse"] for r in mfld])), "", "tuned on tuning seeds"]]
    for b, runs in results["baselines"].items():
        mse = protocol.mean_interval([r["test_mse"] for r in runs])
        diff = protocol.paired_interval([r["test_mse"] for r in runs], [r["final"]["test_mse"] for r in mfld])
        rows.append([LABELS[b], protocol.format_interval(mse), protocol.format_interval(diff), placement_text(runs)])
    zero = protocol.mean_interval([r["zero_predictor_mse"] for r in mfld])
    rows.append(["zero predictor (Var f on the test set)", protocol.format_interval(zero), "", ""])
    comparison = markdown_table(["method", "test MSE, mean [95% CI]", "minus MFLD's, paired [95% CI]",
                                 "where CV's choices fell"], rows)

    def iv(key, when):
        return protocol.format_interval(protocol.mean_interval([r[when][key] for r in mfld]))

    diag = markdown_table(["MFLD diagnostic", "initialisation", "end of training"], [
        ["kernel alignment with f(X_train)", iv("kernel_alignment", "initial"), iv("kernel_alignment", "final")],
        ["degrees of freedom", iv("dof", "initial"), iv("dof", "final")],
        ["parameter alignment with span(e1, e2)", iv("parameter_alignment", "initial"),
         iv("parameter_alignment", "final")],
        ["test MSE", iv("test_mse", "initial"), iv("test_mse", "final")],
        ["train MSE", iv("train_mse", "initial"), iv("train_mse", "final")],
    ])
    return comparison, diag


def _plot(results, out_dir):
    plt = pyplot()
    s = results["settings"]
    mfld = results["mfld"]
    steps = np.asarray(mfld[0]["history"]["step"])
    fig, ax = plt.subplots(1, 4, figsize=(18, 4), constrained_layout=True)
    for key, a, title in (("test_mse", ax[0], "test MSE (clean target)"),
                          ("kernel_alignment", ax[1], "kernel alignment with f(X_train)"),
                          ("parameter_alignment", ax[2], "parameter alignment with span(e1, e2)"),
                          ("dof", ax[3], "degrees of freedom")):
        for i, r in enumerate(mfld):
            a.plot(steps, r["history"][key], color="k", alpha=0.6, lw=1,
                   label="MFLD, one line per seed" if i == 0 else None)
        a.set_title(title)
        a.set_xlabel("Langevin step")
    for j, (b, runs) in enumerate(results["baselines"].items()):
        ax[0].axhline(np.mean([r["test_mse"] for r in runs]), ls="--", lw=1, color=f"C{j}", label=LABELS[b])
    ax[0].set_yscale("log")
    ax[0].legend(fontsize=7)
    ax[2].axhline(2 / s["d"], ls=":", color="grey")
    fig.suptitle(f"MFLD on x1*x2, d = {s['d']}, n = {s['n']}, N = {s['n_particles']} ({len(mfld)} evaluation "
                 "seeds; dashed: baselines' mean test MSE)")
    training = os.path.join(out_dir, "demo_training.png")
    fig.savefig(training, dpi=100)
    plt.close(fig)

    names = ["MFLD"] + [LABELS[b] for b in results["baselines"]]
    values = [[r["final"]["test_mse"] for r in mfld]] + [[r["test_mse"] for r in runs]
                                                         for runs in results["baselines"].values()]
    # Positive errors spanning decades: geometric mean and t interval on the log scale.
    ivs = [protocol.mean_interval(np.log(v)) for v in values]
    means = np.exp([iv["estimate"] for iv in ivs])
    lows, highs = np.exp([iv["low"] for iv in ivs]), np.exp([iv["high"] for iv in ivs])
    fig, a = plt.subplots(figsize=(8.5, 4.2), constrained_layout=True)
    y = np.arange(len(names))
    a.errorbar(means, y, xerr=[means - lows, highs - means], fmt="o", color="k", capsize=3)
    for i, v in enumerate(values):
        a.scatter(v, np.full(len(v), i) + 0.15, s=10, color="C0", alpha=0.7)
    a.set_yticks(y, names, fontsize=8)
    a.invert_yaxis()
    a.set_xscale("log")
    a.set_xlabel("test MSE, clean target: geometric mean, 95% t interval of log MSE; seeds as dots")
    a.set_title(f"x1*x2, d = {s['d']}, n = {s['n']}: {len(mfld)} evaluation seeds")
    comparison = os.path.join(out_dir, "demo_comparison.png")
    fig.savefig(comparison, dpi=100)
    plt.close(fig)
    return [training, comparison]
