"""Tests of mfkern.experiments: data, baselines (against scikit-learn and numpy), result files, wiring at tiny
sizes, and one small but meaningful MFLD run that must learn.

Run from outside the repository root (the installed package is imported). Total runtime: well under a minute.
"""
import json
import math
import os

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

from sklearn.kernel_ridge import KernelRidge  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402

from mfkern import core  # noqa: E402
from mfkern.experiments import common, demo, fig1, fig2, separation, single_index  # noqa: E402
from mfkern.experiments.common import (  # noqa: E402
    derive_seed,
    init_kernel_krr,
    initial_particles,
    make_task,
    markdown_table,
    random_features,
    rbf_krr_cv,
    subspace_alignment,
    write_json,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = dict(n_test=60, n_particles=20, n_steps=10, log_every=5)


def numpy_gram(W, X, X2=None):
    """Reference intrinsic-kernel Gram (1/N) tanh(X1 W^T) tanh(X2_1 W^T)^T, written independently of the core."""
    X2 = X if X2 is None else X2
    H1 = np.tanh(X @ W[:, :-1].T + W[:, -1])
    H2 = np.tanh(X2 @ W[:, :-1].T + W[:, -1])
    return H1 @ H2.T / W.shape[0]


# ------------------------------------------------------------------------------------------- data and seeds
def test_derive_seed_is_deterministic_and_separates_keys():
    assert derive_seed(3, "a", 1) == derive_seed(3, "a", 1)
    seeds = {derive_seed(3, "a", 1), derive_seed(3, "a", 2), derive_seed(3, "b", 1), derive_seed(4, "a", 1)}
    assert len(seeds) == 4
    assert all(0 <= s < 2**64 for s in seeds)
    with pytest.raises(ValueError, match="base"):
        derive_seed(-1)


@pytest.mark.parametrize("name", common.TASKS)
def test_make_task_targets_shapes_and_noise(name):
    task = make_task(name, 50, 6, seed=1, sigma=0.3, n_test=40, k=3)
    assert task.X.shape == (50, 6) and task.X_test.shape == (40, 6)
    X, Xt = task.X, task.X_test
    if name == "product":
        np.testing.assert_array_equal(task.f_train, X[:, 0] * X[:, 1])
        np.testing.assert_array_equal(task.f_test, Xt[:, 0] * Xt[:, 1])
        assert task.subspace.shape == (2, 6)
    elif name == "parity":
        assert set(np.unique(X)) == {-1.0, 1.0}
        np.testing.assert_array_equal(task.f_train, X[:, 0] * X[:, 1] * X[:, 2])
        assert task.subspace.shape == (3, 6)
    else:
        np.testing.assert_allclose(task.f_train, (X[:, 0] ** 2 - 1) / math.sqrt(2))
        assert task.subspace.shape == (1, 6)
    noise = task.y - task.f_train
    assert np.all(np.abs(noise) <= 0.3) and np.std(noise) > 0.05
    # Same seed, another noise level: same inputs and test set, noise scaled.
    other = make_task(name, 50, 6, seed=1, sigma=0.6, n_test=40, k=3)
    np.testing.assert_array_equal(other.X, task.X)
    np.testing.assert_allclose(other.y - other.f_train, 2 * noise)


def test_make_task_rejects_bad_input():
    with pytest.raises(ValueError, match="name"):
        make_task("nope", 10, 3, seed=0)
    with pytest.raises(ValueError, match="n"):
        make_task("product", 1, 3, seed=0)
    with pytest.raises(ValueError, match="sigma"):
        make_task("product", 10, 3, seed=0, sigma=-1)
    with pytest.raises(ValueError, match="k"):
        make_task("parity", 10, 3, seed=0, k=4)


def test_initial_particles_match_the_estimator():
    from mfkern.estimator import MeanFieldRegressor

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((15, 3)), rng.standard_normal(15)
    est = MeanFieldRegressor(n_particles=7, n_steps=0, lam_w=2.0, random_state=11).fit(X, y)
    np.testing.assert_array_equal(est.particles_, initial_particles(7, 3, 2.0, 11))


def test_subspace_alignment_against_core_and_monte_carlo():
    rng = np.random.default_rng(5)
    W = rng.standard_normal((40, 8))
    u = rng.standard_normal(7)
    assert subspace_alignment(W, u[None, :]) == pytest.approx(core.parameter_alignment(W, u), rel=1e-12)
    # Hand-made example: u_1 = (3, 4, 0) -> 9/25 on e1; u_2 = (0, 0, 2) -> 0; mean over particles.
    W2 = np.array([[3.0, 4.0, 0.0, 1.0], [0.0, 0.0, 2.0, -1.0]])
    assert subspace_alignment(W2, np.eye(3)[:1]) == pytest.approx(9 / 50)
    assert subspace_alignment(W2, np.eye(3)[:2]) == pytest.approx(0.5)
    # A non-orthonormal basis of the same plane gives the same value.
    assert subspace_alignment(W2, np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])) == pytest.approx(0.5)
    # Isotropic u: ||P u||^2/||u||^2 ~ Beta(r/2, (d-r)/2), mean r/d, variance known in closed form.
    d, r, N = 15, 2, 20000
    W3 = rng.standard_normal((N, d + 1)) * 2.0
    a, b = r / 2, (d - r) / 2
    sd_of_mean = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / N)
    assert abs(subspace_alignment(W3, np.eye(d)[:r]) - r / d) < 5 * sd_of_mean
    with pytest.raises(ValueError, match="independent"):
        subspace_alignment(W2, np.array([[1.0, 0, 0], [2.0, 0, 0]]))
    with pytest.raises(ValueError, match="columns"):
        subspace_alignment(W2, np.eye(5)[:1])


