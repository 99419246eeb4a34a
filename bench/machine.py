"""A description of the machine and software a benchmark ran on (recorded with every result)."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import platform
import subprocess
import sys

__all__ = ["cpu_info", "memory_info", "library_versions", "blas_info", "git_info", "describe", "summary_line"]

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARIES = ("numpy", "scipy", "threadpoolctl", "torch", "matplotlib", "mfkern")
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512vl", "avx512_bf16", "amx_tile")


def _read(path):
    try:
        return pathlib.Path(path).read_text()
    except OSError:
        return ""


def cpu_info(cpuinfo_text=None):
    """CPU model, logical/physical/usable cores and the vector ISA flags, from /proc/cpuinfo.

    Parameters
    ----------
    cpuinfo_text : str or None
        The text of /proc/cpuinfo (read from the system when None).

    Returns
    -------
    dict
    """
    text = _read("/proc/cpuinfo") if cpuinfo_text is None else cpuinfo_text
    model, flags, cores = None, set(), set()
    physical_id = core_id = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key == "flags" and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
        elif not key and physical_id is not None and core_id is not None:
            cores.add((physical_id, core_id))
            physical_id = core_id = None
    if physical_id is not None and core_id is not None:
        cores.add((physical_id, core_id))
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {
        "model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": usable,
        "isa_flags": [flag for flag in ISA_FLAGS if flag in flags],
        "machine": platform.machine(),
    }


def memory_info():
    """Total and available memory in bytes, from /proc/meminfo (None where unknown)."""
    values = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) * 1024
    return {"total_bytes": values.get("MemTotal"), "available_bytes": values.get("MemAvailable")}


def library_versions():
    """Python and the installed versions of the libraries benchmarked (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def blas_info():
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries (after importing numpy, scipy and mfkern)."""
    import numpy  # noqa: F401  (load the libraries threadpoolctl should see)
    import scipy.linalg  # noqa: F401
    import threadpoolctl

    import mfkern.core  # noqa: F401

    return threadpoolctl.threadpool_info()


def git_info():
    """The repository's commit and whether the working tree has changes (read-only git calls)."""
    def git(*args):
        try:
            done = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "modified": None if status is None else bool(status)}


def describe():
    """Everything recorded about the machine: CPU, memory, load, BLAS, versions, mfkern's ISA, git state.

    Returns
    -------
    dict
        JSON-serialisable.
    """
    from mfkern import _core

    isa = getattr(_core, "activation_isa", None)  # the vectorised kernels chosen at run time
    try:
        load = list(os.getloadavg())
    except OSError:
        load = None
    return {
        "recorded_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu": cpu_info(),
        "memory": memory_info(),
        "load_average": load,
        "libraries": library_versions(),
        "mfkern_activation_isa": isa() if callable(isa) else isa,
        "blas": blas_info(),
        "thread_environment": {key: os.environ.get(key) for key in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE")},
        "git": git_info(),
        "executable": sys.executable,
    }


def summary_line(machine):
    """One line for reports: CPU, cores, memory, BLAS kernels, mfkern's ISA."""
    cpu, memory = machine["cpu"], machine["memory"]
    kernels = sorted({f"{entry.get('internal_api')} {entry.get('version')} ({entry.get('architecture')})"
                      for entry in machine.get("blas", []) if entry.get("user_api") == "blas"})
    total = memory.get("total_bytes")
    total_text = f"{total / 2**30:.1f} GiB" if total else "memory unknown"
    return (f"{cpu['model']}, {cpu['usable_cores']} usable cores ({cpu['physical_cores']} physical), "
            f"{total_text}; BLAS: {', '.join(kernels) or 'unknown'}; "
            f"mfkern kernels: {machine.get('mfkern_activation_isa')}")
