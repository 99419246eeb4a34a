"""``mfkern reproduce separation``: test MSE against n for MFLD and fixed kernels (paper, section 4).

The paper's claim (PAPER.md section 7): MFLD learns sparse targets with n = O(d log d) samples, any fixed
kernel needs n = Omega(d^m) (m = 2 for the degree-2 targets here). Panels:

(a) f(x) = x1*x2, x ~ N(0, I_15) (the paper's task);
(b) the 2-sparse parity f(x) = x1*x2 on the hypercube {-1, 1}^d, for d = 10 and 20 (full: 10, 20, 40), so
    that the growth of the gap with d can be read off (a degree-2 fixed kernel needs about d(d-1)/2 + d + 1
    samples: 56 for d = 10, 211 for d = 20, 821 for d = 40).

Methods: MFLD, KRR with the initial intrinsic kernel (ridge n*lam*lam_a = MFLD's step 0), KRR with the
initial kernel and CV ridge, RBF KRR with CV bandwidth and ridge, random features (M = 4N, LOO-CV ridge);
see :mod:`mfkern.experiments.common`. Clean labels; test MSE against f on 1000 (full: 2000) test points
(Var f = 1, so 1 is the zero predictor's error).

Summaries: the sample size at which each method's mean test MSE first falls below 0.5 (log-log interpolation
between grid points; None when never on the grid) and, per panel, the n at which MFLD's mean test MSE is
below every fixed kernel's. Choices (fixed): n on a doubling grid 25..400 (quick) / 25..1600 (full), 2 / 5
seeds; the hyper-parameter setting as in :mod:`mfkern.experiments.fig1`.

Cost: ``--quick`` (N = 300, 800 steps, 3 panels x 5 n x 2 seeds = 30 runs) took 134 s with ``--n-jobs 2`` on
the 2-core machine. The full run (N = 2000, 10,000 steps, 4 panels x 7 n x 5 seeds = 140 runs, n up to
1600 where a step costs about 0.3 s) is an estimated day or more on 2 cores: use a larger machine and
``--n-jobs``.
"""
from __future__ import annotations

import math
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
    write_outputs,
)

__all__ = ["run_separation", "FULL", "QUICK", "METHODS", "THRESHOLD", "sample_size_to_reach"]

METHODS = ("mfld", "init_kernel", "init_kernel_cv", "rbf_cv", "random_features")
FIXED = METHODS[1:]
LABELS = dict(mfld="MFLD", init_kernel="initial kernel (ridge n lam lam_a)", init_kernel_cv="initial kernel (CV)",
              rbf_cv="RBF KRR (CV)", random_features="random features (M = 4N, CV)")
#: Test-MSE level (half the target variance) used to compare sample sizes.
THRESHOLD = 0.5

QUICK = dict(panels=(("product", 15), ("parity", 10), ("parity", 20)), ns=(25, 50, 100, 200, 400), n_test=1000,
             n_particles=300, n_steps=800, log_every=100)
FULL = dict(panels=(("product", 15), ("parity", 10), ("parity", 20), ("parity", 40)),
            ns=(25, 50, 100, 200, 400, 800, 1600), n_test=2000, n_particles=2000, n_steps=10000, log_every=500)


def sample_size_to_reach(ns, mse, threshold=THRESHOLD):
    """The first n at which `mse` (over the increasing grid `ns`) falls to `threshold`, interpolated linearly in
    (log n, log mse) between the bracketing grid points; ns[0] when already below; None when never."""
    ns, mse = np.asarray(ns, dtype=float), np.asarray(mse, dtype=float)
    if mse[0] <= threshold:
        return float(ns[0])
    for i in range(1, len(ns)):
        if mse[i] <= threshold:
            x0, x1 = math.log(ns[i - 1]), math.log(ns[i])
            y0, y1 = math.log(mse[i - 1]), math.log(mse[i])
            t = (math.log(threshold) - y0) / (y1 - y0)
            return float(math.exp(x0 + t * (x1 - x0)))
    return None


def _panel_name(task, d):
    return f"{task} d={d}"


