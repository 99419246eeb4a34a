"""Per-step benchmark of mfkern against the numpy peer, the PyTorch peer and the BLAS floor.

    python -m bench [--quick] [--grid NAME[,NAME...]] [--repeats R] [--threads T] [--out bench/results]

For every size (N, n, d) of the grid, first checks (in a separate process) that each peer computes the same
step as mfkern (max relative difference of the stepped particles and of the drift, recorded), then times each
(implementation, threads) in a fresh subprocess: one warm-up step, then R timed steps (median and min-max),
and reads the child's peak resident memory (absolute, and the rise over the RSS once the inputs exist).
mfkern runs with 1 and T threads (the speedup), the peers and the floor with T threads.

Writes, per grid: ``step_<grid>.json`` (machine, settings, every measurement, agreement checks, ratios),
``step_<grid>.md`` (tables of times, ratios, memory) and ``step_<grid>.png`` (log-log time against N).
A size that fails (MemoryError, a missing ``solver`` option, a crash, a timeout) is recorded, never fatal.

Fair comparison: the children run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from the environment
(recorded when they were set) and OMP/OPENBLAS/MKL_NUM_THREADS set to the thread count; each child has an
address-space limit (--memory-limit-gib) so an over-large allocation fails with MemoryError instead of
pushing the machine out of memory.

Grids: ``main`` (default; includes (8192, 2048, 16) and (65536, 128, 16)), ``scale`` (mfkern only:
(1,000,000, 1024, 16) and (1024, 50,000, 16)), ``quick`` (small, for checking the harness), ``tiny`` (tests),
``all`` (main, scale and the paper run of bench/paper_run.py).
"""
from __future__ import annotations

import argparse
import datetime
import math
import os
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script (python bench/run.py): make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.harness import (  # noqa: E402
    DEFAULT_OUT,
    THREAD_VARIABLES,
    benchmark_environment,
    default_memory_limit,
    log,
    run_child,
    torch_installed,
    write_json,
)
from bench.machine import summary_line  # noqa: E402

__all__ = ["GRIDS", "main", "run_grid", "compute_ratios", "write_markdown", "write_plot"]

AGREEMENT_TOLERANCE = 1e-10
IMPLEMENTATION_LABELS = {"mfkern": "mfkern", "numpy": "numpy peer", "torch": "PyTorch peer",
                         "floor": "BLAS floor"}


def _size(N, n, d, series):
    return {"N": N, "n": n, "d": d, "series": series}


#: The grids: sizes (with the series they are plotted in), implementations, default repeats, whether the
#: peers are checked against mfkern, and the solver asked of mfkern (None: the library's default, "auto",
#: which solves in particle space (Woodbury) when N < n: the "n = 4N" series; the peers always solve the
#: n x n system, the obvious code).
GRIDS = {
    "tiny": {
        "sizes": [_size(64, 32, 3, "tiny"), _size(128, 32, 3, "tiny")],
        "implementations": ["floor", "mfkern", "numpy", "torch"], "repeats": 2, "verify": True,
        "solver": None,
    },
    "quick": {
        "sizes": [_size(1024, 256, 16, "n = N/4"), _size(2048, 512, 16, "n = N/4"),
                  _size(4096, 128, 16, "n = 128"), _size(16384, 128, 16, "n = 128"),
                  _size(256, 1024, 16, "n = 4N")],
        "implementations": ["floor", "mfkern", "numpy", "torch"], "repeats": 3, "verify": True,
        "solver": None,
    },
    "main": {
        "sizes": [_size(1024, 256, 16, "n = N/4"), _size(2048, 512, 16, "n = N/4"),
                  _size(4096, 1024, 16, "n = N/4"), _size(8192, 2048, 16, "n = N/4"),
                  _size(4096, 128, 16, "n = 128"), _size(16384, 128, 16, "n = 128"),
                  _size(65536, 128, 16, "n = 128"),
                  _size(512, 2048, 16, "n = 4N"), _size(1024, 4096, 16, "n = 4N")],
        "implementations": ["floor", "mfkern", "numpy", "torch"], "repeats": 7, "verify": True,
        "solver": None,
    },
    "scale": {
        "sizes": [_size(1_000_000, 1024, 16, "N = 1,000,000, n = 1024"),
                  _size(1024, 50_000, 16, "N = 1024, n = 50,000")],
        "implementations": ["mfkern"], "repeats": 3, "verify": False, "solver": "auto",
    },
}

