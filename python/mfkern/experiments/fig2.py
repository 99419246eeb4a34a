"""``mfkern reproduce fig2``: the label-noise procedure at several levels s (paper, section 5 and Fig. 2).

Task: f(x) = x1*x2, x ~ N(0, I_15), training labels with data noise Uniform[-1, 1] (sigma = 1, fixed);
MFLD run with the label-noise procedure (PAPER.md section 5: each step fits the second layer to Y + E,
E ~ Uniform[-s, s], scored with Y) at levels s; s = 0 is plain MFLD. Curves over training (mean +- std over
seeds): kernel alignment with the clean target, degrees of freedom, test MSE against the clean f.

Paper's claims checked: the procedure lowers the dof and the test loss (compared with s = 0, at the end).
In expectation it penalises (s^2/(6n)) dof (PAPER.md section 5).

Choices the paper leaves open (fixed here): data noise sigma = 1, n = 500 (quick: 200), s in {0, 0.5, 1, 2}
(quick: {0, 1, 2}); for each seed the data and the initial particles are shared across s. Sizes and the
hyper-parameter setting as in :mod:`mfkern.experiments.fig1`.
"""
from __future__ import annotations

import time

from .common import claim, claims_markdown, markdown_table, parse_seeds, write_outputs
from .fig1 import curve_sweep

__all__ = ["run_fig2", "FULL", "QUICK", "DATA_SIGMA"]

#: Label noise of the data (fixed), Uniform[-DATA_SIGMA, DATA_SIGMA].
DATA_SIGMA = 1.0
FULL = dict(task="product", d=15, n=500, n_test=2000, levels=(0.0, 0.5, 1.0, 2.0), n_particles=2000,
            n_steps=10000, log_every=200, sigma=DATA_SIGMA)
QUICK = dict(task="product", d=15, n=200, n_test=1000, levels=(0.0, 1.0, 2.0), n_particles=300, n_steps=800,
             log_every=50, sigma=DATA_SIGMA)


def run_fig2(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, setting="normalised", base_seed=0,
             verbose=True):
    """Reproduce Fig. 2: the label-noise procedure at several levels s; same arguments and return value as
    :func:`mfkern.experiments.fig1.run_fig1` (outputs fig2.json, fig2.md, fig2.png)."""
    sizes = dict(QUICK if quick else FULL)
    seeds = parse_seeds(seeds, quick)
    results, rows, headers, t0 = curve_sweep(
        "fig2", variable="label_noise", label="s", sizes=sizes, out_dir=out_dir, seeds=seeds, n_jobs=n_jobs,
        setting=setting, base_seed=base_seed,
        task_for=lambda level, s: dict(name=sizes["task"], n=sizes["n"], d=sizes["d"], seed=s,
                                       sigma=sizes["sigma"], n_test=sizes["n_test"]),
        config_for=lambda level: dict(label_noise=float(level)),
        title=f"Fig. 2: label-noise procedure at level s (data noise sigma = {sizes['sigma']:g})", verbose=verbose)
    summary = results["summary"]
    base = summary[0]
    claims = []
    for row in summary[1:]:
        s = row["label_noise"]
        claims.append(claim(f"s = {s:g} lowers the final dof compared with s = 0",
                            row["dof_final_mean"] < base["dof_final_mean"],
                            f"{base['dof_final_mean']:.4g} -> {row['dof_final_mean']:.4g}"))
        claims.append(claim(f"s = {s:g} lowers the final test MSE compared with s = 0",
                            row["test_mse_final_mean"] < base["test_mse_final_mean"],
                            f"{base['test_mse_final_mean']:.4g} -> {row['test_mse_final_mean']:.4g} "
                            f"(std over seeds {base['test_mse_final_std']:.2g}, {row['test_mse_final_std']:.2g})"))
    results["claims"] = claims
    results["wall_time"] = time.perf_counter() - t0
    markdown = (f"# fig2: the label-noise procedure\n\nf(x) = x1*x2, d = {sizes['d']}, n = {sizes['n']}, data "
                f"noise sigma = {sizes['sigma']:g}, N = {sizes['n_particles']}, {sizes['n_steps']} steps, {seeds} "
                f"seeds, setting '{setting}', {'quick' if quick else 'full'} sizes; wall time "
                f"{results['wall_time']:.0f} s. Values: mean over seeds (+- std at the end).\n\n"
                + markdown_table(headers, rows) + "\n\nPaper's claims:\n\n" + claims_markdown(claims) + "\n")
    write_outputs(out_dir, "fig2", results, markdown)
    if verbose:
        print(markdown)
    return results
