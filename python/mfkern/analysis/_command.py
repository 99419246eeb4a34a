"""`mfkern discretization`: the particle and time sweeps on the paper's task and on the exact cases.

Two suites. The *paper* suite uses the paper's hyper-parameters (lam = 0.004, lam_a = lam_w = 0.25) on its
task (y = x1 * x2, x ~ N(0, I_15)), with n = 64 training points (the paper does not state n): the particle
sweep runs the paper's step eta = 0.2 for 10,000 steps (t = 2000), so that the averaging window (t in
[1000, 2000]) is close to stationary, which the output checks; the time sweep takes eta in {0.1, 0.2, 0.4,
0.8} against eta_ref = 0.025 up to t = 512, where the drift's curvature L gives eta * L <= 0.15 at the end
(the first transient reaches 2.2 at eta = 0.8; the output reports both). The *fast* suite keeps the
earlier, quicker settings: a 5x higher temperature (lam = 0.02, lam_a = lam_w = 1) that mixes within a few
hundred steps, but with steps up to eta = 1, where eta * L is about 2: outside the small-step regime the
theorem assumes (a smoke test, not a test of the theorem). Both suites add the exact cases (the data-free
OU chain, known variance for every eta; the erf kernel in closed form) and the separation of two paths
with the same noise started 1e-6 apart (whether the dynamics amplifies small differences).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import sys
import textwrap
import time

import numpy as np

from .._argtypes import n_jobs as _n_jobs
from .._argtypes import positive_int as _positive_int
from .._argtypes import seed as _seed
from ._config import DiscretizationConfig
from ._ensemble import BACKENDS, check_backend
from ._result import CACHE_NAME
from .particle import particle_error
from .timestep import path_separation, time_error

__all__ = ["SUITES", "CASES", "add_cli_arguments", "run_cli", "run_suite", "plot_sweep", "plot_by_time",
           "plot_separation"]

_PRODUCT_FAST = DiscretizationConfig(task="product", n=64, d=15, n_probe=16, lam=0.02, lam_a=1.0, lam_w=1.0,
                                     eta=1.0, n_steps=200, record_every=5, average_from=0.5)
_PRODUCT_PAPER = DiscretizationConfig(task="product", n=64, d=15, n_probe=16, lam=0.004, lam_a=0.25, lam_w=0.25,
                                      eta=0.2, n_steps=10_000, record_every=50, average_from=0.5, n_times=6)
_OU = DiscretizationConfig(task="ou", n=4, d=3, n_probe=4, lam=0.5, lam_a=1.0, lam_w=0.5, eta=0.1,
                           n_steps=0, average_from=0.5)
_ERF = DiscretizationConfig(task="ou", activation="erf", n=4, d=15, n_probe=16, lam=1.0, lam_a=1.0, lam_w=1.0,
                            eta=0.1, n_steps=20, average_from=0.5)
_EXACT = {
    "time_ou": (time_error, _OU,
                {"etas": [0.05, 0.1, 0.2, 0.4], "seeds": 4, "n_particles": 500, "reference_ratio": 8,
                 "horizon": 16.0},
                "time error, exact OU case (data term off), N=500, horizon 16"),
    "particle_erf": (particle_error, _ERF,
                     {"Ns": [64, 128, 256, 512, 1024, 2048], "seeds": 8, "reference": "exact"},
                     "particle error, exact erf kernel (data term off, d=15), 20 steps of eta=0.1"),
}

#: Every case of a suite: (function, config, keyword arguments, a one-line description).
SUITES = {
    "fast": {
        "particle_product": (particle_error, _PRODUCT_FAST,
                             {"Ns": [16, 32, 64, 128, 256], "seeds": 8, "reference_seeds": 2,
                              "reference_factor": 8},
                             "FAST suite (lam=0.02, lam_a=lam_w=1: not the paper's): particle error on y = x1*x2 "
                             "(d=15, n=64), 200 steps of eta=1, N_ref = 2048"),
        "time_product": (time_error, _PRODUCT_FAST,
                         {"etas": [0.125, 0.25, 0.5, 1.0], "seeds": 4, "n_particles": 128,
                          "reference_ratio": 8, "horizon": 50.0},
                         "FAST suite (lam=0.02, lam_a=lam_w=1: not the paper's): time error on y = x1*x2 "
                         "(d=15, n=64), N=128, horizon 50, reference eta = 1/64"),
        **_EXACT,
        "separation": (path_separation, {"product": (_PRODUCT_FAST, 0.125), "ou": (_OU, 0.1)},
                       {"n_particles": 128, "horizon": 50.0},
                       "FAST suite: separation of two paths with the same noise started 1e-6 apart"),
    },
    "paper": {
        "particle_product": (particle_error, _PRODUCT_PAPER,
                             {"Ns": [32, 64, 128, 256, 512], "seeds": 8, "reference_seeds": 2,
                              "reference_factor": 8},
                             "PAPER hyper-parameters (lam=0.004, lam_a=lam_w=0.25): particle error on y = x1*x2 "
                             "(d=15, n=64), 10,000 steps of eta=0.2, window t in [1000, 2000], N_ref = 4096"),
        **_EXACT,
        "separation": (path_separation, {"product": (_PRODUCT_PAPER, 0.1), "ou": (_OU, 0.1)},
                       {"n_particles": 128, "horizon": 512.0},
                       "PAPER hyper-parameters: separation of two paths with the same noise started 1e-6 apart"),
        "time_product": (time_error, _PRODUCT_PAPER,
                         {"etas": [0.1, 0.2, 0.4, 0.8], "seeds": 8, "n_particles": 128,
                          "reference_ratio": 4, "horizon": 512.0},
                         "PAPER hyper-parameters: time error on y = x1*x2 (d=15, n=64), N=128, horizon 512, "
                         "window t in [256, 512], reference eta = 0.025"),
    },
}
CASES = tuple(SUITES["fast"])


def _json_ready(value):
    """Tuples to lists, numpy scalars to Python, NaN/inf to None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _error_bars(rows, y):
    low = np.array([row["ci_low"] if row["ci_low"] is not None else np.nan for row in rows], dtype=float)
    high = np.array([row["ci_high"] if row["ci_high"] is not None else np.nan for row in rows], dtype=float)
    # A lower end at 0 cannot be drawn on a log axis: clip it.
    lower = np.where(np.isfinite(low), y - np.maximum(low, y * 1e-3), 0.0)
    upper = np.where(np.isfinite(high), high - y, 0.0)
    return [np.maximum(lower, 0), np.maximum(upper, 0)]


