"""Independent runs in parallel: seeds derived from keys, a resume cache, and joblib worker processes.

One layer for every module that runs many independent trainings (the discretisation analysis, the
reproductions, the sweeps):

- :func:`derive_seed` turns a base seed and a key (purpose, grid value, replicate, ...) into a uint64 seed;
  a run's seed depends only on its key, never on the other runs, their order or the number of workers.
- :class:`RunCache` keeps finished results in a JSON-lines file, so an interrupted sweep resumes where it
  stopped; :func:`run_key` names a run by the SHA-256 of its canonical JSON description.
- :func:`execute` runs what is not cached yet, in joblib's process backend (loky): fresh worker processes,
  safe with OpenMP, and usable from a plain script with no ``if __name__ == "__main__":`` guard.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import zlib

import numpy as np

from ._validation import integer, seed_value

__all__ = ["derive_seed", "run_key", "RunCache", "execute", "map_runs", "n_jobs_value"]


def derive_seed(base_seed, *key):
    """A uint64 seed derived from ``base_seed`` and a key of non-negative ints and/or strings.

    The seed is two 32-bit words (``lo | hi << 32``) of ``numpy.random.SeedSequence(base_seed,
    spawn_key=key)`` (strings enter as their CRC-32), numpy's documented way to make independent streams.
    Different keys give independent seeds; the same key gives the same seed on every machine.
    """
    base_seed = seed_value(base_seed, "base_seed")
    words = []
    for k in key:
        if isinstance(k, str):
            words.append(zlib.crc32(k.encode()))
        else:
            words.append(integer(k, "key", minimum=0))
    lo, hi = np.random.SeedSequence(base_seed, spawn_key=tuple(words)).generate_state(2, dtype=np.uint32)
    return int(lo) | (int(hi) << 32)


def run_key(kind, spec, version=1):
    """Cache key of one run: SHA-256 hex of the canonical JSON of (kind, version, spec)."""
    text = json.dumps({"kind": kind, "version": version, "spec": spec}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RunCache:
    """Results of finished runs, in a JSON-lines file ``directory/name`` (or only in memory when directory
    is None). A line cut short by an interruption is ignored: that run is simply redone."""

    def __init__(self, directory=None, name="runs.jsonl"):
        self.path = None if directory is None else pathlib.Path(directory) / name
        self._results = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self._results[record["key"]] = record["result"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue

    def __contains__(self, key):
        return key in self._results

    def __len__(self):
        return len(self._results)

    def get(self, key):
        """The cached result of `key` (KeyError when absent)."""
        return self._results[key]

    def put(self, key, kind, spec, result):
        """Store a finished run, appending it to the file at once (an interruption loses little)."""
        self._results[key] = result
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = json.dumps({"key": key, "kind": kind, "spec": spec, "result": result}, sort_keys=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")


def n_jobs_value(n_jobs):
    """A positive number of worker processes; -1 means one per CPU."""
    n_jobs = integer(n_jobs, "n_jobs")
    if n_jobs == -1:
        return os.cpu_count() or 1
    if n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive integer or -1 (one per CPU), got {n_jobs}")
    return n_jobs


def _progress_bar(total, desc, enabled):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: no progress bar without it
        return None
    return tqdm(total=total, desc=desc, leave=False)


def _indexed(function, index, args):
    return index, function(*args)


def execute(function, kind, specs, *, n_jobs=1, cache=None, progress=False, desc=None, n_threads=None,
            version=1):
    """Run ``function(spec, n_threads)`` for every spec not already in `cache`; results in spec order.

    With n_jobs > 1 the runs go to joblib's process backend (fresh worker processes). Each run limits the
    core to `n_threads` threads (default 1: the parallelism is over runs, and OpenMP's busy-waiting threads
    slow down badly on an oversubscribed machine); results never depend on the thread count. Results are
    cached as they finish; a failure or Ctrl-C keeps the finished ones. The same spec twice runs once.
    `function` must be importable by the workers (a module-level function).
    """
    n_jobs = n_jobs_value(n_jobs)
    cache = RunCache(None) if cache is None else cache
    threads = 1 if n_threads is None else n_threads
    keys = [run_key(kind, spec, version) for spec in specs]
    todo = list({keys[i]: i for i in reversed(range(len(specs))) if keys[i] not in cache}.values())[::-1]
    bar = _progress_bar(len(todo), desc or kind, progress and bool(todo))
    try:
        if n_jobs == 1 or len(todo) <= 1:
            for i in todo:
                cache.put(keys[i], kind, specs[i], function(specs[i], threads))
                if bar is not None:
                    bar.update()
        else:
            from joblib import Parallel, delayed

            parallel = Parallel(n_jobs=min(n_jobs, len(todo)), backend="loky", return_as="generator_unordered")
            for i, result in parallel(delayed(_indexed)(function, i, (specs[i], threads)) for i in todo):
                cache.put(keys[i], kind, specs[i], result)
                if bar is not None:
                    bar.update()
    finally:
        if bar is not None:
            bar.close()
    return [cache.get(key) for key in keys]


def _call_with_kwargs(function, kwargs):
    return function(**kwargs)


def map_runs(function, kwargs_list, n_jobs=1):
    """``[function(**kw) for kw in kwargs_list]``, in joblib worker processes when n_jobs > 1 (results in
    order). For runs that need no cache; `function` must be a module-level function."""
    n_jobs = n_jobs_value(n_jobs)
    kwargs_list = list(kwargs_list)
    if n_jobs == 1 or len(kwargs_list) <= 1:
        return [function(**kw) for kw in kwargs_list]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(n_jobs, len(kwargs_list)), backend="loky")(
        delayed(_call_with_kwargs)(function, kw) for kw in kwargs_list)
