"""Solver paths of the core (dense Cholesky, particle-space Woodbury, streamed features) and the memory guard."""
import numpy as np
import pytest

import mfkern.core as core

HYPER = dict(lam=0.01, lam_a=0.25, lam_w=0.25)


def _problem(n, N, T=1, d=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) / 2, rng.normal(size=(N, d + 1)), rng.normal(size=(n, T))


def _numpy_dual(W, X, Y, activation="tanh"):
    from scipy.special import erf
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    H = (np.tanh if activation == "tanh" else erf)(X1 @ W.T)
    K = H @ H.T / W.shape[0]
    n = X.shape[0]
    return np.linalg.solve(K + n * HYPER["lam"] * HYPER["lam_a"] * np.eye(n), Y), K


@pytest.mark.parametrize("n,N,T,activation", [(300, 50, 1, "tanh"), (400, 120, 2, "erf"), (90, 200, 1, "tanh")])
def test_woodbury_equals_dense_and_numpy(n, N, T, activation):
    X, W, Y = _problem(n, N, T)
    kw = dict(HYPER, activation=activation)
    A_ref, K = _numpy_dual(W, X, Y, activation)
    results = {}
    for solver in ("dense", "woodbury"):
        grad, A, U = core.drift(W, X, Y, solver=solver, return_dual=True, **kw)
        np.testing.assert_allclose(A, A_ref, rtol=1e-9, atol=1e-12 * np.abs(A_ref).max())
        results[solver] = grad, core.objective(W, X, Y, solver=solver, **kw)
    np.testing.assert_allclose(results["woodbury"][0], results["dense"][0], rtol=1e-9,
                               atol=1e-12 * np.abs(results["dense"][0]).max())
    ridge = n * HYPER["lam"] * HYPER["lam_a"]
    dof_ref = np.trace(K @ np.linalg.inv(K + ridge * np.eye(n)))
    for solver in ("dense", "woodbury"):
        obj = results[solver][1]
        assert obj["dof"] == pytest.approx(dof_ref, rel=1e-9)
        assert obj["U"] == pytest.approx(HYPER["lam"] * HYPER["lam_a"] / (2 * T) * np.sum(Y * A_ref), rel=1e-10)


def test_auto_picks_woodbury_when_particles_are_fewer_than_samples():
    X, W, Y = _problem(200, 40)
    for solver in ("auto", "woodbury"):
        assert np.array_equal(core.langevin_step(W, X, Y, eta=0.1, seed=1, step=0, solver=solver, **HYPER),
                              core.langevin_step(W, X, Y, eta=0.1, seed=1, step=0, solver="woodbury", **HYPER))
    X, W, Y = _problem(40, 200)
    assert np.array_equal(core.langevin_step(W, X, Y, eta=0.1, seed=1, step=0, solver="auto", **HYPER),
                          core.langevin_step(W, X, Y, eta=0.1, seed=1, step=0, solver="dense", **HYPER))


@pytest.mark.parametrize("solver", ["dense", "woodbury"])
def test_streamed_and_cached_features_agree(solver):
    X, W, Y = _problem(700, 300, 2)
    cached = core.langevin_step(W, X, Y, eta=0.1, seed=2, step=3, solver=solver, cache_bytes=2**30, **HYPER)
    streamed = core.langevin_step(W, X, Y, eta=0.1, seed=2, step=3, solver=solver, cache_bytes=0, **HYPER)
    np.testing.assert_allclose(streamed, cached, rtol=0, atol=1e-13)


def test_woodbury_is_thread_count_independent():
    X, W, Y = _problem(1500, 400, 2)
    one, two = (core.langevin_step(W, X, Y, eta=0.1, seed=2, step=3, solver="woodbury", n_threads=t,
                                   label_noise_level=0.3, **HYPER) for t in (1, 2))
    assert np.array_equal(one, two)


def test_woodbury_refuses_a_ridge_below_machine_precision():
    X, W, Y = _problem(60, 10)
    with pytest.raises(core.NotPositiveDefiniteError, match="singular to working precision"):
        core.drift(W, X, Y, lam=1e-300, lam_a=0.25, lam_w=0.25, solver="woodbury")
    with pytest.raises(core.NotPositiveDefiniteError):
        core.drift(W, X, Y, lam=1e-300, lam_a=0.25, lam_w=0.25, solver="dense")


def test_bad_solver_name():
    X, W, Y = _problem(20, 10)
    with pytest.raises(ValueError, match="solver must be one of"):
        core.drift(W, X, Y, solver="cholesky", **HYPER)


@pytest.mark.parametrize("call", [
    lambda: core.gram(np.zeros((4, 3)), np.zeros((10**6, 2))),                      # 8 TB Gram
    lambda: core.features(np.zeros((10**6, 3)), np.zeros((10**6, 2))),             # 8 TB features
    lambda: core.drift(np.zeros((2 * 10**6, 3)), np.zeros((10**6, 2)), np.zeros(10**6), solver="dense", **HYPER),
    lambda: core.drift(np.zeros((2 * 10**5, 3)), np.zeros((10**6, 2)), np.zeros(10**6), solver="woodbury", **HYPER),
])
def test_memory_guard_raises_before_allocating(call):
    with pytest.raises(core.MemoryLimitError, match=r"needs about .* bytes\) of working memory") as info:
        call()
    assert isinstance(info.value, MemoryError)
    assert info.value.bytes_needed > info.value.bytes_available > 0


@pytest.mark.parametrize("solver,activation", [("dense", "tanh"), ("woodbury", "erf"), ("dense", "erf")])
def test_float32_precision_is_close_to_float64(solver, activation):
    X, W, Y = _problem(400, 300 if solver == "dense" else 150, 2)
    kw = dict(HYPER, activation=activation, solver=solver)
    g64, A64, U64 = core.drift(W, X, Y, return_dual=True, **kw)
    g32, A32, U32 = core.drift(W, X, Y, return_dual=True, precision="float32", **kw)
    assert not np.array_equal(g32, g64)  # really a different path
    assert np.abs(g32 - g64).max() <= 1e-5 * np.abs(g64).max()
    assert np.abs(A32 - A64).max() <= 1e-5 * np.abs(A64).max()
    assert U32 == pytest.approx(U64, rel=1e-6)
    o64 = core.objective(W, X, Y, **kw)
    o32 = core.objective(W, X, Y, precision="float32", **kw)
    assert o32["dof"] == pytest.approx(o64["dof"], rel=1e-5)
    pred = [core.network_output(W, core.output_weights(W, X, A, activation), X, activation) for A in (A64, A32)]
    assert np.abs(pred[1] - pred[0]).max() <= 1e-4 * np.abs(pred[0]).max()


def test_float32_is_thread_count_independent_and_matches_given_dual():
    X, W, Y = _problem(600, 700, 1)
    steps = [core.langevin_step(W, X, Y, eta=0.1, seed=5, step=1, n_threads=t, precision="float32", **HYPER)
             for t in (1, 2)]
    assert np.array_equal(steps[0], steps[1])
    A = core.drift(W, X, Y, return_dual=True, precision="float32", **HYPER)[1]
    np.testing.assert_allclose(core.drift_given_dual(W, X, A, precision="float32", **HYPER),
                               core.drift(W, X, Y, precision="float32", **HYPER), rtol=0, atol=1e-12)


def test_bad_precision_name():
    X, W, Y = _problem(20, 10)
    with pytest.raises(ValueError, match="precision must be one of"):
        core.drift(W, X, Y, precision="float16", **HYPER)