#: Performance targets, checked (not asserted) in the markdown: (N, n, d) -> {ratio: (comparison, bound)}.
TARGETS = {
    (8192, 2048, 16): {"mfkern_over_floor": ("<=", 1.15), "numpy_over_mfkern": (">=", 1.25),
                       "torch_over_mfkern": (">=", 2.0), "one_thread_over_threads": (">=", 1.7)},
    (65536, 128, 16): {"numpy_over_mfkern": (">=", 2.3), "torch_over_mfkern": (">=", 2.0)},
}
SCALE_MEMORY_TARGETS = {(1_000_000, 1024, 16): 2**30, (1024, 50_000, 16): 2 * 2**30}


def _summarise_times(result):
    times = result.get("times_s")
    if result.get("status") == "ok" and times:
        ordered = sorted(times)
        mid = len(ordered) // 2
        median = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
        result.update(median_s=median, min_s=ordered[0], max_s=ordered[-1])
    if result.get("peak_rss_bytes") is not None and result.get("baseline_rss_bytes") is not None:
        result["step_rss_rise_bytes"] = result["peak_rss_bytes"] - result["baseline_rss_bytes"]
    return result


def _plan(grid, threads):
    plan = []
    for impl in grid["implementations"]:
        if impl == "mfkern":
            plan.append(("mfkern", threads))
            if threads != 1:
                plan.append(("mfkern", 1))
        else:
            plan.append((impl, threads))
    return plan


def _find(results, size, impl, threads):
    for entry in results:
        if (entry["N"], entry["n"], entry["d"], entry["impl"], entry["threads"]) == (
                size["N"], size["n"], size["d"], impl, threads):
            return entry
    return None


def _median(results, size, impl, threads):
    entry = _find(results, size, impl, threads)
    return entry.get("median_s") if entry else None


def compute_ratios(sizes, results, threads):
    """Time ratios per size from the medians (None where a time is missing).

    ``mfkern_over_floor`` = t(mfkern)/t(floor) (target <= 1.15, see TARGETS); ``numpy_over_mfkern`` and
    ``torch_over_mfkern`` = how many times faster mfkern is; ``one_thread_over_threads`` = t(mfkern, 1
    thread)/t(mfkern, T threads); ``numpy_over_floor`` for context.
    """
    def ratio(a, b):
        return a / b if a is not None and b is not None and b > 0 else None

    rows = []
    for size in sizes:
        mf = _median(results, size, "mfkern", threads)
        floor = _median(results, size, "floor", threads)
        rows.append({
            "N": size["N"], "n": size["n"], "d": size["d"],
            "mfkern_over_floor": ratio(mf, floor),
            "numpy_over_mfkern": ratio(_median(results, size, "numpy", threads), mf),
            "torch_over_mfkern": ratio(_median(results, size, "torch", threads), mf),
            "one_thread_over_threads": ratio(_median(results, size, "mfkern", 1), mf) if threads != 1 else None,
            "numpy_over_floor": ratio(_median(results, size, "numpy", threads), floor),
        })
    return rows


def _describe_result(entry):
    if entry.get("status") != "ok":
        return f"{entry['status']}: {entry.get('note', '')}"[:300]
    text = f"{entry['median_s']:.4g} s [{entry['min_s']:.4g}-{entry['max_s']:.4g}]"
    if entry.get("peak_rss_bytes"):
        text += f", peak RSS {entry['peak_rss_bytes'] / 2**20:.0f} MiB"
    return text


