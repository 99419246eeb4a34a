"""Tests of ``mfkern reproduce parity`` (mfkern.experiments.parity): wiring at a tiny size (files, JSON, claims
from the runs), the MFLD job against MeanFieldClassifier run directly, a baseline against scikit-learn, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn.model_selection import GridSearchCV, StratifiedKFold  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from mfkern.classifier import MeanFieldClassifier  # noqa: E402
from mfkern.experiments import protocol  # noqa: E402
from mfkern.experiments.mfld import baseline_job  # noqa: E402
from mfkern.experiments.parity import METHODS, ParityConfig, parity_job, run_parity  # noqa: E402
from mfkern.experiments.tasks import make_task  # noqa: E402
from mfkern.runner import derive_seed  # noqa: E402

TINY = ParityConfig(ks=(2,), ds=(4,), ns=(24, 48), eval_seeds=2, tuning_seeds=1, n_test=200, n_particles=16,
                    n_steps=10, log_every=5)


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("parity")
    return run_parity(out, config=TINY, verbose=False), out


def test_writes_json_markdown_figure_and_cache(tiny_result):
    result, out = tiny_result
    assert sorted(p.name for p in out.iterdir()) == ["cache", "parity.json", "parity.md", "parity.png"]
    data = json.loads((out / "parity.json").read_text())
    assert data["experiment"] == "parity" and data["wall_time"] > 0
    assert {"versions", "commit", "platform", "timestamp"} <= set(data["metadata"])
    assert not set(data["evaluation_seeds"]) & set(data["tuning_seeds"])
    assert len(data["runs"]) == 2 * 2 * (1 + len(METHODS) - 2)  # ns x seeds x (mfld + tuned baselines)
    assert [c["id"] for c in data["claims"]] == ["parity-k2-d4"]
    assert "| k | d | n |" in (out / "parity.md").read_text()


def test_claim_is_the_paired_interval_of_the_mean_accuracy_over_n(tiny_result):
    result, _ = tiny_result
    runs = result["runs"]

    def mean_acc(method):
        return [np.mean([r["result"]["test_accuracy"] for r in runs if r["method"] == method and r["seed_index"] == s])
                for s in range(TINY.eval_seeds)]

    claim = result["claims"][0]
    for part, baseline in zip(claim["parts"], METHODS[2:]):
        expected = protocol.paired_interval(mean_acc("mfld"), mean_acc(baseline))
        assert part["interval"]["estimate"] == pytest.approx(expected["estimate"])
        assert part["interval"]["low"] == pytest.approx(expected["low"])
    assert claim["verdict"] == protocol.all_of(p["verdict"] for p in claim["parts"])


def test_mfld_job_is_the_classifier_and_svc_baseline_is_sklearn():
    task = dict(name="parity", n=40, d=5, k=2, seed=3, n_test=TINY.n_test)
    config = dict(lam=0.01, lam_a=1.0, lam_w=4.0, eta=0.5, n_particles=16, n_steps=10, log_every=5)
    run = parity_job(dict(job="mfld", task=task, config=config, seed=7))
    t = make_task(**task)
    est = MeanFieldClassifier(n_particles=16, n_steps=10, lam=0.01, lam_a=1.0, lam_w=4.0, eta=0.5, random_state=7,
                              input_scale=1.0)
    est.fit(t.X, t.f_train)
    assert run["test_accuracy"] == est.score(t.X_test, t.f_test)
    assert run["step0_accuracy"] == est.set_params(n_steps=0).fit(t.X, t.f_train).score(t.X_test, t.f_test)
    particles = dict(n_particles=16, lam_w=4.0, input_scale=1.0, seed=7, activation="tanh")
    res = baseline_job(dict(job="baseline", task=task, baseline="svc_rbf", n_folds=3, particles=particles))
    folds = list(StratifiedKFold(3, shuffle=True, random_state=derive_seed(7, "folds", "svc_rbf") % 2**32)
                 .split(t.X, t.f_train))
    C, gamma = res["params"]["C"], res["params"]["gamma"]
    gs = GridSearchCV(SVC(kernel="rbf"), {"C": [C], "gamma": [gamma]}, cv=folds).fit(t.X, t.f_train)
    assert res["cv_score"] == pytest.approx(gs.best_score_)
    assert res["test_accuracy"] == pytest.approx(np.mean(gs.predict(t.X_test) == t.f_test))


def test_rerun_resumes_from_the_cache(tiny_result):
    result, out = tiny_result
    lines = (out / "cache" / "parity.jsonl").read_text().count("\n")
    again = run_parity(out, config=TINY, verbose=False)
    assert (out / "cache" / "parity.jsonl").read_text().count("\n") == lines
    assert again["claims"] == result["claims"]


def test_one_cell_reuses_the_full_runs_cache_and_gives_its_claim(tmp_path):
    """What `mfkern reproduce parity-k2-d5` runs: one (k, d) cell of the configuration, every run from the
    full run's cache, the same verdict and interval as the full run's claim for that cell."""
    two = ParityConfig(**{**TINY.__dict__, "ds": (4, 5)})
    full = run_parity(tmp_path, config=two, verbose=False)
    lines = (tmp_path / "cache" / "parity.jsonl").read_text().count("\n")
    one = run_parity(tmp_path / "claim", config=two, cells=[(2, 5)], cache_dir=tmp_path / "cache", verbose=False)
    assert (tmp_path / "cache" / "parity.jsonl").read_text().count("\n") == lines  # nothing rerun
    assert one["claims"] == [c for c in full["claims"] if c["id"] == "parity-k2-d5"]
    with pytest.raises(ValueError, match="cells"):
        run_parity(tmp_path, config=two, cells=[(3, 4)], verbose=False)


def test_bad_seeds_are_refused(tmp_path):
    with pytest.raises(ValueError, match="seeds"):
        run_parity(tmp_path, config=TINY, seeds=0, verbose=False)
