"""mfkern.distributed: particle-sharded MFLD. In-process checks of the sharded pieces against the whole
computation (no MPI needed), then real mpirun runs (2 and 3 ranks) against the single-process estimator."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

import mfkern.core as core
from mfkern import DivergenceError, MeanFieldRegressor
from mfkern.estimator import HISTORY_KEYS
from mfkern import distributed
from mfkern.distributed import collectives
from mfkern.distributed import (
    DistributedMeanFieldRegressor,
    SingleProcess,
    initial_particles,
    partial_gram,
    shard_bounds,
    shard_counts,
    train_main,
)

HYPER = dict(lam=0.05, lam_a=0.5, lam_w=0.5)
DRIVER = pathlib.Path(__file__).with_name("mpi_driver.py")
# The P-rank trajectory equals the single-process one up to the summation order of the Gram (module docstring).
RTOL = 1e-10


def _relative_error(got, expect):
    return float(np.abs(got - expect).max() / np.abs(expect).max())


def _numpy_gram(W, X, X2=None):
    """(1/N) tanh(X1 W^T) tanh(X2_1 W^T)^T in plain numpy."""
    X2 = X if X2 is None else X2
    H = np.tanh(np.hstack([X, np.ones((X.shape[0], 1))]) @ W.T)
    H2 = np.tanh(np.hstack([X2, np.ones((X2.shape[0], 1))]) @ W.T)
    return H @ H2.T / W.shape[0]


@pytest.fixture
def problem():
    rng = np.random.default_rng(7)
    n, d = 24, 3
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    y = np.tanh(2 * X[:, 0]) + 0.1 * rng.standard_normal(n)
    X_val = rng.standard_normal((10, d)) / math.sqrt(d)
    y_val = np.tanh(2 * X_val[:, 0])
    return X, y, X_val, y_val


def _params(**overrides):
    params = dict(n_particles=64, eta=0.1, n_steps=300, random_state=3, log_every=50, n_threads=1, **HYPER)
    params.update(overrides)
    return params


# ------------------------------------------------------------------------------------------- sharding pieces
def test_shard_counts_and_bounds_partition_the_particles():
    for n_items, n_shards in [(10, 3), (64, 3), (5, 5), (7, 1), (1000, 16)]:
        counts = shard_counts(n_items, n_shards)
        assert sum(counts) == n_items and max(counts) - min(counts) <= 1
        bounds = [shard_bounds(n_items, n_shards, r) for r in range(n_shards)]
        assert bounds[0][0] == 0 and bounds[-1][1] == n_items
        for (a, b), (c, _), count in zip(bounds, bounds[1:] + [(n_items, None)], counts):
            assert b == c and b - a == count  # contiguous, in rank order
    with pytest.raises(ValueError, match="shard"):
        shard_bounds(10, 3, 3)
    with pytest.raises(ValueError, match="n_shards"):
        shard_counts(10, 0)


def test_partial_grams_sum_to_the_whole_gram(problem):
    X, _, X_val, _ = problem
    W = np.random.default_rng(1).standard_normal((50, X.shape[1] + 1))
    cuts = [0, 7, 30, 50]  # uneven shards
    total = sum(partial_gram(W[a:b], X, 50) for a, b in zip(cuts, cuts[1:]))
    np.testing.assert_allclose(total, _numpy_gram(W, X), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(total, core.gram(W, X), rtol=1e-13, atol=1e-15)
    cross = sum(partial_gram(W[a:b], X_val, 50, X2=X) for a, b in zip(cuts, cuts[1:]))
    np.testing.assert_allclose(cross, _numpy_gram(W, X_val, X), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("noise_level", [0.0, 0.4])
def test_sharded_step_equals_the_whole_step(problem, noise_level):
    """Drift and Langevin step of each shard, with the dual coefficients of the summed partial Grams and the
    global first index, equal core.drift / core.langevin_step of all particles at once."""
    X, y, _, _ = problem
    n, T = X.shape[0], 1
    W = np.random.default_rng(2).standard_normal((40, X.shape[1] + 1))
    seed, step, ridge = 11, 5, n * HYPER["lam"] * HYPER["lam_a"]
    cuts = [0, 13, 27, 40]
    K = sum(partial_gram(W[a:b], X, 40) for a, b in zip(cuts, cuts[1:]))
    E = core.label_noise(seed, step, n, T, noise_level)
    solution = core.second_layer(K, np.column_stack([y, E[:, 0]]), ridge)
    A, B = solution[:, :1], (solution[:, 1:] if noise_level else None)

    drift_parts = [core.drift_given_dual(W[a:b], X, A, B=B, **HYPER) for a, b in zip(cuts, cuts[1:])]
    whole_drift = core.drift(W, X, y, label_noise=E if noise_level else None, **HYPER)
    np.testing.assert_allclose(np.vstack(drift_parts), whole_drift, rtol=1e-11, atol=1e-13)

    step_parts = [core.langevin_step_given_dual(W[a:b], X, A, B=B, eta=0.1, seed=seed, step=step, first_index=a,
                                                **HYPER) for a, b in zip(cuts, cuts[1:])]
    whole_step = core.langevin_step(W, X, y, eta=0.1, seed=seed, step=step, label_noise_level=noise_level, **HYPER)
    np.testing.assert_allclose(np.vstack(step_parts), whole_step, rtol=1e-11, atol=1e-13)
    # The global first index matters: restarting the particle count on every shard repeats the noise.
    wrong = [core.langevin_step_given_dual(W[a:b], X, A, B=B, eta=0.1, seed=seed, step=step, **HYPER)
             for a, b in zip(cuts, cuts[1:])]
    assert np.abs(np.vstack(wrong) - whole_step).max() > 1e-3


def test_initial_particles_are_the_estimators_rows(monkeypatch):
    N, d, lam_w, seed = 37, 4, 0.25, 123
    expect = np.random.default_rng(seed).standard_normal((N, d + 1)) / math.sqrt(lam_w)
    monkeypatch.setattr(collectives, "_INIT_CHUNK", 7)  # many chunk boundaries inside and between rows
    for start, stop in [(0, N), (0, 1), (5, 18), (18, 37), (36, 37)]:
        got = initial_particles(seed, N, d, lam_w, start, stop)
        assert np.array_equal(got, expect[start:stop])


# ------------------------------------------------------------------------------------------- one process
@pytest.mark.parametrize("label_noise", [0.0, 0.3])
def test_single_process_follows_the_estimator(problem, label_noise):
    X, y, X_val, y_val = problem
    direction = np.eye(X.shape[1])[0]
    ref = MeanFieldRegressor(**_params(label_noise=label_noise)).fit(X, y, X_val=X_val, y_val=y_val,
                                                                     target_direction=direction)
    model = DistributedMeanFieldRegressor(comm=SingleProcess(), **_params(label_noise=label_noise))
    model.fit(X, y, X_val=X_val, y_val=y_val, target_direction=direction)
    assert _relative_error(model.gather_particles(), ref.particles_) <= 1e-13
    assert model.n_steps_done_ == ref.n_steps_done_ == 300 and model.seed_ == ref.seed_
    for key, values in ref.history_.items():
        if key != "wall_time":
            np.testing.assert_allclose(model.history_[key], values, rtol=1e-12, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(model.predict(X_val), ref.predict(X_val), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.kernel(X_val, X), ref.kernel(X_val, X), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.transform(X_val), ref.transform(X_val), rtol=1e-12, atol=1e-14)
    assert model.score(X_val, y_val) == pytest.approx(ref.score(X_val, y_val), rel=1e-12)
    plain = model.to_estimator()
    assert type(plain) is MeanFieldRegressor and "comm" not in plain.get_params()
    np.testing.assert_allclose(plain.coef_, ref.coef_, rtol=1e-12, atol=1e-14)


def test_checkpoint_resume_single_process(problem, tmp_path):
    """A distributed checkpoint is a MeanFieldRegressor checkpoint, and a resumed run continues the trajectory."""
    X, y, X_val, y_val = problem
    whole = MeanFieldRegressor(**_params()).fit(X, y)
    half = DistributedMeanFieldRegressor(comm=SingleProcess(), **_params(n_steps=150)).fit(X, y)
    half.save(tmp_path / "half.npz")
    as_plain = MeanFieldRegressor.load(tmp_path / "half.npz")
    np.testing.assert_array_equal(as_plain.particles_, half.local_particles_)
    resumed = DistributedMeanFieldRegressor.load(tmp_path / "half.npz", comm=SingleProcess())
    resumed.set_params(warm_start=True, n_steps=150).fit(X, y)
    assert resumed.n_steps_done_ == 300
    assert _relative_error(resumed.local_particles_, whole.particles_) <= 1e-13
    # A plain estimator's checkpoint loads sharded too.
    whole.save(tmp_path / "whole.npz")
    loaded = DistributedMeanFieldRegressor.load(tmp_path / "whole.npz", comm=SingleProcess())
    np.testing.assert_allclose(loaded.predict(X_val), whole.predict(X_val), rtol=1e-12, atol=1e-14)


def test_divergence_matches_the_estimator(problem):
    X, y, _, _ = problem
    params = _params(eta=1e200, n_steps=50)
    with pytest.raises(DivergenceError) as ref_error:
        MeanFieldRegressor(**params).fit(X, y)
    model = DistributedMeanFieldRegressor(comm=SingleProcess(), **params)
    with pytest.raises(DivergenceError) as error:
        model.fit(X, y)
    assert error.value.step == ref_error.value.step and error.value.cause == ref_error.value.cause
    assert model.n_steps_done_ == error.value.n_steps_done == ref_error.value.n_steps_done
    assert np.isfinite(model.local_particles_).all() and model.history_["step"] == ref_error_history(params, X, y)
    np.testing.assert_allclose(model.predict(X), MeanFieldRegressor(**{**params, "n_steps": model.n_steps_done_})
                               .fit(X, y).predict(X), rtol=1e-12, atol=1e-14)


def ref_error_history(params, X, y):
    """The logged steps of the single-process estimator left at its last good step after diverging."""
    est = MeanFieldRegressor(**params)
    with pytest.raises(DivergenceError):
        est.fit(X, y)
    return est.history_["step"]


def test_train_main_serial(problem, tmp_path, capsys):
    X, y, X_val, y_val = problem
    np.savez(tmp_path / "train.npz", X=X, y=y)
    np.savez(tmp_path / "val.npz", X=X_val, y=y_val)
    options = ["--n-particles", "64", "--lam", "0.05", "--lam-a", "0.5", "--lam-w", "0.5", "--eta", "0.1",
               "--seed", "3", "--log-every", "50", "--n-threads", "1", "--serial", "--quiet"]
    assert train_main(["--data", str(tmp_path / "train.npz"), "--val", str(tmp_path / "val.npz"), "--out",
                       str(tmp_path / "a.npz"), "--n-steps", "300", "--checkpoint-every", "120", *options]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_steps_done"] == 300 and summary["ranks"] == 1
    ref = MeanFieldRegressor(**_params()).fit(X, y)
    saved = MeanFieldRegressor.load(tmp_path / "a.npz")
    assert saved.n_steps_done_ == 300 and _relative_error(saved.particles_, ref.particles_) <= 1e-13
    # A restartable job: --total-steps does only what is missing (100 more here, then nothing).
    for _ in range(2):
        assert train_main(["--data", str(tmp_path / "train.npz"), "--out", str(tmp_path / "a.npz"), "--resume",
                           str(tmp_path / "a.npz"), "--total-steps", "400", "--serial", "--quiet"]) == 0
    longer = MeanFieldRegressor(**_params(n_steps=400)).fit(X, y)
    saved = MeanFieldRegressor.load(tmp_path / "a.npz")
    assert saved.n_steps_done_ == 400 and _relative_error(saved.particles_, longer.particles_) <= 1e-13
    with pytest.raises(SystemExit):  # changing a hyperparameter of a resumed run is refused
        train_main(["--data", str(tmp_path / "train.npz"), "--out", str(tmp_path / "b.npz"), "--resume",
                    str(tmp_path / "a.npz"), "--lam", "0.1", "--serial"])
    with pytest.raises(SystemExit):
        train_main(["--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "c.npz"), "--serial"])
    assert "cannot read the data" in capsys.readouterr().err


def test_missing_mpi4py_gives_the_install_hint(monkeypatch, problem):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` raise ImportError
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ImportError, match=r'pip install "mfkern\[mpi\]"'):
        distributed.require_mpi()
    X, y, _, _ = problem
    with pytest.raises(ImportError, match=r'pip install "mfkern\[mpi\]"'):
        DistributedMeanFieldRegressor(**_params(n_steps=1)).fit(X, y)  # comm=None means MPI.COMM_WORLD
    with pytest.raises(ImportError, match=r'pip install "mfkern\[mpi\]"'):
        train_main(["--data", "x.npz", "--out", "y.npz"])


def test_parameters_mirror_the_estimator():
    """Every MeanFieldRegressor parameter is a DistributedMeanFieldRegressor parameter, with the same default."""
    plain, sharded = MeanFieldRegressor().get_params(), DistributedMeanFieldRegressor().get_params()
    assert sharded.pop("comm") is None
    assert sharded == plain


def test_bad_comm_is_a_type_error(problem):
    X, y, _, _ = problem
    with pytest.raises(TypeError, match="comm must be"):
        DistributedMeanFieldRegressor(comm="world", **_params(n_steps=1)).fit(X, y)


# ------------------------------------------------------------------------------------------- one training loop
# The training loop of MeanFieldBase (and MeanFieldRegressor's engine strategy). The MPI regressor must not
# replace any of it: it supplies only where its particles live (its rows of the initial draw, an engine whose
# sums over particles are reduced across the ranks, the fitted state of a shard, rank 0's log lines).
LOOP_METHODS = ("_run_training", "_initialise", "_train", "_advance", "_log", "_record", "_call_back", "_diverge",
                "_restore", "_settle", "_diagnostics", "_finish_diagnostics", "_engine_at", "_divergence_hint")
SHARD_HOOKS = {"_initial_particles", "_new_engine", "_set_second_layer", "_particles_attribute", "_coef_attribute",
               "_progress_bar", "_log_line"}


def _overridden(cls, base):
    """Names `cls` defines itself that `base` (or a class above it) defines too; scikit-learn's generated
    per-class members (metadata requests, output wrapping) and dunders left out."""
    inherited = set().union(*(vars(klass) for klass in base.__mro__))
    generated = {"_sklearn_auto_wrap_output_keys"}
    return {name for name in vars(cls) if name in inherited and not name.startswith("__") and name not in generated
            and not (name.startswith("set_") and name.endswith("_request"))}


def test_the_distributed_regressor_does_not_override_the_training_loop():
    from mfkern.estimator import MeanFieldBase

    overridden = _overridden(DistributedMeanFieldRegressor, MeanFieldRegressor)
    assert not overridden & set(LOOP_METHODS)
    # Besides the shard hooks: parameters and data checks (fit), and the collective inference and checkpoints.
    assert overridden == SHARD_HOOKS | {"fit", "_check_X", "_n_features_out", "predict", "kernel", "transform", "save",
                                        "load"}
    for name in LOOP_METHODS:
        owner = next(klass for klass in DistributedMeanFieldRegressor.__mro__ if name in vars(klass))
        assert owner in (MeanFieldBase, MeanFieldRegressor), name
    for name in ("_diagnose", "_commit", "_is_log_step", "_engine"):  # its former loop is gone, not renamed
        assert not hasattr(DistributedMeanFieldRegressor, name), name


def test_the_distributed_fit_runs_the_base_loop(problem, monkeypatch):
    """The loop that trains the MPI regressor is MeanFieldBase's: a spy on it sees every logged step."""
    from mfkern.estimator import MeanFieldBase

    X, y, _, _ = problem
    seen = []
    record = MeanFieldBase._record

    def spy(self, diag, run):
        seen.append((type(self).__name__, diag["step"]))
        return record(self, diag, run)

    monkeypatch.setattr(MeanFieldBase, "_record", spy)
    DistributedMeanFieldRegressor(comm=SingleProcess(), **_params(n_steps=120)).fit(X, y)
    MeanFieldRegressor(**_params(n_steps=120)).fit(X, y)
    steps = [0, 50, 100, 120]
    assert seen == [("DistributedMeanFieldRegressor", s) for s in steps] + [("MeanFieldRegressor", s) for s in steps]