def run_grid(name, *, repeats=None, warmup=1, threads=2, out_dir=DEFAULT_OUT, timeout_s=1800.0,
             memory_limit_bytes=None, seed=0, data_seed=0, plot=True):
    """Run one grid and write step_<name>.json, .md and .png into out_dir; returns the document.

    Parameters
    ----------
    name : str
        A key of GRIDS.
    repeats, warmup : int
        Timed and untimed steps per measurement (repeats None: the grid's default).
    threads : int
        Threads of the comparison (mfkern also runs with 1).
    out_dir : path
        Output folder (created).
    timeout_s : float
        Limit per child process.
    memory_limit_bytes : int or None
        Address-space limit per child.
    seed, data_seed : int
        Noise seed of the steps and seed of the random problem.
    plot : bool
        Write the PNG.
    """
    if name not in GRIDS:
        raise ValueError(f"grid must be one of {sorted(GRIDS)}, got {name!r}")
    grid = GRIDS[name]
    repeats = grid["repeats"] if repeats is None else repeats
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, removed = benchmark_environment(threads)
    from bench.peers import PAPER_HYPER

    load_before = list(os.getloadavg())
    machine = run_child({"mode": "machine"}, threads=threads, timeout_s=timeout_s,
                        memory_limit_bytes=memory_limit_bytes)
    torch_ok = torch_installed()
    document = {
        "schema": "mfkern-bench-step/1",
        "grid": name,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "settings": {"repeats": repeats, "warmup": warmup, "threads": threads, "hyper": dict(PAPER_HYPER),
                     "seed": seed, "data_seed": data_seed, "solver": grid["solver"],
                     "timeout_s": timeout_s, "memory_limit_bytes": memory_limit_bytes,
                     "agreement_tolerance": AGREEMENT_TOLERANCE,
                     "removed_environment": removed,
                     "thread_environment": {key: str(threads) for key in THREAD_VARIABLES}},
        "machine": machine.get("machine"),
        "machine_error": None if machine.get("status") == "ok" else machine.get("note"),
        "load_average_before": load_before,
        "sizes": grid["sizes"],
        "verification": [],
        "results": [],
    }
    json_path = out_dir / f"step_{name}.json"
    plan = _plan(grid, threads)
    total = len(grid["sizes"]) * len(plan)
    count = 0
    log(f"grid {name}: {len(grid['sizes'])} sizes x {len(plan)} measurements, repeats={repeats}, "
         f"threads={threads}; load average {load_before[0]:.2f}")
    for size in grid["sizes"]:
        label = f"N={size['N']} n={size['n']} d={size['d']}"
        base = {"N": size["N"], "n": size["n"], "d": size["d"], "hyper": dict(PAPER_HYPER), "seed": seed,
                "data_seed": data_seed}
        if grid["verify"]:
            peers_to_check = [p for p in grid["implementations"] if p in ("numpy", "torch")
                              and (p != "torch" or torch_ok)]
            check = run_child({**base, "mode": "verify", "threads": threads, "peers": peers_to_check,
                               "tolerance": AGREEMENT_TOLERANCE},
                              threads=threads, timeout_s=timeout_s, memory_limit_bytes=memory_limit_bytes)
            for peer in peers_to_check:
                entry = {"N": size["N"], "n": size["n"], "d": size["d"], "peer": peer}
                if check.get("status") == "ok":
                    entry.update(check["checks"][peer])
                else:
                    entry.update(status=check.get("status"), note=check.get("note"), passed=False)
                document["verification"].append(entry)
                log(f"  check {label} {peer}: " + (
                    f"step {entry['step_max_rel_diff']:.2e}, drift {entry['drift_max_rel_diff']:.2e}"
                    if "step_max_rel_diff" in entry else f"{entry['status']}: {entry.get('note')}"))
        for impl, impl_threads in plan:
            count += 1
            entry = {"N": size["N"], "n": size["n"], "d": size["d"], "series": size["series"], "impl": impl,
                     "threads": impl_threads}
            if impl == "torch" and not torch_ok:
                entry.update(status="skipped", note="PyTorch is not installed (pip install torch==2.13.0)")
            else:
                spec = {**base, "mode": "time", "impl": impl, "threads": impl_threads, "repeats": repeats,
                        "warmup": warmup}
                if impl == "mfkern":
                    spec["solver"] = grid["solver"]
                entry.update(run_child(spec, threads=impl_threads, timeout_s=timeout_s,
                                       memory_limit_bytes=memory_limit_bytes))
                if impl == "mfkern":
                    entry["solver"] = grid["solver"]
            _summarise_times(entry)
            document["results"].append(entry)
            log(f"  [{count}/{total}] {label} {impl} ({impl_threads} thr): {_describe_result(entry)}")
            write_json(json_path, document)  # partial results survive an interrupted run
    document["ratios"] = compute_ratios(grid["sizes"], document["results"], threads)
    document["load_average_after"] = list(os.getloadavg())
    document["elapsed_s"] = time.perf_counter() - started
    write_json(json_path, document)
    write_markdown(out_dir / f"step_{name}.md", document)
    if plot:
        write_plot(out_dir / f"step_{name}.png", document)
    log(f"grid {name}: done in {document['elapsed_s']:.0f} s -> {json_path}")
    return document


