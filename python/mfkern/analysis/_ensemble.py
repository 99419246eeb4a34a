"""How a sweep's independent runs are executed: batched through one engine ensemble, or one run at a time.

Backends (the ``backend`` argument of the sweeps):

- ``"ensemble"`` (default): the runs not yet cached are advanced together, in this process, by
  :func:`mfkern.analysis._system.advance_ensemble` (:func:`mfkern.engine.run_ensemble`: n_jobs engines at a
  time on n_jobs threads, each single-threaded), in lockstep between the steps where they are measured, in
  batches of at most :data:`MAX_BATCH` runs, each cached as soon as it finishes (an interrupt or a failure
  loses at most the batch in progress). The measurements between those steps go through the same thread
  pool, but each core call holds the core's lock, so in effect they run one after another.
- ``"engine"``: every run is its own engine, advanced alone, the runs spread over n_jobs worker processes by
  :func:`mfkern.runner.execute`.
- ``"core_loop"``: as "engine", but every run steps by a Python loop of ``core.langevin_step`` calls (how the
  sweeps ran before the engine existed; kept to time the two).

The three give bitwise the same results (the engine's trajectory is that of ``core.langevin_step``, and an
ensemble leaves every engine where its own ``run(k)`` would have), and share one resume cache: a run's cache
key (:func:`mfkern.runner.run_key` of its spec) does not depend on the backend. What differs is the CPU time
recorded: a run of "engine" or "core_loop" records its own (``cpu_s``); the runs of one ensemble batch
record the batch's together (``batch_cpu_s``, the same ``batch_id``, and ``batch_size``), since their steps
share threads; :func:`cpu_total` counts each run's share of its batch.
"""
from __future__ import annotations

import functools
import json
import time

from .. import runner
from ._system import advance_ensemble

__all__ = ["BACKENDS", "advance_and_record", "check_backend", "execute_runs", "cpu_total", "thread_map",
           "step_bar"]

BACKENDS = ("ensemble", "engine", "core_loop")
#: Most runs advanced by one ensemble call between cache writes: enough to keep a few threads busy, few
#: enough that an interrupted or failing sweep loses little.
MAX_BATCH = 8


def check_backend(backend):
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def step_bar(total, desc, enabled):
    """A tqdm bar over `total` steps when enabled and tqdm is installed, else None."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return None
    return tqdm(total=total, desc=desc, leave=False)


def advance_and_record(systems, recorders, stops, *, n_threads, desc, progress):
    """Advance `systems` as one ensemble to each step of `stops` in turn (:func:`advance_ensemble`) and call
    ``recorder.record(step)`` for every recorder there (through :func:`thread_map`), with a progress bar over
    the steps. The systems must all be at the same step."""
    bar = step_bar(stops[-1], desc, progress)
    try:
        for step in stops:
            advance_ensemble(systems, step - systems[0].step, n_threads=n_threads)
            thread_map(lambda recorder: recorder.record(step), recorders, n_threads)  # noqa: B023  (used at once)
            if bar is not None:
                bar.update(step - bar.n)
    finally:
        if bar is not None:
            bar.close()


def thread_map(function, items, n_threads):
    """[function(item) for item in items] on up to n_threads threads (the core releases the GIL), in order."""
    items = list(items)
    if n_threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(n_threads, len(items))) as pool:
        return list(pool.map(function, items))


def execute_runs(run_one, run_batch, kind, specs, *, backend, n_jobs, cache, progress, desc, n_threads, version,
                 group_key):
    """The results (in spec order) of every spec: cached ones read back, the others run by `backend`.

    run_one(spec, n_threads, kind=...) runs one spec ("engine", "core_loop"); run_batch(specs, n_threads,
    progress) runs specs that share ``group_key(spec)`` as one ensemble ("ensemble").
    """
    backend = check_backend(backend)
    if backend != "ensemble":
        function = run_one if backend == "engine" else functools.partial(run_one, kind="core_loop")
        return runner.execute(function, kind, specs, n_jobs=n_jobs, cache=cache, progress=progress, desc=desc,
                              n_threads=n_threads, version=version)
    threads = runner.n_jobs_value(n_jobs)
    cache = runner.RunCache(None) if cache is None else cache
    keys = [runner.run_key(kind, spec, version) for spec in specs]
    todo = list({keys[i]: i for i in reversed(range(len(specs))) if keys[i] not in cache}.values())[::-1]
    groups = {}
    for i in todo:
        groups.setdefault(json.dumps(group_key(specs[i]), sort_keys=True), []).append(i)
    batches = [group[j:j + MAX_BATCH] for group in groups.values() for j in range(0, len(group), MAX_BATCH)]
    for batch in batches:
        started = time.process_time()  # all threads of this process: the ensemble's and the measurements'
        results = run_batch([specs[i] for i in batch], threads, progress=progress, desc=desc or kind)
        cpu = time.process_time() - started
        batch_id = runner.run_key(f"{kind}-batch", sorted(keys[i] for i in batch), version)[:16]
        for i, result in zip(batch, results):
            result = dict(result, cpu_s=None, batch_cpu_s=cpu, batch_id=batch_id, batch_size=len(batch))
            cache.put(keys[i], kind, specs[i], result)
    return [cache.get(key) for key in keys]


def cpu_total(results):
    """CPU seconds of these runs: their own where recorded, else their share of their ensemble batch's
    (batch_cpu_s / batch_size: a sweep that reuses part of a batch counts only that part); None when some
    run recorded neither."""
    total = 0.0
    for result in results:
        if result.get("cpu_s") is not None:
            total += result["cpu_s"]
        elif result.get("batch_cpu_s") is not None and result.get("batch_size"):
            total += result["batch_cpu_s"] / result["batch_size"]
        else:
            return None
    return float(total)
