"""Running the independent runs of a sweep: worker processes, progress, and the resume cache.

Every run is described by a JSON-ready dict (its "spec": the configuration, grid value, replicate and
derived seed). Its cache key is the SHA-256 of the canonical JSON of (kind, CACHE_VERSION, spec), so any
change of configuration, grid value, seed or code version gives a new key. Finished runs are appended, one
JSON object per line, to ``<out_dir>/discretization_runs.jsonl``; a later sweep with the same out_dir
reads them back and runs only what is missing. A line cut short by an interruption is ignored.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pathlib
from concurrent.futures import ProcessPoolExecutor, as_completed

from .._validation import integer

__all__ = ["CACHE_NAME", "CACHE_VERSION", "run_key", "RunCache", "execute", "n_jobs_value"]

CACHE_NAME = "discretization_runs.jsonl"
#: Bumped whenever a run's result changes meaning, so stale cached results are never reused.
CACHE_VERSION = 1


def run_key(kind, spec):
    """Cache key of one run: SHA-256 hex of the canonical JSON of (kind, CACHE_VERSION, spec)."""
    text = json.dumps({"kind": kind, "version": CACHE_VERSION, "spec": spec}, sort_keys=True,
                      separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class RunCache:
    """Results of finished runs, kept in a JSON-lines file (or only in memory when directory is None)."""

    def __init__(self, directory=None):
        self.path = None if directory is None else pathlib.Path(directory) / CACHE_NAME
        self._results = {}
        if self.path is not None and self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self._results[record["key"]] = record["result"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by an interruption: that run is simply redone

    def __contains__(self, key):
        return key in self._results

    def __len__(self):
        return len(self._results)

    def get(self, key):
        """The cached result of `key` (KeyError when absent)."""
        return self._results[key]

    def put(self, key, kind, spec, result):
        """Store a finished run, appending it to the file at once (so an interruption loses little)."""
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


def execute(function, kind, specs, *, n_jobs=1, cache=None, progress=False, desc=None, n_threads=None):
    """Run ``function(spec, n_threads)`` for every spec not already in `cache`; results in spec order.

    With n_jobs > 1 the runs go to a ProcessPoolExecutor (spawned workers: the OpenMP runtime is not
    fork-safe). Each run limits the core to `n_threads` threads (default 1, also with n_jobs=1); results
    never depend on the thread count. Results are cached as they finish.
    """
    cache = RunCache(None) if cache is None else cache
    # One core thread per run by default: the parallelism is over runs (n_jobs), and OpenMP's busy-waiting
    # threads slow down badly on a loaded machine (measured: 10x on 2 shared cores).
    threads = 1 if n_threads is None else n_threads
    keys = [run_key(kind, spec) for spec in specs]
    todo = [i for i, key in enumerate(keys) if key not in cache]
    # The same spec twice in one sweep (e.g. a repeated seed) is run once.
    todo = list({keys[i]: i for i in reversed(todo)}.values())[::-1]
    bar = _progress_bar(len(todo), desc or kind, progress and bool(todo))
    try:
        if n_jobs == 1 or len(todo) <= 1:
            for i in todo:
                cache.put(keys[i], kind, specs[i], function(specs[i], threads))
                if bar is not None:
                    bar.update()
        else:
            workers = min(n_jobs, len(todo))
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                futures = {pool.submit(function, specs[i], threads): i for i in todo}
                try:
                    for future in as_completed(futures):
                        i = futures[future]
                        cache.put(keys[i], kind, specs[i], future.result())
                        if bar is not None:
                            bar.update()
                except BaseException:
                    # A failed run (or Ctrl-C): do not start the queued ones; the finished ones are cached.
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        if bar is not None:
            bar.close()
    return [cache.get(key) for key in keys]