def _same_state(model, ref):
    """The distributed model (one process) and the plain estimator hold the same bits."""
    np.testing.assert_array_equal(model.gather_particles(), ref.particles_)
    np.testing.assert_array_equal(model.dual_coef_, ref.dual_coef_)
    np.testing.assert_array_equal(model.gather_coef(), ref.coef_)
    assert model.n_steps_done_ == ref.n_steps_done_
    assert list(model.history_) == list(ref.history_)
    for key, values in ref.history_.items():
        if key != "wall_time":
            np.testing.assert_array_equal(model.history_[key], values, err_msg=key)


def _fit_both(params, steps, X, y, fit_kwargs=None):
    """The plain estimator and the one-process distributed model through the fits `steps` (parameter changes,
    warm-started after the first). Returns, per model, the model, the steps its callback saw and the
    DivergenceError of the last fit (None when it completed)."""
    out = []
    for make in (lambda **kw: MeanFieldRegressor(**kw),
                 lambda **kw: DistributedMeanFieldRegressor(comm=SingleProcess(), **kw)):
        calls = []
        model = make(callbacks=lambda est, step, diag: calls.append(step), **params)
        error = None
        for i, change in enumerate(steps):
            change = dict(change)
            scale = change.pop("y_scale", 1.0)
            if i:
                model.set_params(warm_start=True, **change)
            try:
                model.fit(X, scale * y, **(fit_kwargs or {}))
            except DivergenceError as exc:
                error = exc
        out.append((model, calls, error))
    return out


