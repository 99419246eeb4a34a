"""Tests of bench/datasets.py (mfkern's defaults against CV-tuned kernel baselines).

The quick mode runs end to end and writes the documented schema; the tuned kernel baselines it reports are
those of a search written out by hand here (explicit loops over the grid and the folds, the scaling and,
for regression, kernel ridge regression in plain numpy); the grid is widened when the choice is at an edge.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # bench/ is a folder of the repository, not part of the installed package
    sys.path.insert(0, str(REPO_ROOT))

from bench import datasets as bench_datasets  # noqa: E402


def _standardise(train, other):
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std == 0, 1.0, std)
    return (train - mean) / std, (other - mean) / std


def _rbf(A, B, gamma):
    squared = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T
    return np.exp(-gamma * np.maximum(squared, 0.0))


def _r2(y, prediction):
    return 1.0 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2)


def _krr_by_hand(X_train, y_train, X_other, alpha, gamma):
    """StandardScaler on X and y, RBF kernel ridge in closed form, predictions back in y's units."""
    Xs, Xo = _standardise(X_train, X_other)
    mean, std = y_train.mean(), y_train.std()
    dual = np.linalg.solve(_rbf(Xs, Xs, gamma) + alpha * np.eye(len(Xs)), (y_train - mean) / std)
    return _rbf(Xo, Xs, gamma) @ dual * std + mean


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("datasets_quick")
    assert bench_datasets.main(["--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "datasets_quick.json").read_text())


def test_quick_mode_writes_the_documented_schema(quick_run):
    out, document = quick_run
    assert {"machine", "wall_seconds", "total_fit_seconds", "settings", "datasets"} <= set(document)
    settings = document["settings"]
    assert settings["quick"] is True and settings["split_seeds"] == [0, 1]
    assert settings["mfkern"]["n_particles"] == bench_datasets.QUICK["mfkern"]["n_particles"]
    assert document["machine"]["git"]["commit"]
    assert set(document["datasets"]) == set(bench_datasets.QUICK["datasets"])
    for name, entry in document["datasets"].items():
        assert entry["used_for_defaults"] == (name in bench_datasets.USED_FOR_DEFAULTS)
        assert entry["metric"] == ("R^2" if name in bench_datasets.REGRESSION else "accuracy")
        for model in ("mfkern", "kernel", "linear"):
            assert len(entry["scores"][model]) == 2
            assert entry["mean"][model] == pytest.approx(np.mean(entry["scores"][model]))
            assert entry["fit_seconds"][model] > 0
            if entry["metric"] == "accuracy":
                assert all(0 <= s <= 1 for s in entry["scores"][model])
        for other in ("kernel", "linear"):
            diff = entry[f"mfkern_minus_{other}"]
            expected = np.subtract(entry["scores"]["mfkern"], entry["scores"][other])
            assert diff["per_split"] == pytest.approx(expected.tolist())
            low, high = diff["ci95"]
            assert low <= diff["mean"] <= high
        for search in entry["kernel_search"]:
            assert set(search["where"].values()) <= {"interior", "lower edge", "upper edge"}
    text = (out / "datasets_quick.md").read_text()
    assert "NOT the defaults" in text and "NOT used to choose the defaults" in text
    # A second invocation reads every run from the cache and reproduces the same scores.
    assert bench_datasets.main(["--quick", "--out", str(out)]) == 0
    again = json.loads((out / "datasets_quick.json").read_text())
    assert {n: e["scores"] for n, e in again["datasets"].items()} == \
        {n: e["scores"] for n, e in document["datasets"].items()}


def test_paired_interval_is_the_t_interval():
    d = np.array([0.1, -0.05, 0.02, 0.03, 0.0])
    mean, low, high = bench_datasets.paired_interval(d)
    half = 2.7764451051977987 * d.std(ddof=1) / math.sqrt(5)  # t_{0.975, 4}
    assert (mean, low, high) == pytest.approx((d.mean(), d.mean() - half, d.mean() + half))


def test_kernel_ridge_search_equals_a_search_by_hand():
    X, y, task = bench_datasets.load("diabetes", n_samples=80)
    X_train, X_test, y_train, y_test = bench_datasets.split(X, y, task, seed=0)
    grid = bench_datasets.QUICK["krr_grid"]
    search, info = bench_datasets.tuned_kernel(task, X_train, y_train, 0, grid=grid, n_folds=3, widen=False)

    from sklearn.model_selection import KFold

    fold_pairs = list(KFold(n_splits=3, shuffle=True, random_state=0).split(X_train))
    by_hand = {}
    for log_alpha in grid["alpha"]:
        for log_gamma in grid["gamma"]:
            scores = [_r2(y_train[val], _krr_by_hand(X_train[fit], y_train[fit], X_train[val],
                                                     10.0 ** log_alpha, 10.0 ** log_gamma))
                      for fit, val in fold_pairs]
            by_hand[(log_alpha, log_gamma)] = np.mean(scores)
    cv = search.cv_results_
    for params, score in zip(cv["params"], cv["mean_test_score"]):
        key = (math.log10(params["regressor__model__alpha"]), math.log10(params["regressor__model__gamma"]))
        assert score == pytest.approx(by_hand[min(by_hand, key=lambda k: abs(k[0] - key[0]) + abs(k[1] - key[1]))],
                                      abs=1e-8)
    best = max(by_hand, key=by_hand.get)
    assert (info["chosen_log10"]["alpha"], info["chosen_log10"]["gamma"]) == pytest.approx(best)
    test_r2 = _r2(y_test, _krr_by_hand(X_train, y_train, X_test, 10.0 ** best[0], 10.0 ** best[1]))
    assert search.score(X_test, y_test) == pytest.approx(test_r2, abs=1e-8)


def test_svc_baseline_of_a_run_equals_a_search_by_hand():
    """The score run_one records for the tuned SVC is that of an explicit loop over its final grid."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    spec = bench_datasets.specs_for(("iris",), 1, quick=True)[1]
    assert spec["model"] == "kernel"
    result = bench_datasets.run_one(spec)
    X, y, task = bench_datasets.load("iris", n_samples=spec["n_samples"])
    X_train, X_test, y_train, y_test = bench_datasets.split(X, y, task, seed=0)
    grid = result["search"]["grid_log10"]
    fold_pairs = list(StratifiedKFold(n_splits=3, shuffle=True, random_state=0).split(X_train, y_train))
    best, best_score = None, -np.inf
    for log_c in grid["C"]:  # GridSearchCV's order (C outer, gamma inner); its ties go to the first
        for log_gamma in grid["gamma"]:
            scores = []
            for fit, val in fold_pairs:
                Xf, Xv = _standardise(X_train[fit], X_train[val])
                model = SVC(C=10.0 ** log_c, gamma=10.0 ** log_gamma).fit(Xf, y_train[fit])
                scores.append(np.mean(model.predict(Xv) == y_train[val]))
            if np.mean(scores) > best_score:
                best, best_score = (log_c, log_gamma), np.mean(scores)
    assert (result["search"]["chosen_log10"]["C"], result["search"]["chosen_log10"]["gamma"]) == pytest.approx(best)
    assert result["search"]["cv_score"] == pytest.approx(best_score, abs=1e-12)
    Xs, Xt = _standardise(X_train, X_test)
    model = SVC(C=10.0 ** best[0], gamma=10.0 ** best[1]).fit(Xs, y_train)
    assert result["score"] == pytest.approx(np.mean(model.predict(Xt) == y_test), abs=1e-12)


def test_a_choice_at_the_edge_widens_the_grid():
    X, y, task = bench_datasets.load("diabetes", n_samples=80)
    X_train, _, y_train, _ = bench_datasets.split(X, y, task, seed=0)
    # alpha >= 10 over-regularises this small problem: the best alpha is at the lower edge at first.
    grid = {"alpha": np.array([1.0, 2.0]), "gamma": np.array([-3.0, -2.0, -1.0])}
    _, narrow = bench_datasets.tuned_kernel(task, X_train, y_train, 0, grid=grid, n_folds=3, widen=False)
    assert narrow["where"]["alpha"] == "lower edge" and narrow["widenings"] == 0
    _, wide = bench_datasets.tuned_kernel(task, X_train, y_train, 0, grid=grid, n_folds=3)
    assert wide["widenings"] >= 1
    assert min(wide["grid_log10"]["alpha"]) <= 1.0 - bench_datasets.WIDEN_BY
    assert wide["where"]["alpha"] == "interior" or wide["widenings"] == bench_datasets.MAX_WIDENINGS
    assert wide["cv_score"] >= narrow["cv_score"]


def test_unknown_dataset_is_refused():
    with pytest.raises(ValueError, match="dataset must be one of"):
        bench_datasets.load("mnist")
