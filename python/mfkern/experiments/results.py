"""Result files of the experiments: metadata (commit, machine, versions), JSON, markdown, figures."""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

__all__ = ["metadata", "write_json", "markdown_table", "pyplot", "write_outputs", "git_commit"]


def git_commit():
    """The commit of the source tree the package was imported from (None outside a git checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def metadata():
    """Versions, commit and machine facts recorded in every result file."""
    import numpy
    import scipy
    import sklearn

    from .. import __version__

    versions = dict(mfkern=__version__, python=sys.version.split()[0], numpy=numpy.__version__,
                    scipy=scipy.__version__, sklearn=sklearn.__version__)
    cpu = platform.processor() or None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(versions=versions, commit=git_commit(), platform=platform.platform(), machine=platform.machine(),
                cpu=cpu, cpu_count=os.cpu_count(), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                argv=list(sys.argv))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path, payload):
    """Write `payload` (numpy values allowed; NaN/inf become null) as indented JSON, atomically."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(payload), fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def markdown_table(headers, rows):
    """A GitHub markdown table; floats are written with 4 significant digits."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "nan" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (figures are only saved)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the experiments' figures need matplotlib: pip install 'mfkern[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def write_outputs(out_dir, name, results, markdown):
    """Write ``<name>.json`` and ``<name>.md`` into out_dir; adds their paths to results['files']."""
    md_path = os.path.join(out_dir, f"{name}.md")
    json_path = os.path.join(out_dir, f"{name}.json")
    results["files"] = [json_path, md_path] + [f for f in results.get("files", []) if f not in (json_path, md_path)]
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(markdown.rstrip() + "\n")
    write_json(json_path, results)
    return results["files"]
