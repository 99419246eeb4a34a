"""``mfkern reproduce fig1``: training curves for several label-noise levels sigma of the data (paper, Fig. 1).

Task: f(x) = x1*x2, x ~ N(0, I_15), training labels f(x) + Uniform[-sigma, sigma]; test MSE against the
clean f. Curves over training (mean +- std over seeds): kernel alignment of the Gram with the clean target
f(X_train), degrees of freedom tr[K (K + n lam lam_a I)^{-1}], test MSE.

Paper's claims checked: alignment and dof rise during training; larger sigma gives larger dof.

Choices the paper leaves open (fixed here): n = 500 (quick: 200) training points, 2000 (quick: 1000) test
points, sigma in {0, 0.5, 1, 2} (quick: {0, 1, 2}); for each seed the inputs are shared across sigma and
only the noise scale changes. Default sizes are the paper's (N = 2000, 10,000 steps, 5 seeds: hours on 2
cores: a step at n = 500, N = 2000 costs about 60 ms, so a run takes 10-15 min and the 20 runs about 4 h,
or 2-3 h with ``--n-jobs 2``); ``--quick`` uses N = 300 and 800 steps (measured: 18 s with ``--n-jobs 2``).
Hyper-parameters: the "normalised" setting of
:data:`mfkern.experiments.common.SETTINGS` (the paper's lam, lam_a, eta; lam_w = 4 and inputs / sqrt(d),
see :mod:`mfkern.experiments.demo` for the measurements behind it); ``setting="paper"`` runs the paper's.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .common import (
    band,
    claim,
    claims_markdown,
    derive_seed,
    markdown_table,
    metadata,
    mfld_config,
    parse_seeds,
    pyplot,
    run_grid,
    stack,
    write_outputs,
)

__all__ = ["run_fig1", "FULL", "QUICK", "curve_sweep"]

FULL = dict(task="product", d=15, n=500, n_test=2000, levels=(0.0, 0.5, 1.0, 2.0), n_particles=2000,
            n_steps=10000, log_every=200)
QUICK = dict(task="product", d=15, n=200, n_test=1000, levels=(0.0, 1.0, 2.0), n_particles=300, n_steps=800,
             log_every=50)

CURVES = (("kernel_alignment", "kernel alignment with f(X_train)"), ("dof", "degrees of freedom"),
          ("test_mse", "test MSE (clean target)"))


def curve_sweep(name, *, variable, label, sizes, out_dir, seeds, n_jobs, setting, base_seed, task_for,
                config_for, title, verbose=True):
    """Run MFLD for every level of `variable` and seed; write <name>.json/.md/.png; return the results.

    `task_for(level, data_seed)` gives the kwargs of make_task, `config_for(level)` the MFLDConfig overrides.
    """
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    levels = list(sizes["levels"])
    cases = []
    for level in levels:
        for s in range(seeds):
            config = mfld_config(setting, sizes["d"], n_particles=sizes["n_particles"], n_steps=sizes["n_steps"],
                                 log_every=sizes["log_every"], **config_for(level))
            cases.append(dict(task_kwargs=task_for(level, derive_seed(base_seed, name, "data", s)),
                              config=config.as_dict(), seed=derive_seed(base_seed, name, "mfld", s)))
    if verbose:
        print(f"{name}: {len(cases)} runs ({len(levels)} levels of {variable} x {seeds} seeds), "
              f"N = {sizes['n_particles']}, {sizes['n_steps']} steps, n = {sizes['n']}", flush=True)
    runs = run_grid(cases, n_jobs=n_jobs, progress=(lambda m: print(m, flush=True)) if verbose else None)
    for run, case in zip(runs, cases):
        run[variable] = case["config"].get(variable, case["task_kwargs"].get(variable))

    summary, curves = [], {}
    for level in levels:
        group = [r for r in runs if r[variable] == level]
        row = {variable: level}
        for key, _ in CURVES:
            steps, values = stack(group, key)
            curves[(level, key)] = (steps, values)
            row[f"{key}_initial_mean"], row[f"{key}_initial_std"] = values[:, 0].mean(), values[:, 0].std()
            row[f"{key}_final_mean"], row[f"{key}_final_std"] = values[:, -1].mean(), values[:, -1].std()
            row[f"{key}_rise_all_seeds"] = bool(np.all(values[:, -1] > values[:, 0]))
        summary.append(row)

    plt = pyplot()
    fig, axes = plt.subplots(1, len(CURVES), figsize=(15, 4), constrained_layout=True)
    for ax, (key, title_k) in zip(axes, CURVES):
        for level in levels:
            steps, values = curves[(level, key)]
            band(ax, steps, values, f"{label} = {level:g}")
        ax.set_title(title_k)
        ax.set_xlabel("Langevin step")
        if key == "test_mse":
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{title} (mean +- std over {seeds} seeds, setting '{setting}')")
    png = os.path.join(out_dir, f"{name}.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    headers = [label, "kernel alignment init -> end", "dof init -> end", "test MSE init -> end"]
    rows = []
    for row in summary:
        cells = [f"{row[variable]:g}"]
        for key, _ in CURVES:
            cells.append(f"{row[key + '_initial_mean']:.4g} -> {row[key + '_final_mean']:.4g} "
                         f"(+- {row[key + '_final_std']:.2g})")
        rows.append(cells)
    results = dict(experiment=name, variable=variable, setting=setting, sizes=sizes, n_seeds=seeds,
                   base_seed=base_seed, summary=summary, runs=runs, metadata=metadata(), files=[png])
    return results, rows, headers, t0


def run_fig1(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, setting="normalised", base_seed=0,
             verbose=True):
    """Reproduce Fig. 1: alignment, dof and test MSE over training for several data label-noise levels.

    Parameters
    ----------
    out_dir : str
        Output folder (fig1.json, fig1.md, fig1.png).
    quick : bool
        Small sizes (:data:`QUICK`) instead of the paper's (:data:`FULL`).
    seeds : int or None
        Seeds per level (default 5; 2 with `quick`).
    n_jobs : int
        Processes.
    setting : str
        Hyper-parameter setting of :data:`mfkern.experiments.common.SETTINGS`.
    base_seed : int
        Every run's seeds derive from it.

    Returns
    -------
    dict: ``summary`` (per sigma: initial/final mean and std of each curve), ``claims``, ``runs`` (every
    run's history), sizes, seeds, metadata, ``wall_time``, ``files``.
    """
    sizes = dict(QUICK if quick else FULL)
    seeds = parse_seeds(seeds, quick)
    results, rows, headers, t0 = curve_sweep(
        "fig1", variable="sigma", label="sigma", sizes=sizes, out_dir=out_dir, seeds=seeds, n_jobs=n_jobs,
        setting=setting, base_seed=base_seed,
        task_for=lambda level, s: dict(name=sizes["task"], n=sizes["n"], d=sizes["d"], seed=s, sigma=level,
                                       n_test=sizes["n_test"]),
        config_for=lambda level: {}, title="Fig. 1: x1*x2, d = 15, label noise sigma in the data",
        verbose=verbose)
    summary = results["summary"]
    dof_final = [row["dof_final_mean"] for row in summary]
    claims = [
        claim("kernel alignment rises during training", all(r["kernel_alignment_rise_all_seeds"] for r in summary),
              "final > initial for every sigma and seed: " + ", ".join(
                  f"sigma={r['sigma']:g}: {r['kernel_alignment_initial_mean']:.3g} -> "
                  f"{r['kernel_alignment_final_mean']:.3g}" for r in summary)),
        claim("degrees of freedom rise during training", all(r["dof_rise_all_seeds"] for r in summary),
              "final > initial for every sigma and seed: " + ", ".join(
                  f"sigma={r['sigma']:g}: {r['dof_initial_mean']:.3g} -> {r['dof_final_mean']:.3g}"
                  for r in summary)),
        claim("larger sigma gives larger dof (final, mean over seeds)", bool(np.all(np.diff(dof_final) > 0)),
              "final dof by sigma: " + ", ".join(f"{r['sigma']:g}: {r['dof_final_mean']:.3g}" for r in summary)),
    ]
    results["claims"] = claims
    results["wall_time"] = time.perf_counter() - t0
    markdown = (f"# fig1: label noise sigma in the data\n\nf(x) = x1*x2, d = {sizes['d']}, n = {sizes['n']}, "
                f"N = {sizes['n_particles']}, {sizes['n_steps']} steps, {seeds} seeds, setting '{setting}', "
                f"{'quick' if quick else 'full'} sizes; wall time {results['wall_time']:.0f} s. "
                "Values: mean over seeds (+- std at the end).\n\n" + markdown_table(headers, rows)
                + "\n\nPaper's claims:\n\n" + claims_markdown(claims) + "\n")
    write_outputs(out_dir, "fig1", results, markdown)
    if verbose:
        print(markdown)
    return results