# ------------------------------------------------------------------------------------------- baselines
@pytest.fixture(scope="module")
def small_problem():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((70, 5)) / math.sqrt(5)
    y = np.sin(3 * X[:, 0]) + 0.1 * rng.standard_normal(70)
    X_test = rng.standard_normal((30, 5)) / math.sqrt(5)
    W = rng.standard_normal((40, 6))
    return X, y, X_test, W


def test_init_kernel_krr_matches_numpy_and_sklearn(small_problem):
    X, y, X_test, W = small_problem
    ridge = 0.07
    out = init_kernel_krr(W, X, y, X_test, ridge=ridge)
    K, K_test = numpy_gram(W, X), numpy_gram(W, X_test, X)
    expected = K_test @ np.linalg.solve(K + ridge * np.eye(len(y)), y)
    np.testing.assert_allclose(out["pred"], expected, rtol=1e-8, atol=1e-10)
    assert out["ridge"] == ridge
    # CV ridge: the same choice as GridSearchCV on the precomputed numpy Gram.
    alphas = [1e-4, 1e-2, 1.0]
    out_cv = init_kernel_krr(W, X, y, X_test, cv=True, alphas=alphas)
    search = GridSearchCV(KernelRidge(kernel="precomputed"), {"alpha": alphas}, cv=5,
                          scoring="neg_mean_squared_error").fit(K, y)
    assert out_cv["ridge"] == search.best_params_["alpha"]
    np.testing.assert_allclose(out_cv["pred"], search.predict(K_test), rtol=1e-7, atol=1e-9)
    with pytest.raises(TypeError, match="ridge"):
        init_kernel_krr(W, X, y, X_test)


def test_init_kernel_krr_is_mfld_at_step_zero(small_problem):
    """The lazy baseline is exactly the untrained network: MeanFieldRegressor with n_steps=0."""
    from mfkern.estimator import MeanFieldRegressor

    X, y, X_test, _ = small_problem
    est = MeanFieldRegressor(n_particles=30, n_steps=0, lam=0.01, lam_a=0.5, lam_w=3.0, random_state=4,
                             input_scale=1.0).fit(X, y)  # raw inputs, like init_kernel_krr
    W0 = initial_particles(30, X.shape[1], 3.0, 4)
    out = init_kernel_krr(W0, X, y, X_test, ridge=len(y) * 0.01 * 0.5)
    np.testing.assert_allclose(out["pred"], est.predict(X_test), rtol=1e-8, atol=1e-10)


def test_random_features_equal_init_kernel_krr_with_same_particles_and_ridge(small_problem):
    X, y, X_test, W = small_problem
    rf = random_features(X, y, X_test, n_features=None, lam_w=1.0, seed=0, ridge=0.05, W=W)
    krr = init_kernel_krr(W, X, y, X_test, ridge=0.05)
    np.testing.assert_allclose(rf["pred"], krr["pred"], rtol=1e-7, atol=1e-9)
    assert rf["n_features"] == W.shape[0]


def test_random_features_cv_matches_sklearn_ridgecv(small_problem):
    from sklearn.linear_model import RidgeCV

    X, y, X_test, _ = small_problem
    alphas = [1e-3, 1e-1, 10.0]
    rf = random_features(X, y, X_test, n_features=50, lam_w=2.0, seed=9, alphas=alphas)
    W = initial_particles(50, X.shape[1], 2.0, 9)
    Phi = np.tanh(X @ W[:, :-1].T + W[:, -1]) / math.sqrt(50)
    Phi_test = np.tanh(X_test @ W[:, :-1].T + W[:, -1]) / math.sqrt(50)
    model = RidgeCV(alphas=alphas, fit_intercept=False).fit(Phi, y)
    assert rf["ridge"] == model.alpha_
    np.testing.assert_allclose(rf["pred"], model.predict(Phi_test), rtol=1e-7, atol=1e-9)


