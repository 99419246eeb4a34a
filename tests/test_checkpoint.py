"""Tests of mfkern.checkpoint: round trip, bitwise resume, atomic writes, and clear errors on bad files."""
from __future__ import annotations

import json
import os
import pathlib
import pickle
import zipfile

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

import mfkern
import mfkern.checkpoint as checkpoint
import mfkern.core
import mfkern.estimator
from mfkern.checkpoint import FORMAT_VERSION, CheckpointError
from mfkern.estimator import MeanFieldRegressor

# The paper's hyper-parameters and raw inputs, explicitly: the references below are written for them.
SMALL = dict(n_particles=30, n_steps=12, log_every=4, n_threads=1,
             lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, input_scale=1.0)


def product_task(rng, n, d):
    X = rng.standard_normal((n, d))
    return X, X[:, 0] * X[:, 1]


@pytest.fixture
def fitted(rng):
    X, y = product_task(rng, 30, 3)
    X_val, y_val = product_task(rng, 10, 3)
    est = MeanFieldRegressor(random_state=21, label_noise=0.2, **SMALL)
    return est.fit(X, y, X_val=X_val, y_val=y_val, target_direction=[1.0, 0.0, 0.0]), X, y


def assert_same_history(actual, expected):
    assert list(actual) == list(expected)
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)
        assert all(type(a) is type(b) for a, b in zip(actual[key], expected[key]))


def test_round_trip_restores_parameters_and_fitted_state(fitted, tmp_path):
    est, X, y = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    loaded = MeanFieldRegressor.load(path)
    assert type(loaded) is MeanFieldRegressor
    assert loaded.get_params() == est.get_params()
    for name in ("particles_", "dual_coef_", "coef_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(est, name))
        assert getattr(loaded, name).dtype == np.float64
    assert (loaded.seed_, loaded.n_steps_done_, loaded.n_features_in_, loaded.n_outputs_) == \
        (est.seed_, est.n_steps_done_, est.n_features_in_, est.n_outputs_)
    assert_same_history(loaded.history_, est.history_)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    np.testing.assert_array_equal(loaded.kernel(X), est.kernel(X))
    assert loaded.score(X, y) == est.score(X, y)


def test_round_trip_of_multi_target_fit_keeps_the_output_shape(rng, tmp_path):
    X, _ = product_task(rng, 20, 3)
    Y = np.column_stack([X[:, 0], X[:, 1] * X[:, 2]])
    est = MeanFieldRegressor(random_state=0, **SMALL).fit(X, Y)
    est.save(tmp_path / "multi.npz")
    loaded = MeanFieldRegressor.load(tmp_path / "multi.npz")
    assert loaded.predict(X).shape == (20, 2)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))


def test_checkpoint_is_a_plain_npz_with_parameters_as_json(fitted, tmp_path):
    est, _, _ = fitted
    path = tmp_path / "run.npz"
    est.save(str(path))  # str and pathlib paths both work
    with np.load(path, allow_pickle=False) as data:  # nothing pickled: this would raise otherwise
        assert int(data["format_version"]) == FORMAT_VERSION
        params = json.loads(str(data["params"]))
        assert params["label_noise"] == 0.2 and params["random_state"] == 21
        assert data["seed"].dtype == np.uint64 and int(data["seed"]) == est.seed_
        assert int(data["n_steps_done"]) == 12
        np.testing.assert_array_equal(data["history.step"], [0, 4, 8, 12])
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left behind


def test_resumed_run_is_bitwise_identical_to_the_uninterrupted_run(rng, tmp_path):
    X, y = product_task(rng, 30, 3)
    params = dict(random_state=5, label_noise=0.3, n_particles=30, log_every=3, n_threads=1)
    whole = MeanFieldRegressor(n_steps=10, **params).fit(X, y)
    first = MeanFieldRegressor(n_steps=6, **params).fit(X, y)
    first.save(tmp_path / "half.npz")
    del first
    resumed = MeanFieldRegressor.load(tmp_path / "half.npz").set_params(warm_start=True, n_steps=4).fit(X, y)
    np.testing.assert_array_equal(resumed.particles_, whole.particles_)
    np.testing.assert_array_equal(resumed.dual_coef_, whole.dual_coef_)
    assert resumed.n_steps_done_ == 10 and resumed.history_["step"] == [0, 3, 6, 9, 10]