def run_separation(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, setting="normalised",
                   base_seed=0, verbose=True):
    """Test MSE against n for MFLD and the fixed-kernel baselines on each panel; writes separation.json,
    separation.md and separation.png into out_dir and returns the results (``table``: per panel, n and
    method the mean and std of the test MSE; ``sample_sizes``; ``claims``; ``runs``)."""
    t0 = time.perf_counter()
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    seeds = parse_seeds(seeds, quick)
    cases = []
    for task, d in sizes["panels"]:
        for n in sizes["ns"]:
            for s in range(seeds):
                config = mfld_config(setting, d, n_particles=sizes["n_particles"], n_steps=sizes["n_steps"],
                                     log_every=sizes["log_every"])
                task_kwargs = dict(name=task, n=n, d=d, seed=derive_seed(base_seed, "separation", "data", s),
                                   n_test=sizes["n_test"])
                if task == "parity":
                    task_kwargs["k"] = 2
                cases.append(dict(task_kwargs=task_kwargs, config=config.as_dict(),
                                  seed=derive_seed(base_seed, "separation", "mfld", s), baselines=FIXED))
    if verbose:
        print(f"separation: {len(cases)} runs ({len(sizes['panels'])} panels x {len(sizes['ns'])} n x {seeds} "
              f"seeds), N = {sizes['n_particles']}, {sizes['n_steps']} steps", flush=True)
    runs = run_grid(cases, n_jobs=n_jobs, progress=(lambda m: print(m, flush=True)) if verbose else None)

    table, sample_sizes, censored, claims = {}, {}, {}, []
    for task, d in sizes["panels"]:
        panel = _panel_name(task, d)
        table[panel] = {m: dict(mean=[], std=[]) for m in METHODS}
        for n in sizes["ns"]:
            group = [r for r in runs if r["task"]["name"] == task and r["task"]["d"] == d and r["task"]["n"] == n]
            for m in METHODS:
                values = [r["mfld"]["final"]["test_mse"] if m == "mfld" else r["baselines"][m]["test_mse"]
                          for r in group]
                table[panel][m]["mean"].append(float(np.mean(values)))
                table[panel][m]["std"].append(float(np.std(values)))
                table[panel][m].setdefault("values", []).append(values)
        sample_sizes[panel] = {m: sample_size_to_reach(sizes["ns"], table[panel][m]["mean"]) for m in METHODS}
        # Already below the threshold at the smallest n: the sample size is only bounded above by it.
        censored[panel] = {m: table[panel][m]["mean"][0] <= THRESHOLD for m in METHODS}
        wins = [n for i, n in enumerate(sizes["ns"])
                if table[panel]["mfld"]["mean"][i] < min(table[panel][m]["mean"][i] for m in FIXED)]
        claims.append(claim(f"{panel}: MFLD's test MSE is below every fixed kernel's at some n", bool(wins),
                            f"MFLD best at n in {wins}" if wins else "at no n of the grid"))
        best_fixed = min((sample_sizes[panel][m] for m in FIXED if sample_sizes[panel][m] is not None),
                         default=None)
        mfld_n = sample_sizes[panel]["mfld"]
        both_censored = censored[panel]["mfld"] and any(censored[panel][m] for m in FIXED)
        claims.append(claim(
            f"{panel}: MFLD reaches test MSE {THRESHOLD} with fewer samples than the best fixed kernel",
            mfld_n is not None and not both_censored and (best_fixed is None or mfld_n < best_fixed),
            f"n to reach it: MFLD {_fmt_n(mfld_n, censored[panel]['mfld'])}, best fixed kernel "
            f"{_fmt_n(best_fixed, any(censored[panel][m] for m in FIXED))}"
            + (" (both already below it at the smallest n: undecided on this grid)" if both_censored else "")))
    parity = [(d, sample_sizes[_panel_name(t, d)]) for t, d in sizes["panels"] if t == "parity"]
    if len(parity) >= 2:
        ratios = []
        for d, ss in parity:
            best_fixed = min((ss[m] for m in FIXED if ss[m] is not None), default=None)
            ratios.append((d, None if (best_fixed is None or ss["mfld"] is None) else best_fixed / ss["mfld"]))
        finite = [r for _, r in ratios if r is not None]
        grows = len(finite) == len(ratios) and all(b > a for a, b in zip(finite, finite[1:]))
        claims.append(claim("parity: the sample-size gap (best fixed kernel / MFLD) grows with d", grows,
                            ", ".join(f"d={d}: {'n/a' if r is None else f'{r:.3g}'}" for d, r in ratios)))

    plt = pyplot()
    panels = sizes["panels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), constrained_layout=True, squeeze=False)
    for ax, (task, d) in zip(axes[0], panels):
        panel = _panel_name(task, d)
        for m in METHODS:
            band(ax, sizes["ns"], np.asarray(table[panel][m]["values"]).T, LABELS[m], marker="o",
                 color="k" if m == "mfld" else None)
        ax.axhline(THRESHOLD, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (training samples)")
        ax.set_ylabel("test MSE (clean target)")
        target = "x1*x2, x ~ N(0, I)" if task == "product" else "parity x1*x2 on {-1,1}^d"
        ax.set_title(f"{target}, d = {d}")
        ax.legend(fontsize=7)
    fig.suptitle(f"MFLD vs fixed kernels (mean +- std over {seeds} seeds, N = {sizes['n_particles']}, "
                 f"{sizes['n_steps']} steps, setting '{setting}')")
    png = os.path.join(out_dir, "separation.png")
    fig.savefig(png, dpi=110)
    plt.close(fig)

    md = [f"# separation: test MSE against n\n\nN = {sizes['n_particles']}, {sizes['n_steps']} steps, {seeds} seeds, "
          f"setting '{setting}', {'quick' if quick else 'full'} sizes. Mean test MSE over seeds (std in "
          f"parentheses); Var f = 1.\n"]
    for task, d in panels:
        panel = _panel_name(task, d)
        rows = []
        for m in METHODS:
            cells = [LABELS[m]] + [f"{mu:.3g} ({sd:.2g})" for mu, sd in
                                   zip(table[panel][m]["mean"], table[panel][m]["std"])]
            cells.append(_fmt_n(sample_sizes[panel][m], censored[panel][m]))
            rows.append(cells)
        md.append(f"## {panel}\n\n" + markdown_table(["method"] + [f"n={n}" for n in sizes["ns"]]
                                                     + [f"n to MSE {THRESHOLD}"], rows) + "\n")
    results = dict(experiment="separation", setting=setting, sizes=sizes, n_seeds=seeds, base_seed=base_seed,
                   threshold=THRESHOLD, table=table, sample_sizes=sample_sizes, sample_size_censored=censored,
                   claims=claims, runs=runs,
                   metadata=metadata(), files=[png])
    results["wall_time"] = time.perf_counter() - t0
    md.insert(1, f"Wall time {results['wall_time']:.0f} s.\n")
    md.append("## Paper's claims\n\n" + claims_markdown(claims) + "\n")
    markdown = "\n".join(md)
    write_outputs(out_dir, "separation", results, markdown)
    if verbose:
        print(markdown)
    return results


def _fmt_n(value, censored=False):
    if value is None:
        return "not reached"
    return f"<= {value:.0f}" if censored else f"{value:.0f}"
