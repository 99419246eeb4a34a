"""``mfkern reproduce fig1``: training curves for several label-noise levels sigma of the data (paper, Fig. 1).

Task: f(x) = x1*x2, x ~ N(0, I_15), n = 200 training labels f(x) + Uniform[-sigma, sigma], sigma in
{0, 0.5, 1, 2}; test MSE against the clean f on 2000 fresh points. Curves over training (mean and 95% t band
over seeds): kernel alignment of the training Gram with the clean target f(X_train), degrees of freedom
tr[K (K + n lam lam_a I)^{-1}], test MSE. For each evaluation seed the inputs and the initial particles are
shared across sigma (only the noise scale changes), so comparisons across sigma are paired.

Claims (docs/theory.md, section 11; verdicts by docs/protocol.md): alignment and dof rise during training (at
every sigma: paired final - initial); larger sigma gives larger final dof (every consecutive pair of levels).

Two settings, both at the paper's sizes (N = 2000, 10,000 steps, 5 evaluation seeds; n = 200 is our choice,
the paper does not state n):
* ``paper``: exactly the paper's hyper-parameters (lam = 0.004, lam_a = lam_w = 0.25, eta = 0.2, raw inputs);
  nothing is tuned.
* ``normalised``: the paper's lam, lam_a, eta on inputs / sqrt(d), with lam_w chosen from
  :data:`NORMALISED_LAM_W` on tuning seeds (validation MSE, sigma = 0 for fig1, the fixed data noise for fig2).
Quick: n = 100, N = 200, 400 steps, sigma in {0, 1, 2}, 2 evaluation seeds, 1 tuning seed.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import protocol
from ..runner import derive_seed
from .mfld import PAPER_SETTING, config_dict, mfld_job, open_cache, run_jobs, tune
from .results import markdown_table, metadata, pyplot, write_outputs

__all__ = ["run_fig1", "FULL", "QUICK", "SETTINGS", "NORMALISED_LAM_W", "curve_sweep", "settings_text",
           "setting_config", "CLAIMS"]

SETTINGS = ("normalised", "paper")
#: lam_w grid of the normalised setting (inputs / sqrt(d)); one value is chosen on tuning seeds.
NORMALISED_LAM_W = (0.25, 1.0, 4.0)
FULL = dict(d=15, n=200, n_test=2000, n_fresh=500, levels=(0.0, 0.5, 1.0, 2.0), n_particles=2000, n_steps=10000,
            log_every=200, eval_seeds=5, tuning_seeds=2)
QUICK = dict(d=15, n=100, n_test=500, n_fresh=200, levels=(0.0, 1.0, 2.0), n_particles=200, n_steps=400,
             log_every=50, eval_seeds=2, tuning_seeds=1)
CURVES = (("kernel_alignment", "kernel alignment with f(X_train)"), ("dof", "degrees of freedom"),
          ("test_mse", "test MSE (clean target)"))
CLAIMS = tuple(f"fig1-{s}-{c}" for s in SETTINGS for c in ("alignment-rises", "dof-rises", "dof-grows-with-sigma"))


def setting_config(setting, sizes, lam_w=None, **overrides):
    """The MFLD configuration of a setting ("paper", or "normalised" with the given lam_w)."""
    values = dict(PAPER_SETTING)
    if setting == "normalised":
        if lam_w is None:
            raise ValueError("the normalised setting needs its tuned lam_w")
        values.update(lam_w=float(lam_w), input_scale=1.0 / math.sqrt(sizes["d"]))
    elif setting != "paper":
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}")
    values.update(overrides)
    return config_dict(n_particles=sizes["n_particles"], n_steps=sizes["n_steps"], log_every=sizes["log_every"],
                       **values)


def tune_normalised(name, sizes, *, sigma, base_seed, cache, n_jobs, verbose):
    """lam_w of the normalised setting, chosen on tuning seeds by the final validation MSE."""
    seeds = protocol.tuning_seeds(base_seed, name, sizes["tuning_seeds"])
    tasks = [dict(name="product", n=sizes["n"], d=sizes["d"], seed=s, sigma=sigma, n_test=sizes["n_test"])
             for s in seeds]
    configs = [setting_config("normalised", sizes, lam_w=v) for v in NORMALISED_LAM_W]
    if verbose:
        print(f"{name}: tuning lam_w of the normalised setting ({len(configs)} values x {len(seeds)} seed(s))",
              flush=True)
    res = tune(configs, tasks, [derive_seed(s, "mfld") for s in seeds], cache=cache, n_jobs=n_jobs, kind=name)
    res["lam_w"] = NORMALISED_LAM_W[res["index"]]
    res["tuning_seeds"] = seeds
    return res


def curve_sweep(name, *, variable, label, sizes, settings, out_dir, base_seed, n_jobs, cache_dir, task_for,
                config_for, tuning_sigma, verbose):
    """Run MFLD for every setting, level of `variable` and evaluation seed; returns (runs, tuning, seeds).

    runs[setting][level] is a list (one per evaluation seed) of mfld_job results.
    """
    cache = open_cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir, name)
    eval_seeds = protocol.evaluation_seeds(base_seed, name, sizes["eval_seeds"])
    tuning, runs = {}, {}
    for setting in settings:
        lam_w = None
        if setting == "normalised":
            tuning[setting] = tune_normalised(name, sizes, sigma=tuning_sigma, base_seed=base_seed, cache=cache,
                                              n_jobs=n_jobs, verbose=verbose)
            lam_w = tuning[setting]["lam_w"]
        specs = [dict(task=task_for(level, seed), config=setting_config(setting, sizes, lam_w, **config_for(level)),
                      seed=derive_seed(seed, "mfld"), n_fresh=sizes["n_fresh"])
                 for level in sizes["levels"] for seed in eval_seeds]
        if verbose:
            print(f"{name} ({setting}): {len(specs)} runs", flush=True)
        results = run_jobs(mfld_job, name, specs, cache=cache, n_jobs=n_jobs)
        S = len(eval_seeds)
        runs[setting] = {level: results[i * S:(i + 1) * S] for i, level in enumerate(sizes["levels"])}
    return runs, tuning, eval_seeds, len(cache)


def curve_values(group, key, when):
    """Per-seed initial/final values of a history curve."""
    return np.array([r[when][key] for r in group])


def rises_claim(claim_id, text, runs_s, key, label):
    """Paired final - initial > 0 at every level."""
    parts = [protocol.part(f"{label} = {level:g}: final - initial {key}",
                           protocol.paired_interval(curve_values(g, key, "final"), curve_values(g, key, "initial")),
                           ">", 0.0) for level, g in runs_s.items()]
    return protocol.claim(claim_id, text, protocol.all_of(p["verdict"] for p in parts), parts=parts)


def plot_curves(path, runs, settings, label, title):
    from scipy import stats

    plt = pyplot()
    fig, axes = plt.subplots(len(settings), len(CURVES), figsize=(15, 3.9 * len(settings)), squeeze=False,
                             constrained_layout=True)
    for row, setting in enumerate(settings):
        for ax, (key, title_k) in zip(axes[row], CURVES):
            for level, group in runs[setting].items():
                steps = np.asarray(group[0]["history"]["step"])
                values = np.array([r["history"][key] for r in group])
                mean = values.mean(axis=0)
                S = values.shape[0]
                line, = ax.plot(steps, mean, label=f"{label} = {level:g}")
                if S > 1:
                    half = stats.t.ppf(0.975, S - 1) * values.std(axis=0, ddof=1) / math.sqrt(S)
                    ax.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.2, lw=0)
            ax.set_title(f"{setting}: {title_k}", fontsize=10)
            ax.set_xlabel("Langevin step")
            if key == "test_mse":
                ax.set_yscale("log")
            ax.legend(fontsize=8)
    fig.suptitle(title + " (mean and 95% t band over evaluation seeds)")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def summary_table(runs, settings, label):
    rows = []
    for setting in settings:
        for level, group in runs[setting].items():
            cells = [setting, f"{level:g}"]
            for key, _ in CURVES:
                iv = protocol.mean_interval(curve_values(group, key, "final"))
                cells.append(f"{curve_values(group, key, 'initial').mean():.4g} -> {protocol.format_interval(iv, 4)}")
            rows.append(cells)
    return markdown_table(["setting", label] + [f"{t} init -> end" for _, t in CURVES], rows)


def run_fig1(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, settings=SETTINGS, base_seed=0,
             cache_dir=None, verbose=True):
    """Reproduce Fig. 1 in both settings; writes fig1.json/.md/.png and returns the results."""
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    if seeds is not None:
        sizes["eval_seeds"] = int(seeds)
    settings = tuple(settings)
    runs, tuning, eval_seeds, n_cached = curve_sweep(
        "fig1", variable="sigma", label="sigma", sizes=sizes, settings=settings, out_dir=out_dir,
        base_seed=base_seed, n_jobs=n_jobs, cache_dir=cache_dir,
        task_for=lambda level, seed: dict(name="product", n=sizes["n"], d=sizes["d"], seed=seed, sigma=level,
                                          n_test=sizes["n_test"]),
        config_for=lambda level: {}, tuning_sigma=0.0, verbose=verbose)
    claims = []
    for setting in settings:
        rs = runs[setting]
        claims.append(rises_claim(f"fig1-{setting}-alignment-rises", f"{setting}: kernel alignment rises during "
                                  "training at every sigma", rs, "kernel_alignment", "sigma"))
        claims.append(rises_claim(f"fig1-{setting}-dof-rises", f"{setting}: degrees of freedom rise during training "
                                  "at every sigma", rs, "dof", "sigma"))
        levels = list(rs)
        parts = [protocol.part(f"final dof(sigma = {b:g}) - dof(sigma = {a:g})",
                               protocol.paired_interval(curve_values(rs[b], "dof", "final"),
                                                        curve_values(rs[a], "dof", "final")), ">", 0.0)
                 for a, b in zip(levels, levels[1:])]
        claims.append(protocol.claim(f"fig1-{setting}-dof-grows-with-sigma", f"{setting}: larger sigma gives "
                                     "larger final dof", protocol.all_of(p["verdict"] for p in parts), parts=parts))
    png = plot_curves(os.path.join(out_dir, "fig1.png"), runs, settings, "sigma",
                      f"Fig. 1: x1*x2, d = {sizes['d']}, n = {sizes['n']}, label noise sigma in the data")
    results = dict(experiment="fig1", quick=bool(quick), sizes=sizes, settings=list(settings), base_seed=base_seed,
                   evaluation_seeds=eval_seeds, tuning=tuning, claims=claims, metadata=meta, files=[png],
                   runs={s: {f"{lv:g}": g for lv, g in runs[s].items()} for s in settings}, n_cached_runs=n_cached)
    results["wall_time"] = time.perf_counter() - t0
    markdown = (f"# fig1: label noise sigma in the data\n\nf(x) = x1*x2, d = {sizes['d']}, n = {sizes['n']}, N = "
                f"{sizes['n_particles']}, {sizes['n_steps']} steps, {len(eval_seeds)} evaluation seeds, "
                f"{'quick' if quick else 'full'} sizes; wall time {results['wall_time']:.0f} s. "
                + settings_text(tuning) + " Values: initial mean -> final mean [95% t interval].\n\n"
                + summary_table(runs, settings, "sigma") + "\n\n## Claims\n\n" + protocol.claims_markdown(claims)
                + "\n")
    write_outputs(out_dir, "fig1", results, markdown)
    if verbose:
        print(markdown, flush=True)
    return results


def settings_text(tuning):
    """The sentence stating both settings and the tuned lam_w of the normalised one (fig1 and fig2 reports)."""
    text = "Settings: 'paper' = lam 0.004, lam_a = lam_w = 0.25, eta 0.2, raw inputs (not tuned)"
    if "normalised" in tuning:
        t = tuning["normalised"]
        means = ", ".join(f"{NORMALISED_LAM_W[i]:g}: {row['mean']:.3g}" for i, row in enumerate(t["table"]))
        text += (f"; 'normalised' = the same on inputs / sqrt(d) with lam_w = {t['lam_w']:g}, chosen on "
                 f"{len(t['tuning_seeds'])} tuning seed(s) (validation MSE by lam_w: {means})")
    return text + "."
