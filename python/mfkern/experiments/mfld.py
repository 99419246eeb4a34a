"""The units of work of the experiments, as the runner executes them (cached, parallel, resumable).

* :func:`mfld_job` trains :class:`mfkern.MeanFieldRegressor` on a task and records, at every logged step, the
  test MSE against the clean target, the in-sample kernel alignment of the training Gram with the clean
  target f(X_train), the population alignment estimated on fresh points (:func:`tasks.population_alignment`),
  the degrees of freedom and the parameter alignment with the relevant subspace.
* :func:`baseline_job` tunes and tests one fixed-kernel baseline of :mod:`mfkern.experiments.baselines` on
  the same task (same seed: same data).
* :func:`run_jobs` runs specs through :func:`mfkern.runner.execute` with a JSON-lines cache.
* :func:`tune` chooses among MFLD configurations on tuning seeds (docs/protocol.md).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from .. import core
from ..runner import RunCache, derive_seed, execute
from .tasks import initial_particles, make_task, population_alignment, subspace_alignment

__all__ = ["MFLDConfig", "PAPER_SETTING", "config_dict", "mfld_job", "baseline_job", "job", "run_jobs", "tune",
           "open_cache", "JOB_VERSION"]

#: Bump when a job's result for the same spec changes (old cache lines are then ignored).
JOB_VERSION = 2


@dataclass
class MFLDConfig:
    """Hyper-parameters of one MFLD run. ``input_scale`` multiplies the inputs the network sees."""

    n_particles: int = 2000
    n_steps: int = 10000
    lam: float = 0.004
    lam_a: float = 0.25
    lam_w: float = 0.25
    eta: float = 0.2
    label_noise: float = 0.0
    input_scale: float = 1.0
    log_every: int = 100
    activation: str = "tanh"

    def as_dict(self):
        return dict(self.__dict__)


#: The paper's hyper-parameters (docs/theory.md, section 11) on raw inputs.
PAPER_SETTING = dict(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, input_scale=1.0)


def config_dict(**values):
    """A full MFLD configuration as a plain dict (unknown keys raise TypeError)."""
    return MFLDConfig(**values).as_dict()


def open_cache(cache_dir, name):
    """The run cache ``cache_dir/name.jsonl`` (in memory only when cache_dir is None)."""
    return RunCache(cache_dir, f"{name}.jsonl") if cache_dir is not None else RunCache(None)


def run_jobs(function, kind, specs, *, cache, n_jobs=1, progress=False, n_threads=None):
    """:func:`mfkern.runner.execute` with this module's job version (results never depend on n_threads)."""
    return execute(function, kind, specs, n_jobs=n_jobs, cache=cache, progress=progress, version=JOB_VERSION,
                   n_threads=n_threads)


def _mse(pred, truth):
    return float(np.mean((np.asarray(pred) - np.asarray(truth)) ** 2))


def mfld_job(spec, n_threads=1):
    """Train MFLD on ``make_task(**spec["task"])`` with ``spec["config"]`` and ``random_state=spec["seed"]``.

    ``spec["n_fresh"]`` test points (default 1000) give the population alignment. Returns a JSON-ready dict
    with ``history`` (lists over logged steps), ``initial``, ``final`` and ``wall_time``.
    """
    from ..estimator import MeanFieldRegressor

    task = make_task(**spec["task"])
    config = MFLDConfig(**spec["config"])
    n_fresh = min(int(spec.get("n_fresh", 1000)), task.X_test.shape[0])
    X, X_test = task.X * config.input_scale, task.X_test * config.input_scale
    X_fresh, f_fresh = X_test[:n_fresh], task.f_test[:n_fresh]
    extra = dict(step=[], parameter_alignment=[], kernel_alignment=[], population_alignment=[])

    def record(est, step, diag):
        W = est.particles_
        extra["step"].append(int(step))
        extra["parameter_alignment"].append(subspace_alignment(W, task.subspace))
        K = core.gram(W, X, activation=config.activation, n_threads=n_threads)
        extra["kernel_alignment"].append(core.kernel_alignment(K, task.f_train))
        if n_fresh >= 2:
            K_fresh = core.gram(W, X_fresh, activation=config.activation, n_threads=n_threads)
            extra["population_alignment"].append(population_alignment(K_fresh, f_fresh))
        return False

    est = MeanFieldRegressor(n_particles=config.n_particles, lam=config.lam, lam_a=config.lam_a,
                             lam_w=config.lam_w, eta=config.eta, n_steps=config.n_steps,
                             activation=config.activation, label_noise=config.label_noise,
                             random_state=int(spec["seed"]), n_threads=n_threads, log_every=config.log_every,
                             callbacks=[record], input_scale=1.0)  # X is scaled by the experiment itself
    t0 = time.perf_counter()
    est.fit(X, task.y, X_val=X_test, y_val=task.f_test)
    wall = time.perf_counter() - t0
    h = est.history_
    if list(h["step"]) != extra["step"]:
        raise RuntimeError("history steps and callback steps differ")
    history = dict(step=[int(s) for s in h["step"]], test_mse=[float(v) for v in h["val_mse"]],
                   train_mse=[float(v) for v in h["train_mse"]], dof=[float(v) for v in h["dof"]],
                   parameter_alignment=extra["parameter_alignment"], kernel_alignment=extra["kernel_alignment"],
                   population_alignment=extra["population_alignment"])
    history = {k: v for k, v in history.items() if v}
    return dict(history=history, initial={k: v[0] for k, v in history.items()},
                final={k: v[-1] for k, v in history.items()}, wall_time=wall,
                zero_predictor_mse=float(np.mean(task.f_test ** 2)))


