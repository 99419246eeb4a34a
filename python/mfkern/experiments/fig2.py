"""``mfkern reproduce fig2``: the label-noise procedure at several levels s (paper, section 5 and Fig. 2).

Task: f(x) = x1*x2, x ~ N(0, I_15), n = 200 training labels with data noise Uniform[-1, 1] (sigma = 1, fixed);
MFLD with the label-noise procedure (docs/theory.md, section 6: each step fits the second layer to Y + E,
E ~ Uniform[-s, s], scored with Y) at s in {0, 0.5, 1, 2}; s = 0 is plain MFLD. For each evaluation seed the
data and the initial particles are shared across s, so comparisons with s = 0 are paired.

Claims (verdicts by docs/protocol.md): at every s > 0 the final dof and the final test MSE are lower than at
s = 0. In expectation the procedure penalises (s^2/(6n)) dof (docs/theory.md, section 6).
Settings and sizes as in :mod:`mfkern.experiments.fig1` (the normalised setting's lam_w is tuned on tuning
seeds with s = 0 and the same data noise).
"""
from __future__ import annotations

import os
import time

from . import protocol
from .fig1 import SETTINGS, settings_text, curve_sweep, curve_values, plot_curves, summary_table
from .results import metadata, write_outputs

__all__ = ["run_fig2", "FULL", "QUICK", "DATA_SIGMA", "CLAIMS"]

#: Label noise of the data (fixed), Uniform[-DATA_SIGMA, DATA_SIGMA].
DATA_SIGMA = 1.0
FULL = dict(d=15, n=200, n_test=2000, n_fresh=500, levels=(0.0, 0.5, 1.0, 2.0), n_particles=2000, n_steps=10000,
            log_every=200, eval_seeds=5, tuning_seeds=2, sigma=DATA_SIGMA)
QUICK = dict(d=15, n=100, n_test=500, n_fresh=200, levels=(0.0, 1.0, 2.0), n_particles=200, n_steps=400,
             log_every=50, eval_seeds=2, tuning_seeds=1, sigma=DATA_SIGMA)
CLAIMS = tuple(f"fig2-{s}-{c}" for s in SETTINGS for c in ("dof-lower", "mse-lower"))


def run_fig2(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, settings=SETTINGS, base_seed=0,
             cache_dir=None, verbose=True):
    """Reproduce Fig. 2 in both settings; writes fig2.json/.md/.png and returns the results."""
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    if seeds is not None:
        sizes["eval_seeds"] = int(seeds)
    settings = tuple(settings)
    runs, tuning, eval_seeds, n_cached = curve_sweep(
        "fig2", variable="label_noise", label="s", sizes=sizes, settings=settings, out_dir=out_dir,
        base_seed=base_seed, n_jobs=n_jobs, cache_dir=cache_dir,
        task_for=lambda level, seed: dict(name="product", n=sizes["n"], d=sizes["d"], seed=seed,
                                          sigma=sizes["sigma"], n_test=sizes["n_test"]),
        config_for=lambda level: dict(label_noise=float(level)), tuning_sigma=sizes["sigma"], verbose=verbose)
    claims = []
    for setting in settings:
        rs = runs[setting]
        levels = list(rs)
        base = rs[levels[0]]
        for key, cid, text in (("dof", "dof-lower", "lowers the final dof"),
                               ("test_mse", "mse-lower", "lowers the final test MSE")):
            parts = [protocol.part(f"final {key}(s = 0) - {key}(s = {s:g})",
                                   protocol.paired_interval(curve_values(base, key, "final"),
                                                            curve_values(rs[s], key, "final")), ">", 0.0)
                     for s in levels[1:]]
            claims.append(protocol.claim(f"fig2-{setting}-{cid}", f"{setting}: the label-noise procedure (every "
                                         f"s > 0) {text} compared with s = 0",
                                         protocol.all_of(p["verdict"] for p in parts), parts=parts))
    png = plot_curves(os.path.join(out_dir, "fig2.png"), runs, settings, "s",
                      f"Fig. 2: label-noise procedure at level s (data noise sigma = {sizes['sigma']:g})")
    results = dict(experiment="fig2", quick=bool(quick), sizes=sizes, settings=list(settings), base_seed=base_seed,
                   evaluation_seeds=eval_seeds, tuning=tuning, claims=claims, metadata=meta, files=[png],
                   runs={s: {f"{lv:g}": g for lv, g in runs[s].items()} for s in settings}, n_cached_runs=n_cached)
    results["wall_time"] = time.perf_counter() - t0
    markdown = (f"# fig2: the label-noise procedure\n\nf(x) = x1*x2, d = {sizes['d']}, n = {sizes['n']}, data noise "
                f"sigma = {sizes['sigma']:g}, N = {sizes['n_particles']}, {sizes['n_steps']} steps, "
                f"{len(eval_seeds)} evaluation seeds, {'quick' if quick else 'full'} sizes; wall time "
                f"{results['wall_time']:.0f} s. " + settings_text(tuning)
                + " Values: initial mean -> final mean [95% t interval].\n\n" + summary_table(runs, settings, "s")
                + "\n\n## Claims\n\n" + protocol.claims_markdown(claims) + "\n")
    write_outputs(out_dir, "fig2", results, markdown)
    if verbose:
        print(markdown, flush=True)
    return results
