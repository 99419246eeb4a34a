"""Timing of the discretisation suite at the paper's hyper-parameters: the v0.1 way against the ensemble.

In one process run, with the same thread budget (--threads, default 2):

* **subset** (every case of the paper suite, with --subset-seeds replicates per grid point and one
  reference replicate in the particle sweep), each case timed back to back with
  (a) ``backend="core_loop"``: every run a plain Python loop of per-step ``mfkern.core.langevin_step`` calls
      (the stateless step; how v0.1 stepped), the runs spread over --threads worker processes by
      ``mfkern.runner``, and
  (b) ``backend="ensemble"``: the runs of a sweep advanced together by ``mfkern.engine.run_ensemble`` in
      this process, on --threads threads;
  (optionally, --with-engine, also ``backend="engine"``: one engine per run in worker processes);
* **full**: the whole paper suite (``mfkern.analysis.run_suite("paper")``, plots included, no cache) with
  (b), checked against the committed ``bench/results/discretization_paper.json`` (every table, slope, run and
  curve must be the same; only timings and the backend's name may differ).

Wall time per case and CPU time: this process's (time.process_time: the ensemble's threads, the analysis,
the coarse paths) plus, for worker processes, the CPU time every run measured itself (its ``cpu_s``; the
workers' start-up is not counted). Writes bench/results/discretization_timing.{json,md}.

    OMP_NUM_THREADS=2 PYTHONPATH=python python bench/discretization_timing.py [--threads 2] [--subset-seeds 2]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.machine import describe, summary_line  # noqa: E402
from mfkern.analysis import SUITES, path_separation, run_suite  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
TARGET_S = 15 * 60  # the suite's target: at most 15 minutes on 2 cores
#: Keys that may differ between two runs of the same suite (timings, figure names, which backend ran).
VOLATILE = {"elapsed_s", "plot", "plot_time", "cpu_s_total", "backend", "description"}


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def _subset_cases(suite, seeds):
    """The suite's cases with `seeds` replicates per grid point and one reference replicate."""
    cases = {}
    for case, (function, config, kwargs, description) in SUITES[suite].items():
        kwargs = dict(kwargs)
        if function is not path_separation:
            kwargs["seeds"] = seeds
            if "reference_seeds" in kwargs:
                kwargs["reference_seeds"] = 1
        cases[case] = (function, config, kwargs, description)
    return cases


def _time_case(function, config, kwargs, backend, threads):
    """Run one case with `backend`; returns wall and CPU seconds (this process + the runs in workers)."""
    wall, cpu = time.perf_counter(), time.process_time()
    if function is path_separation:
        for cfg, eta in config.values():
            path_separation(cfg, eta=eta, seed=0, backend=backend, n_threads=threads if backend == "ensemble" else 1,
                            **kwargs)
        workers_cpu = 0.0
    else:
        sweep = function(config.replace(seed=0), n_jobs=threads, out_dir=None, progress=False, backend=backend,
                         **kwargs)
        runs_cpu = sweep.diagnostics.get("cpu_s_total") or 0.0
        workers_cpu = 0.0 if backend == "ensemble" else runs_cpu  # the ensemble's CPU is this process's
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu + workers_cpu}


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _compare_with_committed(document, committed_path):
    """Which cases of the full run equal the committed results (all but timings and the backend's name)."""
    if not committed_path.exists():
        return None
    committed = json.loads(committed_path.read_text())["cases"]
    return {case: _strip(entry) == _strip(committed.get(case)) for case, entry in document["cases"].items()}


