"""Tests of ``mfkern reproduce parity`` (mfkern.experiments.parity): the wiring at a tiny size (files, JSON
schema, summary = runs), the baselines against scikit-learn and the classifier computed independently here,
and the summary logic."""
from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC

from mfkern import core
from mfkern.classifier import MeanFieldClassifier
from mfkern.experiments.common import make_task
from mfkern.experiments.parity import METHODS, ParityConfig, _verdict, parity_run, reached, run_parity

TINY = ParityConfig(ks=(2,), ds=(4,), ns=(24, 48), seeds=2, n_test=200, n_particles=20, n_steps=20, log_every=10)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    return run_parity(out, config=TINY, verbose=False), out


def test_writes_json_markdown_and_figures(tiny_result):
    result, out = tiny_result
    assert sorted(p.name for p in out.iterdir()) == ["parity.json", "parity.md", "parity.png", "parity_training.png"]
    data = json.loads((out / "parity.json").read_text())
    assert data["experiment"] == "parity" and data["config"] == json.loads(json.dumps(asdict(TINY)))
    assert {"versions", "platform", "timestamp"} <= set(data["metadata"])
    assert data["wall_time"] > 0 and data["learned_threshold"] == 0.9
    assert len(data["runs"]) == 2 * 2  # ns x seeds
    for run in data["runs"]:
        assert set(run["methods"]) == set(METHODS)
        for stats in run["methods"].values():
            assert 0 <= stats["test_accuracy"] <= 1
        history = run["mfld_history"]
        assert history["step"] == [0, 10, 20]
        assert all(len(values) == 3 for values in history.values())
    assert (out / "parity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "parity.md").read_text()
    assert "| k | d | n |" in text and data["verdict"] in text


def test_summary_is_the_mean_and_std_over_seeds(tiny_result):
    result, _ = tiny_result
    for row in result["summary"]:
        cell = [r for r in result["runs"] if (r["k"], r["d"], r["n"]) == (row["k"], row["d"], row["n"])]
        assert len(cell) == TINY.seeds
        for method in METHODS:
            values = [r["methods"][method]["test_accuracy"] for r in cell]
            assert row[method]["mean"] == pytest.approx(np.mean(values), abs=1e-12)
            assert row[method]["std"] == pytest.approx(np.std(values), abs=1e-12)
    for threshold in result["thresholds"]:
        rows = [r for r in result["summary"] if (r["k"], r["d"]) == (threshold["k"], threshold["d"])]
        assert threshold["mfld"] == reached([r["n"] for r in rows], [r["mfld"]["mean"] for r in rows])


def test_one_run_agrees_with_the_classifier_and_scikit_learn():
    """MFLD and the step-0 baseline replayed with MeanFieldClassifier; the SVC on the initial Gram with
    scikit-learn directly."""
    k, d, n, seed = 2, 5, 40, 3
    run = parity_run(k=k, d=d, n=n, seed=seed, config=asdict(TINY))
    task = make_task("parity", n, d, k=k, seed=seed, n_test=TINY.n_test)
    est = MeanFieldClassifier(n_particles=TINY.n_particles, n_steps=TINY.n_steps, lam=TINY.lam, lam_a=TINY.lam_a,
                              lam_w=TINY.lam_w, eta=TINY.eta, random_state=run["methods"]["mfld"]["random_state"],
                              input_scale=1.0)
    est.fit(task.X, task.f_train)
    assert run["methods"]["mfld"]["test_accuracy"] == est.score(task.X_test, task.f_test)
    lazy = est.set_params(n_steps=0).fit(task.X, task.f_train)
    assert run["methods"]["init_kernel_klr"]["test_accuracy"] == lazy.score(task.X_test, task.f_test)
    W0 = lazy.particles_
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    svc = GridSearchCV(SVC(kernel="precomputed"), {"C": list(np.logspace(-2, 3, 6))}, cv=folds)
    svc.fit(core.gram(W0, task.X), task.f_train)
    expected = np.mean(svc.predict(core.gram(W0, task.X_test, task.X)) == task.f_test)
    assert run["methods"]["init_kernel_svc"]["test_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert run["methods"]["init_kernel_svc"]["C"] == svc.best_params_["C"]


def test_reached_and_verdict():
    assert reached([50, 100, 200], [0.6, 0.95, 0.99]) == 100
    assert reached([50, 100], [0.6, 0.7]) is None
    thresholds = [dict(k=2, d=8, mfld=50, init_kernel_klr=None, init_kernel_klr_cv=200, init_kernel_svc=200,
                       rbf_svc=50),
                  dict(k=2, d=16, mfld=100, init_kernel_klr=None, init_kernel_klr_cv=None, init_kernel_svc=None,
                       rbf_svc=200),
                  dict(k=3, d=16, mfld=None, init_kernel_klr=None, init_kernel_klr_cv=None, init_kernel_svc=None,
                       rbf_svc=400)]
    text = _verdict(thresholds, TINY)
    assert "smaller n than every fixed kernel for: k = 2, d = 16." in text
    assert "same n of the grid for: k = 2, d = 8." in text
    assert "does NOT for: k = 3, d = 16" in text


def test_bad_seeds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run_parity(tmp_path, config=TINY, seeds=0, verbose=False)
