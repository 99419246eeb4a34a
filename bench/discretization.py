"""Discretisation-error microbenchmarks: the O(1/N) and O(eta) rates of Theorem 3.7 / Proposition 3.8.

Runs the quick suite of ``mfkern discretization`` (or the full one with --full) and writes, to bench/results/:

* discretization.json          every sweep: tidy table, slopes with CIs, per-run values, settings, timings
* discretization_<case>.png    log-log plots: errors with CIs, fitted lines, the theory's slopes
* discretization_summary.md    measured slopes with CIs next to the theory's, each slope refitted
                               independently (numpy.polyfit on the JSON table) as a check; for time
                               sweeps also the slope against eta - eta_ref (the reference step's own
                               error removed)

The resume cache of finished runs goes to a temporary directory unless --cache DIR is given (rerunning with
the same --cache skips finished runs).

    python bench/discretization.py [--full] [--n-jobs J] [--seeds S] [--cache DIR] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
import tempfile
import time

import numpy as np

from mfkern.analysis import run_suite

HERE = pathlib.Path(__file__).resolve().parent


def _num(value):
    return "nan" if value is None else f"{value:.3f}"


def _fmt_ci(ci):
    return "[" + ", ".join(_num(v) for v in ci) + "]"


def summarize(document):
    """Markdown table of the slopes; each slope is refitted from the table's errors with numpy.polyfit."""
    lines = [f"Suite: {document['suite']} ({document['total_elapsed_s']:.0f} s, "
             f"{document['environment']['cpus']} CPUs).", "",
             "| case | metric | measured slope | 95% CI (delta-t) | bootstrap CI | theory | exact on grid | "
             "vs eta - eta_ref | polyfit check |",
             "|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    for case, sweep in document["cases"].items():
        grid_name = sweep["grid_name"]
        for metric, fit in sweep["slopes"].items():
            rows = [row for row in sweep["table"] if row["metric"] == metric]
            x = np.log([row[grid_name] for row in rows])
            y = np.log([row["error"] for row in rows])
            check = float(np.polyfit(x, y, 1)[0])  # independent route to the same number
            if fit["slope"] is not None:
                worst = max(worst, abs(check - fit["slope"]))
            theory = "-" if fit["theory"] is None else f"{fit['theory']:g}"
            exact = f"{fit['exact_slope']:.3f}" if fit.get("exact_slope") is not None else "-"
            corrected = fit.get("slope_vs_eta_minus_reference")
            corrected = "-" if corrected is None else f"{corrected:.3f}"
            lines.append(f"| {case} | {metric} | {_num(fit['slope'])} | {_fmt_ci(fit['ci'])} | "
                         f"{_fmt_ci(fit['ci_bootstrap'])} | {theory} | {exact} | {corrected} | {check:.3f} |")
    lines += ["", "Descriptions of the cases:", ""]
    lines += [f"- {case}: {sweep['description']} ({sweep['elapsed_s']:.0f} s)"
              for case, sweep in document["cases"].items()]
    return "\n".join(lines) + "\n", worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="the full (paper-figure) suite instead of quick")
    parser.add_argument("--out", default=str(HERE / "results"), help="output directory (default bench/results)")
    parser.add_argument("--cache", default=None, help="resume-cache directory (default: a temporary one)")
    parser.add_argument("--n-jobs", type=int, default=-1, help="worker processes (-1: one per CPU)")
    parser.add_argument("--seeds", type=int, default=None, help="replicates per grid point (default: suite's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfkern-discretization-") as scratch:
        document = run_suite(quick=not args.full, out_dir=out, cache_dir=args.cache or scratch, seeds=args.seeds,
                             n_jobs=args.n_jobs, progress=not args.no_progress)
    text, worst = summarize(document)
    (out / "discretization_summary.md").write_text(text)
    print("\n" + text)
    print(f"largest |polyfit - reported slope| = {worst:.2e}; wall time {time.perf_counter() - start:.1f} s")
    return 0 if worst < 1e-8 or math.isnan(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