@pytest.mark.parametrize("scenario", ["divergence_with_label_noise", "warm_start_of_zero_steps", "unsolvable_warm_start"])
def test_one_process_is_the_plain_estimator_bitwise_also_after_a_divergence(problem, scenario):
    """The distributed model on one process follows the plain estimator bit for bit, through warm starts and
    divergences too: the same second layer after falling back, the same failed step, the same callbacks."""
    X, y, X_val, y_val = problem
    params, steps = {
        # The particles run away at step 111; the fallback (step 110) is not a logged step.
        "divergence_with_label_noise": (_params(eta=1000.0, log_every=7, label_noise=0.3), [{}]),
        "warm_start_of_zero_steps": (_params(n_steps=100), [{}, {"n_steps": 0}]),
        # U is not finite for targets of 1e300: the warm start fails at its first logged step.
        "unsolvable_warm_start": (_params(n_steps=20), [{}, {"n_steps": 0, "y_scale": 1e300}]),
    }[scenario]
    (ref, ref_calls, ref_error), (model, calls, error) = _fit_both(params, steps, X, y,
                                                                   dict(X_val=X_val, y_val=y_val))
    _same_state(model, ref)
    assert calls == ref_calls
    assert (error is None) == (ref_error is None) == (scenario == "warm_start_of_zero_steps")
    if error is not None:
        assert (error.step, error.n_steps_done, error.cause) == (ref_error.step, ref_error.n_steps_done,
                                                                 ref_error.cause)
        assert str(error) == str(ref_error).replace("MeanFieldRegressor", "DistributedMeanFieldRegressor")