def _fmt_time(entry):
    if entry is None:
        return "-"
    if entry.get("status") != "ok":
        return entry.get("status", "?")
    return f"{entry['median_s']:.4g} [{entry['min_s']:.3g}-{entry['max_s']:.3g}]"


def _fmt_ratio(value, target=None):
    if value is None:
        return "-"
    text = f"{value:.2f}x"
    if target is not None:
        comparison, bound = target
        met = value <= bound if comparison == "<=" else value >= bound
        text += f" ({'met' if met else 'NOT met'}: {comparison} {bound})"
    return text


def _fmt_mib(value):
    return "-" if value is None else f"{value / 2**20:.0f}"


def write_markdown(path, document):
    """Markdown report of one grid: times, ratios (with the performance targets), memory, agreement, failures."""
    settings = document["settings"]
    threads = settings["threads"]
    results = document["results"]
    machine = document.get("machine")
    lines = [f"# mfkern step benchmark: grid `{document['grid']}`", ""]
    lines.append(f"Machine: {summary_line(machine) if machine else 'unknown'}.  ")
    libraries = (machine or {}).get("libraries", {})
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in libraries.items() if v) + ".  ")
    git = (machine or {}).get("git") or {}
    if git.get("commit"):
        lines.append(f"Commit {git['commit'][:12]}{' (modified tree)' if git.get('modified') else ''}.  ")
    load = document.get("load_average_before") or [math.nan]
    lines.append(f"Load average before the run: {load[0]:.2f}"
                 + (" (the machine was busy: times are unreliable)" if load[0] >= 1.0 else "") + ".  ")
    lines.append(f"float64, hyper-parameters {settings['hyper']}; {settings['warmup']} warm-up step(s), then "
                 f"{settings['repeats']} timed steps per cell, each (implementation, size) in a fresh process; "
                 f"time per step in seconds, median [min-max]. Peers and floor with {threads} thread(s).  ")
    if settings.get("removed_environment"):
        lines.append(f"Removed from the children's environment: {settings['removed_environment']}.  ")
    if settings.get("solver"):
        lines.append(f"mfkern solver requested: `{settings['solver']}`.  ")
    lines.append("")
    impl_columns = [("floor", threads), ("mfkern", threads)]
    if threads != 1:
        impl_columns.append(("mfkern", 1))
    impl_columns += [("numpy", threads), ("torch", threads)]
    present = [(impl, t) for impl, t in impl_columns
               if any(e["impl"] == impl and e["threads"] == t for e in results)]
    header = ["N", "n", "d"] + [f"{IMPLEMENTATION_LABELS[i]} ({t} thr)" for i, t in present]
    lines += ["## Time per step (s)", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in document["sizes"]:
        cells = [f"{size['N']:,}", f"{size['n']:,}", str(size["d"])]
        cells += [_fmt_time(_find(results, size, i, t)) for i, t in present]
        lines.append("| " + " | ".join(cells) + " |")
    ratio_rows = document.get("ratios") or []
    if any(present_impl in ("floor", "numpy", "torch") for present_impl, _ in present):
        names = [("mfkern_over_floor", f"mfkern / floor"), ("numpy_over_mfkern", "numpy / mfkern"),
                 ("torch_over_mfkern", "torch / mfkern"),
                 ("one_thread_over_threads", f"mfkern 1 thr / {threads} thr"),
                 ("numpy_over_floor", "numpy / floor")]
    else:
        names = [("one_thread_over_threads", f"mfkern 1 thr / {threads} thr")]
    explanations = {"mfkern_over_floor": "mfkern / floor: how close mfkern is to the BLAS floor (1 = the floor)",
                    "numpy_over_mfkern": "numpy / mfkern and torch / mfkern: how many times faster mfkern is",
                    "one_thread_over_threads": f"mfkern 1 thr / {threads} thr: mfkern's thread speedup",
                    "numpy_over_floor": "numpy / floor: the plain numpy step against the floor"}
    explanation = "; ".join(text for key, text in explanations.items() if key in dict(names))
    lines += ["", "## Ratios of median times", "",
              f"{explanation}. Performance targets (TARGETS in bench/run.py) are checked where set.", "",
              "| N | n | d | " + " | ".join(label for _, label in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for row in ratio_rows:
        targets = TARGETS.get((row["N"], row["n"], row["d"]), {})
        cells = [f"{row['N']:,}", f"{row['n']:,}", str(row["d"])]
        cells += [_fmt_ratio(row.get(key), targets.get(key)) for key, _ in names]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Peak resident memory (MiB)", "",
              "Whole child process (interpreter, libraries, inputs) / rise over its RSS once the inputs "
              "existed.", "", "| N | n | d | " + " | ".join(header[3:]) + " |",
              "|---|---|---|" + "---|" * len(present)]
    for size in document["sizes"]:
        cells = [f"{size['N']:,}", f"{size['n']:,}", str(size["d"])]
        for impl, t in present:
            entry = _find(results, size, impl, t)
            if entry is None or entry.get("status") != "ok":
                cells.append("-")
                continue
            text = f"{_fmt_mib(entry.get('peak_rss_bytes'))} / {_fmt_mib(entry.get('step_rss_rise_bytes'))}"
            bound = SCALE_MEMORY_TARGETS.get((size["N"], size["n"], size["d"]))
            if bound is not None and impl == "mfkern" and entry.get("peak_rss_bytes") is not None:
                met = entry["peak_rss_bytes"] < bound
                text += f" ({'met' if met else 'NOT met'}: < {bound / 2**30:.0f} GiB)"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    if document["verification"]:
        lines += ["", f"## Agreement with mfkern's step (max relative difference, tolerance "
                  f"{settings['agreement_tolerance']:g})", "",
                  "| N | n | d | peer | step | drift | passed |", "|---|---|---|---|---|---|---|"]
        for check in document["verification"]:
            if "step_max_rel_diff" in check:
                lines.append(f"| {check['N']:,} | {check['n']:,} | {check['d']} | {check['peer']} | "
                             f"{check['step_max_rel_diff']:.1e} | {check['drift_max_rel_diff']:.1e} | "
                             f"{'yes' if check['passed'] else 'NO'} |")
            else:
                lines.append(f"| {check['N']:,} | {check['n']:,} | {check['d']} | {check['peer']} | - | - | "
                             f"NO ({check.get('status')}: {check.get('note')}) |")
    failures = [e for e in results if e.get("status") != "ok"]
    if failures:
        lines += ["", "## Not measured", ""]
        for entry in failures:
            note = (entry.get("note") or "").replace("\n", " ")[:400]
            lines.append(f"- N={entry['N']:,} n={entry['n']:,} d={entry['d']} {entry['impl']} "
                         f"({entry['threads']} thr): {entry['status']}: {note}")
    floor_parts = [e for e in results if e["impl"] == "floor" and e.get("components_median_s")]
    if floor_parts:
        components = list(floor_parts[0]["components_median_s"])
        lines += ["", "## BLAS floor by component (median s)", "",
                  "| N | n | d | " + " | ".join(components) + " |", "|---|---|---|" + "---|" * len(components)]
        for entry in floor_parts:
            lines.append(f"| {entry['N']:,} | {entry['n']:,} | {entry['d']} | "
                         + " | ".join(f"{entry['components_median_s'][c]:.4g}" for c in components) + " |")
    load_after = document.get("load_average_after")
    lines += ["", f"Total run time {document.get('elapsed_s', math.nan):.0f} s"
              + (f"; load average after the run {load_after[0]:.2f}" if load_after else "") + ".", ""]
    pathlib.Path(path).write_text("\n".join(lines))


def write_plot(path, document):
    """Log-log PNG of time per step against N, one panel per series, one line per implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    threads = document["settings"]["threads"]
    results = document["results"]
    series = []
    for size in document["sizes"]:
        if size["series"] not in series:
            series.append(size["series"])
    styles = {("floor", threads): dict(color="0.4", linestyle="--", marker="s"),
              ("mfkern", threads): dict(color="C0", marker="o"),
              ("mfkern", 1): dict(color="C0", linestyle=":", marker="o", markerfacecolor="none"),
              ("numpy", threads): dict(color="C1", marker="^"),
              ("torch", threads): dict(color="C3", marker="v")}
    fig, axes = plt.subplots(1, len(series), figsize=(5.2 * len(series), 4.2), squeeze=False)
    for ax, name in zip(axes[0], series):
        sizes = sorted((s for s in document["sizes"] if s["series"] == name), key=lambda s: s["N"])
        for (impl, t), style in styles.items():
            points = [(s["N"], _find(results, s, impl, t)) for s in sizes]
            points = [(N, e) for N, e in points if e is not None and e.get("status") == "ok"]
            if not points:
                continue
            xs = [N for N, _ in points]
            med = [e["median_s"] for _, e in points]
            err = [[e["median_s"] - e["min_s"] for _, e in points], [e["max_s"] - e["median_s"] for _, e in points]]
            ax.errorbar(xs, med, yerr=err, capsize=3, label=f"{IMPLEMENTATION_LABELS[impl]} ({t} thr)", **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N (particles)")
        ax.set_ylabel("time per step (s)")
        d_values = sorted({s["d"] for s in sizes})
        ax.set_title(f"{name}, d = {', '.join(map(str, d_values))}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"mfkern step benchmark, grid '{document['grid']}' (median, min-max bars)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _parser():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small 'quick' grid (3 repeats)")
    parser.add_argument("--grid", default=None,
                        help=f"grid name(s), comma-separated: {', '.join(GRIDS)}, paper (bench/paper_run.py), "
                             "or all = main,scale,paper (default: main; quick with --quick)")
    parser.add_argument("--repeats", type=_positive_int, default=None, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing (default 1)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="threads of the comparison (default: min(2, usable cores)); mfkern also runs with 1")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default bench/results)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    parser.add_argument("--memory-limit-gib", type=float, default=None,
                        help="address-space limit per child (default: 60%% of the machine's memory; 0: none)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return parser


def main(argv=None):
    """Command-line entry point (``python -m bench``); returns the exit status."""
    args = _parser().parse_args(argv)
    if args.warmup < 0:
        raise SystemExit("--warmup must be >= 0")
    names = (args.grid or ("quick" if args.quick else "main")).split(",")
    if names == ["all"]:
        names = ["main", "scale", "paper"]
    for name in names:
        if name not in GRIDS and name != "paper":
            raise SystemExit(f"--grid: unknown grid {name!r}; choose from {', '.join(GRIDS)}, paper, all")
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else None)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    threads = args.threads or min(2, usable)
    if args.memory_limit_gib is None:
        memory_limit = default_memory_limit()
    else:
        memory_limit = int(args.memory_limit_gib * 2**30) or None
    for name in names:
        if name == "paper":
            from bench import paper_run

            paper_run.run(threads=threads, out_dir=args.out, timeout_s=args.timeout,
                          memory_limit_bytes=memory_limit)
        else:
            run_grid(name, repeats=repeats, warmup=args.warmup, threads=threads, out_dir=args.out,
                     timeout_s=args.timeout, memory_limit_bytes=memory_limit, plot=not args.no_plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
