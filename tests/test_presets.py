"""Tests of the input scale, the hyper-parameter presets and the saturation warning shared by both estimators:
the scaling happens in one place (fit and every inference method agree with a model trained on pre-scaled
inputs), presets resolve only what was left at None, parameters are stored unchanged, the warning fires
exactly when most initial features are saturated, and checkpoints keep the scale (old ones: unscaled)."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from mfkern import PRESETS, MeanFieldClassifier, MeanFieldRegressor, SaturationWarning, core

SMALL = dict(n_particles=40, n_steps=6, log_every=3, n_threads=1)
pytestmark = pytest.mark.filterwarnings("ignore::mfkern.SaturationWarning")  # raw inputs on purpose here


def regression_task(rng, n=40, d=9):
    X = rng.standard_normal((n, d))
    return X, X[:, 0] * X[:, 1]


def classification_task(rng, n=45, d=9):
    X = rng.standard_normal((n, d))
    return X, np.array(["a", "b", "c"])[(X[:, 0] > 0.5).astype(int) + (X[:, 0] > -0.5).astype(int)]


@pytest.mark.parametrize("Estimator, task", [(MeanFieldRegressor, regression_task),
                                             (MeanFieldClassifier, classification_task)])
def test_auto_scale_is_a_model_on_inputs_divided_by_sqrt_d(rng, Estimator, task):
    X, y = task(rng)
    X_new = rng.standard_normal((12, X.shape[1]))
    scale = 0.5 / math.sqrt(X.shape[1])
    auto = Estimator(random_state=0, **SMALL).fit(X, y)
    plain = Estimator(random_state=0, input_scale=1.0, **SMALL).fit(X * scale, y)
    assert auto.input_scale_ == scale and plain.input_scale_ == 1.0
    np.testing.assert_array_equal(auto.particles_, plain.particles_)
    for method in ("predict", "transform", "kernel") + (("predict_proba", "decision_function")
                                                        if Estimator is MeanFieldClassifier else ()):
        np.testing.assert_array_equal(getattr(auto, method)(X_new), getattr(plain, method)(X_new * scale),
                                      err_msg=method)
    np.testing.assert_array_equal(auto.kernel(X_new, X), plain.kernel(X_new * scale, X * scale))
    assert auto.score(X, y) == plain.score(X * scale, y)
    # the Gram of the fitted particles on the scaled inputs, computed here: the scale is applied once
    np.testing.assert_allclose(auto.kernel(X_new), core.gram(auto.particles_, X_new * scale), rtol=1e-13)


def test_explicit_scale_and_validation_data_are_scaled_too(rng):
    X, y = regression_task(rng)
    X_val, y_val = regression_task(rng, 20)
    est = MeanFieldRegressor(random_state=1, input_scale=0.3, **SMALL).fit(X, y, X_val=X_val, y_val=y_val)
    ref = MeanFieldRegressor(random_state=1, input_scale=1.0, **SMALL).fit(X * 0.3, y, X_val=X_val * 0.3,
                                                                           y_val=y_val)
    np.testing.assert_array_equal(est.history_["val_mse"], ref.history_["val_mse"])


def test_presets_resolve_only_what_is_left_at_none(rng):
    X, y = regression_task(rng)
    paper = PRESETS["paper"]
    assert paper == dict(input_scale=1.0, n_particles=2000, lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2,
                         n_steps=10000)
    est = MeanFieldRegressor(preset="paper", n_particles=40, n_steps=3, random_state=2, n_threads=1).fit(X, y)
    explicit = MeanFieldRegressor(n_particles=40, n_steps=3, lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2,
                                  input_scale=1.0, random_state=2, n_threads=1).fit(X, y)
    assert est.input_scale_ == 1.0 and est.n_steps_done_ == 3
    np.testing.assert_array_equal(est.particles_, explicit.particles_)
    # an explicit value wins over the preset: lam_w sets the prior of the initial particles
    wide = MeanFieldRegressor(preset="paper", lam_w=1.0, n_particles=40, n_steps=0, random_state=2).fit(X, y)
    np.testing.assert_array_equal(wide.particles_,
                                  np.random.default_rng(2).standard_normal((40, X.shape[1] + 1)) / 1.0)
    # parameters are stored unchanged (scikit-learn convention) and clone keeps them
    assert est.get_params()["lam"] is None and est.get_params()["preset"] == "paper"
    assert clone(est).get_params() == est.get_params()
    default = MeanFieldRegressor(random_state=2, n_particles=40, n_steps=0).fit(X, y)
    assert default.input_scale_ == 0.5 / 3.0  # "auto" for d = 9
    assert PRESETS["default"]["n_steps"] == MeanFieldRegressor().set_params(n_steps=None)._resolved("n_steps")


@pytest.mark.parametrize("params, error, match", [
    (dict(input_scale="big"), ValueError, "input_scale must be 'auto', None or a finite number > 0"),
    (dict(input_scale=0.0), ValueError, "input_scale must be a finite number > 0"),
    (dict(input_scale=float("nan")), ValueError, "input_scale"),
    (dict(input_scale=[1.0]), TypeError, "input_scale"),
    (dict(preset="fast"), ValueError, r"preset must be None or one of \('default', 'paper'\)"),
])
@pytest.mark.parametrize("Estimator", [MeanFieldRegressor, MeanFieldClassifier])
def test_bad_scale_or_preset_raise_at_fit_naming_the_parameter(rng, Estimator, params, error, match):
    X, y = classification_task(rng) if Estimator is MeanFieldClassifier else regression_task(rng)
    est = Estimator(**SMALL, **params)
    with pytest.raises(error, match=match):
        est.fit(X, y)
    assert not hasattr(est, "particles_")


def test_warm_start_must_keep_the_input_scale(rng):
    X, y = regression_task(rng)
    est = MeanFieldRegressor(random_state=0, **SMALL).fit(X, y)
    with pytest.raises(ValueError, match="input_scale resolves to 1 but .* input_scale_ = 0.166667"):
        est.set_params(warm_start=True, input_scale=1.0).fit(X, y)


def saturation_warnings(est, X, y):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    return [w for w in caught if issubclass(w.category, SaturationWarning)]


@pytest.mark.parametrize("Estimator, task", [(MeanFieldRegressor, regression_task),
                                             (MeanFieldClassifier, classification_task)])
def test_saturation_warning_fires_when_most_initial_features_saturate(rng, Estimator, task):
    X, y = task(rng, n=60, d=15)
    # standardised inputs at the default scale: pre-activations of standard deviation about 2.2, few saturated
    assert not saturation_warnings(Estimator(random_state=0, **SMALL), X, y)
    # the paper's unscaled inputs with d = 15: standard deviation 8, most features saturated
    caught = saturation_warnings(Estimator(random_state=0, input_scale=1.0, **SMALL), X, y)
    assert len(caught) == 1 and issubclass(SaturationWarning, UserWarning)
    message = str(caught[0].message)
    assert "saturated" in message and "StandardScaler" in message and "input_scale='auto'" in message
    # the fraction the warning is about, computed here from the documented initialisation on all the data
    W = np.random.default_rng(0).standard_normal((SMALL["n_particles"], 16)) / math.sqrt(0.25)
    assert np.mean(np.abs(np.tanh(X @ W[:, :-1].T + W[:, -1])) > 0.99) > 0.5
    # a warm start does not warn again
    est = Estimator(random_state=0, input_scale=1.0, **SMALL)
    saturation_warnings(est, X, y)
    assert not saturation_warnings(est.set_params(warm_start=True), X, y)


@pytest.mark.parametrize("Estimator, task", [(MeanFieldRegressor, regression_task),
                                             (MeanFieldClassifier, classification_task)])
def test_checkpoints_keep_the_scale_and_old_ones_are_unscaled(rng, tmp_path, Estimator, task):
    X, y = task(rng)
    est = Estimator(random_state=0, **SMALL).fit(X, y)
    est.save(tmp_path / "m.npz")
    loaded = Estimator.load(tmp_path / "m.npz")
    assert loaded.input_scale_ == est.input_scale_ == 0.5 / 3
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    # a checkpoint written before input_scale existed: its model saw unscaled inputs
    old_kind = dict(multi_class="ovr") if Estimator is MeanFieldClassifier else {}  # old files were one-vs-rest
    raw = Estimator(random_state=0, input_scale=1.0, **old_kind, **SMALL).fit(X, y)
    raw.save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz", allow_pickle=False) as data:
        contents = {name: data[name] for name in data.files}
    params = json.loads(str(contents["params"][()]))
    for name in ("input_scale", "preset", "multi_class"):
        params.pop(name, None)
    params.update(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2)  # old files held numbers
    contents["params"] = np.array(json.dumps(params, sort_keys=True))
    contents.pop("multinomial", None)
    contents.pop("input_scale", None)  # the fitted scale is stored with the state now; old files have neither
    contents["format_version"] = np.array(1, dtype=np.int64)  # ... and were written as format version 1
    np.savez(tmp_path / "old.npz", **contents)
    old = Estimator.load(tmp_path / "old.npz")
    assert old.input_scale == 1.0 and old.input_scale_ == 1.0
    np.testing.assert_array_equal(old.predict(X), raw.predict(X))
