"""Child-process timing shared by the benchmarks (bench/run.py, bench/paper_run.py): one measurement per
fresh Python process, in a fair environment, with a wall-clock and an address-space limit.

Parent side: :func:`run_child` starts ``python -m bench.harness --child SPEC --child-out PATH`` with
:func:`benchmark_environment` (OpenBLAS overrides that would favour one library removed, thread counts set)
and returns the child's result dict, recording a timeout, a crash or a MemoryError instead of raising.
Child side: the modes of :data:`CHILD_MODES` ("time" a number of steps, "chain" the chain W_{s+1} =
step(W_s), "verify" each peer against mfkern, "machine" a description of the machine). Also the small
output helpers both benchmarks use (:func:`write_json`, :func:`log`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
import traceback

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.machine import REPO_ROOT  # noqa: E402

__all__ = ["DEFAULT_OUT", "UNFAIR_VARIABLES", "THREAD_VARIABLES", "CHILD_MODES", "benchmark_environment", "run_child",
           "child_time", "child_chain", "child_verify", "child_machine", "child_main", "torch_installed", "log",
           "write_json", "default_memory_limit"]

DEFAULT_OUT = REPO_ROOT / "bench" / "results"
UNFAIR_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


# ----------------------------------------------------------------------------------------------------------
# Child side: runs in a fresh process, writes one JSON document.
# ----------------------------------------------------------------------------------------------------------

def _status_kib(field):
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Reset the kernel's peak-RSS mark (VmHWM) of this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss():
    peak = _status_kib("VmHWM")
    if peak is None:  # ru_maxrss is in KiB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return peak


def limit_blas(threads):
    import threadpoolctl

    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


def step_function(spec, W, X, Y):
    """(function of the step index and particles, note or None) for the implementation named in spec."""
    from bench import peers

    hyper, threads, impl = spec["hyper"], spec["threads"], spec["impl"]
    kwargs = dict(eta=hyper["eta"], lam=hyper["lam"], lam_a=hyper["lam_a"], lam_w=hyper["lam_w"],
                  seed=spec["seed"])
    if impl == "mfkern":
        solver, note = spec.get("solver"), None
        if solver is not None and not peers.solver_option_available():
            note = (f"mfkern.core.langevin_step has no 'solver' option: asked for solver={solver!r}, "
                    "ran the library's default path")
            solver = None
        return (lambda s, w=W: peers.mfkern_step(w, X, Y, step=s, n_threads=threads, solver=solver,
                                                 **kwargs)), note
    if impl == "numpy":
        limit_blas(threads)
        return (lambda s, w=W: peers.numpy_step(w, X, Y, step=s, n_threads=threads, **kwargs)), None
    if impl == "torch":
        import torch

        torch.set_num_threads(threads)
        return (lambda s, w=W: peers.torch_step(w, X, Y, step=s, n_threads=threads, **kwargs)), None
    raise ValueError(f"unknown implementation {impl!r}")


def child_time(spec):
    import numpy as np

    from bench import peers

    result = {"status": "ok"}
    W, X, Y = peers.make_problem(spec["N"], spec["n"], spec["d"], seed=spec["data_seed"])
    result["baseline_rss_bytes"] = _status_kib("VmRSS")
    result["peak_reset"] = reset_peak_rss()
    clock = time.perf_counter
    if spec["impl"] == "floor":
        limit_blas(spec["threads"])
        ridge = spec["n"] * spec["hyper"]["lam"] * spec["hyper"]["lam_a"]
        floor = peers.BlasFloor(W, X, ridge)
        for _ in range(spec["warmup"]):
            floor.run()
        parts = [floor.run() for _ in range(spec["repeats"])]
        times = [sum(p.values()) for p in parts]
        result["components_median_s"] = {name: float(np.median([p[name] for p in parts]))
                                         for name in peers.BlasFloor.COMPONENTS}
    else:
        step, note = step_function(spec, W, X, Y)
        if note:
            result["note"] = note
        for s in range(spec["warmup"]):
            out = step(s)
            del out
        times = []
        for s in range(spec["warmup"], spec["warmup"] + spec["repeats"]):
            start = clock()
            out = step(s)
            times.append(clock() - start)
            del out
    result["times_s"] = times
    result["peak_rss_bytes"] = peak_rss()
    return result


def child_chain(spec):
    """Iterate the chain W_{s+1} = step(W_s, s) (the paper's run): per-step times after a warm-up."""
    from bench import peers

    W, X, Y = peers.make_problem(spec["N"], spec["n"], spec["d"], seed=spec["data_seed"])
    step, note = step_function(spec, W, X, Y)
    clock = time.perf_counter
    times = []
    for s in range(spec["warmup"] + spec["repeats"]):
        start = clock()
        W = step(s, W)
        if s >= spec["warmup"]:
            times.append(clock() - start)
    result = {"status": "ok", "times_s": times, "peak_rss_bytes": peak_rss(),
              "final_mean_sq_norm": float((W * W).sum(axis=1).mean())}
    if note:
        result["note"] = note
    return result


def child_verify(spec):
    """Each peer's step and drift against mfkern's on the same inputs and noise."""
    from mfkern import core

    from bench import peers

    hyper, threads = spec["hyper"], spec["threads"]
    W, X, Y = peers.make_problem(spec["N"], spec["n"], spec["d"], seed=spec["data_seed"])
    hp = dict(lam=hyper["lam"], lam_a=hyper["lam_a"], lam_w=hyper["lam_w"])
    stepping = dict(eta=hyper["eta"], seed=spec["seed"], step=0, n_threads=threads, **hp)
    reference_step = peers.mfkern_step(W, X, Y, **stepping)
    reference_drift = core.drift(W, X, Y, n_threads=threads, **hp)
    limit_blas(threads)
    checks = {}
    for peer in spec["peers"]:
        if peer == "numpy":
            step_fn, drift_fn = peers.numpy_step, peers.numpy_drift
        else:
            import torch

            torch.set_num_threads(threads)
            step_fn, drift_fn = peers.torch_step, peers.torch_drift
        step_diff = peers.max_relative_difference(step_fn(W, X, Y, **stepping), reference_step)
        drift_diff = peers.max_relative_difference(drift_fn(W, X, Y, **hp), reference_drift)
        checks[peer] = {"step_max_rel_diff": step_diff, "drift_max_rel_diff": drift_diff,
                        "passed": bool(max(step_diff, drift_diff) <= spec["tolerance"])}
    return {"status": "ok", "checks": checks}


def child_machine(spec):
    from bench.machine import describe

    return {"status": "ok", "machine": describe()}


CHILD_MODES = {"time": child_time, "chain": child_chain, "verify": child_verify, "machine": child_machine}


def child_main(spec_text, out_path):
    spec = json.loads(spec_text)
    try:
        result = CHILD_MODES[spec["mode"]](spec)
    except MemoryError as error:  # includes mfkern.core.MemoryLimitError (raised before allocating)
        result = {"status": "memory_error", "note": f"{type(error).__name__}: {error}",
                  "bytes_needed": getattr(error, "bytes_needed", None),
                  "bytes_available": getattr(error, "bytes_available", None)}
    except Exception as error:  # recorded in the results; the parent carries on with the next size
        result = {"status": "error", "note": f"{type(error).__name__}: {error}",
                  "traceback": traceback.format_exc(limit=8)}
    pathlib.Path(out_path).write_text(json.dumps(result, default=json_default))
    return 0


def json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def benchmark_environment(threads, base=None):
    """The children's environment: unfair OpenBLAS overrides removed, thread counts set.

    Returns
    -------
    env : dict
        The environment.
    removed : dict
        The variables removed and the values they had.
    """
    env = dict(os.environ if base is None else base)
    removed = {key: env.pop(key) for key in UNFAIR_VARIABLES if key in env}
    for key in THREAD_VARIABLES:
        env[key] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                             else []))
    return env, removed


