"""Tests of mfkern.tuning and of the tuning recipe of docs/tuning.md: the steps curve from one fit per fold is
exactly GridSearchCV over n_steps, in parallel or not; GridSearchCV with worker processes gives the serial
result."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mfkern import MeanFieldClassifier, MeanFieldRegressor
from mfkern.tuning import steps_validation_curve

SMALL = dict(n_particles=30, random_state=0, n_threads=1)


def classification_data(rng, n=60, d=4):
    X = 3.0 * rng.standard_normal((n, d)) + 1.0  # not standardised: the pipeline does it per fold
    return X, np.where(X[:, 0] * X[:, 1] > 1.0, "yes", "no")


@pytest.mark.parametrize("n_jobs", [None, 2])
def test_steps_curve_is_grid_search_over_n_steps(rng, n_jobs):
    X, y = classification_data(rng)
    pipe = make_pipeline(StandardScaler(), MeanFieldClassifier(**SMALL))
    steps = [10, 0, 4]
    curve = steps_validation_curve(pipe, X, y, steps=steps, cv=3, n_jobs=n_jobs)
    search = GridSearchCV(pipe, {"meanfieldclassifier__n_steps": sorted(steps)}, cv=3).fit(X, y)
    assert curve["steps"] == [0, 4, 10]
    for fold in range(3):
        np.testing.assert_array_equal(curve["scores"][fold], search.cv_results_[f"split{fold}_test_score"])
    np.testing.assert_array_equal(curve["mean"], search.cv_results_["mean_test_score"])
    assert curve["best_steps"] == search.best_params_["meanfieldclassifier__n_steps"] or \
        curve["mean"][curve["steps"].index(curve["best_steps"])] == search.best_score_


def test_steps_curve_for_a_bare_regressor(rng):
    X = rng.standard_normal((40, 3))
    y = X[:, 0] * X[:, 1]
    est = MeanFieldRegressor(**SMALL)
    cv = KFold(2, shuffle=True, random_state=0)
    curve = steps_validation_curve(est, X, y, steps=[3, 6], cv=cv)
    search = GridSearchCV(est, {"n_steps": [3, 6]}, cv=cv).fit(X, y)
    np.testing.assert_array_equal(curve["mean"], search.cv_results_["mean_test_score"])


def test_grid_search_in_worker_processes_equals_the_serial_search(rng):
    X, y = classification_data(rng)
    pipe = make_pipeline(StandardScaler(), MeanFieldClassifier(n_steps=5, **SMALL))
    grid = {"meanfieldclassifier__lam_a": [0.25, 2.5]}
    serial = GridSearchCV(pipe, grid, cv=2).fit(X, y)
    parallel = GridSearchCV(pipe, grid, cv=2, n_jobs=2).fit(X, y)
    np.testing.assert_array_equal(serial.cv_results_["mean_test_score"], parallel.cv_results_["mean_test_score"])
    np.testing.assert_array_equal(serial.predict(X), parallel.predict(X))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(steps=[]), ValueError, "at least one"),
    (dict(steps=[-1]), ValueError, "steps"),
    (dict(steps=[2], estimator=StandardScaler()), TypeError, "MeanFieldRegressor/MeanFieldClassifier"),
])
def test_bad_arguments_raise_clearly(rng, kwargs, error, match):
    X, y = classification_data(rng, 20)
    args = dict(estimator=MeanFieldClassifier(**SMALL), X=X, y=y, cv=2) | kwargs
    with pytest.raises(error, match=match):
        steps_validation_curve(**args)
