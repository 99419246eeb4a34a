"""``mfkern reproduce single-index``: kernel and parameter alignment against d at the theorem's scalings.

Target: f(x) = g(u*.x), u* = e1, g(z) = (z^2 - 1)/sqrt(2) (unit variance), x ~ N(0, I_d), clean labels,
n = ceil(c_n d ln d) training points (the theorem's O(d log d) regime). MFLD at the theorem's scalings
(docs/theory.md, section 11): lam = c_lam / (d ln d), lam_a = c_a d ln d (so the ridge n lam lam_a does not
depend on d), inputs / sqrt(d), lam_w = 1. The claims: kernel alignment goes from O(1/sqrt d) at
initialisation to Omega(1), parameter alignment (1/N) sum_k (u_k.u*)^2/||u_k||^2 from O(1/d) to Omega(1).

Kernel alignment here is the *population* alignment E[k f f'] / (E f^2 sqrt(E k^2)), estimated on 1000 fresh
test points with off-diagonal averages (:func:`mfkern.experiments.tasks.population_alignment`); the in-sample
alignment on the training Gram is recorded as well.

Protocol (docs/protocol.md): (c_lam, c_a) from :data:`MFLD_GRID`, chosen on tuning seeds by the mean
validation MSE over all d; evaluation on fresh seeds; per-seed log-log slopes against d with t intervals;
"rises" claims by paired intervals (final - initial, same run). Omega(1) is tested as "the log-log slope of the
final value exceeds -0.25"; O(d^-a) at initialisation as "the slope lies in [-a - 0.25, -a + 0.25]".

Sizes. Full: d in {8, 16, 32, 64}, c_n = 8 (n = 134 .. 2130), N = 512, 2000 steps, 5 evaluation and 2 tuning
seeds. Quick: d in {4, 8, 16}, N = 64, 200 steps, 2 evaluation seeds, 1 tuning seed.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import protocol
from ..runner import derive_seed
from .mfld import config_dict, mfld_job, open_cache, run_jobs
from .results import markdown_table, metadata, pyplot, write_outputs

__all__ = ["run_single_index", "FULL", "QUICK", "MFLD_GRID", "CLAIMS", "scaled_config"]

#: Constants of the theorem's scalings lam = c_lam/(d ln d), lam_a = c_a d ln d (the paper's lam = 0.004,
#: lam_a = 0.25 at d = 15 are c_lam = 0.16, c_a = 0.006).
MFLD_GRID = tuple(dict(c_lam=c_lam, c_a=c_a) for c_lam in (0.04, 0.16) for c_a in (0.006, 0.025))
FULL = dict(ds=(8, 16, 32, 64), c_n=8, n_test=2000, n_fresh=1000, n_particles=512, n_steps=2000, log_every=250,
            eval_seeds=5, tuning_seeds=2)
QUICK = dict(ds=(4, 8, 16), c_n=8, n_test=500, n_fresh=400, n_particles=64, n_steps=200, log_every=50,
             eval_seeds=2, tuning_seeds=1)
CLAIMS = ("single-index-param-initial", "single-index-param-rises", "single-index-param-omega1",
          "single-index-kernel-initial", "single-index-kernel-rises", "single-index-kernel-omega1")


def scaled_config(point, d, sizes):
    """The MFLD configuration of grid point (c_lam, c_a) at dimension d."""
    dl = d * math.log(d)
    return config_dict(n_particles=sizes["n_particles"], n_steps=sizes["n_steps"], log_every=sizes["log_every"],
                       lam=point["c_lam"] / dl, lam_a=point["c_a"] * dl, lam_w=1.0, eta=0.2,
                       input_scale=1.0 / math.sqrt(d))


def _n(d, sizes):
    return int(math.ceil(sizes["c_n"] * d * math.log(d)))


def run_single_index(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, base_seed=0, cache_dir=None,
                     verbose=True):
    """Alignments at initialisation and at the end against d; writes single-index.json/.md/.png."""
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    if seeds is not None:
        sizes["eval_seeds"] = int(seeds)
    cache = open_cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir, "single-index")
    ds = sizes["ds"]
    tune_seeds = protocol.tuning_seeds(base_seed, "single-index", sizes["tuning_seeds"])
    eval_seeds = protocol.evaluation_seeds(base_seed, "single-index", sizes["eval_seeds"])

    def task(d, seed):
        return dict(name="single-index", n=_n(d, sizes), d=d, n_test=sizes["n_test"], seed=seed)

    # Tuning: one (c_lam, c_a) for all d, by the mean validation MSE over d and tuning seeds.
    tasks_t = [task(d, s) for d in ds for s in tune_seeds]
    seeds_t = [derive_seed(s, "mfld") for d in ds for s in tune_seeds]
    if verbose:
        print(f"single-index: tuning ({len(MFLD_GRID)} configurations x {len(tasks_t)} tuning runs)", flush=True)
    rows = []
    for point in MFLD_GRID:
        configs = [scaled_config(point, t["d"], sizes) for t in tasks_t]
        specs = [dict(task=t, config=c, seed=s, n_fresh=0) for t, c, s in zip(tasks_t, configs, seeds_t)]
        res = run_jobs(mfld_job, "single-index", specs, cache=cache, n_jobs=n_jobs)
        errs = [r["final"]["test_mse"] for r in res]
        rows.append(dict(point=point, validation_mse=errs, mean=float(np.mean(errs))))
    best = int(np.argmin([r["mean"] for r in rows]))
    point = MFLD_GRID[best]

    specs = [dict(task=task(d, s), config=scaled_config(point, d, sizes), seed=derive_seed(s, "mfld"),
                  n_fresh=sizes["n_fresh"]) for d in ds for s in eval_seeds]
    if verbose:
        print(f"single-index: evaluation, c_lam = {point['c_lam']}, c_a = {point['c_a']} ({len(specs)} runs)",
              flush=True)
    runs = run_jobs(mfld_job, "single-index", specs, cache=cache, n_jobs=n_jobs)
    S = len(eval_seeds)

    def values(q, when):  # (seeds, ds)
        return np.array([[runs[i * S + s][when][q] for i in range(len(ds))] for s in range(S)])

    summary = []
    for i, d in enumerate(ds):
        row = dict(d=d, n=_n(d, sizes), lam=specs[i * S]["config"]["lam"], lam_a=specs[i * S]["config"]["lam_a"])
        for q in ("parameter_alignment", "population_alignment", "kernel_alignment", "test_mse"):
            for when in ("initial", "final"):
                row[f"{q}_{when}"] = protocol.mean_interval(values(q, when)[:, i])
        summary.append(row)

    def slope_part(q, when, op, lo, hi=None, label=""):
        v = values(q, when)
        what = f"log-log slope against d of the {when} {label}"
        if np.all(v > 0):
            iv = protocol.mean_interval(protocol.slopes(ds, v))
        else:  # an estimate at or below 0 (sampling noise of a tiny alignment): no logarithm, no decision
            iv = dict(estimate=math.nan, low=-math.inf, high=math.inf, n=S, level=protocol.LEVEL, method="t")
            what += " (some estimates <= 0: undecidable)"
        return protocol.part(what, iv, op, lo, hi)

    def rises(q, label):
        parts = [protocol.part(f"d = {d}: final - initial {label}",
                               protocol.paired_interval(values(q, "final")[:, i], values(q, "initial")[:, i]), ">", 0.0)
                 for i, d in enumerate(ds)]
        return protocol.all_of(p["verdict"] for p in parts), parts

    claims = []
    p = slope_part("parameter_alignment", "initial", "in", -1.25, -0.75, "parameter alignment")
    claims.append(protocol.claim("single-index-param-initial", "initial parameter alignment is O(1/d): slope in "
                                 "[-1.25, -0.75]", p["verdict"], parts=[p]))
    v, parts = rises("parameter_alignment", "parameter alignment")
    claims.append(protocol.claim("single-index-param-rises", "parameter alignment rises during training at every d",
                                 v, parts=parts))
    p = slope_part("parameter_alignment", "final", ">", -0.25, label="parameter alignment")
    claims.append(protocol.claim("single-index-param-omega1", "final parameter alignment is Omega(1): slope > -0.25",
                                 p["verdict"], parts=[p]))
    p = slope_part("population_alignment", "initial", "in", -0.75, -0.25, "population kernel alignment")
    claims.append(protocol.claim("single-index-kernel-initial", "initial kernel alignment is O(1/sqrt d): slope in "
                                 "[-0.75, -0.25]", p["verdict"], parts=[p]))
    v, parts = rises("population_alignment", "population kernel alignment")
    claims.append(protocol.claim("single-index-kernel-rises", "kernel alignment rises during training at every d",
                                 v, parts=parts))
    p = slope_part("population_alignment", "final", ">", -0.25, label="population kernel alignment")
    claims.append(protocol.claim("single-index-kernel-omega1", "final kernel alignment is Omega(1): slope > -0.25",
                                 p["verdict"], parts=[p]))

    files = [_plot(out_dir, ds, values, S, point)]
    results = dict(experiment="single-index", quick=bool(quick), sizes=sizes, base_seed=base_seed,
                   tuning_seeds=tune_seeds, evaluation_seeds=eval_seeds, mfld_grid=list(MFLD_GRID),
                   tuning=dict(chosen=point, table=rows), summary=summary, claims=claims,
                   runs=[dict(spec=s, result=r) for s, r in zip(specs, runs)], metadata=meta, files=files,
                   n_cached_runs=len(cache))
    results["wall_time"] = time.perf_counter() - t0
    table = markdown_table(["d", "n", "lam", "lam_a", "parameter alignment init -> end",
                            "population alignment init -> end", "test MSE end"],
                           [[r["d"], r["n"], f"{r['lam']:.3g}", f"{r['lam_a']:.3g}",
                             f"{r['parameter_alignment_initial']['estimate']:.3g} -> "
                             f"{protocol.format_interval(r['parameter_alignment_final'])}",
                             f"{r['population_alignment_initial']['estimate']:.3g} -> "
                             f"{protocol.format_interval(r['population_alignment_final'])}",
                             protocol.format_interval(r["test_mse_final"])] for r in summary])
    markdown = (f"# single-index: alignment against d\n\nf(x) = (z^2-1)/sqrt(2), z = e1.x, x ~ N(0, I_d), n = "
                f"ceil({sizes['c_n']} d ln d), MFLD N = {sizes['n_particles']}, {sizes['n_steps']} steps, lam = "
                f"{point['c_lam']}/(d ln d), lam_a = {point['c_a']} d ln d (chosen on {sizes['tuning_seeds']} tuning "
                f"seed(s) from {len(MFLD_GRID)}), lam_w = 1, inputs / sqrt(d); {S} evaluation seeds; "
                f"{'quick' if quick else 'full'} sizes; wall time {results['wall_time']:.0f} s. Mean over seeds "
                f"[95% t interval]; population alignment on {sizes['n_fresh']} fresh points.\n\n" + table
                + "\n\n## Claims\n\n" + protocol.claims_markdown(claims) + "\n")
    write_outputs(out_dir, "single-index", results, markdown)
    if verbose:
        print(protocol.claims_markdown(claims), flush=True)
    return results


def _plot(out_dir, ds, values, S, point):
    from scipy import stats

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    for ax, q, title, ref in ((axes[0], "population_alignment", "population kernel alignment", -0.5),
                              (axes[1], "parameter_alignment", "parameter alignment with u* = e1", -1.0)):
        for when, style in (("initial", "o--"), ("final", "o-")):
            v = values(q, when)
            mean = v.mean(axis=0)
            half = (stats.t.ppf(0.975, S - 1) * v.std(axis=0, ddof=1) / math.sqrt(S)) if S > 1 else 0 * mean
            line, = ax.plot(ds, mean, style, label=when)
            ax.fill_between(ds, np.maximum(mean - half, 1e-4), mean + half, color=line.get_color(), alpha=0.2, lw=0)
        first = values(q, "initial").mean(axis=0)[0]
        ax.plot(ds, first * (np.asarray(ds, float) / ds[0]) ** ref, ":", color="grey", label=f"d^{ref:g}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(ds, [str(d) for d in ds])
        ax.set_xlabel("d")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"single index He2(e1.x)/sqrt2, n = c d ln d, lam = {point['c_lam']}/(d ln d), "
                 f"lam_a = {point['c_a']} d ln d (mean, 95% t band over {S} seeds)", fontsize=10)
    path = os.path.join(out_dir, "single-index.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