def run_child(spec, *, threads, timeout_s, memory_limit_bytes=None):
    """Run one measurement in a fresh Python process; returns its result dict (never raises for a failure).

    Parameters
    ----------
    spec : dict
        The measurement (its "mode" picks the child function).
    threads : int
        Thread count set in the child's environment.
    timeout_s : float
        Wall-clock limit; a child past it is killed and recorded as "timeout".
    memory_limit_bytes : int or None
        Address-space limit of the child (RLIMIT_AS).
    """
    env, _ = benchmark_environment(threads)

    def limit_memory():
        if memory_limit_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit_bytes, memory_limit_bytes))

    with tempfile.TemporaryDirectory(prefix="mfkern-bench-") as tmp:
        out_path = pathlib.Path(tmp) / "result.json"
        command = [sys.executable, "-m", "bench.harness", "--child", json.dumps(spec), "--child-out",
                   str(out_path)]
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout_s, preexec_fn=limit_memory)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "note": f"killed after {timeout_s:.0f} s"}
        elapsed = time.perf_counter() - start
        if out_path.exists():
            result = json.loads(out_path.read_text())
        else:
            tail = (done.stderr or "").strip().splitlines()[-6:]
            how = (f"killed by signal {-done.returncode}" if done.returncode < 0
                   else f"exit status {done.returncode}")
            result = {"status": "crashed", "note": f"child process {how}: " + " | ".join(tail)}
        result["process_wall_s"] = elapsed
        return result


def torch_installed():
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def log(message):
    print(message, flush=True)


def finite(value):
    """JSON has no NaN/inf: replace them by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def write_json(path, document):
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(finite(document), indent=1, allow_nan=False, default=json_default))
    tmp.replace(path)


def default_memory_limit():
    from bench.machine import memory_info

    total = memory_info()["total_bytes"]
    return int(0.6 * total) if total else None


def main(argv=None):
    """The child's command line: ``python -m bench.harness --child SPEC --child-out PATH``."""
    parser = argparse.ArgumentParser(prog="python -m bench.harness", description="one benchmark measurement")
    parser.add_argument("--child", required=True, help="the measurement, as JSON")
    parser.add_argument("--child-out", required=True, help="where to write the result (JSON)")
    args = parser.parse_args(argv)
    return child_main(args.child, args.child_out)


if __name__ == "__main__":
    raise SystemExit(main())
