"""Sweeps: sets of independent runs, fanned out to processes, a cluster's job array, joblib or Dask.

A sweep is a list of :class:`RunConfig` -- small, frozen, picklable objects holding the estimator
parameters, a description of the data, and ``(base_seed, run_index)``, from which the run's seeds are
derived (:func:`derive_seed`). A run is ``function(config) -> dict of JSON numbers`` (default:
:func:`fit_and_score`). Every finished run becomes one *record*, a line of a JSON-lines results file::

    {"sweep": ..., "run_index": ..., "key": ..., "seed": ..., "config": {...}, "result": {...},
     "timing": {"seconds": ..., "finished_at": ..., "host": ..., "pid": ...}}

``key`` is the SHA-256 of the config's canonical JSON, so results files written by different jobs,
machines or backends merge (:func:`merge_results`): records of the same run (same key) are kept once;
two different configs claiming the same (sweep, run_index) are an error. ``result`` never depends on the
backend, the number of workers or the machine's thread count (the core is deterministic), so re-running
a run anywhere gives the same result; only ``timing`` differs.

Fan-out (all return the records in config order, and append them to ``out`` when given, skipping runs
already recorded there, so an interrupted sweep resumes):

* :func:`run_sweep` with ``backend="serial"``, ``"joblib"`` (loky worker processes), ``"futures"`` (a
  ``concurrent.futures`` executor you pass: ProcessPoolExecutor, ``dask.distributed.Client.get_executor()``,
  ``mpi4py.futures.MPIPoolExecutor``) or ``"dask"`` (a ``dask.distributed.Client``);
* :func:`run_job_array_task` for one task of a SLURM/PBS job array (each task writes its own file; merge
  them at the end).

Each run uses ``n_threads=1`` unless its params say otherwise: the parallelism is over runs, and
oversubscribed OpenMP threads slow everything down. See docs/distributed.md.
"""
from __future__ import annotations

import dataclasses
import datetime
import glob
import hashlib
import itertools
import json
import math
import numbers
import os
import pathlib
import socket
import time
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import runner
from ._validation import integer, seed_value

__all__ = [
    "RunConfig",
    "derive_seed",
    "make_sweep",
    "make_data",
    "fit_and_score",
    "execute_run",
    "run_sweep",
    "run_job_array_task",
    "job_array_index",
    "read_results",
    "write_results",
    "merge_results",
    "results_table",
    "RECORD_VERSION",
    "BACKENDS",
]

#: Bumped when the meaning of a record changes; part of every key, so old and new records never mix.
RECORD_VERSION = 1
#: Seed streams of one run (the spawn key's second entry).
MODEL_STREAM, DATA_STREAM = 0, 1
# Environment variables holding the task index of a job array, with what to subtract for a 0-based index:
# SLURM and PBS arrays can start at 0 (used as given); SGE and LSF task ids start at 1.
_ARRAY_VARIABLES = (("SLURM_ARRAY_TASK_ID", 0), ("PBS_ARRAY_INDEX", 0), ("PBS_ARRAYID", 0), ("SGE_TASK_ID", 1),
                    ("LSB_JOBINDEX", 1))
BACKENDS = ("serial", "joblib", "futures", "dask")


def derive_seed(base_seed, run_index, stream=MODEL_STREAM):
    """The uint64 seed of run `run_index` of a sweep with `base_seed` (``stream`` 0: model, 1: data).

    The seed sequence is ``SeedSequence(base_seed, spawn_key=(run_index, stream))``, i.e. the child
    ``SeedSequence(base_seed).spawn(run_index + 1)[run_index].spawn(stream + 1)[stream]`` -- numpy's
    documented way to make independent streams -- reduced to 64 bits: two 32-bit words ``lo | hi << 32`` of
    its state. This is :func:`mfkern.runner.derive_seed` with the key (run_index, stream). It depends only on
    (base_seed, run_index, stream): not on the other runs, the order runs finish in, the backend or the
    machine.
    """
    run_index = integer(run_index, "run_index", minimum=0)
    stream = integer(stream, "stream", minimum=0)
    return runner.derive_seed(base_seed, run_index, stream)


