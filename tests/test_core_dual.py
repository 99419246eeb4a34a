"""drift_given_dual / langevin_step_given_dual: the drift and step for a second layer solved elsewhere."""
import numpy as np
import pytest

import mfkern.core as core

HYPER = dict(lam=0.1, lam_a=0.3, lam_w=0.7)


@pytest.fixture
def problem():
    rng = np.random.default_rng(11)
    n, d, N, T = 40, 3, 150, 2
    X = rng.normal(size=(n, d))
    W = rng.normal(size=(N, d + 1))
    Y = rng.normal(size=(n, T))
    E = rng.uniform(-1, 1, size=(n, T))
    return X, W, Y, E


def _duals(X, W, Y, E, activation="tanh"):
    ridge = X.shape[0] * HYPER["lam"] * HYPER["lam_a"]
    K = core.gram(W, X, activation=activation)
    return core.second_layer(K, Y, ridge), core.second_layer(K, E, ridge)


@pytest.mark.parametrize("activation", ["tanh", "erf"])
def test_drift_given_dual_equals_drift(problem, activation):
    X, W, Y, E = problem
    A, B = _duals(X, W, Y, E, activation)
    expect = core.drift(W, X, Y, activation=activation, **HYPER)
    got = core.drift_given_dual(W, X, A, activation=activation, **HYPER)
    np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-14)
    expect_noisy = core.drift(W, X, Y, label_noise=E, activation=activation, **HYPER)
    got_noisy = core.drift_given_dual(W, X, A, B=B, activation=activation, **HYPER)
    np.testing.assert_allclose(got_noisy, expect_noisy, rtol=1e-12, atol=1e-14)
    assert not np.allclose(got_noisy, got)  # the label-noise term is really there


@pytest.mark.parametrize("activation", ["tanh", "erf"])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_drift_given_dual_matches_plain_numpy(problem, activation, T):
    """The formula of docs/theory.md, section 4 with arbitrary A and B (not kernel-ridge solutions), for one
    task and several (7: more than one pass of the core's multi-column loops)."""
    from scipy.special import erf

    X, W, _, _ = problem
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(X.shape[0], T)), rng.normal(size=(X.shape[0], T))
    lam, lam_a, lam_w = HYPER["lam"], HYPER["lam_a"], HYPER["lam_w"]
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    Z = X1 @ W.T
    H, D = (np.tanh(Z), 1 - np.tanh(Z) ** 2) if activation == "tanh" else (erf(Z), 2 / np.sqrt(np.pi) * np.exp(-Z * Z))
    a, b = H.T @ A, H.T @ B
    for with_b in (False, True):
        C = (A @ a.T - (B @ b.T if with_b else 0.0)) * D
        expect = -(lam * lam_a / T) * C.T @ X1 + lam * lam_w * W
        got = core.drift_given_dual(W, X, A, B=B if with_b else None, activation=activation, **HYPER)
        np.testing.assert_allclose(got, expect, rtol=1e-11, atol=1e-13)


def test_step_given_dual_equals_step_bitwise(problem):
    X, W, Y, _ = problem
    A, _ = _duals(X, W, Y, Y)
    step = core.langevin_step(W, X, Y, eta=0.1, seed=3, step=4, first_index=7, **HYPER)
    given = core.langevin_step_given_dual(W, X, A, eta=0.1, seed=3, step=4, first_index=7, **HYPER)
    np.testing.assert_allclose(given, step, rtol=0, atol=1e-14)
    one = core.langevin_step_given_dual(W, X, A, eta=0.1, seed=3, step=4, n_threads=1, **HYPER)
    two = core.langevin_step_given_dual(W, X, A, eta=0.1, seed=3, step=4, n_threads=2, **HYPER)
    assert np.array_equal(one, two)


def test_given_dual_bad_input(problem):
    X, W, Y, _ = problem
    with pytest.raises(ValueError, match="A must have 40 rows"):
        core.drift_given_dual(W, X, Y[:5], **HYPER)
    with pytest.raises(ValueError, match="B must have the shape of A"):
        core.drift_given_dual(W, X, Y, B=Y[:, :1], **HYPER)
    with pytest.raises(ValueError, match="A must contain only finite"):
        core.drift_given_dual(W, X, np.full_like(Y, np.nan), **HYPER)
    with pytest.raises(ValueError, match="eta"):
        core.langevin_step_given_dual(W, X, Y, eta=-1.0, seed=0, step=0, **HYPER)
    with pytest.raises(ValueError, match="W must have d\\+1"):
        core.drift_given_dual(W[:, :2], X, Y, **HYPER)