def test_callbacks_and_generator_states_are_not_saved_but_the_seed_is(rng, tmp_path):
    X, y = product_task(rng, 20, 3)
    est = MeanFieldRegressor(random_state=np.random.RandomState(3), callbacks=lambda *args: False, **SMALL)
    est.fit(X, y)
    est.save(tmp_path / "run.npz")
    loaded = MeanFieldRegressor.load(tmp_path / "run.npz")
    assert loaded.callbacks is None and loaded.random_state is None and loaded.seed_ == est.seed_
    replay = MeanFieldRegressor(random_state=loaded.seed_, **SMALL).fit(X, y)
    np.testing.assert_array_equal(replay.particles_, est.particles_)


def test_saving_an_unfitted_estimator_raises(tmp_path):
    with pytest.raises(NotFittedError):
        MeanFieldRegressor().save(tmp_path / "x.npz")
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------------- atomic writes
@pytest.mark.parametrize("crash_in", ["savez", "fsync", "replace"])
def test_a_crash_while_saving_keeps_the_old_checkpoint_intact(fitted, rng, tmp_path, monkeypatch, crash_in):
    est, X, y = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    old_bytes = path.read_bytes()
    newer = MeanFieldRegressor(random_state=1, **SMALL).fit(X, y)

    def crash(*args, **kwargs):
        if crash_in == "savez":  # die halfway through writing the archive
            handle = args[0]
            handle.write(b"PK\x03\x04 partial archive")
        raise OSError("simulated crash")

    target = {"savez": (checkpoint.np, "savez"), "fsync": (checkpoint.os, "fsync"),
              "replace": (checkpoint.os, "replace")}[crash_in]
    monkeypatch.setattr(*target, crash)
    with pytest.raises(OSError, match="simulated crash"):
        newer.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == old_bytes
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    np.testing.assert_array_equal(MeanFieldRegressor.load(path).particles_, est.particles_)


def test_saving_over_an_existing_checkpoint_replaces_it(fitted, rng, tmp_path):
    est, X, y = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    newer = MeanFieldRegressor(random_state=1, **{**SMALL, "n_steps": 3}).fit(X, y)
    newer.save(path)
    assert MeanFieldRegressor.load(path).n_steps_done_ == 3
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]


# ----------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("keep", [0, 1, 100, 0.5, -1])
def test_truncated_checkpoint_raises_naming_the_file(fitted, tmp_path, keep):
    est, _, _ = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    data = path.read_bytes()
    size = {0.5: len(data) // 2, -1: len(data) - 1}.get(keep, keep)
    broken = tmp_path / "truncated.npz"
    broken.write_bytes(data[:size])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        MeanFieldRegressor.load(broken)


def test_corrupted_particle_bytes_are_detected(fitted, tmp_path):
    est, _, _ = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    data = bytearray(path.read_bytes())
    where = bytes(data).find(est.particles_.tobytes())  # uncompressed members: the raw array is in the file
    assert where > 0
    data[where + 100] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="run.npz.*(CRC|corrupt)"):
        MeanFieldRegressor.load(path)