def _json_value(value, name, finite=True):
    """A JSON scalar (or a list of them, as a tuple) for a config field (finite numbers only) or a result
    (NaN and infinities allowed: Python's json reads them back); TypeError otherwise."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if finite and not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_json_value(v, f"{name}[{i}]", finite) for i, v in enumerate(value))
    raise TypeError(f"{name} must be a number, str, bool, None or a list of them (JSON data), "
                    f"got {type(value).__name__}")


def _frozen_mapping(mapping, name):
    if mapping is None:
        return ()
    if isinstance(mapping, tuple):  # already frozen (from dataclasses.replace or pickling)
        mapping = dict(mapping)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a mapping of names to JSON values, got {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, got {key!r}")
    return tuple(sorted((key, _json_value(value, f"{name}[{key!r}]")) for key, value in mapping.items()))


def _thaw(value):
    return list(value) if isinstance(value, tuple) else value


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One run of a sweep: picklable, hashable, JSON-ready, with seeds derived from (base_seed, run_index).

    Parameters
    ----------
    sweep : str
        Name of the sweep (records of different sweeps can live in one results file).
    run_index : int
        Index of the run in its sweep (>= 0).
    base_seed : int
        Base seed of the sweep, in [0, 2**64).
    params : mapping, optional
        Estimator parameters (``MeanFieldRegressor(**params)`` for :func:`fit_and_score`), JSON values.
    data : mapping, optional
        Description of the data (:func:`make_data` for :func:`fit_and_score`), JSON values.

    Mappings are stored as sorted tuples of (name, value) pairs (frozen); read them with
    :attr:`param_dict` and :attr:`data_dict`.
    """

    sweep: str
    run_index: int
    base_seed: int
    params: Any = ()
    data: Any = ()

    def __post_init__(self):
        if not isinstance(self.sweep, str) or not self.sweep:
            raise TypeError(f"sweep must be a non-empty str, got {self.sweep!r}")
        object.__setattr__(self, "run_index", integer(self.run_index, "run_index", minimum=0))
        object.__setattr__(self, "base_seed", seed_value(self.base_seed, "base_seed"))
        object.__setattr__(self, "params", _frozen_mapping(self.params, "params"))
        object.__setattr__(self, "data", _frozen_mapping(self.data, "data"))
        if "random_state" in dict(self.params):
            raise ValueError("params must not set random_state: the seed is derived from (base_seed, run_index)")

    @property
    def seed(self):
        """The model seed, ``derive_seed(base_seed, run_index)``."""
        return derive_seed(self.base_seed, self.run_index, MODEL_STREAM)

    @property
    def data_seed(self):
        """The data seed: ``data["seed"]`` when given (the same data for every run), else
        ``derive_seed(base_seed, run_index, stream=1)``."""
        given = dict(self.data).get("seed")
        return seed_value(given, "data['seed']") if given is not None else \
            derive_seed(self.base_seed, self.run_index, DATA_STREAM)

    @property
    def param_dict(self):
        """The estimator parameters as a dict."""
        return {key: _thaw(value) for key, value in self.params}

    @property
    def data_dict(self):
        """The data description as a dict."""
        return {key: _thaw(value) for key, value in self.data}

    def to_dict(self):
        """JSON-ready dict; ``RunConfig.from_dict(c.to_dict()) == c``."""
        return {"sweep": self.sweep, "run_index": self.run_index, "base_seed": self.base_seed,
                "params": self.param_dict, "data": self.data_dict}

    @classmethod
    def from_dict(cls, mapping):
        """The config of a :meth:`to_dict` dict (e.g. a record's ``"config"``)."""
        return cls(sweep=mapping["sweep"], run_index=mapping["run_index"], base_seed=mapping["base_seed"],
                   params=mapping.get("params") or {}, data=mapping.get("data") or {})

    @property
    def key(self):
        """SHA-256 hex of the canonical JSON of the config and :data:`RECORD_VERSION`."""
        text = json.dumps({"version": RECORD_VERSION, "config": self.to_dict()}, sort_keys=True,
                          separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def make_sweep(name, grid=None, *, base_seed, repeats=1, data=None, fixed=None, start_index=0):
    """The configs of a sweep: every grid point times `repeats`, numbered from `start_index`.

    Parameters
    ----------
    name : str
    grid : mapping of name -> list, or list of mappings, optional
        A mapping gives the cartesian product of its lists (in the order given, last name fastest); a list
        gives its points as they are. None: one point.
    base_seed : int
    repeats : int, default=1
        Runs per grid point (each with its own seed).
    data : mapping, optional
        Data description shared by every run.
    fixed : mapping, optional
        Estimator parameters shared by every run (grid values override them).
    start_index : int, default=0
        First run index. Seeds depend on the run index: to extend a sweep without changing the seeds of
        its existing runs, add the new points in a second call starting after the last index.

    Returns
    -------
    list of RunConfig
    """
    repeats = integer(repeats, "repeats", minimum=1)
    start_index = integer(start_index, "start_index", minimum=0)
    if grid is None:
        points = [{}]
    elif isinstance(grid, Mapping):
        names = list(grid)
        for key in names:
            if isinstance(grid[key], (str, bytes)) or not isinstance(grid[key], Iterable):
                raise TypeError(f"grid[{key!r}] must be a list of values, got {type(grid[key]).__name__}")
        points = [dict(zip(names, values)) for values in itertools.product(*(list(grid[k]) for k in names))]
    elif isinstance(grid, Sequence) and not isinstance(grid, (str, bytes)):
        points = [dict(point) for point in grid]
    else:
        raise TypeError(f"grid must be a mapping of lists, a list of mappings or None, got {type(grid).__name__}")
    configs = []
    for point in points:
        for _ in range(repeats):
            configs.append(RunConfig(sweep=name, run_index=start_index + len(configs), base_seed=base_seed,
                                     params={**(fixed or {}), **point}, data=data))
    return configs


# ---------------------------------------------------------------------------------------------- a default run
def make_data(kind="single_index", n=200, n_test=200, d=5, noise=0.0, seed=0):
    """A synthetic regression problem: (X, y, X_test, y_test), inputs N(0, I_d / d)-scaled so u.x = O(1).

    kind "single_index": y = tanh(2 sqrt(d) x_1) (a single relevant direction, docs/theory.md, section 11);
    "product": y = d x_1 x_2. Training targets get Gaussian noise of standard deviation `noise`.
    """
    n = integer(n, "n", minimum=1)
    n_test = integer(n_test, "n_test", minimum=1)
    d = integer(d, "d", minimum=2)
    rng = np.random.default_rng(seed_value(seed, "seed"))
    X = rng.standard_normal((n + n_test, d)) / math.sqrt(d)
    if kind == "single_index":
        y = np.tanh(2 * math.sqrt(d) * X[:, 0])
    elif kind == "product":
        y = d * X[:, 0] * X[:, 1]
    else:
        raise ValueError(f"kind must be 'single_index' or 'product', got {kind!r}")
    y_train = y[:n] + float(noise) * rng.standard_normal(n)
    return X[:n], y_train, X[n:], y[n:]


def fit_and_score(config):
    """The default run: fit ``MeanFieldRegressor(random_state=config.seed, n_threads=1, **config.params)`` on
    ``make_data(**config.data, seed=config.data_seed)`` and return its scores.

    Returns
    -------
    dict
        train_mse, test_mse, and the last logged U, G, dof and kernel_alignment, n_steps_done.
    """
    from .estimator import MeanFieldRegressor

    data = {key: value for key, value in config.data_dict.items() if key != "seed"}
    X, y, X_test, y_test = make_data(**data, seed=config.data_seed)
    params = {"n_threads": 1, **config.param_dict}
    model = MeanFieldRegressor(random_state=config.seed, **params).fit(X, y)
    last = {key: values[-1] for key, values in model.history_.items()}
    return {"train_mse": float(np.mean((model.predict(X) - y) ** 2)),
            "test_mse": float(np.mean((model.predict(X_test) - y_test) ** 2)),
            "U": last["U"], "G": last["G"], "dof": last["dof"], "kernel_alignment": last["kernel_alignment"],
            "n_steps_done": int(model.n_steps_done_)}


def execute_run(function, config):
    """Run ``function(config)`` and wrap its result as a record (module-level, so workers can unpickle it).

    The result must be a mapping of names to JSON values (numbers, str, bool, None, lists).
    """
    started = time.perf_counter()
    result = function(config)
    seconds = time.perf_counter() - started
    if not isinstance(result, Mapping):
        raise TypeError(f"the run function must return a mapping of JSON values, got {type(result).__name__}")
    result = {str(key): _thaw(_json_value(value, f"result[{key!r}]", finite=False)) for key, value in result.items()}
    return {"sweep": config.sweep, "run_index": config.run_index, "key": config.key, "seed": config.seed,
            "config": config.to_dict(), "result": result,
            "timing": {"seconds": seconds, "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                       "host": socket.gethostname(), "pid": os.getpid()}}


# ---------------------------------------------------------------------------------------------- results files
def read_results(path):
    """Records of a JSON-lines results file.

    A last line cut short (a job killed while writing: no final newline) is skipped; any other unreadable
    line raises ValueError naming the file and line.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    lines = text.split("\n")
    records = []
    # Records are written with a trailing newline, so only a final segment without one can be a cut record.
    last = len(lines) - 1 if lines[-1].strip() else -1
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "key" not in record or "config" not in record:
                raise ValueError("not a results record")
        except ValueError as exc:
            if number == last:
                continue  # truncated by an interruption: that run is simply redone
            raise ValueError(f"{path}:{number + 1}: not a results record ({exc})") from None
        records.append(record)
    return records


def write_results(path, records):
    """Write `records` as a JSON-lines file atomically (temporary file, fsync, rename)."""
    from .checkpoint import fsync_directory

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True, allow_nan=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_directory(str(path.parent))


def _append(path, record):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True, allow_nan=True) + "\n")
        handle.flush()


def merge_results(sources, out=None):
    """Merge results files (paths, glob patterns, or lists of records) into one list of records.

    Records of the same run (same key) are kept once (the first seen); two records claiming the same
    (sweep, run_index) with different configs raise ValueError (two different sweeps under one name). The
    result is sorted by (sweep, run_index); with `out`, it is also written there atomically.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    merged, claimed = {}, {}
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            matches = sorted(glob.glob(os.fspath(source))) if glob.has_magic(os.fspath(source)) else [source]
            batches = [read_results(match) for match in matches]
        else:
            batches = [list(source)]
        for records in batches:
            for record in records:
                slot = (record["sweep"], record["run_index"])
                if slot in claimed and claimed[slot] != record["key"]:
                    raise ValueError(f"run {slot[1]} of sweep {slot[0]!r} appears with two different configs "
                                     f"(keys {claimed[slot][:12]}... and {record['key'][:12]}...): results of "
                                     "different sweeps under one name cannot be merged")
                claimed[slot] = record["key"]
                merged.setdefault(record["key"], record)
    records = sorted(merged.values(), key=lambda r: (r["sweep"], r["run_index"]))
    if out is not None:
        write_results(out, records)
    return records


def results_table(records):
    """Columns (a dict of equally long lists) for ``pandas.DataFrame``: sweep, run_index, seed, every
    param as ``param.<name>``, every data field as ``data.<name>``, every result, and ``seconds``."""
    rows = []
    for record in records:
        row = {"sweep": record["sweep"], "run_index": record["run_index"], "seed": record["seed"]}
        row.update({f"param.{k}": v for k, v in record["config"].get("params", {}).items()})
        row.update({f"data.{k}": v for k, v in record["config"].get("data", {}).items()})
        row.update(record["result"])
        row["seconds"] = record.get("timing", {}).get("seconds")
        rows.append(row)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return {name: [row.get(name) for row in rows] for name in names}


# ---------------------------------------------------------------------------------------------- fan-out
def _check_configs(configs):
    configs = list(configs)
    for i, config in enumerate(configs):
        if not isinstance(config, RunConfig):
            raise TypeError(f"configs[{i}] must be a RunConfig, got {type(config).__name__}")
    return configs


def run_sweep(configs, function=fit_and_score, *, backend="serial", n_jobs=-1, executor=None, client=None,
              out=None, resume=True):
    """Run every config (``function(config)``) and return the records in config order.

    Parameters
    ----------
    configs : list of RunConfig
    function : callable, default=fit_and_score
        A module-level function (workers unpickle it by name) returning a mapping of JSON values.
    backend : {"serial", "joblib", "futures", "dask"}
        "joblib": :func:`mfkern.runner.map_runs` (joblib's loky worker processes); "futures": `executor`, any
        ``concurrent.futures.Executor`` (use a spawn context for a ProcessPoolExecutor: the OpenMP runtime is
        not fork-safe); "dask": `client`, a ``dask.distributed.Client``.
    n_jobs : int, default=-1
        Workers for the joblib backend (a positive number, or -1: one per CPU).
    out : path, optional
        Results file: finished runs are appended as they arrive (serial, futures, dask) or at the end
        (joblib), and with ``resume`` runs already recorded there are not run again.

    Returns
    -------
    list of dict
        One record per config (see the module docstring).
    """
    configs = _check_configs(configs)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    done = {}
    if out is not None and resume and os.path.exists(out):
        done = {record["key"]: record for record in read_results(out)}
    todo = [c for c in dict.fromkeys(configs) if c.key not in done]

    def finished(record):
        done[record["key"]] = record
        if out is not None and backend != "joblib":
            _append(out, record)

    if backend == "serial":
        for config in todo:
            finished(execute_run(function, config))
    elif backend == "joblib":
        for record in runner.map_runs(execute_run, [dict(function=function, config=c) for c in todo], n_jobs=n_jobs):
            done[record["key"]] = record
        if out is not None:
            for config in todo:
                _append(out, done[config.key])
    elif backend == "futures":
        if executor is None:
            raise ValueError('backend="futures" needs an executor (a concurrent.futures.Executor)')
        from concurrent.futures import as_completed

        futures = [executor.submit(execute_run, function, config) for config in todo]
        try:
            for future in as_completed(futures):
                finished(future.result())
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    else:  # dask
        if client is None:
            raise ValueError('backend="dask" needs a dask.distributed Client')
        from dask.distributed import as_completed

        futures = [client.submit(execute_run, function, config, pure=False) for config in todo]
        try:
            for future in as_completed(futures):
                finished(future.result())
        except BaseException:
            client.cancel(futures)
            raise
    return [done[config.key] for config in configs]


def job_array_index(environ=None):
    """The 0-based task index of a job array from the environment, or None outside a job array.

    The first set of SLURM_ARRAY_TASK_ID, PBS_ARRAY_INDEX, PBS_ARRAYID (used as given: start those arrays
    at 0, e.g. ``sbatch --array=0-9``), SGE_TASK_ID, LSB_JOBINDEX (1-based by design: 1 is subtracted).
    """
    environ = os.environ if environ is None else environ
    for name, offset in _ARRAY_VARIABLES:
        value = environ.get(name)
        if value not in (None, "", "undefined"):
            try:
                index = int(value) - offset
            except ValueError:
                raise ValueError(f"{name}={value!r} is not an integer task index") from None
            if index < 0:
                raise ValueError(f"{name}={value!r} gives a negative task index")
            return index
    return None


def run_job_array_task(configs, out_dir, function=fit_and_score, *, index=None, task_count=None):
    """Run this job-array task's share of a sweep and write its records to ``out_dir/<sweep>-task<index>.jsonl``.

    Parameters
    ----------
    configs : list of RunConfig
        The whole sweep (every task builds the same list).
    out_dir : path
    index : int, optional
        This task's index (default: :func:`job_array_index`, e.g. ``sbatch --array=0-99``).
    task_count : int, optional
        Number of tasks. None: one run per task (task i runs configs[i]); else task i runs configs[i],
        configs[i + task_count], ...

    Returns
    -------
    list of dict
        The records of this task (runs already in its file are not run again).
    """
    configs = _check_configs(configs)
    if index is None:
        index = job_array_index()
        if index is None:
            raise ValueError("no task index: pass index= or run inside a job array (SLURM_ARRAY_TASK_ID, ...)")
    index = integer(index, "index", minimum=0)
    if task_count is None:
        if index >= len(configs):
            raise ValueError(f"index {index} is past the {len(configs)} runs of the sweep")
        mine = [configs[index]]
    else:
        task_count = integer(task_count, "task_count", minimum=1)
        if index >= task_count:
            raise ValueError(f"index must be < task_count={task_count}, got {index}")
        mine = configs[index::task_count]
    sweep = mine[0].sweep if mine else "sweep"
    out = pathlib.Path(out_dir) / f"{sweep}-task{index:05d}.jsonl"
    return run_sweep(mine, function, backend="serial", out=out) if mine else []
