"""`mfkern discretization`: the particle and time sweeps on the paper's task and on the exact cases.

Suites (``--quick`` or the default, full one). The paper's task is y = x1 * x2 with x ~ N(0, I_15); for
speed it uses n = 64 (quick) or 128 (full) training points and a higher temperature than the paper
(lam = 0.02 instead of 0.004, lam_a = lam_w = 1 instead of 0.25), so that a run mixes in a few hundred
steps instead of ~10^4 (at eta = 1, U settles within about 100 steps). The quick time sweep stops at
t = 50, close to but before stationarity (the weak error at a fixed time is O(eta) as well); the full one
runs to t = 200. The exact cases: the data-free OU chain (known variance for every eta) and the erf kernel
in closed form (known at every step of the data-free dynamics).
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
from ._runner import CACHE_NAME
from .particle import particle_error
from .timestep import time_error

__all__ = ["SUITES", "CASES", "add_cli_arguments", "run_cli", "run_suite", "plot_sweep"]

RESULT_NAME = "discretization.json"

_PRODUCT_QUICK = DiscretizationConfig(task="product", n=64, d=15, n_probe=16, lam=0.02, lam_a=1.0, lam_w=1.0,
                                      eta=1.0, n_steps=200, record_every=5, average_from=0.5)
_PRODUCT_FULL = _PRODUCT_QUICK.replace(n=128, n_probe=32, n_steps=400)
_OU = DiscretizationConfig(task="ou", n=4, d=3, n_probe=4, lam=0.5, lam_a=1.0, lam_w=0.5, eta=0.1,
                           n_steps=0, average_from=0.5)
_ERF = DiscretizationConfig(task="ou", activation="erf", n=4, d=15, n_probe=16, lam=1.0, lam_a=1.0, lam_w=1.0,
                            eta=0.1, n_steps=20, average_from=0.5)

#: Every case of a suite: (sweep function, config, keyword arguments, a one-line description).
SUITES = {
    "quick": {
        "particle_product": (particle_error, _PRODUCT_QUICK,
                             {"Ns": [16, 32, 64, 128, 256], "seeds": 8, "reference_seeds": 2,
                              "reference_factor": 8},
                             "particle error on y = x1*x2 (d=15, n=64), 200 steps of eta=1, N_ref = 2048"),
        "time_product": (time_error, _PRODUCT_QUICK,
                         {"etas": [0.125, 0.25, 0.5, 1.0], "seeds": 4, "n_particles": 128,
                          "reference_ratio": 8, "horizon": 50.0},
                         "time error on y = x1*x2 (d=15, n=64), N=128, horizon 50, reference eta = 1/64"),
        "time_ou": (time_error, _OU,
                    {"etas": [0.05, 0.1, 0.2, 0.4], "seeds": 4, "n_particles": 500, "reference_ratio": 8,
                     "horizon": 16.0},
                    "time error, exact OU case (data term off), N=500, horizon 16"),
        "particle_erf": (particle_error, _ERF,
                         {"Ns": [64, 128, 256, 512, 1024, 2048], "seeds": 8, "reference": "exact"},
                         "particle error, exact erf kernel (data term off, d=15), 20 steps of eta=0.1"),
    },
    "full": {
        "particle_product": (particle_error, _PRODUCT_FULL,
                             {"Ns": [16, 32, 64, 128, 256, 512, 1024], "seeds": 32, "reference_seeds": 4,
                              "reference_factor": 8},
                             "particle error on y = x1*x2 (d=15, n=128), 400 steps of eta=1, N_ref = 8192"),
        "time_product": (time_error, _PRODUCT_FULL,
                         {"etas": [0.0625, 0.125, 0.25, 0.5, 1.0], "seeds": 16, "n_particles": 256,
                          "reference_ratio": 8, "horizon": 200.0},
                         "time error on y = x1*x2 (d=15, n=128), N=256, horizon 200, reference eta = 1/128"),
        "time_ou": (time_error, _OU,
                    {"etas": [0.025, 0.05, 0.1, 0.2, 0.4], "seeds": 8, "n_particles": 1000,
                     "reference_ratio": 8, "horizon": 32.0},
                    "time error, exact OU case (data term off), N=1000, horizon 32"),
        "particle_erf": (particle_error, _ERF,
                         {"Ns": [64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384], "seeds": 32,
                          "reference": "exact"},
                         "particle error, exact erf kernel (data term off, d=15), 20 steps of eta=0.1"),
    },
}
CASES = tuple(SUITES["quick"])


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


def plot_sweep(sweep, path, title=None):
    """Log-log plot of a sweep: errors with CIs, fitted lines, and the theory's slope through the data.

    Needs matplotlib (an optional dependency); writes a PNG to `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), constrained_layout=True)
    x_all = np.asarray(sweep.grid, dtype=float)
    line_x = np.geomspace(x_all.min(), x_all.max(), 50)
    for index, (metric, fit) in enumerate(sweep.slopes.items()):
        color = f"C{index}"
        rows = sweep.rows(metric)
        x = np.array([row[sweep.grid_name] for row in rows], dtype=float)
        y = np.array([row["error"] for row in rows])
        low = np.array([row["ci_low"] if row["ci_low"] is not None else np.nan for row in rows], dtype=float)
        high = np.array([row["ci_high"] if row["ci_high"] is not None else np.nan for row in rows], dtype=float)
        # Error bars from the per-point CI; a lower end at 0 cannot be drawn on a log axis, clip it.
        lower = np.where(np.isfinite(low), y - np.maximum(low, y * 1e-3), 0.0)
        upper = np.where(np.isfinite(high), high - y, 0.0)
        ci = fit.get("ci", (np.nan, np.nan))
        ax.errorbar(x, y, yerr=[np.maximum(lower, 0), np.maximum(upper, 0)], fmt="o", color=color, capsize=3,
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
    ax.set_xlabel("number of particles N" if sweep.grid_name == "N" else "step size eta")
    ax.set_ylabel("error")
    ax.set_title(textwrap.fill(title or f"{sweep.kind} discretisation error", 70), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120)
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


def run_suite(quick=True, *, out_dir="mfkern-results/discretization", cache_dir=None, seeds=None, n_jobs=-1,
              base_seed=0, cases=None, progress=True, plots=True, resume=True, stream=None):
    """Run the discretisation suite and write ``discretization.json`` and one PNG per case to out_dir.

    Parameters
    ----------
    quick : bool
        The quick suite (about a minute on 2 cores) or the full one (paper-figure sizes: 10-20 minutes on
        2 cores).
    out_dir : path
        Where discretization.json and discretization_<case>.png go.
    cache_dir : path, optional
        Where the resume cache (discretization_runs.jsonl) lives; default out_dir.
    seeds : int, optional
        Replicates per grid point, overriding the suite's.
    n_jobs : int
        Worker processes (-1: one per CPU).
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

    Returns
    -------
    dict: the JSON document written (per case: the sweep's to_dict(), description, elapsed seconds).
    """
    stream = sys.stdout if stream is None else stream
    suite_name = "quick" if quick else "full"
    suite = SUITES[suite_name]
    cases = list(CASES if cases is None else cases)
    unknown = [c for c in cases if c not in suite]
    if unknown or not cases:
        raise ValueError(f"cases must be a non-empty subset of {CASES}, got {cases}")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = out_dir if cache_dir is None else pathlib.Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not resume and (cache_dir / CACHE_NAME).exists():
        (cache_dir / CACHE_NAME).unlink()
    document = {"suite": suite_name, "cases": {}, "environment": _environment(),
                "notes": __doc__.strip().split("\n\n", 1)[1].replace("\n", " ")}
    start = time.perf_counter()
    for case in cases:
        function, config, kwargs, description = suite[case]
        kwargs = dict(kwargs)
        if seeds is not None:
            kwargs["seeds"] = seeds
        config = config.replace(seed=base_seed)
        print(f"\n== {case}: {description}", file=stream, flush=True)
        case_start = time.perf_counter()
        sweep = function(config, n_jobs=n_jobs, out_dir=cache_dir, progress=progress, **kwargs)
        elapsed = time.perf_counter() - case_start
        print(sweep.format_table(), file=stream)
        print(f"({elapsed:.1f} s)", file=stream, flush=True)
        entry = sweep.to_dict()
        entry.update(description=description, elapsed_s=elapsed)
        if plots:
            png = out_dir / f"discretization_{case}.png"
            plot_sweep(sweep, png, title=f"{case}: {description}")
            entry["plot"] = png.name
        document["cases"][case] = entry
    document["total_elapsed_s"] = time.perf_counter() - start
    document = _json_ready(document)
    with open(out_dir / RESULT_NAME, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, allow_nan=False)
    print(f"\nwrote {out_dir / RESULT_NAME} ({document['total_elapsed_s']:.1f} s in all)", file=stream)
    return document


def _cases(text):
    cases = [c.strip() for c in text.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown or not cases:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(CASES)}, got {text!r}")
    return cases


def add_cli_arguments(parser):
    """Add the options of ``mfkern discretization`` to an argparse parser (or subparser); returns it."""
    parser.add_argument("--quick", action="store_true",
                        help="small sweeps (about a minute on 2 cores) instead of the full paper-figure suite")
    parser.add_argument("--out", metavar="DIR", default="mfkern-results/discretization",
                        help="directory for discretization.json and the PNG plots (default: %(default)s)")
    parser.add_argument("--cache", metavar="DIR", default=None,
                        help=f"directory of the resume cache {CACHE_NAME} (default: the --out directory)")
    parser.add_argument("--seeds", metavar="S", type=_positive_int, default=None,
                        help="replicates per grid point, for every sweep (default: the suite's)")
    parser.add_argument("--n-jobs", metavar="J", type=_n_jobs, default=-1,
                        help="worker processes, -1 for one per CPU (default: %(default)s)")
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
        run_suite(quick=args.quick, out_dir=args.out, cache_dir=args.cache, seeds=args.seeds, n_jobs=args.n_jobs,
                  base_seed=args.seed, cases=args.cases, progress=not args.no_progress, plots=plots,
                  resume=not args.no_resume)
    except (ValueError, TypeError, OSError) as exc:
        print(f"mfkern discretization: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmfkern discretization: interrupted; finished runs are cached in "
              f"{args.cache or args.out}/{CACHE_NAME}: rerun the same command to resume", file=sys.stderr)
        return 130
    return 0