def test_rbf_krr_cv_matches_gridsearchcv(small_problem):
    X, y, X_test, _ = small_problem
    gamma_factors, alphas = (0.03, 0.3, 3.0), (1e-4, 1e-2, 1.0)
    out = rbf_krr_cv(X, y, X_test, gamma_factors=gamma_factors, alphas=alphas)
    d = X.shape[1]
    search = GridSearchCV(KernelRidge(kernel="rbf"), {"gamma": [g / d for g in gamma_factors], "alpha": list(alphas)},
                          cv=5, scoring="neg_mean_squared_error").fit(X, y)
    assert out["gamma"] == pytest.approx(search.best_params_["gamma"])
    assert out["alpha"] == search.best_params_["alpha"]
    assert out["cv_mse"] == pytest.approx(-search.best_score_, rel=1e-6)
    np.testing.assert_allclose(out["pred"], search.predict(X_test), rtol=1e-7, atol=1e-9)
    scores = common.rbf_cv_scores(X, y, [g / d for g in gamma_factors], alphas)
    np.testing.assert_allclose(np.sort(scores.ravel()), np.sort(-search.cv_results_["mean_test_score"]), rtol=1e-6)


# ------------------------------------------------------------------------------------------- result helpers
def test_write_json_handles_numpy_and_non_finite(tmp_path):
    path = write_json(tmp_path / "sub" / "r.json", {"a": np.float64(1.5), "b": np.arange(3), "c": float("nan"),
                                                     "d": [np.inf, np.int64(2)], "e": np.bool_(True)})
    with open(path) as fh:
        data = json.load(fh)
    assert data == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": [None, 2], "e": True}
    assert not [p for p in os.listdir(tmp_path / "sub") if ".tmp" in p]


def test_markdown_table_format():
    table = markdown_table(["x", "y"], [["a", 0.123456], ["b", float("nan")]])
    assert table.splitlines() == ["| x | y |", "|---|---|", "| a | 0.1235 |", "| b | nan |"]


def test_sample_size_to_reach_and_loglog_slope():
    ns = [10, 20, 40, 80]
    mse = [4.0 / n ** 0.5 for n in ns]  # falls to 0.5 at n = 64, between 40 and 80
    assert separation.sample_size_to_reach(ns, mse, 0.5) == pytest.approx(64.0)
    assert separation.sample_size_to_reach(ns, mse, 10.0) == 10.0
    assert separation.sample_size_to_reach(ns, mse, 0.01) is None
    assert single_index.loglog_slope([2, 4, 8, 16], [3 * d ** -0.7 for d in [2, 4, 8, 16]]) == pytest.approx(-0.7)