def baseline_job(spec, n_threads=1):
    """Tune and test baseline ``spec["baseline"]`` on ``make_task(**spec["task"])``.

    ``spec["particles"]``: dict(n_particles, lam_w, input_scale, seed, activation) of the MFLD run it is
    paired with (its initial particles are the finite initial kernel; random features use rf_factor times
    as many fresh particles from the same prior, seeded from `seed`). ``spec["n_folds"]``: CV folds.
    Returns test_mse (regression) or test_accuracy (classification) and the search report.
    """
    from .baselines import CLASSIFICATION, fit_baseline

    task = make_task(**spec["task"])
    name = spec["baseline"]
    p = spec["particles"]
    scale = float(p["input_scale"])
    d = task.X.shape[1]
    W0 = W_random = None
    X, X_test = task.X, task.X_test
    if "init_kernel" in name or "random_features" in name:
        X, X_test = X * scale, X_test * scale
        W0 = initial_particles(int(p["n_particles"]), d, float(p["lam_w"]), int(p["seed"]))
        W_random = initial_particles(int(spec.get("rf_factor", 4)) * int(p["n_particles"]), d, float(p["lam_w"]),
                                     derive_seed(int(p["seed"]), "random-features"))
    y = np.sign(task.f_train) if name in CLASSIFICATION else task.y
    res = fit_baseline(name, X, y, X_test, seed=derive_seed(int(p["seed"]), "folds", name), W0=W0,
                       W_random=W_random, activation=p.get("activation", "tanh"),
                       n_folds=int(spec.get("n_folds", 5)))
    pred = res.pop("pred")
    if name in CLASSIFICATION:
        res["test_accuracy"] = float(np.mean(pred == np.sign(task.f_test)))
    else:
        res["test_mse"] = _mse(pred, task.f_test)
    return res


def tune(configs, task_specs, seeds, *, cache, n_jobs=1, criterion="final_test_mse", kind="mfld", n_threads=None):
    """Choose the MFLD configuration with the lowest mean validation error over the tuning data.

    configs: list of config dicts; task_specs: one make_task kwargs dict per tuning seed (their seeds are
    tuning seeds; their test set is the validation set); seeds: estimator seeds, one per task. Ties go to the
    first configuration. Returns dict(index, config, table) where table lists every configuration's
    validation errors.
    """
    if len(task_specs) != len(seeds):
        raise ValueError("task_specs and seeds must pair up")
    specs = [dict(task=t, config=c, seed=int(s), n_fresh=0) for c in configs for t, s in zip(task_specs, seeds)]
    results = run_jobs(mfld_job, kind, specs, cache=cache, n_jobs=n_jobs, n_threads=n_threads)
    table = []
    for i, c in enumerate(configs):
        errors = [r["final"]["test_mse"] for r in results[i * len(seeds):(i + 1) * len(seeds)]]
        table.append(dict(config=c, validation_mse=errors, mean=float(np.mean(errors))))
    means = [row["mean"] if math.isfinite(row["mean"]) else math.inf for row in table]
    best = int(np.argmin(means))
    return dict(index=best, config=configs[best], table=table, criterion=criterion)


def job(spec, n_threads=1):
    """Dispatch a spec to :func:`mfld_job` (``spec["job"] == "mfld"``) or :func:`baseline_job`."""
    kind = spec.get("job", "mfld")
    if kind == "mfld":
        return mfld_job(spec, n_threads)
    if kind == "baseline":
        return baseline_job(spec, n_threads)
    raise ValueError(f"unknown job {kind!r}")