def _rewrite(path, **changes):
    with np.load(path, allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    contents.update(changes)
    for name in [name for name, value in changes.items() if value is None]:
        del contents[name]
    np.savez(path, **contents)


@pytest.mark.parametrize("changes, match", [
    (dict(format_version=np.array(FORMAT_VERSION + 1)), f"format version {FORMAT_VERSION + 1}"),
    (dict(format=np.array("something.else")), "not an mfkern checkpoint"),
    (dict(particles=None), "missing entries.*particles"),
    (dict(particles=np.zeros((30, 2))), "particles must be"),
    (dict(particles=np.full((30, 4), np.nan)), "particles must be a finite"),
    (dict(params=np.array('{"no_such_parameter": 1}')), "invalid parameters"),
    (dict(params=np.array("{not json")), "invalid parameters"),
    (dict(coef=np.zeros(7)), "do not match"),
    (dict(**{"history.U": np.zeros(2)}), "history columns have different lengths"),
    (dict(**{"history.dof": None}), "history entry 'dof'"),
])
def test_inconsistent_checkpoint_contents_raise_naming_the_file(fitted, tmp_path, changes, match):
    est, _, _ = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    _rewrite(path, **changes)
    with pytest.raises(CheckpointError, match=f"run.npz.*{match}"):
        MeanFieldRegressor.load(path)


def test_foreign_files_are_rejected(tmp_path):
    npz = tmp_path / "other.npz"
    np.savez(npz, weights=np.ones(3))
    npy = tmp_path / "array.npy"
    np.save(npy, np.ones(3))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    for path, match in [(npz, "missing entries"), (npy, "not an npz"), (text, "notes.txt"), (empty, "empty.npz")]:
        with pytest.raises(CheckpointError, match=match):
            MeanFieldRegressor.load(path)


class _Trap:
    """A pickle payload that, if ever unpickled, would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_loading_never_executes_pickled_code(tmp_path):
    marker = tmp_path / "executed"
    raw = tmp_path / "raw.pkl"
    raw.write_bytes(pickle.dumps(_Trap(marker)))
    archive = tmp_path / "objects.npz"
    with zipfile.ZipFile(archive, "w") as zf:  # an npz whose member is an object array (pickled inside)
        with zf.open("params.npy", "w") as member:
            np.save(member, np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    for path in (raw, archive):
        with pytest.raises(CheckpointError):
            MeanFieldRegressor.load(path)
    assert not marker.exists()


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        MeanFieldRegressor.load(tmp_path / "nope.npz")


def test_object_arrays_are_never_written(tmp_path):
    with pytest.raises(TypeError, match="object dtype"):
        checkpoint.write_npz_atomic(tmp_path / "x.npz", {"bad": np.array([None], dtype=object)})
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ the format layer itself
def test_state_dicts_round_trip_with_nested_entries_and_scalars(tmp_path):
    state = {"a": np.arange(6.0).reshape(2, 3), "n": np.array(7, dtype=np.int64), "big": np.array(2**64 - 1,
             dtype=np.uint64), "flag": True, "name": "x", "engine": {"warm": np.ones(4), "inner": {"k": 3}}}
    path = tmp_path / "state.npz"
    checkpoint.write_state(path, "test.Format", {"lam": 0.5, "callbacks": print}, state)
    params, back = checkpoint.read_state(path, "test.Format")
    assert params == {"lam": 0.5, "callbacks": None}
    assert back.pop("mfkern_version") == mfkern.__version__
    assert sorted(back) == sorted(state) and sorted(back["engine"]) == ["inner", "warm"]
    np.testing.assert_array_equal(back["a"], state["a"])
    assert back["big"].dtype == np.uint64 and int(back["big"]) == 2**64 - 1
    assert bool(back["flag"]) is True and str(back["name"]) == "x" and int(back["engine"]["inner"]["k"]) == 3
    with np.load(path, allow_pickle=False) as data:  # nested dicts are dotted members of a plain npz
        assert "engine.inner.k" in data.files and "engine.warm" in data.files
    with pytest.raises(CheckpointError, match=r"state.npz.*not an mfkern checkpoint \(format 'test.Format'\)"):
        checkpoint.read_state(path, "test.Other")


@pytest.mark.parametrize("state, error", [({"a.b": np.ones(1)}, ValueError), ({"format": np.ones(1)}, ValueError),
                                          ({"x": [1, 2]}, TypeError), ({"x": np.array([None])}, TypeError)])
def test_unwritable_states_are_refused_before_any_file_exists(tmp_path, state, error):
    with pytest.raises(error):
        checkpoint.write_state(tmp_path / "x.npz", "test.Format", {}, state)
    assert not os.listdir(tmp_path)


def test_a_file_of_the_first_format_written_by_hand_loads(tmp_path):
    """The layout of format version 1, written here with numpy alone (not by mfkern's writer)."""
    rng = np.random.default_rng(0)
    particles = rng.standard_normal((5, 3))
    X = rng.standard_normal((4, 2))
    dual = rng.standard_normal(4)
    coef = mfkern.core.output_weights(particles, X, dual)
    history = {key: np.arange(2, dtype=np.int64) if key == "step" else np.array([0.5, 0.25])
               for key in mfkern.estimator.HISTORY_KEYS}
    path = tmp_path / "v1.npz"
    np.savez(path, format=np.array("mfkern.MeanFieldRegressor"), format_version=np.array(1),
             mfkern_version=np.array("0.1.0"), params=np.array(json.dumps({"n_particles": 5, "lam": 0.1})),
             particles=particles, n_steps_done=np.array(1), seed=np.array(9, dtype=np.uint64), dual_coef=dual,
             coef=coef, n_features_in=np.array(2), y_one_d=np.array(True),
             **{f"history.{key}": values for key, values in history.items()})
    est = MeanFieldRegressor.load(path)
    assert (est.n_particles, est.lam, est.n_steps_done_, est.seed_, est.n_outputs_) == (5, 0.1, 1, 9, 1)
    np.testing.assert_array_equal(est.particles_, particles)
    assert est.history_["step"] == [0, 1] and est.history_["U"] == [0.5, 0.25]
    np.testing.assert_allclose(est.predict(X), (mfkern.core.features(particles, X) @ coef) / 5, rtol=1e-12)


def test_unknown_entries_are_ignored_so_fields_can_be_added(fitted, tmp_path):
    est, X, _ = fitted
    path = tmp_path / "run.npz"
    est.save(path)
    _rewrite(path, **{"engine.warm_dual": np.ones(3), "notes": np.array("later field")})
    loaded = MeanFieldRegressor.load(path)
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
