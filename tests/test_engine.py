"""Tests of mfkern.engine: every second-layer solver against a dense solution, diagnostics against numpy,
divergence and Ctrl-C in the middle of run(k), resume, split runs and thread-count determinism."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from mfkern import core
from mfkern.engine import CG_MIN_SAMPLES, Engine, choose_solver, engine_bytes, run_ensemble

HYPER = dict(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2)


def task(rng, n, d, N, tasks=1):
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    columns = [X[:, 0] * X[:, 1]] + [np.sin(3 * X[:, i]) for i in range(1, tasks)]
    Y = np.column_stack(columns)
    W = rng.standard_normal((N, d + 1)) / np.sqrt(HYPER["lam_w"])
    return X, Y, W


def make(X, Y, W, solver, **kw):
    params = dict(HYPER, seed=11, n_threads=1)
    params.update(kw)
    return Engine(X, Y, W, solver=solver, **params)


def relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


# ------------------------------------------------------------------------------------ solvers agree
def test_dense_engine_replays_core_langevin_steps_bitwise(rng):
    X, Y, W = task(rng, 40, 4, 50)
    engine = make(X, Y, W, "dense", label_noise=0.3)
    assert engine.run(15).status == "completed" and engine.step == 15
    for step in range(15):
        W = core.langevin_step(W, X, Y, seed=11, step=step, label_noise_level=0.3, solver="dense", n_threads=1,
                               **HYPER)
    np.testing.assert_array_equal(engine.particles, W)


@pytest.mark.parametrize("label_noise, tasks", [(0.0, 1), (1.0, 1), (0.0, 3)])
def test_cg_matches_the_dense_path_after_200_steps(rng, label_noise, tasks):
    X, Y, W = task(rng, 300, 6, 400, tasks)
    X_new = rng.standard_normal((50, 6)) / np.sqrt(6)
    runs = {}
    for solver in ("dense", "cg"):
        engine = make(X, Y, W, solver, label_noise=label_noise)
        assert engine.run(200).status == "completed"
        engine.diagnostics()
        runs[solver] = (engine.particles,
                        core.network_output(engine.particles, engine.output_weights(), X_new), engine.stats)
    assert relative(runs["cg"][0], runs["dense"][0]) <= 1e-8
    assert relative(runs["cg"][1], runs["dense"][1]) <= 1e-8
    stats = runs["cg"][2]
    # CG did most solves (how many factorisations the cost rule chooses depends on the size), none failed
    assert stats["cg_solves"] >= 100 and stats["cg_fallbacks"] == 0
    assert stats["factorizations"] + stats["cg_solves"] == 201  # 200 steps and the diagnostics


def test_woodbury_matches_the_dense_path(rng):
    X, Y, W = task(rng, 120, 5, 60)
    a, b = make(X, Y, W, "dense", label_noise=0.5), make(X, Y, W, "woodbury", label_noise=0.5)
    a.run(50), b.run(50)
    assert relative(b.particles, a.particles) <= 1e-8
    da, db = a.diagnostics(), b.diagnostics()
    for key in ("U", "G", "dof", "train_mse"):
        np.testing.assert_allclose(db[key], da[key], rtol=1e-8, err_msg=key)
    np.testing.assert_allclose(b.dual, a.dual, rtol=1e-7, atol=1e-10)


def test_cg_that_never_converges_falls_back_to_the_exact_dense_solve(rng):
    X, Y, W = task(rng, 300, 5, 300)
    dense, cg = make(X, Y, W, "dense"), make(X, Y, W, "cg", max_iterations=1)
    dense.run(20), cg.run(20)
    stats = cg.stats
    assert stats["cg_fallbacks"] == stats["solves"] - 1 == 19  # the first solve factors; every CG then fails
    np.testing.assert_array_equal(cg.particles, dense.particles)  # never an inexact answer


def test_each_cg_solve_reaches_the_tolerance(rng):
    X, Y, W = task(rng, 300, 5, 350, tasks=2)
    engine = make(X, Y, W, "cg", label_noise=0.5, tol=1e-10)
    engine.run(30)
    for _ in range(5):  # find a step solved by CG (not one the cost rule chose to refactor)
        W_t, solves = engine.particles, engine.stats["cg_solves"]
        engine.run(1)
        if engine.stats["cg_solves"] > solves:
            break
    assert engine.stats["cg_solves"] > solves
    H = np.tanh(X @ W_t[:, :-1].T + W_t[:, -1])
    K = H @ H.T / W_t.shape[0]
    ridge = 300 * HYPER["lam"] * HYPER["lam_a"]
    residual = Y - (K + ridge * np.eye(300)) @ engine.dual
    assert np.all(np.linalg.norm(residual, axis=0) <= 1.01e-10 * np.linalg.norm(Y, axis=0))


# ------------------------------------------------------------------------------------ diagnostics
@pytest.mark.parametrize("solver", ["dense", "cg", "woodbury"])
def test_diagnostics_match_numpy(rng, solver):
    n, N = (260, 300) if solver != "woodbury" else (260, 100)
    X, Y, W = task(rng, n, 4, N, tasks=2)
    target = X[:, :2] ** 2
    engine = make(X, Y, W, solver, alignment_target=target)
    engine.run(7)
    d = engine.diagnostics()
    W = engine.particles
    H = np.tanh(X @ W[:, :-1].T + W[:, -1])
    K = H @ H.T / N
    ridge = n * HYPER["lam"] * HYPER["lam_a"]
    A = np.linalg.solve(K + ridge * np.eye(n), Y)
    U = HYPER["lam"] * HYPER["lam_a"] / 4 * np.sum(Y * A)
    expected = dict(U=U, G=U + HYPER["lam"] * HYPER["lam_w"] / 2 * np.mean(np.sum(W**2, axis=1)),
                    dof=np.trace(K @ np.linalg.inv(K + ridge * np.eye(n))), train_mse=np.mean((K @ A - Y) ** 2))
    if solver != "woodbury":  # the particle-space solver leaves the alignment to the estimator
        expected["kernel_alignment"] = np.sum(target * (K @ target)) / (np.sum(target**2) * np.linalg.norm(K))
    for key, value in expected.items():
        np.testing.assert_allclose(d[key], value, rtol=1e-8, err_msg=key)
    np.testing.assert_allclose(engine.dual, A, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(engine.output_weights(), H.T @ A, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_output_weights_from_stored_features_are_the_recomputed_ones(rng, solver):
    # After diagnostics the engine holds the current particles' features and reuses them; the result must
    # be the stateless function's, which computes the features afresh, to the bit.
    X, Y, W = task(rng, 300, 5, 200, tasks=2)
    engine = make(X, Y, W, solver)
    engine.run(3)
    engine.diagnostics()
    expected = core.output_weights(engine.particles, X, engine.dual, n_threads=1)
    np.testing.assert_array_equal(engine.output_weights(), expected)


def test_diagnostics_factor_is_reused_by_the_next_step(rng):
    X, Y, W = task(rng, 300, 5, 300)
    engine = make(X, Y, W, "cg")
    engine.run(5)
    before = engine.stats["factorizations"]
    engine.diagnostics()
    engine.run(1)
    assert engine.stats["factorizations"] == before + 1  # the step solved with the diagnostics' factor


# ------------------------------------------------------------------------------------ long runs
def test_divergence_in_the_middle_of_run_keeps_the_last_good_step(rng):
    X, Y, W = task(rng, 30, 3, 30)
    engine = make(X, Y, W, "dense", eta=1e150)
    result = engine.run(50)
    assert result.failed and result.status == "nonfinite" and 0 < result.steps < 50
    assert engine.step == result.steps and np.isfinite(engine.particles).all()
    assert engine.has_current_dual  # the solve at the last good particles succeeded
    replay = make(X, Y, W, "dense", eta=1e150)
    replay.run(result.steps)
    np.testing.assert_array_equal(engine.particles, replay.particles)


def test_singular_system_reports_not_positive_definite(rng):
    X, Y, W = task(rng, 40, 3, 10)
    engine = make(X, Y, W, "dense", lam=1e-300)
    result = engine.run(5)
    assert result.status == "not_positive_definite" and result.steps == 0 and "positive definite" in result.message
    np.testing.assert_array_equal(engine.particles, W)
    with pytest.raises(core.NotPositiveDefiniteError):
        engine.diagnostics()


def test_stop_callable_ends_the_run_between_steps(rng):
    X, Y, W = task(rng, 40, 3, 40)
    engine = make(X, Y, W, "dense")
    asked = []
    result = engine.run(100, stop=lambda: len(asked) == 7 or asked.append(1))
    assert result.status == "stopped" and result.steps == 7 and engine.step == 7


@pytest.mark.skipif(os.name != "posix", reason="sends SIGINT with os.kill")
def test_ctrl_c_during_run_raises_at_a_step_boundary(rng):
    X, Y, W = task(rng, 300, 5, 400)
    engine = make(X, Y, W, "cg")
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    deadline = time.monotonic() + 60.0  # a lost interrupt fails the test instead of running for hours
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.run(10**7, stop=lambda: time.monotonic() > deadline)
    finally:
        timer.cancel()
        timer.join()
    done = engine.step
    assert 0 < done < 10**7
    replay = make(X, Y, W, "cg")
    replay.run(done)
    np.testing.assert_array_equal(engine.particles, replay.particles)


def test_split_runs_and_resume_from_a_logged_step_are_bitwise(rng):
    X, Y, W = task(rng, 300, 5, 350)
    whole = make(X, Y, W, "cg", label_noise=0.5)
    whole.run(30)
    whole.diagnostics()  # a logged step
    W30 = whole.particles
    whole.run(40)
    split = make(X, Y, W, "cg", label_noise=0.5)
    for k in (3, 17, 10):
        split.run(k)
    split.diagnostics()
    split.run(25), split.run(15)
    np.testing.assert_array_equal(split.particles, whole.particles)
    resumed = make(X, Y, W30, "cg", label_noise=0.5, step=30)  # a checkpoint of step 30, reloaded
    resumed.run(40)
    np.testing.assert_array_equal(resumed.particles, whole.particles)


@pytest.mark.parametrize("solver", ["dense", "cg", "woodbury"])
def test_thread_count_does_not_change_the_trajectory(rng, solver):
    N = 150 if solver == "woodbury" else 700
    X, Y, W = task(rng, 300, 6, N, tasks=2)
    runs = []
    for threads in (1, 2):
        engine = make(X, Y, W, solver, label_noise=0.2, n_threads=threads)
        engine.run(25)
        engine.diagnostics()
        engine.run(5)
        runs.append((engine.particles, engine.dual))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


# ------------------------------------------------------------------------------------ choices and input
def test_auto_solver_choice():
    assert choose_solver("auto", 500, 100) == "woodbury"
    assert choose_solver("auto", CG_MIN_SAMPLES, 1000) == "cg"
    assert choose_solver("auto", CG_MIN_SAMPLES - 1, 1000) == "dense"
    assert choose_solver("auto", 1000, 2000, "float32") == "dense"
    with pytest.raises(ValueError, match="float64"):
        choose_solver("cg", 1000, 2000, "float32")
    with pytest.raises(ValueError, match="solver must be one of"):
        choose_solver("lu", 10, 10)


def test_bad_input_names_the_argument(rng):
    X, Y, W = task(rng, 30, 3, 20)
    with pytest.raises(ValueError, match="particles"):
        make(X, Y, W[:, :3], "dense")
    with pytest.raises(ValueError, match="Y"):
        make(X, Y[:10], W, "dense")
    with pytest.raises(ValueError, match="tol"):
        make(X, Y, W, "cg", tol=2.0)
    with pytest.raises(ValueError, match="eta"):
        make(X, Y, W, "dense", eta=-1.0)
    with pytest.raises(ValueError, match="alignment_target"):
        make(X, Y, W, "dense", alignment_target=np.ones(7))
    engine = make(X, Y, W, "dense")
    with pytest.raises(ValueError, match="k"):
        engine.run(-1)
    with pytest.raises(TypeError, match="stop"):
        engine.run(1, stop=3)


def test_memory_limit_is_checked_before_allocating(rng, monkeypatch):
    X, Y, W = task(rng, 30, 3, 20)
    monkeypatch.setattr(core, "available_memory", lambda: 1000)
    with pytest.raises(core.MemoryLimitError, match="Engine"):
        make(X, Y, W, "dense")
    assert engine_bytes("cg", 1000, 2000, 16, 1) > engine_bytes("dense", 1000, 2000, 16, 1)


def test_gram_and_step_given_dual_replay_the_stateless_api(rng):
    X, _, W = task(rng, 50, 4, 60)
    Y = np.sign(X[:, :2])
    engine = make(X, Y, W, "dense", lam=0.01, lam_a=0.5, lam_w=0.5, eta=0.1)
    for step in range(3):
        K = engine.gram()
        np.testing.assert_array_equal(K, core.gram(W, X, n_threads=1))
        A = np.linalg.solve(K + 0.25 * np.eye(50), Y)  # any second layer solved outside the engine
        B = 0.1 * A if step == 1 else None
        assert engine.step_given_dual(A, B)
        W = core.langevin_step_given_dual(W, X, A, B=B, eta=0.1, lam=0.01, lam_a=0.5, lam_w=0.5, seed=11, step=step,
                                          n_threads=1)
        np.testing.assert_array_equal(engine.particles, W)
    with pytest.raises(ValueError, match="A must have 2"):
        engine.step_given_dual(np.ones((50, 3)))
    assert not make(X, Y, W, "dense", eta=1e300).step_given_dual(np.full((50, 2), 1e300))


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_features_are_the_stateless_features_divided_and_the_step_goes_on_from_them(rng, precision):
    X, _, W = task(rng, 70, 4, 90)
    Y = np.sign(X[:, :1])
    engine = make(X, Y, W, "dense", precision=precision, lam=0.01, lam_a=0.5, lam_w=0.5, eta=0.1)
    H = core.features(W, X, n_threads=1)
    Phi = engine.features(divide_by=np.sqrt(90))
    assert Phi.shape == (70, 90) and Phi.flags.c_contiguous
    if precision == "float64":
        np.testing.assert_array_equal(Phi, H / np.sqrt(90))  # the same bits as the stateless API
    else:
        np.testing.assert_allclose(Phi, H / np.sqrt(90), atol=1e-6)
    A = 0.01 * np.ones((70, 1))
    assert engine.step_given_dual(A)
    W1 = core.langevin_step_given_dual(W, X, A, eta=0.1, lam=0.01, lam_a=0.5, lam_w=0.5, seed=11, step=0,
                                       precision=precision, n_threads=1)
    np.testing.assert_array_equal(engine.particles, W1)
    np.testing.assert_allclose(engine.features(), core.features(W1, X, n_threads=1), atol=1e-6)
    Phi64, Phi32 = engine.features(divide_by=np.sqrt(90), with_float32=True)
    np.testing.assert_array_equal(Phi64, engine.features(divide_by=np.sqrt(90)))
    assert Phi32.dtype == np.float32 and Phi32.flags.c_contiguous
    np.testing.assert_array_equal(Phi32, Phi64.astype(np.float32))  # the cast's bits, written in the same pass
    with pytest.raises(ValueError, match="divide_by"):
        engine.features(divide_by=0.0)
    with pytest.raises(ValueError, match="woodbury"):
        make(X, Y, W[:20], "woodbury").features()
    sharded = make(X, Y, W, "dense")
    sharded.shard(lambda buffer: None, total_particles=180)
    with pytest.raises(ValueError, match="shard"):  # one shard holds only its particles' columns
        sharded.features()


def test_an_ensemble_advances_each_engine_as_run_would(rng):
    X, Y, W = task(rng, 64, 15, 64)
    configs = [dict(seed=s, eta=eta) for s in (1, 2) for eta in (0.05, 0.2)] + [dict(seed=3, eta=1e150)]
    engines = [make(X, Y, W, "dense", **c) for c in configs]
    results = run_ensemble(engines, 30, n_threads=2)
    assert [r.status for r in results[:4]] == ["completed"] * 4 and results[4].failed
    for config, engine, result in zip(configs, engines, results):
        alone = make(X, Y, W, "dense", **config)
        assert alone.run(30) == result
        np.testing.assert_array_equal(engine.particles, alone.particles)
    with pytest.raises(ValueError, match="distinct"):
        run_ensemble([engines[0], engines[0]], 1)
    with pytest.raises(TypeError, match=r"engines\[1\]"):
        run_ensemble([engines[0], "engine"], 1)


def test_reading_an_engine_while_another_runs_in_a_thread_does_not_deadlock(rng):
    # run() holds the core's lock and takes the GIL between steps (signals); a reader of another engine
    # must not wait for that lock while holding the GIL.
    X, Y, W = task(rng, 200, 5, 300)
    busy, other = make(X, Y, W, "dense"), make(X, Y, W, "dense")
    worker = threading.Thread(target=busy.run, args=(200,), daemon=True)
    worker.start()
    reads = [other.particles.sum() + other.dual.sum() for _ in range(200)]
    worker.join(timeout=120)
    assert not worker.is_alive() and busy.step == 200 and len(reads) == 200
