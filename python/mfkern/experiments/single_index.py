"""``mfkern reproduce single-index``: kernel and parameter alignment against d (paper, section 4).

Target: the single-index f(x) = g(u*.x), u* = e1, g(z) = (z^2 - 1)/sqrt(2) (the second Hermite polynomial,
unit variance), x ~ N(0, I_d), clean labels, n = 20 d training points (a multiple of d, in the O(d log d)
regime of the paper's guarantee). The paper's claim (PAPER.md section 7): kernel alignment goes from
O(1/sqrt d) at initialisation to Omega(1), parameter alignment (1/N) sum_k (u_k.u*)^2/||u_k||^2 from O(1/d)
(exactly 1/d in expectation for the isotropic initialisation) to Omega(1).

Reported per d (mean +- std over seeds): both alignments at initialisation and at the end, test MSE; and the
log-log slopes against d of each (OLS on the seed means). Choices (fixed): g, u* = e1, n = 20 d,
d in {5, 10, 20} (quick) / {5, 10, 20, 40} (full); sizes and setting as in :mod:`mfkern.experiments.fig1`.
Cost: ``--quick`` took 11 s with ``--n-jobs 2``; the full run (20 runs, n up to 800, 10,000 steps) an
estimated 3-4 h on 2 cores.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .common import (
    claim,
    claims_markdown,
    derive_seed,
    markdown_table,
    metadata,
    mfld_config,
    parse_seeds,
    pyplot,
    run_grid,
    write_outputs,
)

__all__ = ["run_single_index", "FULL", "QUICK", "loglog_slope"]

QUICK = dict(ds=(5, 10, 20), n_per_d=20, n_test=1000, n_particles=300, n_steps=800, log_every=100)
FULL = dict(ds=(5, 10, 20, 40), n_per_d=20, n_test=2000, n_particles=2000, n_steps=10000, log_every=500)
QUANTITIES = ("kernel_alignment", "parameter_alignment", "test_mse")


def loglog_slope(x, y):
    """OLS slope of log y against log x."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def run_single_index(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, setting="normalised",
                     base_seed=0, verbose=True):
    """Alignments at initialisation and at the end against d; writes single-index.json, single-index.md and
    single-index.png into out_dir and returns the results (``summary`` per d, ``slopes``, ``claims``, ``runs``)."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    seeds = parse_seeds(seeds, quick)
    cases = []
    for d in sizes["ds"]:
        for s in range(seeds):
            config = mfld_config(setting, d, n_particles=sizes["n_particles"], n_steps=sizes["n_steps"],
                                 log_every=sizes["log_every"])
            task_kwargs = dict(name="single-index", n=sizes["n_per_d"] * d, d=d, n_test=sizes["n_test"],
                               seed=derive_seed(base_seed, "single-index", "data", s))
            cases.append(dict(task_kwargs=task_kwargs,
                              config=config.as_dict(), seed=derive_seed(base_seed, "single-index", "mfld", s)))
    if verbose:
        print(f"single-index: {len(cases)} runs ({len(sizes['ds'])} d x {seeds} seeds), N = {sizes['n_particles']}, "
              f"{sizes['n_steps']} steps, n = {sizes['n_per_d']} d", flush=True)
    runs = run_grid(cases, n_jobs=n_jobs, progress=(lambda m: print(m, flush=True)) if verbose else None)

    summary = []
    for d in sizes["ds"]:
        group = [r for r in runs if r["task"]["d"] == d]
        row = dict(d=d, n=sizes["n_per_d"] * d)
        for q in QUANTITIES:
            for when in ("initial", "final"):
                values = np.array([r["mfld"][when][q] for r in group])
                row[f"{q}_{when}_mean"], row[f"{q}_{when}_std"] = float(values.mean()), float(values.std())
                row[f"{q}_{when}_values"] = values.tolist()
        summary.append(row)
    ds = [row["d"] for row in summary]
    slopes = {f"{q}_{when}": loglog_slope(ds, [row[f"{q}_{when}_mean"] for row in summary])
              for q in QUANTITIES[:2] for when in ("initial", "final")}

    def rose(q):
        return all(np.all(np.array(row[f"{q}_final_values"]) > np.array(row[f"{q}_initial_values"]))
                   for row in summary)

    claims = [
        claim("initial parameter alignment is O(1/d) (log-log slope about -1)",
              -1.25 <= slopes["parameter_alignment_initial"] <= -0.75,
              f"slope {slopes['parameter_alignment_initial']:.3g}"),
        claim("initial kernel alignment decays like O(1/sqrt d) (log-log slope about -1/2)",
              -0.75 <= slopes["kernel_alignment_initial"] <= -0.25,
              f"slope {slopes['kernel_alignment_initial']:.3g}"),
        claim("kernel alignment rises during training at every d and seed", rose("kernel_alignment"),
              ", ".join(f"d={r['d']}: {r['kernel_alignment_initial_mean']:.3g} -> {r['kernel_alignment_final_mean']:.3g}"
                        for r in summary)),
        claim("parameter alignment rises during training at every d and seed", rose("parameter_alignment"),
              ", ".join(f"d={r['d']}: {r['parameter_alignment_initial_mean']:.3g} -> "
                        f"{r['parameter_alignment_final_mean']:.3g}" for r in summary)),
        claim("final parameter alignment is Omega(1): it decays with d much more slowly than 1/d "
              "(log-log slope above -0.25)", slopes["parameter_alignment_final"] > -0.25,
              f"slope {slopes['parameter_alignment_final']:.3g}"),
        claim("final kernel alignment is Omega(1): log-log slope above -0.25",
              slopes["kernel_alignment_final"] > -0.25, f"slope {slopes['kernel_alignment_final']:.3g}"),
    ]

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, q, title, ref in ((axes[0], "kernel_alignment", "kernel alignment", -0.5),
                              (axes[1], "parameter_alignment", "parameter alignment with u* = e1", -1.0)):
        for when, style in (("initial", "o--"), ("final", "o-")):
            mean = np.array([row[f"{q}_{when}_mean"] for row in summary])
            std = np.array([row[f"{q}_{when}_std"] for row in summary])
            line, = ax.plot(ds, mean, style, label=f"{when} (slope {slopes[f'{q}_{when}']:.2f})")
            ax.fill_between(ds, np.maximum(mean - std, 1e-12), mean + std, color=line.get_color(), alpha=0.2, lw=0)
        first = summary[0][f"{q}_initial_mean"]
        ax.plot(ds, first * (np.asarray(ds, float) / ds[0]) ** ref, ":", color="grey", label=f"d^{ref:g} reference")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("d")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"single index g(e1.x), g = He2/sqrt2, n = {sizes['n_per_d']} d (mean +- std over {seeds} seeds, "
                 f"setting '{setting}')")
    png = os.path.join(out_dir, "single-index.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    rows = [[row["d"], row["n"]] + [f"{row[f'{q}_initial_mean']:.3g} -> {row[f'{q}_final_mean']:.3g}"
                                    for q in QUANTITIES] for row in summary]
    results = dict(experiment="single-index", setting=setting, sizes=sizes, n_seeds=seeds, base_seed=base_seed,
                   summary=summary, slopes=slopes, claims=claims, runs=runs, metadata=metadata(), files=[png])
    results["wall_time"] = time.perf_counter() - t0
    markdown = (f"# single-index: alignment against d\n\nf(x) = (z^2-1)/sqrt(2), z = e1.x, x ~ N(0, I_d), n = "
                f"{sizes['n_per_d']} d, N = {sizes['n_particles']}, {sizes['n_steps']} steps, {seeds} seeds, setting "
                f"'{setting}', {'quick' if quick else 'full'} sizes; wall time {results['wall_time']:.0f} s. "
                "Mean over seeds, initialisation -> end.\n\n"
                + markdown_table(["d", "n", "kernel alignment", "parameter alignment", "test MSE"], rows)
                + "\n\nLog-log slopes against d: "
                + ", ".join(f"{k} {v:.3g}" for k, v in slopes.items())
                + "\n\nPaper's claims:\n\n" + claims_markdown(claims) + "\n")
    write_outputs(out_dir, "single-index", results, markdown)
    if verbose:
        print(markdown)
    return results