def test_one_process_gives_the_plain_history_keys_and_values(problem):
    X, y, X_val, y_val = problem
    direction = np.eye(X.shape[1])[1]
    for params in (_params(), _params(label_noise=0.3, n_particles=65, log_every=70)):
        ref = MeanFieldRegressor(**params).fit(X, y, X_val=X_val, y_val=y_val, target_direction=direction)
        model = DistributedMeanFieldRegressor(comm=SingleProcess(), **params)
        model.fit(X, y, X_val=X_val, y_val=y_val, target_direction=direction)
        assert list(model.history_) == list(ref.history_) == list(HISTORY_KEYS)
        _same_state(model, ref)


# ------------------------------------------------------------------------------------------- real MPI runs
def _mpirun():
    """(mpirun path, extra flags) or None; Open MPI needs flags to run as root and oversubscribe 2 cores."""
    try:
        if importlib.util.find_spec("mpi4py") is None:
            return None
    except (ImportError, ValueError, AttributeError):  # hidden or broken mpi4py
        return None
    candidate = pathlib.Path(sys.executable).with_name("mpirun")
    mpirun = str(candidate) if candidate.exists() else shutil.which("mpirun")
    if mpirun is None:
        return None
    try:
        version = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    flags = ["--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    if flags and hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return mpirun, flags


MPIRUN = _mpirun()
needs_mpi = pytest.mark.skipif(MPIRUN is None, reason='needs mpi4py and mpirun: pip install "mfkern[mpi]"')


def _launch(ranks, args, cwd, timeout=150):
    mpirun, flags = MPIRUN
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run([mpirun, *flags, "-n", str(ranks), sys.executable, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"mpirun failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory):
    """Two mpirun launches: 2 ranks (fresh fits, and a resume of a single-process checkpoint), then 3 ranks
    through the command line (resume of the 2-rank checkpoint); plus the single-process references."""
    root = tmp_path_factory.mktemp("mpi")
    rng = np.random.default_rng(7)
    n, d = 24, 3
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    y = np.tanh(2 * X[:, 0]) + 0.1 * rng.standard_normal(n)
    X_val = rng.standard_normal((10, d)) / math.sqrt(d)
    y_val = np.tanh(2 * X_val[:, 0])
    np.savez(root / "data.npz", X=X, y=y, X_val=X_val, y_val=y_val)
    np.savez(root / "train.npz", X=X, y=y)
    fit = dict(X=X, y=y, X_val=X_val, y_val=y_val)
    refs = {
        "plain": MeanFieldRegressor(**_params()).fit(**fit),
        "noisy": MeanFieldRegressor(**_params(label_noise=0.3, n_particles=65)).fit(**fit),
    }
    MeanFieldRegressor(**_params(n_steps=150)).fit(**fit).save(root / "single150.npz")
    job = {"data": str(root / "data.npz"), "tasks": [
        {"kind": "fit", "params": _params(), "save": str(root / "plain.npz")},
        {"kind": "fit", "params": _params(label_noise=0.3, n_particles=65), "save": str(root / "noisy.npz")},
        {"kind": "fit", "params": _params(n_steps=150), "save": str(root / "two150.npz")},
        {"kind": "fit", "params": _params(label_noise=0.3, n_steps=200, solver="cg"), "save": str(root / "cg.npz")},
        {"kind": "resume", "load": str(root / "single150.npz"), "n_steps": 150, "save": str(root / "one_to_two.npz")},
    ]}
    (root / "job.json").write_text(json.dumps(job))
    _launch(2, [str(DRIVER), str(root / "job.json")], root)
    _launch(3, ["-m", "mfkern.distributed", "--data", str(root / "train.npz"), "--resume", str(root / "two150.npz"),
                "--n-steps", "150", "--log-every", "50", "--out", str(root / "two_to_three.npz"), "--quiet"], root)
    return root, refs, X_val


@needs_mpi
@pytest.mark.parametrize("name", ["plain", "noisy"])
def test_two_ranks_follow_the_single_process_run(mpi_runs, name):
    root, refs, X_val = mpi_runs
    ref = refs[name]
    saved = MeanFieldRegressor.load(root / f"{name}.npz")
    assert saved.n_steps_done_ == 300 and saved.seed_ == ref.seed_
    assert _relative_error(saved.particles_, ref.particles_) <= RTOL
    np.testing.assert_allclose(saved.particles_, ref.particles_, rtol=RTOL, atol=RTOL * np.abs(ref.particles_).max())
    np.testing.assert_allclose(saved.history_["G"], ref.history_["G"], rtol=RTOL)
    ranks = [np.load(root / f"{name}.npz.rank{r}.npz") for r in range(2)]
    N = ref.particles_.shape[0]
    for r, seen in enumerate(ranks):
        assert int(seen["size"]) == 2
        start, stop = seen["range"]
        assert (start, stop) == shard_bounds(N, 2, r)
        np.testing.assert_array_equal(seen["local"], saved.particles_[start:stop])  # rank 0 gathered in order
        # Every rank predicts, with the same bits as the others, and matches the single process.
        np.testing.assert_array_equal(seen["pred"], ranks[0]["pred"])
        np.testing.assert_array_equal(seen["kernel"], ranks[0]["kernel"])
        np.testing.assert_array_equal(seen["U"], ranks[0]["U"])
        np.testing.assert_allclose(seen["pred"], ref.predict(X_val), rtol=RTOL, atol=1e-12)


@needs_mpi
def test_two_ranks_with_conjugate_gradients_agree_with_the_dense_single_process(mpi_runs):
    # Each CG iteration reduces an n-vector across the ranks instead of the n x n Gram every step; the
    # solves are exact to tol = 1e-10, so the trajectory agrees with the dense one to about that.
    root, _, X_val = mpi_runs
    data = np.load(root / "data.npz")
    ref = MeanFieldRegressor(**_params(label_noise=0.3, n_steps=200, solver="dense")).fit(
        data["X"], data["y"], X_val=data["X_val"], y_val=data["y_val"])
    saved = MeanFieldRegressor.load(root / "cg.npz")
    assert saved.n_steps_done_ == 200
    assert _relative_error(saved.particles_, ref.particles_) <= 1e-8
    np.testing.assert_allclose(saved.predict(X_val), ref.predict(X_val), rtol=1e-8, atol=1e-10)


@needs_mpi
@pytest.mark.parametrize("name,ranks", [("one_to_two", 2), ("two_to_three", 3)])
def test_resume_on_a_different_number_of_ranks(mpi_runs, name, ranks):
    """150 steps on 1 (or 2) processes, saved, then 150 more on 2 (or 3): the uninterrupted 300-step run."""
    root, refs, _ = mpi_runs
    resumed = MeanFieldRegressor.load(root / f"{name}.npz")
    assert resumed.n_steps_done_ == 300
    assert _relative_error(resumed.particles_, refs["plain"].particles_) <= RTOL
    if name == "one_to_two":
        for r in range(ranks):
            seen = np.load(root / f"{name}.npz.rank{r}.npz")
            assert tuple(seen["range"]) == shard_bounds(64, ranks, r)


@needs_mpi
@pytest.mark.parametrize("name", ["plain", "noisy"])
def test_two_ranks_give_the_plain_history_keys_and_values(mpi_runs, name):
    """The history of a 2-rank fit has the plain estimator's keys, in its order, its logged steps, and its
    values up to the summation order of the Gram (RTOL), NaN where it has NaN; every rank has the same."""
    root, refs, _ = mpi_runs
    ref, saved = refs[name], MeanFieldRegressor.load(root / f"{name}.npz")
    assert list(saved.history_) == list(ref.history_) == list(HISTORY_KEYS)
    assert saved.history_["step"] == ref.history_["step"] == [0, 50, 100, 150, 200, 250, 300]
    for key in HISTORY_KEYS:
        if key not in ("step", "wall_time"):
            np.testing.assert_allclose(saved.history_[key], ref.history_[key], rtol=RTOL, atol=0, err_msg=key)
    for r in range(2):
        np.testing.assert_array_equal(np.load(root / f"{name}.npz.rank{r}.npz")["U"], saved.history_["U"])
