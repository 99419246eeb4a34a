"""``mfkern reproduce separation``: the sample size n* each method needs, as a function of d.

The claim (docs/theory.md, section 11): MFLD learns sparse targets with n = O(d log d) samples, while any
fixed kernel needs n = Omega(d^k) for a degree-k sparse target. Measured here, for each task

* ``parity2``, ``parity3``: f(x) = x1 x2 (x3) with x uniform on {-1, 1}^d (k = 2, 3);
* ``product``: f(x) = x1 x2 with x ~ N(0, I_d) (k = 2);

and each d, as n*: the smallest training size whose test MSE (clean target, Var f = 1) is at most
:data:`THRESHOLD`, searched on a doubling grid of n (log-log interpolation between the last grid point above
and the first at or below; a method that is already below at the first n is "left-censored" there, one that
never gets below is "right-censored" at the last). Every method sees the same data at each (seed, n).

Protocol (docs/protocol.md)
    MFLD: for each (task, d) one configuration of :data:`MFLD_GRID` is chosen on tuning seeds, by the
    smallest mean log n* (right-censored counted as twice the largest n); inputs are scaled by 1/sqrt(d).
    Baselines (:data:`mfkern.experiments.baselines.REGRESSION`): every hyper-parameter by k-fold CV inside
    each training set, grids widened until the choice is interior (or the limit). Evaluation: fresh seeds.
    Claims, per task: MFLD's growth exponent (slope of log n* against log d, per seed) is below every fixed
    kernel's (paired over seeds); at the largest d MFLD needs fewer samples than every fixed kernel (paired
    log n*); MFLD's exponent is below k. Censoring can only make a verdict INCONCLUSIVE, never flip it.

Sizes. Full: d in {8, 16, 32, 64}, n in 16..2048 (doubling), N = 256 particles, 1000 steps, 5 evaluation and 2
tuning seeds, 2000 test points, 5-fold CV. Quick: d in {8, 16}, n in 16..256, N = 64, 150 steps, 2 evaluation
and 1 tuning seed, 3-fold CV (a smoke test: its verdicts are mostly INCONCLUSIVE by construction).
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import protocol
from .baselines import LABELS, REGRESSION, grid_description
from .mfld import config_dict, job, open_cache, run_jobs
from ..runner import derive_seed
from .protocol import FAILS, HOLDS, INCONCLUSIVE
from .results import markdown_table, metadata, pyplot, write_outputs

__all__ = ["run_separation", "FULL", "QUICK", "TASKS", "THRESHOLD", "MFLD_GRID", "sample_size_to_reach",
           "censor_adjust", "CLAIMS"]

#: Task key -> (make_task name, k).
TASKS = dict(parity2=("parity", 2), parity3=("parity", 3), product=("product", 2))
#: Test MSE (Var f = 1) counted as "learned".
THRESHOLD = 0.5
#: MFLD configurations (inputs scaled by 1/sqrt(d)); one is chosen per (task, d) on tuning seeds.
MFLD_GRID = tuple(dict(lam=lam, lam_a=0.25, lam_w=lam_w, eta=0.2) for lam in (0.001, 0.004) for lam_w in (1.0, 4.0))
FULL = dict(tasks=tuple(TASKS), ds=(8, 16, 32, 64), ns=tuple(16 * 2 ** i for i in range(8)), n_test=2000,
            eval_seeds=5, tuning_seeds=2, n_particles=256, n_steps=1000, log_every=250, n_folds=5)
QUICK = dict(tasks=tuple(TASKS), ds=(8, 16), ns=(16, 32, 64, 128, 256), n_test=500, eval_seeds=2, tuning_seeds=1,
             n_particles=64, n_steps=150, log_every=50, n_folds=3)
METHODS = ("mfld",) + REGRESSION
GRIDS = grid_description()
#: Claim ids of this experiment (per task).
CLAIMS = tuple(f"separation-{t}-{c}" for t in TASKS for c in ("exponent", "dmax", "mfld-rate"))


def sample_size_to_reach(ns, errors, threshold=THRESHOLD):
    """(n*, censoring) from errors at the increasing grid ns (errors may stop early: the search stops at the
    first n at or below threshold). censoring: None, "left" (below already at ns[0]: n* <= ns[0]) or
    "right" (never below: n* > the last n tried, returned as that n)."""
    ns, errors = list(ns)[:len(errors)], list(errors)
    if errors[0] <= threshold:
        return float(ns[0]), "left"
    for i in range(1, len(errors)):
        if errors[i] <= threshold:
            x0, x1 = math.log(ns[i - 1]), math.log(ns[i])
            y0, y1 = math.log(max(errors[i - 1], 1e-300)), math.log(max(errors[i], 1e-300))
            t = (math.log(threshold) - y0) / (y1 - y0)
            return float(math.exp(x0 + t * (x1 - x0))), None
    return float(ns[len(errors) - 1]), "right"


def censor_adjust(verdict, unfavourable, favourable):
    """A verdict from bounded (censored) values: HOLDS is only kept when no censoring could undo it, FAILS
    likewise."""
    if verdict == HOLDS and unfavourable:
        return INCONCLUSIVE
    if verdict == FAILS and favourable:
        return INCONCLUSIVE
    return verdict


def _task_kwargs(task, d, n, seed, n_test):
    name, k = TASKS[task]
    kw = dict(name=name, n=int(n), d=int(d), seed=int(seed), n_test=int(n_test))
    if name == "parity":
        kw["k"] = k
    return kw


def _mfld_config(grid_point, d, sizes):
    return config_dict(n_particles=sizes["n_particles"], n_steps=sizes["n_steps"], log_every=sizes["log_every"],
                       input_scale=1.0 / math.sqrt(d), **grid_point)


def _search(units, ns, spec_for, *, cache, n_jobs, verbose, label):
    """Sequential n-search for every unit (a hashable key): run each active unit at the next n until its
    error is at most THRESHOLD. Returns {unit: [errors at ns[0], ns[1], ...]}."""
    errors = {u: [] for u in units}
    active = list(units)
    for n in ns:
        if not active:
            break
        specs = [spec_for(u, n) for u in active]
        t0 = time.perf_counter()
        results = run_jobs(job, "separation", specs, cache=cache, n_jobs=n_jobs)
        for u, spec, res in zip(active, specs, results):
            errors[u].append(res["final"]["test_mse"] if spec["job"] == "mfld" else res["test_mse"])
        active = [u for u in active if errors[u][-1] > THRESHOLD]
        if verbose:
            print(f"  {label}: n = {n}: {len(specs)} runs ({time.perf_counter() - t0:.0f} s), "
                  f"{len(active)} not yet at {THRESHOLD}", flush=True)
    return errors


def run_separation(out_dir="mfkern-results", *, quick=False, seeds=None, n_jobs=1, base_seed=0, tasks=None,
                   cache_dir=None, verbose=True):
    """Run the separation experiment; writes separation.json/.md/.png into out_dir and returns the results.

    Parameters
    ----------
    seeds : int or None
        Evaluation seeds (default: 5 full, 2 quick).
    tasks : sequence of str or None
        Subset of :data:`TASKS` (default all).
    cache_dir : path or None
        Folder of the run cache (``separation.jsonl``); default ``out_dir/cache``.
    """
    t0 = time.perf_counter()
    meta = metadata()  # at the start: the commit of the code that runs
    os.makedirs(out_dir, exist_ok=True)
    sizes = dict(QUICK if quick else FULL)
    if seeds is not None:
        sizes["eval_seeds"] = int(seeds)
    tasks = tuple(sizes["tasks"] if tasks is None else tasks)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"tasks must be a subset of {tuple(TASKS)}, got {t!r}")
    sizes["tasks"] = tasks
    cache = open_cache(os.path.join(out_dir, "cache") if cache_dir is None else cache_dir, "separation")
    ds, ns = sizes["ds"], sizes["ns"]
    tune_seeds = protocol.tuning_seeds(base_seed, "separation", sizes["tuning_seeds"])
    eval_seeds = protocol.evaluation_seeds(base_seed, "separation", sizes["eval_seeds"])

    def tune_spec(unit, n):
        task, d, gi, si = unit
        return dict(job="mfld", task=_task_kwargs(task, d, n, tune_seeds[si], sizes["n_test"]),
                    config=_mfld_config(MFLD_GRID[gi], d, sizes), seed=derive_seed(tune_seeds[si], "mfld"),
                    n_fresh=0)

    def eval_spec(unit, n):
        task, d, si, method = unit
        seed = eval_seeds[si]
        config = _mfld_config(MFLD_GRID[chosen[(task, d)]], d, sizes)
        mfld_seed = derive_seed(seed, "mfld")
        task_kw = _task_kwargs(task, d, n, seed, sizes["n_test"])
        if method == "mfld":
            return dict(job="mfld", task=task_kw, config=config, seed=mfld_seed, n_fresh=0)
        return dict(job="baseline", task=task_kw, baseline=method, n_folds=sizes["n_folds"], grids=GRIDS,
                    particles=dict(n_particles=config["n_particles"], lam_w=config["lam_w"],
                                   input_scale=config["input_scale"], seed=mfld_seed, activation="tanh"))

    # Task by task (so that an interrupted full run has whole tasks done): 1. MFLD's configuration per d,
    # chosen on tuning seeds only; 2. evaluation on fresh seeds, every baseline on the same data.
    tune_errors, eval_errors, chosen, tuning = {}, {}, {}, {}
    for t in tasks:
        units = [(t, d, gi, si) for d in ds for gi in range(len(MFLD_GRID)) for si in range(len(tune_seeds))]
        if verbose:
            print(f"separation {t}: tuning MFLD ({len(MFLD_GRID)} configurations x {len(tune_seeds)} tuning "
                  "seed(s) per d)", flush=True)
        tune_errors.update(_search(units, ns, tune_spec, cache=cache, n_jobs=n_jobs, verbose=verbose,
                                   label="tuning"))
        for d in ds:
            rows = []
            for gi in range(len(MFLD_GRID)):
                logs = []
                for si in range(len(tune_seeds)):
                    nstar_t, cens = sample_size_to_reach(ns, tune_errors[(t, d, gi, si)])
                    logs.append(math.log(2 * ns[-1]) if cens == "right" else math.log(nstar_t))
                rows.append(dict(config=MFLD_GRID[gi], mean_log_nstar=float(np.mean(logs))))
            best = int(np.argmin([r["mean_log_nstar"] for r in rows]))
            chosen[(t, d)] = best
            tuning[f"{t} d={d}"] = dict(chosen=MFLD_GRID[best], table=rows)
        units = [(t, d, si, m) for d in ds for si in range(len(eval_seeds)) for m in METHODS]
        if verbose:
            print(f"separation {t}: evaluation ({len(eval_seeds)} seeds, {len(METHODS)} methods)", flush=True)
        eval_errors.update(_search(units, ns, eval_spec, cache=cache, n_jobs=n_jobs, verbose=verbose,
                                   label="evaluation"))

    nstar, censoring = {}, {}
    for (t, d, si, m), errs in eval_errors.items():
        nstar[(t, d, si, m)], censoring[(t, d, si, m)] = sample_size_to_reach(ns, errs)
    claims, exponents, table = [], {}, {}
    S = len(eval_seeds)
    for t in tasks:
        k = TASKS[t][1]
        logn = {m: np.array([[math.log(nstar[(t, d, si, m)]) for d in ds] for si in range(S)]) for m in METHODS}
        cens = {m: [[censoring[(t, d, si, m)] for d in ds] for si in range(S)] for m in METHODS}
        slope = {m: protocol.slopes(ds, np.exp(logn[m])) for m in METHODS}
        exponents[t] = {m: protocol.mean_interval(slope[m]) for m in METHODS}
        table[t] = {m: dict(nstar=[[nstar[(t, d, si, m)] for d in ds] for si in range(S)], censoring=cens[m],
                            errors=[[eval_errors[(t, d, si, m)] for d in ds] for si in range(S)]) for m in METHODS}
        mfld_cens = any(c for row in cens["mfld"] for c in row)
        exp_parts, dmax_parts = [], []
        for m in REGRESSION:
            iv = protocol.paired_interval(slope[m], slope["mfld"])
            p = protocol.part(f"exponent({LABELS[m]}) - exponent(MFLD)", iv, ">", 0.0)
            base_cens = any(c for row in cens[m] for c in row)
            p["verdict"] = censor_adjust(p["verdict"], unfavourable=mfld_cens, favourable=base_cens)
            p["censored"] = dict(mfld=mfld_cens, baseline=base_cens)
            exp_parts.append(p)
            iv = protocol.paired_interval(logn[m][:, -1], logn["mfld"][:, -1])
            p = protocol.part(f"log n*({LABELS[m]}) - log n*(MFLD) at d = {ds[-1]}", iv, ">", 0.0)
            unf = any(cens["mfld"][si][-1] == "right" or cens[m][si][-1] == "left" for si in range(S))
            fav = any(cens["mfld"][si][-1] == "left" or cens[m][si][-1] == "right" for si in range(S))
            p["verdict"] = censor_adjust(p["verdict"], unfavourable=unf, favourable=fav)
            dmax_parts.append(p)
        claims.append(protocol.claim(
            f"separation-{t}-exponent", f"{t}: MFLD's n* grows with d at a smaller exponent than every fixed "
            f"kernel's (n* at test MSE {THRESHOLD}, d in {list(ds)})",
            protocol.all_of(p["verdict"] for p in exp_parts), parts=exp_parts))
        claims.append(protocol.claim(
            f"separation-{t}-dmax", f"{t}: at d = {ds[-1]} MFLD reaches test MSE {THRESHOLD} with fewer samples "
            "than every fixed kernel", protocol.all_of(p["verdict"] for p in dmax_parts), parts=dmax_parts))
        p = protocol.part(f"exponent(MFLD) (fixed kernels need d^{k})", exponents[t]["mfld"], "<", float(k))
        p["verdict"] = censor_adjust(p["verdict"], unfavourable=mfld_cens, favourable=False)
        claims.append(protocol.claim(f"separation-{t}-mfld-rate", f"{t}: MFLD's growth exponent is below k = {k}",
                                     p["verdict"], parts=[p]))

    files = [_plot(out_dir, tasks, ds, ns, nstar, censoring, S, sizes)]
    results = dict(experiment="separation", quick=bool(quick), sizes=sizes, threshold=THRESHOLD, base_seed=base_seed,
                   tuning_seeds=tune_seeds, evaluation_seeds=eval_seeds, mfld_grid=list(MFLD_GRID), tuning=tuning,
                   exponents=exponents, table=table, claims=claims, metadata=meta, files=files,
                   cache=None if cache.path is None else os.path.relpath(cache.path, out_dir),
                   n_cached_runs=len(cache))
    results["wall_time"] = time.perf_counter() - t0
    write_outputs(out_dir, "separation", results, _markdown(results, nstar, censoring, S))
    if verbose:
        print(protocol.claims_markdown(claims), flush=True)
    return results


def _fmt_n(value, cens):
    return f"<= {value:.0f}" if cens == "left" else f"> {value:.0f}" if cens == "right" else f"{value:.0f}"


def _markdown(results, nstar, censoring, S):
    sizes = results["sizes"]
    ds = sizes["ds"]
    md = [f"# separation: samples needed against d\n",
          f"n* = smallest n with test MSE <= {THRESHOLD} (Var f = 1), doubling grid n in {list(sizes['ns'])}; "
          f"MFLD N = {sizes['n_particles']}, {sizes['n_steps']} steps, inputs / sqrt(d), configuration per "
          f"(task, d) chosen on {sizes['tuning_seeds']} tuning seed(s) from {len(MFLD_GRID)}; baselines tuned by "
          f"{sizes['n_folds']}-fold CV in each training set; {S} evaluation seeds; "
          f"{'quick' if results['quick'] else 'full'} sizes. Wall time {results['wall_time']:.0f} s "
          f"({results['n_cached_runs']} runs in the cache). Protocol: docs/protocol.md.\n"]
    for t in sizes["tasks"]:
        rows = []
        for m in METHODS:
            cells = [LABELS.get(m, "MFLD")]
            for d in ds:
                vals = [nstar[(t, d, si, m)] for si in range(S)]
                cs = [censoring[(t, d, si, m)] for si in range(S)]
                geo = math.exp(np.mean(np.log(vals)))
                mark = " (censored: " + ", ".join(sorted({c for c in cs if c})) + ")" if any(cs) else ""
                cells.append(f"{geo:.0f}{mark}")
            cells.append(protocol.format_interval(results["exponents"][t][m]))
            rows.append(cells)
        md.append(f"## {t}\n\nGeometric mean of n* over seeds; exponent = slope of log n* against log d, mean "
                  f"over seeds [95% t interval].\n\n" + markdown_table(["method"] + [f"d={d}" for d in ds]
                                                                      + ["exponent"], rows) + "\n")
        md.append("MFLD configuration chosen on tuning seeds: " + "; ".join(
            f"d={d}: lam={results['tuning'][f'{t} d={d}']['chosen']['lam']}, "
            f"lam_w={results['tuning'][f'{t} d={d}']['chosen']['lam_w']}" for d in ds) + "\n")
    md.append("## Claims\n\n" + protocol.claims_markdown(results["claims"]) + "\n")
    return "\n".join(md)


def _plot(out_dir, tasks, ds, ns, nstar, censoring, S, sizes):
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 5.2), squeeze=False, constrained_layout=True)
    markers = "osD^v<>p"
    for ax, t in zip(axes[0], tasks):
        for i, m in enumerate(METHODS):
            logs = np.array([[math.log(nstar[(t, d, si, m)]) for d in ds] for si in range(S)])
            mean = logs.mean(axis=0)
            if S > 1:
                from scipy import stats

                half = stats.t.ppf(0.975, S - 1) * logs.std(axis=0, ddof=1) / math.sqrt(S)
            else:
                half = np.zeros_like(mean)
            err = np.vstack([np.exp(mean) - np.exp(mean - half), np.exp(mean + half) - np.exp(mean)])
            ax.errorbar(ds, np.exp(mean), yerr=err, marker=markers[i % len(markers)], ms=4, capsize=2,
                        lw=2.2 if m == "mfld" else 1, color="k" if m == "mfld" else f"C{i}",
                        label="MFLD" if m == "mfld" else LABELS[m])
            cens = [any(censoring[(t, d, si, m)] == "right" for si in range(S)) for d in ds]
            if any(cens):
                idx = [j for j, c in enumerate(cens) if c]
                ax.scatter(np.asarray(ds)[idx], np.exp(mean[idx]) * 1.15, marker="^", s=18,
                           color="k" if m == "mfld" else f"C{i}", zorder=5)
        ax.axhline(ns[-1], color="grey", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(ds, [str(d) for d in ds])
        ax.set_xlabel("input dimension d")
        ax.set_ylabel(f"n* (test MSE <= {THRESHOLD})")
        ax.set_title(t)
    handles, labels = axes[0][0].get_legend_handles_labels()
    # one panel (a claim run on one task) is too narrow for four legend columns or a one-line title
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, 2 * len(tasks)), fontsize=8)
    fig.suptitle(f"samples needed against d (geometric mean over {S} seeds, 95% t interval;"
                 f"{chr(10) if len(tasks) == 1 else ' '}^ = not reached by n = {ns[-1]} in some seed)", fontsize=10)
    path = os.path.join(out_dir, "separation.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
