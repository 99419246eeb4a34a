"""Discretisation-error microbenchmarks: the O(1/N) and O(eta) rates of Theorem 3.7 / Proposition 3.8.

Runs a suite of ``mfkern discretization`` (--suite fast, the default, or --suite paper: the paper's
hyper-parameters; see mfkern.analysis._command) and writes, to bench/results/:

* discretization_<suite>.json            every sweep: tidy tables, slopes with CIs, errors and slopes
                                         against time, stationarity checks, eta * L, per-run values, timings
* discretization_<suite>_<case>.png      log-log plots: errors with CIs, fitted lines, the theory's slopes
* discretization_<suite>_<case>_time.png error against time and the slope at each time
* discretization_<suite>_separation.png  separation of two paths with the same noise (strong error)
* discretization_<suite>_summary.md      slopes with CIs next to the theory's, each slope refitted
                                         independently (numpy.polyfit on the JSON table) as a check; slopes
                                         against time; stationarity verdicts; eta * L; timings

The resume cache of finished runs goes to bench/results/discretization_<suite>_cache/ (rerunning skips
finished runs; --cache DIR puts it elsewhere).

    python bench/discretization.py [--suite fast|paper] [--n-jobs J] [--seeds S] [--cache DIR] [--out DIR]
                                   [--backend ensemble|engine|core_loop]

The sweeps' runs advance as one engine ensemble by default (n_jobs threads in this process); the backend
changes only how fast, not what (bitwise the same results, one cache). bench/discretization_timing.py times
the paper suite the v0.1 way against the ensemble (bench/results/discretization_timing.{json,md}).
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time

import numpy as np

from mfkern.analysis import BACKENDS, run_suite

HERE = pathlib.Path(__file__).resolve().parent


def _num(value, spec=".3f"):
    return "nan" if value is None else format(value, spec)


def _fmt_ci(ci):
    return "[" + ", ".join(_num(v) for v in ci) + "]"


def _stationarity_rows(case, sweep):
    info = sweep.get("stationarity") or {}
    groups = list((info.get("by_N") or info.get("by_eta") or {}).items())
    if info.get("reference") is not None:
        groups.append(("reference", info["reference"]))
    rows = []
    for label, checks in groups:
        if checks is None:
            continue
        for name, check in checks.items():
            verdict = {True: "yes", False: "**no**", None: "?"}[check["stationary"]]
            ci = "[" + ", ".join(_num(v, ".2g") for v in check["ci"]) + "]"
            trend_ci = "[" + ", ".join(_num(v, ".2g") for v in check["trend_ci"]) + "]"
            relative = check["relative_half_difference"]
            relative = "-" if relative is None else f"{100 * relative:.2f}%"
            rows.append(f"| {case} | {label} | {name} | {check['window_mean']:.5g} | "
                        f"{check['half_difference']:.2g} {ci} | {relative} | {check['trend_change']:.2g} {trend_ci} | "
                        f"{verdict} |")
    return rows


def summarize(document):
    """Markdown summary; each slope is refitted from the table's errors with numpy.polyfit as a check."""
    lines = [f"Suite: **{document['suite']}** ({document['total_elapsed_s']:.0f} s wall, "
             f"{document['environment']['cpus']} CPUs, backend {document.get('backend', 'not recorded')}).",
             "", document["notes"], "",
             "## Slopes", "",
             "| case | metric | measured slope | 95% CI (delta-t) | bootstrap CI | theory | exact on grid | "
             "vs eta - eta_ref | polyfit check |",
             "|---|---|---|---|---|---|---|---|---|"]
    worst = 0.0
    by_time, stationarity, diagnostics, separation = [], [], [], []
    for case, sweep in document["cases"].items():
        if sweep.get("kind") == "separation":
            for name, curve in sweep["curves"].items():
                separation.append(f"| {name} | {curve['eta']:g} | " + ", ".join(
                    f"{t:g}: {g:.3g}" for t, g in zip(curve["t"], curve["growth"])) + " |")
            continue
        grid_name = sweep["grid_name"]
        for metric, fit in sweep["slopes"].items():
            rows = [row for row in sweep["table"] if row["metric"] == metric]
            x = np.log([row[grid_name] for row in rows])
            y = np.log([row["error"] for row in rows])
            check = float(np.polyfit(x, y, 1)[0])  # independent route to the same number
            if fit["slope"] is not None:
                worst = max(worst, abs(check - fit["slope"]))
            theory = "none" if fit["theory"] is None else f"{fit['theory']:g}"
            exact = f"{fit['exact_slope']:.3f}" if fit.get("exact_slope") is not None else "-"
            corrected = fit.get("slope_vs_eta_minus_reference")
            corrected = "-" if corrected is None else f"{corrected:.3f}"
            lines.append(f"| {case} | {metric} | {_num(fit['slope'])} | {_fmt_ci(fit['ci'])} | "
                         f"{_fmt_ci(fit['ci_bootstrap'])} | {theory} | {exact} | {corrected} | {check:.3f} |")
        for metric, entries in (sweep.get("by_time") or {}).items():
            cells = [f"t={e['t']:g}: " + ("0 at every grid value" if all(r["error"] == 0 for r in e["table"])
                                          else "some errors 0, no fit" if e["slope"]["slope"] is None
                                          else f"{_num(e['slope']['slope'], '.2f')} [{_num(e['slope']['ci'][0], '.2f')}, "
                                               f"{_num(e['slope']['ci'][1], '.2f')}]") for e in entries]
            theory = entries[0]["slope"]["theory"]
            by_time.append(f"| {case} | {metric} | {'none' if theory is None else f'{theory:g}'} | "
                           + "; ".join(cells) + " |")
        stationarity += _stationarity_rows(case, sweep)
        diag = sweep.get("diagnostics") or {}
        if "curvature_initial" in diag:
            if sweep["kind"] == "particle":
                diagnostics.append(f"| {case} | eta = {sweep['config']['eta']:g} | {diag['curvature_initial']:.3g} | "
                                   f"{diag['curvature_final']:.3g} | {diag['eta_L_initial']:.3g} | "
                                   f"{diag['eta_L_final']:.3g} |")
            else:
                for eta, value in diag["eta_L_final"].items():
                    diagnostics.append(f"| {case} | eta = {float(eta):g} | {diag['curvature_initial']:.3g} | "
                                       f"{diag['curvature_final']:.3g} | {diag['eta_L_initial'][eta]:.3g} | "
                                       f"{value:.3g} |")
    lines += ["", "## Slopes against time (95% CI at each report time t)", "",
              "| case | metric | theory | slope at each time |", "|---|---|---|---|"] + by_time
    lines += ["", "## Stationarity of the averaging window", "",
              "Second-half mean minus first-half mean of the window (mean over runs, 95% t interval over runs), "
              "relative to the window mean; the trend is the OLS slope times the window length (mean over runs). "
              "Stationary: both intervals contain 0.", "",
              "| case | N or eta | quantity | window mean | 2nd - 1st half [95% CI] | relative | trend change "
              "[95% CI] | stationary |", "|---|---|---|---|---|---|---|---|"] + stationarity
    if stationarity:
        flagged = sum("**no**" in row for row in stationarity)
        lines += ["", f"{flagged} of {len(stationarity)} checks flag a drift; each check is two 95% intervals, so "
                      f"about {0.1 * len(stationarity):.1f} false alarms are expected by chance alone."]
    if diagnostics:
        lines += ["", "## Small-step regime: curvature L of the drift and eta * L", "",
                  "L = largest |eigenvalue| of the Hessian of the first variation over 32 particles (median over "
                  "runs), at the first and last steps. Euler-Maruyama is in its small-step regime when eta * L << 1.",
                  "", "| case | step | L initial | L final | eta L initial | eta L final |",
                  "|---|---|---|---|---|---|"] + diagnostics
    if separation:
        lines += ["", "## Separation of two paths with the same noise, started 1e-6 apart (growth of the distance)",
                  "", "| task | eta | distance / 1e-6 at time t |", "|---|---|---|"] + separation
    lines += ["", "## Cases (wall time on the machine as it was loaded; CPU time summed over runs)", ""]
    total_cpu = 0.0
    for case, sweep in document["cases"].items():
        cpu = (sweep.get("diagnostics") or {}).get("cpu_s_total")
        total_cpu += cpu or 0.0
        cpu_text = "" if cpu is None else f", {cpu:.0f} CPU-s"
        lines.append(f"- {case}: {sweep['description']} ({sweep['elapsed_s']:.0f} s wall{cpu_text})")
    lines += ["", f"CPU time summed over all runs: {total_cpu:.0f} s, i.e. {total_cpu / 120:.1f} min on 2 cores "
                  "with perfect balance (each run's own CPU time, or with the ensemble backend each batch's: "
                  "the runs are independent and single-threaded)."]
    return "\n".join(lines) + "\n", worst


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("fast", "paper"), default="fast")
    parser.add_argument("--out", default=str(HERE / "results"), help="output directory (default bench/results)")
    parser.add_argument("--cache", default=None,
                        help="resume-cache directory (default bench/results/discretization_<suite>_cache)")
    parser.add_argument("--n-jobs", type=int, default=-1,
                        help="runs advanced at a time: ensemble threads or worker processes (-1: one per CPU)")
    parser.add_argument("--backend", choices=BACKENDS, default="ensemble",
                        help="ensemble (one engine ensemble per sweep), engine (one engine per run in worker "
                             "processes) or core_loop (a Python loop of core.langevin_step per run)")
    parser.add_argument("--seeds", type=int, default=None, help="replicates per grid point (default: suite's)")
    parser.add_argument("--cases", default=None, help="comma-separated subset of the cases (default: all)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    cache = pathlib.Path(args.cache) if args.cache else out / f"discretization_{args.suite}_cache"
    start = time.perf_counter()
    cases = None if args.cases is None else [c.strip() for c in args.cases.split(",") if c.strip()]
    document = run_suite(args.suite, out_dir=out, cache_dir=cache, seeds=args.seeds, n_jobs=args.n_jobs,
                         cases=cases, progress=not args.no_progress, backend=args.backend)
    text, worst = summarize(document)
    if args.cases is None:  # a subset of the cases does not replace the suite's summary
        (out / f"discretization_{args.suite}_summary.md").write_text(text)
    print("\n" + text)
    print(f"largest |polyfit - reported slope| = {worst:.2e}; wall time {time.perf_counter() - start:.1f} s")
    return 0 if worst < 1e-8 or math.isnan(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