def _default_panels(sweep):
    metrics = list(sweep.slopes)
    if sweep.kind == "particle":
        window = [m for m in metrics if m.endswith("_window") or m in ("G_gap", "U_gap")]
        panels = [[m for m in metrics if m not in window], window]
        return [("at the last step (run and reference alike)", panels[0]),
                ("averaged over the window (run and reference alike)", panels[1])]
    return [("averaged over the window", metrics)]


def plot_sweep(sweep, path, title=None):
    """Log-log plot of a sweep: errors with CIs, fitted lines, and the theory's slope through the data
    (one panel for a time sweep; last-step and window metrics side by side for a particle sweep).

    Needs matplotlib (an optional dependency); writes a PNG to `path`.
    """
    plt = _pyplot()
    panels = [(name, metrics) for name, metrics in _default_panels(sweep) if metrics]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 5.6), constrained_layout=True,
                             squeeze=False)
    x_all = np.asarray(sweep.grid, dtype=float)
    line_x = np.geomspace(x_all.min(), x_all.max(), 50)
    for ax, (panel_title, metrics) in zip(axes[0], panels):
        for index, metric in enumerate(metrics):
            fit = sweep.slopes[metric]
            color = f"C{index}"
            rows = sweep.rows(metric)
            x = np.array([row[sweep.grid_name] for row in rows], dtype=float)
            y = np.array([row["error"] for row in rows])
            ci = fit.get("ci", (np.nan, np.nan))
            ax.errorbar(x, y, yerr=_error_bars(rows, y), fmt="o", color=color, capsize=3,
                        label=f"{metric}: slope {fit['slope']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]")
            if math.isfinite(fit["slope"]):
                ax.plot(line_x, np.exp(fit["intercept"]) * line_x ** fit["slope"], "-", color=color, lw=1)
                if fit.get("theory") is not None:
                    # Theory line through the geometric centre of the measured points.
                    anchor_x, anchor_y = np.exp(np.mean(np.log(x))), np.exp(np.mean(np.log(y)))
                    ax.plot(line_x, anchor_y * (line_x / anchor_x) ** fit["theory"], ":", color=color, lw=1.5,
                            label=f"{metric}: theory slope {fit['theory']:g}")
            exact = [row.get("exact") for row in rows]
            if all(e is not None for e in exact):
                ax.plot(x, exact, "x", color=color, ms=8, label=f"{metric}: exact")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(x_all)
        ax.set_xticklabels([f"{v:g}" for v in x_all])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel("number of particles N" if sweep.grid_name == "N" else "step size eta")
        ax.set_ylabel("error")
        ax.set_title(panel_title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)
    fig.suptitle(textwrap.fill(title or f"{sweep.kind} discretisation error", 13 * 6 * len(panels)), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_by_time(sweep, path, title=None):
    """Error against time: for every time metric, the error at each report time for every grid value (top),
    and the log-log slope in the grid value at each time with its 95% interval (bottom).

    Uniform-in-time errors show as curves that level off in t (top) and slopes that stay put (bottom).
    """
    plt = _pyplot()
    metrics = list(sweep.by_time)
    fig, axes = plt.subplots(2, len(metrics), figsize=(4.6 * len(metrics), 7.4), constrained_layout=True,
                             squeeze=False)
    grid_label = "N" if sweep.grid_name == "N" else "eta"
    for column, metric in enumerate(metrics):
        entries = sweep.by_time[metric]
        times = np.array([e["t"] for e in entries], dtype=float)
        ax = axes[0, column]
        for index, value in enumerate(sweep.grid):
            rows = [next(r for r in e["table"] if r[sweep.grid_name] == value) for e in entries]
            y = np.array([r["error"] for r in rows])
            positive = y > 0
            if positive.any():
                bars = _error_bars(rows, y)
                ax.errorbar(times[positive], y[positive], yerr=[b[positive] for b in bars], fmt="o-",
                            color=plt.cm.viridis(index / max(1, len(sweep.grid) - 1)), capsize=2, ms=3, lw=1,
                            label=f"{grid_label} = {value:g}")
        ax.set_xscale("log")
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=7, ncol=2)
        else:
            ax.text(0.5, 0.5, "zero at every time", transform=ax.transAxes, ha="center")
        ax.set_xlabel("time t")
        ax.set_ylabel("error")
        ax.set_title(metric, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax = axes[1, column]
        slopes = np.array([e["slope"]["slope"] for e in entries], dtype=float)
        cis = np.array([e["slope"]["ci"] for e in entries], dtype=float)
        ok = np.isfinite(slopes)
        low = np.where(np.isfinite(cis[:, 0]), slopes - cis[:, 0], 0.0)
        high = np.where(np.isfinite(cis[:, 1]), cis[:, 1] - slopes, 0.0)
        if ok.any():
            ax.errorbar(times[ok], slopes[ok], yerr=[low[ok], high[ok]], fmt="o-", color="C3", capsize=3,
                        label="measured slope, 95% CI")
        theory = entries[0]["slope"].get("theory")
        if ok.any():  # frame the slopes (and the theory and 0); intervals wider than that run off the axes
            anchors = np.concatenate([slopes[ok], [0.0] if theory is None else [0.0, theory]])
            ax.set_ylim(anchors.min() - 0.6, anchors.max() + 0.6)
        if theory is not None:
            ax.axhline(theory, color="k", ls=":", lw=1.2, label=f"theory {theory:g}")
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("time t")
        ax.set_ylabel(f"slope in log {grid_label}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes.ravel():  # the same time axis everywhere, major (decade) labels only
        ax.set_xlim(min(e["t"] for m in metrics for e in sweep.by_time[m]) / 1.4,
                    max(e["t"] for m in metrics for e in sweep.by_time[m]) * 1.4)
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
    fig.suptitle(textwrap.fill(title or f"{sweep.kind} error against time", 80 * len(metrics)), fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_separation(curves, path, title=None):
    """Growth distance / epsilon of two paths with the same noise started epsilon apart, against time."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), constrained_layout=True)
    for index, (name, curve) in enumerate(curves.items()):
        ax.plot(curve["t"], curve["growth"], "o-", color=f"C{index}", ms=3,
                label=f"{name} (eta = {curve['eta']:g}, N = {curve['n_particles']})")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel("distance / initial distance")
    ax.set_title(textwrap.fill(title or "separation of nearby paths", 80), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _environment():
    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "numpy": np.__version__}
    try:
        from .. import __version__

        info["mfkern"] = __version__
    except ImportError:
        pass
    return info


def _separation(configs, kwargs, seed, backend="ensemble"):
    return {name: path_separation(cfg.replace(seed=seed), eta=eta, seed=seed, backend=backend, **kwargs)
            for name, (cfg, eta) in configs.items()}


def _format_separation(curves):
    return "\n".join(f"{name}: growth at t = " + ", ".join(f"{t:g}: {g:.3g}" for t, g in zip(c["t"], c["growth"]))
                     for name, c in curves.items())


def run_suite(suite="fast", *, out_dir="mfkern-results/discretization", cache_dir=None, seeds=None, n_jobs=-1,
              base_seed=0, cases=None, progress=True, plots=True, resume=True, stream=None, backend="ensemble"):
    """Run a discretisation suite; write ``discretization_<suite>.json`` and PNG figures to out_dir.

    Parameters
    ----------
    suite : {"fast", "paper"}
        "paper": the paper's hyper-parameters, small steps, windows checked for stationarity. "fast": a
        higher temperature and steps up to eta = 1 (outside the small-step regime), for a quick smoke test.
        See the module docstring; the output records which suite ran in every case's description.
    out_dir : path
        Where the JSON and the PNGs (discretization_<suite>_<case>.png, ..._<case>_time.png) go.
    cache_dir : path, optional
        Where the resume cache (discretization_runs.jsonl) lives; default out_dir.
    seeds : int, optional
        Replicates per grid point, overriding the suite's.
    n_jobs : int
        Runs advanced at a time (-1: one per CPU): threads of the ensemble, or worker processes (see backend).
    base_seed : int
        Base seed of every sweep (config.seed).
    cases : sequence of str, optional
        Subset of CASES to run.
    progress, plots : bool
        Progress bars; PNG plots (need matplotlib).
    resume : bool
        Reuse finished runs from the cache; False starts the cache afresh.
    stream : file, optional
        Where the tables are printed (default sys.stdout).
    backend : {"ensemble", "engine", "core_loop"}
        How the sweeps' independent runs are advanced (see :func:`mfkern.analysis.particle_error`): all
        together as one engine ensemble in this process (default), one engine per run in worker processes,
        or one Python loop of ``core.langevin_step`` per run. The results are bitwise the same.

    Returns
    -------
    dict: the JSON document written (per case: the sweep's to_dict(), description, elapsed seconds).
    """
    stream = sys.stdout if stream is None else stream
    if suite not in SUITES:
        raise ValueError(f"suite must be one of {tuple(SUITES)}, got {suite!r}")
    chosen = SUITES[suite]
    backend = check_backend(backend)
    cases = list(chosen if cases is None else cases)
    unknown = [c for c in cases if c not in chosen]
    if unknown or not cases:
        raise ValueError(f"cases must be a non-empty subset of {CASES}, got {cases}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir if cache_dir is None else pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (cache_dir / CACHE_NAME).exists():
        (cache_dir / CACHE_NAME).unlink()
    document = {"suite": suite, "backend": backend, "n_jobs": n_jobs, "cases": {}, "environment": _environment(),
                "notes": " ".join(__doc__.strip().split("\n\n", 1)[1].split())}
    start = time.perf_counter()
    path = out_dir / f"discretization_{suite}.json"
    for case in cases:
        function, config, kwargs, description = chosen[case]
        kwargs = dict(kwargs)
        print(f"\n== {case}: {description}", file=stream, flush=True)
        case_start = time.perf_counter()
        if function is path_separation:
            curves = _separation(config, kwargs, base_seed, backend)
            elapsed = time.perf_counter() - case_start
            print(_format_separation(curves), file=stream)
            entry = {"kind": "separation", "curves": curves, "description": description, "elapsed_s": elapsed}
            if plots:
                png = out_dir / f"discretization_{suite}_{case}.png"
                plot_separation(curves, png, title=f"{suite} suite, {case}: {description}")
                entry["plot"] = png.name
            document["cases"][case] = entry
            _write(document, path, start)
            continue
        if seeds is not None:
            kwargs["seeds"] = seeds
        sweep = function(config.replace(seed=base_seed), n_jobs=n_jobs, out_dir=cache_dir, progress=progress,
                         backend=backend, **kwargs)
        elapsed = time.perf_counter() - case_start
        print(sweep.format_table(), file=stream)
        print(f"({elapsed:.1f} s)", file=stream, flush=True)
        entry = sweep.to_dict()
        entry.update(description=description, elapsed_s=elapsed)
        if plots:
            png = out_dir / f"discretization_{suite}_{case}.png"
            plot_sweep(sweep, png, title=f"{suite} suite, {case}: {description}")
            entry["plot"] = png.name
            if sweep.by_time:
                png = out_dir / f"discretization_{suite}_{case}_time.png"
                plot_by_time(sweep, png, title=f"{suite} suite, {case}: error against time")
                entry["plot_time"] = png.name
        document["cases"][case] = entry
        _write(document, path, start)  # after every case, so that a long suite's finished cases are kept
    document = _write(document, path, start)
    print(f"\nwrote {path} ({document['total_elapsed_s']:.1f} s in all)", file=stream)
    return document


def _write(document, path, start):
    document["total_elapsed_s"] = time.perf_counter() - start
    ready = _json_ready(document)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(ready, handle, indent=1, allow_nan=False)
    return ready


def _cases(text):
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(CASES)}, got {text!r}")
    return cases


def add_cli_arguments(parser):
    """Add the options of ``mfkern discretization`` to an argparse parser (or subparser); returns it."""
    parser.add_argument("--suite", choices=tuple(SUITES), default="fast",
                        help="fast: higher temperature, steps up to eta = 1 (a smoke test: under a minute of "
                             "CPU); paper: the paper's hyper-parameters, small steps, long runs (about 6 CPU-min) "
                             "(default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="the same as --suite fast")
    parser.add_argument("--out", metavar="DIR", default="mfkern-results/discretization",
                        help="directory for discretization_<suite>.json and the PNG plots (default: %(default)s)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help=f"directory of the resume cache {CACHE_NAME} (default: the --out directory)")
    parser.add_argument("--seeds", metavar="S", type=_positive_int, default=None,
                        help="replicates per grid point, for every sweep (default: the suite's)")
    parser.add_argument("--n-jobs", metavar="J", type=_n_jobs, default=-1,
                        help="runs advanced at a time (threads of the ensemble, or worker processes with "
                             "--backend engine/core_loop), -1 for one per CPU (default: %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="ensemble",
                        help="ensemble: a sweep's runs advance together in one engine ensemble; engine: one "
                             "engine per run in worker processes; core_loop: one Python loop of "
                             "core.langevin_step per run (the same results; default: %(default)s)")
    parser.add_argument("--seed", metavar="SEED", type=_seed, default=0,
                        help="base seed; every run's seed is derived from it (default: %(default)s)")
    parser.add_argument("--cases", metavar="LIST", type=_cases, default=None,
                        help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    parser.add_argument("--no-resume", action="store_true",
                        help="ignore and replace the cache of finished runs instead of resuming from it")
    parser.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def run_cli(args):
    """Run ``mfkern discretization`` with parsed `args` (from :func:`add_cli_arguments`); returns the exit code.

    0 on success, 2 for a bad configuration or an unusable output directory (message on stderr), 130 when
    interrupted (finished runs stay cached, so running the same command again resumes).
    """
    plots = not args.no_plots
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("mfkern discretization: matplotlib is not installed, no plots (pip install matplotlib)",
                  file=sys.stderr)
            plots = False
    try:
        run_suite("fast" if args.quick else args.suite, out_dir=args.out, cache_dir=args.cache, seeds=args.seeds, n_jobs=args.n_jobs,
                  base_seed=args.seed, cases=args.cases, progress=not args.no_progress, plots=plots,
                  resume=not args.no_resume, backend=getattr(args, "backend", "ensemble"))
    except (ValueError, TypeError, OSError) as exc:
        print(f"mfkern discretization: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmfkern discretization: interrupted; finished runs are cached in "
              f"{args.cache or args.out}/{CACHE_NAME}: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
