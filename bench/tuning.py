"""Cost of tuning MFLD with scikit-learn's GridSearchCV, and of the steps curve (results: bench/results/tuning.md).

On load_breast_cancer (n = 569, d = 30; the whole set, 3-fold CV), a Pipeline(StandardScaler,
MeanFieldClassifier(n_particles=300, n_threads=1)):

1. GridSearchCV over lam_a in {0.25, 1} x input_scale in {"auto", 0.1} at 200 steps, n_jobs = 1 and 2;
2. the number of steps in {50, 100, 200}: GridSearchCV over n_steps (3 fits per fold) against
   ``mfkern.tuning.steps_validation_curve`` (1 fit of 200 steps per fold), which gives the same scores.

Wall times and the machine's load average are recorded (the machine is shared).

    python bench/tuning.py
"""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))


def timed(label, function, log):
    load = os.getloadavg()
    t0 = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - t0
    log[label] = dict(seconds=seconds, load_before=load, load_after=os.getloadavg())
    print(f"{label}: {seconds:.1f} s (load {load[0]:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
    return result


def main():
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mfkern import MeanFieldClassifier
    from mfkern.tuning import steps_validation_curve

    X, y = load_breast_cancer(return_X_y=True)
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    pipe = make_pipeline(StandardScaler(), MeanFieldClassifier(n_particles=300, n_steps=200, random_state=0,
                                                               n_threads=1))
    grid = {"meanfieldclassifier__lam_a": [0.25, 1.0], "meanfieldclassifier__input_scale": ["auto", 0.1]}
    log = {}
    serial = timed("grid 2x2, n_jobs=1", lambda: GridSearchCV(pipe, grid, cv=cv).fit(X, y), log)
    parallel = timed("grid 2x2, n_jobs=2", lambda: GridSearchCV(pipe, grid, cv=cv, n_jobs=2).fit(X, y), log)
    assert np.array_equal(serial.cv_results_["mean_test_score"], parallel.cv_results_["mean_test_score"])
    steps = [50, 100, 200]
    search = timed("n_steps by GridSearchCV (9 fits)", lambda: GridSearchCV(
        pipe, {"meanfieldclassifier__n_steps": steps}, cv=cv).fit(X, y), log)
    curve = timed("n_steps by steps_validation_curve (3 fits)", lambda: steps_validation_curve(
        pipe, X, y, steps=steps, cv=cv), log)
    same = bool(np.array_equal(curve["mean"], search.cv_results_["mean_test_score"]))
    results = dict(timings=log, grid_best=serial.best_params_, grid_best_score=float(serial.best_score_),
                   grid_scores=serial.cv_results_["mean_test_score"].tolist(),
                   steps=steps, steps_scores=curve["mean"].tolist(), steps_curve_equals_grid_search=same,
                   cpus=os.cpu_count())
    (HERE / "results" / "tuning.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