def _format(report):
    machine, subset, full = report["machine"], report["subset"], report.get("full")
    lines = [
        f"# Discretisation suite ({report['suite']}): time on {report['threads']} cores", "",
        f"Machine: {summary_line(machine)}. Threads used: {report['threads']} (OMP_NUM_THREADS="
        f"{machine['thread_environment'].get('OMP_NUM_THREADS')}); the core's kernels are Eigen's and its own "
        "(numpy's BLAS above only does the analysis). "
        f"Niceness of this run: {report['nice']}. "
        f"Load average before / after: {report['load_before']} / {report['load_after']}. "
        f"{report['load_note']}", "",
        f"Target: the full paper suite in at most {TARGET_S // 60} minutes on 2 cores.", "",
        "Wall time on the machine as it was (see the load above); CPU time: this process's (the ensemble's "
        "threads, the analysis, the time sweep's coarse paths) plus, with worker processes, the CPU time each "
        "run measured itself (the workers' start-up not counted).", "",
        "## Subset: the same cases, (a) the v0.1 way against (b) the ensemble", "",
        f"Subset: every case of the {report['suite']} suite with {report['subset_seeds']} replicates per grid "
        "point (the "
        "suite has 8) and 1 reference replicate in the particle sweep (the suite has 2); the separation and "
        "the exact cases as in the suite. (a) `backend=\"core_loop\"`: per run a Python loop of "
        "`mfkern.core.langevin_step`, runs in "
        f"{report['threads']} worker processes (the separation case: its two paths in this process, one thread); "
        f"(b) `backend=\"ensemble\"`: `mfkern.engine.run_ensemble` on {report['threads']} threads in one process. "
        "Each case ran (a) then (b) back to back.", "",
        "| case | (a) wall s | (a) CPU s | (b) wall s | (b) CPU s | wall (a)/(b) | CPU (a)/(b) |"
        + (" engine wall s | engine CPU s |" if "engine" in next(iter(subset.values())) else ""),
        "|---|---|---|---|---|---|---|" + ("---|---|" if "engine" in next(iter(subset.values())) else ""),
    ]
    totals = {}
    for case, entry in subset.items():
        a, b = entry["core_loop"], entry["ensemble"]
        for backend, value in entry.items():
            totals.setdefault(backend, {"wall_s": 0.0, "cpu_s": 0.0})
            totals[backend]["wall_s"] += value["wall_s"]
            totals[backend]["cpu_s"] += value["cpu_s"]
        extra = f" {entry['engine']['wall_s']:.1f} | {entry['engine']['cpu_s']:.1f} |" if "engine" in entry else ""
        lines.append(f"| {case} | {a['wall_s']:.1f} | {a['cpu_s']:.1f} | {b['wall_s']:.1f} | {b['cpu_s']:.1f} | "
                     f"{a['wall_s'] / b['wall_s']:.2f} | {a['cpu_s'] / b['cpu_s']:.2f} |{extra}")
    a, b = totals["core_loop"], totals["ensemble"]
    extra = (f" {totals['engine']['wall_s']:.1f} | {totals['engine']['cpu_s']:.1f} |" if "engine" in totals else "")
    lines.append(f"| **subset total** | {a['wall_s']:.1f} | {a['cpu_s']:.1f} | {b['wall_s']:.1f} | {b['cpu_s']:.1f} | "
                 f"{a['wall_s'] / b['wall_s']:.2f} | {a['cpu_s'] / b['cpu_s']:.2f} |{extra}")
    if full is not None:
        lines += ["", f"## Full {report['suite']} suite through the ensemble (b)", "",
                  f"`run_suite(\"{report['suite']}\", backend=\"ensemble\", n_jobs={report['threads']})`, "
                  "every case, plots "
                  "included, no cache.", "",
                  "| case | wall s | CPU s |", "|---|---|---|"]
        for case, value in full["cases"].items():
            lines.append(f"| {case} | {value['wall_s']:.1f} | {value['cpu_s']:.1f} |")
        lines.append(f"| **total** | {full['wall_s']:.1f} ({full['wall_s'] / 60:.1f} min) | {full['cpu_s']:.1f} "
                     f"({full['cpu_s'] / 60:.1f} CPU-min) |")
        verdict = "meets" if full["wall_s"] <= TARGET_S else "does NOT meet"
        lines += ["", f"The full suite took {full['wall_s'] / 60:.1f} min of wall time on {report['threads']} "
                      f"threads: it {verdict} the {TARGET_S // 60}-minute target (CPU: {full['cpu_s'] / 60:.1f} "
                      "min)."]
        same = full.get("same_as_committed")
        if same is not None:
            lines += ["", f"Results against the committed `bench/results/discretization_{report['suite']}.json` "
                          "(every table, "
                          "slope, run and curve; timings and the backend's name aside): "
                      + ", ".join(f"{case}: {'identical' if ok else '**different**'}" for case, ok in same.items())
                      + "."]
    return "\n".join(lines) + "\n"


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=_positive, default=2, help="threads of the ensemble / worker processes")
    parser.add_argument("--subset-seeds", type=_positive, default=2, help="replicates per grid point in the subset")
    parser.add_argument("--with-engine", action="store_true",
                        help="also time the subset with backend='engine' (one engine per run, worker processes)")
    parser.add_argument("--no-full", action="store_true", help="skip the full suite")
    parser.add_argument("--load-note", default="", help="a sentence on the machine's other load, for the record")
    parser.add_argument("--suite", choices=tuple(SUITES), default="paper",
                        help="the suite timed (fast: a quick check of this script)")
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    report = {"suite": args.suite, "threads": args.threads, "nice": os.nice(0), "subset_seeds": args.subset_seeds,
              "machine": describe(),
              "load_before": _load(), "load_note": args.load_note, "subset": {}}
    backends = ["core_loop", "ensemble"] + (["engine"] if args.with_engine else [])
    for case, (function, config, kwargs, _) in _subset_cases(args.suite, args.subset_seeds).items():
        report["subset"][case] = {}
        for backend in backends:
            report["subset"][case][backend] = _time_case(function, config, kwargs, backend, args.threads)
            report["subset"][case][backend]["load_after"] = _load()
            print(f"subset {case} {backend}: {report['subset'][case][backend]}", flush=True)
    if not args.no_full:
        # One run_suite call per case (the same computation as one call for all), to time each case's CPU.
        full = {"cases": {}}
        cases = {}
        with tempfile.TemporaryDirectory() as directory, open(os.devnull, "w") as quiet:
            for case in SUITES[args.suite]:
                wall, cpu = time.perf_counter(), time.process_time()
                document = run_suite(args.suite, out_dir=directory, cases=[case], n_jobs=args.threads, progress=False,
                                     plots=True, resume=False, backend="ensemble", stream=quiet)
                full["cases"][case] = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                                       "load_after": _load()}
                cases[case] = document["cases"][case]
                print(f"full {case}: {full['cases'][case]}", flush=True)
        full["wall_s"] = sum(v["wall_s"] for v in full["cases"].values())
        full["cpu_s"] = sum(v["cpu_s"] for v in full["cases"].values())
        full["same_as_committed"] = _compare_with_committed({"cases": cases},
                                                            HERE / "results" / f"discretization_{args.suite}.json")
        report["full"] = full
        print(f"full: {full['wall_s']:.1f} s wall, {full['cpu_s']:.1f} CPU-s", flush=True)
    report["load_after"] = _load()
    out.mkdir(parents=True, exist_ok=True)
    name = "discretization_timing" if args.suite == "paper" else f"discretization_timing_{args.suite}"
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    text = _format(report)
    (out / f"{name}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
