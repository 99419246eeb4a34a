"""Time of the paper's experiment size: N = 2000 particles, n = 1000 samples, d = 15, 10,000 steps.

Runs a real chain W_{s+1} = step(W_s) of `--steps` steps (after `--warmup` untimed ones) for mfkern and for
the numpy peer, each in a fresh process with the same thread count, and extrapolates the mean time per step
to 10,000 steps (the target: under 8 minutes on 2 cores; numpy takes about 13). Writes
bench/results/paper_run.json.

    python bench/paper_run.py [--steps 50] [--warmup 2] [--threads T] [--out bench/results]
"""
from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench import harness  # noqa: E402
from bench.peers import PAPER_HYPER  # noqa: E402

__all__ = ["PAPER_SIZE", "PAPER_STEPS", "TARGET_MINUTES", "run", "main"]

PAPER_SIZE = {"N": 2000, "n": 1000, "d": 15}
PAPER_STEPS = 10_000
TARGET_MINUTES = 8.0


def run(*, steps=50, warmup=2, threads=2, out_dir=harness.DEFAULT_OUT, timeout_s=1800.0,
        memory_limit_bytes=None, size=None, implementations=("mfkern", "numpy")):
    """Measure the per-step time of the paper-sized chain and write paper_run.json; returns the document.

    Parameters
    ----------
    steps, warmup : int
        Timed and untimed steps of the chain.
    threads : int
        Threads of every implementation.
    out_dir : path
        Output folder (created).
    timeout_s : float
        Limit per child process.
    memory_limit_bytes : int or None
        Address-space limit per child.
    size : dict or None
        {"N", "n", "d"} (default: the paper's); smaller sizes are for tests.
    implementations : sequence of str
        Among "mfkern", "numpy", "torch".
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    size = dict(PAPER_SIZE if size is None else size)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    _, removed = harness.benchmark_environment(threads)
    machine = harness.run_child({"mode": "machine"}, threads=threads, timeout_s=timeout_s,
                                  memory_limit_bytes=memory_limit_bytes)
    document = {
        "schema": "mfkern-bench-paper/1",
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "size": size,
        "settings": {"steps_timed": steps, "warmup": warmup, "threads": threads, "hyper": dict(PAPER_HYPER),
                     "extrapolated_to_steps": PAPER_STEPS, "target_minutes": TARGET_MINUTES,
                     "removed_environment": removed},
        "machine": machine.get("machine"),
        "load_average_before": list(os.getloadavg()),
        "results": {},
    }
    for impl in implementations:
        spec = {"mode": "chain", "impl": impl, "threads": threads, "repeats": steps, "warmup": warmup,
                "hyper": dict(PAPER_HYPER), "seed": 0, "data_seed": 0, **size}
        if impl == "torch" and not harness.torch_installed():
            result = {"status": "skipped", "note": "PyTorch is not installed"}
        else:
            result = harness.run_child(spec, threads=threads, timeout_s=timeout_s,
                                         memory_limit_bytes=memory_limit_bytes)
        if result.get("status") == "ok":
            times = result["times_s"]
            mean = statistics.fmean(times)
            result.update(mean_s=mean, median_s=statistics.median(times), min_s=min(times), max_s=max(times),
                          extrapolated_s=mean * PAPER_STEPS, extrapolated_minutes=mean * PAPER_STEPS / 60)
            if impl == "mfkern" and size == PAPER_SIZE:  # the target is for the paper's size only
                result["target_met"] = result["extrapolated_minutes"] < TARGET_MINUTES
            harness.log(f"paper run {impl} ({threads} thr): {mean:.4g} s/step -> "
                           f"{result['extrapolated_minutes']:.2f} min for {PAPER_STEPS:,} steps")
        else:
            harness.log(f"paper run {impl}: {result.get('status')}: {result.get('note')}")
        document["results"][impl] = result
    mf, npy = document["results"].get("mfkern", {}), document["results"].get("numpy", {})
    if mf.get("mean_s") and npy.get("mean_s"):
        document["numpy_over_mfkern"] = npy["mean_s"] / mf["mean_s"]
    document["load_average_after"] = list(os.getloadavg())
    document["elapsed_s"] = time.perf_counter() - started
    harness.write_json(out_dir / "paper_run.json", document)
    return document


def main(argv=None):
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: min(2, usable cores))")
    parser.add_argument("--out", default=str(harness.DEFAULT_OUT), help="output folder")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    args = parser.parse_args(argv)
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = 1
    run(steps=args.steps, warmup=args.warmup, threads=args.threads or min(2, usable), out_dir=args.out,
        timeout_s=args.timeout, memory_limit_bytes=harness.default_memory_limit())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