# ------------------------------------------------------------------------------------------- wiring
def _check_png(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    assert os.path.getsize(path) > 5000


def _check_outputs(results, out_dir, name, pngs):
    for key in ("metadata", "wall_time", "files", "runs", "claims"):
        assert key in results
    with open(os.path.join(out_dir, f"{name}.json")) as fh:
        data = json.load(fh)
    assert data["experiment"] == name
    assert set(data["metadata"]["versions"]) >= {"mfkern", "numpy", "scipy", "sklearn", "python"}
    assert data["wall_time"] > 0
    for run in data["runs"]:
        assert {"task", "config", "seed", "mfld"} <= set(run)
        assert {"step", "test_mse", "kernel_alignment", "dof", "parameter_alignment"} <= set(run["mfld"]["history"])
    for c in data["claims"]:
        assert set(c) == {"claim", "holds", "detail"} and isinstance(c["holds"], bool)
    with open(os.path.join(out_dir, f"{name}.md")) as fh:
        assert fh.read().startswith(f"# {name}")
    for png in pngs:
        _check_png(os.path.join(out_dir, png))
    return data


def test_demo_wiring(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "QUICK_SETTINGS", dict(demo.QUICK_SETTINGS, n=30, **TINY))
    results = demo.run_demo(tmp_path, quick=True, seed=3)
    out = capsys.readouterr().out
    assert "| MFLD (two-timescale) |" in out and "degrees of freedom" in out
    with open(tmp_path / "demo.json") as fh:
        data = json.load(fh)
    assert set(data["baselines"]) == {"init_kernel", "init_kernel_cv", "rbf_cv", "random_features"}
    assert data["seeds"]["base"] == 3 and data["settings"]["n"] == 30
    assert data["mfld"]["history"]["step"] == [0, 5, 10]
    assert data["mfld_config"]["input_scale"] == pytest.approx(1 / math.sqrt(15))
    # The lazy baseline is MFLD at step 0 (same particles, same ridge).
    assert data["baselines"]["init_kernel"]["test_mse"] == pytest.approx(data["mfld"]["initial"]["test_mse"],
                                                                         rel=1e-8)
    for name in ("demo_training.png", "demo_comparison.png"):
        _check_png(tmp_path / name)
    assert (tmp_path / "demo.md").read_text().startswith("# mfkern demo")
    assert results["wall_time"] > 0


def test_fig1_and_fig2_wiring(tmp_path, monkeypatch):
    monkeypatch.setattr(fig1, "QUICK", dict(fig1.QUICK, n=30, levels=(0.0, 1.0), **TINY))
    monkeypatch.setattr(fig2, "QUICK", dict(fig2.QUICK, n=30, levels=(0.0, 1.0), **TINY))
    r1 = fig1.run_fig1(tmp_path, quick=True, seeds=2, verbose=False)
    data = _check_outputs(r1, tmp_path, "fig1", ["fig1.png"])
    assert [row["sigma"] for row in data["summary"]] == [0.0, 1.0]
    assert len(data["runs"]) == 4 and len(data["claims"]) == 3
    r2 = fig2.run_fig2(tmp_path, quick=True, seeds=1, verbose=False)
    data = _check_outputs(r2, tmp_path, "fig2", ["fig2.png"])
    assert [run["config"]["label_noise"] for run in data["runs"]] == [0.0, 1.0]
    assert all(run["task"]["sigma"] == fig2.DATA_SIGMA for run in data["runs"])


def test_separation_and_single_index_wiring(tmp_path, monkeypatch):
    monkeypatch.setattr(separation, "QUICK", dict(separation.QUICK, ns=(20, 40),
                                                  panels=(("product", 5), ("parity", 4), ("parity", 6)), **TINY))
    monkeypatch.setattr(single_index, "QUICK", dict(single_index.QUICK, ds=(3, 6), n_per_d=6, **TINY))
    r = separation.run_separation(tmp_path, quick=True, seeds=1, verbose=False)
    data = _check_outputs(r, tmp_path, "separation", ["separation.png"])
    assert set(data["table"]) == {"product d=5", "parity d=4", "parity d=6"}
    assert set(data["table"]["parity d=4"]) == set(separation.METHODS)
    assert len(data["table"]["parity d=4"]["mfld"]["mean"]) == 2 and len(data["runs"]) == 6
    r = single_index.run_single_index(tmp_path, quick=True, seeds=1, verbose=False)
    data = _check_outputs(r, tmp_path, "single-index", ["single-index.png"])
    assert [row["d"] for row in data["summary"]] == [3, 6]
    assert set(data["slopes"]) == {"kernel_alignment_initial", "kernel_alignment_final",
                                   "parameter_alignment_initial", "parameter_alignment_final"}


def test_run_grid_in_two_processes_matches_one(tmp_path):
    """Parallel runs (spawned processes, one thread each) give exactly the serial results."""
    cases = [dict(task_kwargs=dict(name="product", n=20, d=4, seed=s, n_test=20),
                  config=common.mfld_config("normalised", 4, n_particles=10, n_steps=4, log_every=2).as_dict(),
                  seed=s) for s in range(2)]
    serial = common.run_grid(cases, n_jobs=1)
    parallel = common.run_grid(cases, n_jobs=2)
    for a, b in zip(serial, parallel):
        assert a["mfld"]["history"]["test_mse"] == b["mfld"]["history"]["test_mse"]


# ------------------------------------------------------------------------------------------- MFLD learns
def test_mfld_learns_features_and_beats_the_initial_kernel():
    """x1*x2 in d = 15, n = 60 clean samples, N = 100 particles, 100 steps, the demo's hyper-parameters.

    Measured (seed 0): test MSE 1.02 -> 0.55 while the initial-kernel KRR (the untrained network, computed here
    by scikit-learn from the initial particles) stays at 1.02; parameter alignment with span(e1, e2)
    0.11 -> 0.24 (isotropic: 2/15 = 0.133); kernel alignment 0.014 -> 0.048. Over seeds 0-4 the MSE ratio was
    0.52-0.78. A trainer that does not follow the drift keeps the MSE ratio near 1 and the parameter alignment
    near 2/15, far from the margins asserted here.
    """
    config = common.mfld_config("normalised", 15, n_particles=100, n_steps=100, log_every=50)
    result = common.run_case(dict(name="product", n=60, d=15, seed=0, n_test=500), config, seed=0,
                             baselines=("init_kernel",))
    initial, final = result["mfld"]["initial"], result["mfld"]["final"]
    lazy = result["baselines"]["init_kernel"]["test_mse"]
    assert initial["test_mse"] == pytest.approx(lazy, rel=1e-8)
    assert final["test_mse"] < 0.75 * lazy
    assert final["parameter_alignment"] > initial["parameter_alignment"] + 0.05
    assert final["parameter_alignment"] > 2 / 15 + 0.05
    assert final["kernel_alignment"] > 1.5 * initial["kernel_alignment"]
