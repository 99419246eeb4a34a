"""Correctness of the low-level API mfkern.core against independent references.

Every quantity is compared with a plain numpy computation written here from docs/theory.md, with finite
differences (drift), scikit-learn (second layer), closed forms (erf kernel, Ornstein-Uhlenbeck variance) or
statistical tests whose tolerances follow from the sample size.
"""
from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import special, stats
from sklearn.kernel_ridge import KernelRidge
from threadpoolctl import threadpool_info, threadpool_limits

from mfkern import core

ACTIVATIONS = ("tanh", "erf")
DEFAULT_CACHE = 512 * 2**20  # a cache that holds these problems' features (the default is 0: recompute)


# ----------------------------------------------------------------------------------------------------------
# Plain numpy references (docs/theory.md, sections 1-8)
# ----------------------------------------------------------------------------------------------------------

def activation_function(name):
    """The activation as a numpy ufunc."""
    return {"tanh": np.tanh, "erf": special.erf}[name]


def reference_features(W, X, activation):
    """H[j, k] = act(u_k . x_j + b_k)."""
    return activation_function(activation)(X @ W[:, :-1].T + W[:, -1])


def reference_gram(W, X, X2=None, activation="tanh"):
    """(1/N) H(X) H(X2)^T."""
    H = reference_features(W, X, activation)
    H2 = H if X2 is None else reference_features(W, X2, activation)
    return H @ H2.T / W.shape[0]


def as_columns(Y):
    """Targets as an (n, T) array."""
    Y = np.asarray(Y, dtype=float)
    return Y.reshape(len(Y), -1)


def reference_G(W, X, Y, lam, lam_a, lam_w, activation):
    """The reduced objective G(mu_W) of docs/theory.md, section 2."""
    Y = as_columns(Y)
    n, T = Y.shape
    K = reference_gram(W, X, activation=activation)
    A = np.linalg.solve(K + n * lam * lam_a * np.eye(n), Y)
    U = lam * lam_a / (2 * T) * np.sum(Y * A)
    return U + 0.5 * lam * lam_w * np.mean(np.sum(W * W, axis=1))


def reference_G_E(W, X, Y, E, lam, lam_a, lam_w, activation):
    """The label-noise functional G_E of docs/theory.md, section 6 (second layer fitted to Y+E, scored with Y)."""
    Y, E = as_columns(Y), as_columns(E)
    n, T = Y.shape
    K = reference_gram(W, X, activation=activation)
    B = np.linalg.solve(K + n * lam * lam_a * np.eye(n), Y + E)  # S (Y + E)
    fit = np.sum((K @ B - Y) ** 2) / (2 * n * T)
    penalty = lam * lam_a / (2 * T) * np.sum(B * (K @ B))
    return fit + penalty + 0.5 * lam * lam_w * np.mean(np.sum(W * W, axis=1))


def central_gradient(func, W, step=1e-3):
    """Fourth-order central finite-difference gradient of func at W (truncation O(step^4))."""
    grad = np.empty_like(W)
    for index in np.ndindex(*W.shape):
        values = []
        for shift in (2, 1, -1, -2):
            shifted = W.copy()
            shifted[index] += shift * step
            values.append(func(shifted))
        f2, f1, m1, m2 = values
        grad[index] = (-f2 + 8 * f1 - 8 * m1 + m2) / (12 * step)
    return grad


def relative_error(got, want):
    """||got - want|| / ||want|| (Frobenius)."""
    return np.linalg.norm(got - want) / np.linalg.norm(want)


def erf_closed_form_kernel(X, X2, s):
    """Infinite-width erf kernel for (u, b) ~ N(0, s^2 I) (docs/theory.md, section 10)."""
    s2 = s * s
    q1 = 1 + 2 * s2 * (np.sum(X * X, axis=1) + 1)
    q2 = 1 + 2 * s2 * (np.sum(X2 * X2, axis=1) + 1)
    return 2 / np.pi * np.arcsin(2 * s2 * (X @ X2.T + 1) / np.sqrt(np.outer(q1, q2)))


HYPER = dict(lam=0.1, lam_a=0.5, lam_w=1.0)


# ----------------------------------------------------------------------------------------------------------
# drift = N * gradient of G (and of G_E)
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("tasks", [None, 1, 2, 3])
@pytest.mark.parametrize("block_size", [1, 3, None])
@pytest.mark.parametrize("cache_bytes", [0, DEFAULT_CACHE])
def test_drift_is_N_times_gradient_of_G(make_problem, activation, tasks, block_size, cache_bytes):
    p = make_problem(n=6, N=8, d=3, T=tasks)
    got = core.drift(p.W, p.X, p.Y, **HYPER, activation=activation, block_size=block_size,
                     cache_bytes=cache_bytes)
    fd = central_gradient(lambda W: reference_G(W, p.X, p.Y, **HYPER, activation=activation), p.W)
    want = p.N * fd
    # The data term must matter, or the test would only check lam_w_bar * W.
    data_part = want - HYPER["lam"] * HYPER["lam_w"] * p.W
    assert np.linalg.norm(data_part) > 0.05 * np.linalg.norm(want)
    assert got.shape == p.W.shape
    assert relative_error(got, want) < 1e-7
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max())


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("tasks", [None, 1, 2, 3])
@pytest.mark.parametrize("block_size", [1, 3, None])
@pytest.mark.parametrize("cache_bytes", [0, DEFAULT_CACHE])
def test_drift_with_label_noise_is_N_times_gradient_of_G_E(make_problem, rng, activation, tasks, block_size,
                                                           cache_bytes):
    p = make_problem(n=6, N=8, d=3, T=tasks)
    E = rng.uniform(-0.8, 0.8, size=np.shape(p.Y))
    got = core.drift(p.W, p.X, p.Y, **HYPER, activation=activation, label_noise=E, block_size=block_size,
                     cache_bytes=cache_bytes)
    fd = central_gradient(lambda W: reference_G_E(W, p.X, p.Y, E, **HYPER, activation=activation), p.W)
    want = p.N * fd
    # The noise must change the drift, or G_E would not be tested beyond G.
    clean = core.drift(p.W, p.X, p.Y, **HYPER, activation=activation)
    assert np.linalg.norm(got - clean) > 1e-3 * np.linalg.norm(clean)
    assert relative_error(got, want) < 1e-7
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7 * np.abs(want).max())


def test_label_noise_zero_gives_clean_drift(make_problem):
    p = make_problem(T=2)
    clean = core.drift(p.W, p.X, p.Y, **HYPER)
    noisy = core.drift(p.W, p.X, p.Y, **HYPER, label_noise=np.zeros_like(p.Y))
    np.testing.assert_allclose(noisy, clean, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("tasks", [None, 2])
@pytest.mark.parametrize("with_noise", [False, True])
def test_drift_return_dual_matches_numpy(make_problem, rng, tasks, with_noise):
    p = make_problem(T=tasks)
    E = rng.uniform(-0.5, 0.5, size=np.shape(p.Y)) if with_noise else None
    grad, A, U = core.drift(p.W, p.X, p.Y, **HYPER, label_noise=E, return_dual=True)
    K = reference_gram(p.W, p.X)
    ridge = p.n * HYPER["lam"] * HYPER["lam_a"]
    A_ref = np.linalg.solve(K + ridge * np.eye(p.n), p.Y)
    assert A.shape == np.shape(p.Y)
    np.testing.assert_allclose(A, A_ref, rtol=1e-10, atol=1e-12)
    U_ref = HYPER["lam"] * HYPER["lam_a"] / (2 * p.T) * np.sum(as_columns(p.Y) * as_columns(A_ref))
    assert U == pytest.approx(U_ref, rel=1e-10)
    np.testing.assert_array_equal(grad, core.drift(p.W, p.X, p.Y, **HYPER, label_noise=E))


def test_drift_with_zero_targets_is_the_prior_term(make_problem):
    p = make_problem(n=5, N=7, d=2)
    got = core.drift(p.W, p.X, np.zeros(p.n), **HYPER)
    np.testing.assert_allclose(got, HYPER["lam"] * HYPER["lam_w"] * p.W, rtol=1e-15, atol=0)


# ----------------------------------------------------------------------------------------------------------
# features, gram, objective, second layer, outputs, diagnostics
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_features_match_numpy(make_problem, activation):
    p = make_problem(n=9, N=13, d=4)
    H = core.features(p.W, p.X, activation)
    assert H.shape == (p.n, p.N)
    np.testing.assert_allclose(H, reference_features(p.W, p.X, activation), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("block_size", [1, 2, 7, 37, 64, 1000, None])
def test_symmetric_gram_matches_numpy_for_any_block_size(make_problem, activation, block_size):
    p = make_problem(n=11, N=64, d=4)
    K = core.gram(p.W, p.X, activation=activation, block_size=block_size)
    assert K.shape == (p.n, p.n)
    np.testing.assert_allclose(K, reference_gram(p.W, p.X, activation=activation), rtol=1e-12, atol=1e-14)
    # Both triangles are filled from the same accumulation: exactly symmetric.
    np.testing.assert_array_equal(K, K.T)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("block_size", [1, 5, 64, None])
def test_cross_gram_matches_numpy_for_any_block_size(make_problem, rng, activation, block_size):
    p = make_problem(n=11, N=64, d=4)
    X2 = rng.standard_normal((7, p.d)) / 2
    K = core.gram(p.W, p.X, X2, activation=activation, block_size=block_size)
    assert K.shape == (p.n, 7)
    np.testing.assert_allclose(K, reference_gram(p.W, p.X, X2, activation), rtol=1e-12, atol=1e-14)


def test_blocked_and_unblocked_gram_agree(make_problem, rng):
    p = make_problem(n=30, N=500, d=5)
    X2 = rng.standard_normal((12, p.d))
    unblocked = core.gram(p.W, p.X, block_size=p.N)
    unblocked_cross = core.gram(p.W, p.X, X2, block_size=p.N)
    for block_size in (1, 3, 128, 499):
        np.testing.assert_allclose(core.gram(p.W, p.X, block_size=block_size), unblocked, rtol=1e-12,
                                   atol=1e-14)
        np.testing.assert_allclose(core.gram(p.W, p.X, X2, block_size=block_size), unblocked_cross,
                                   rtol=1e-12, atol=1e-14)


def test_cross_gram_with_itself_equals_symmetric_gram(make_problem):
    p = make_problem(n=10, N=50)
    np.testing.assert_allclose(core.gram(p.W, p.X, p.X), core.gram(p.W, p.X), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("tasks", [None, 1, 3])
@pytest.mark.parametrize("block_size", [2, None])
def test_objective_matches_numpy(make_problem, activation, tasks, block_size):
    p = make_problem(n=8, N=20, d=3, T=tasks)
    out = core.objective(p.W, p.X, p.Y, **HYPER, activation=activation, block_size=block_size)
    assert set(out) == {"U", "G", "dof", "condition", "ridge", "dual"}
    ridge = p.n * HYPER["lam"] * HYPER["lam_a"]
    K = reference_gram(p.W, p.X, activation=activation)
    M = K + ridge * np.eye(p.n)
    Y = as_columns(p.Y)
    assert out["dual"].shape == np.shape(p.Y)
    np.testing.assert_allclose(as_columns(out["dual"]), np.linalg.solve(M, Y), rtol=1e-10, atol=1e-13)
    U = HYPER["lam"] * HYPER["lam_a"] / (2 * p.T) * np.sum(Y * np.linalg.solve(M, Y))
    G = U + 0.5 * HYPER["lam"] * HYPER["lam_w"] * np.mean(np.sum(p.W ** 2, axis=1))
    assert out["ridge"] == pytest.approx(ridge, rel=1e-15)
    assert out["U"] == pytest.approx(U, rel=1e-11)
    assert out["G"] == pytest.approx(G, rel=1e-11)
    assert out["G"] == pytest.approx(reference_G(p.W, p.X, p.Y, **HYPER, activation=activation), rel=1e-11)
    assert out["dof"] == pytest.approx(np.trace(K @ np.linalg.inv(M)), rel=1e-10)
    assert out["condition"] == pytest.approx(np.linalg.cond(M, 1), rel=1e-8)


@pytest.mark.parametrize("shape", [(9,), (9, 1), (9, 3)])
def test_second_layer_matches_sklearn_kernel_ridge(rng, shape):
    features_matrix = rng.standard_normal((9, 5))
    K = features_matrix @ features_matrix.T / 5  # rank 5 < 9: only the ridge makes it invertible
    Y = rng.standard_normal(shape)
    ridge = 0.3
    A = core.second_layer(K, Y, ridge)
    want = KernelRidge(alpha=ridge, kernel="precomputed").fit(K, Y).dual_coef_
    assert A.shape == want.shape == shape
    np.testing.assert_allclose(A, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(A, np.linalg.solve(K + ridge * np.eye(9), Y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tasks", [None, 1, 2])
@pytest.mark.parametrize("block_size", [3, None])
def test_output_weights_and_network_output_match_numpy(make_problem, rng, tasks, block_size):
    p = make_problem(n=10, N=17, d=3, T=tasks)
    A = rng.standard_normal(np.shape(p.Y))
    H = reference_features(p.W, p.X, "tanh")
    weights = core.output_weights(p.W, p.X, A, block_size=block_size)
    want = H.T @ A
    assert weights.shape == want.shape
    np.testing.assert_allclose(weights, want, rtol=1e-12, atol=1e-13)

    X_test = rng.standard_normal((6, p.d))
    out = core.network_output(p.W, weights, X_test, block_size=block_size)
    want_out = reference_features(p.W, X_test, "tanh") @ want / p.N
    assert out.shape == want_out.shape
    np.testing.assert_allclose(out, want_out, rtol=1e-12, atol=1e-13)


def test_network_output_at_training_points_is_kernel_ridge_prediction(make_problem):
    # f(X) = K A: the network with a_k = H[:,k]^T A is the kernel ridge predictor (docs/theory.md, section 3).
    p = make_problem(n=10, N=30, d=3, T=2)
    K = core.gram(p.W, p.X)
    A = core.second_layer(K, p.Y, 0.5)
    f = core.network_output(p.W, core.output_weights(p.W, p.X, A), p.X)
    np.testing.assert_allclose(f, K @ A, rtol=1e-11, atol=1e-12)


def random_psd(rng, n, rank):
    """A random symmetric positive semi-definite matrix of the given rank."""
    B = rng.standard_normal((n, rank))
    return B @ B.T


@pytest.mark.parametrize("shape", [(8,), (8, 1), (8, 3)])
def test_kernel_alignment_matches_formula(rng, shape):
    K = random_psd(rng, 8, 4)
    F = rng.standard_normal(shape)
    Fc = as_columns(F)
    want = sum(Fc[:, i] @ K @ Fc[:, i] for i in range(Fc.shape[1])) / (np.sum(Fc ** 2) * np.linalg.norm(K, "fro"))
    assert core.kernel_alignment(K, F) == pytest.approx(want, rel=1e-12)


def test_kernel_alignment_is_in_unit_interval_for_psd_kernels(rng):
    for trial in range(200):
        n = int(rng.integers(2, 12))
        K = random_psd(rng, n, int(rng.integers(1, n + 1)))
        value = core.kernel_alignment(K, rng.standard_normal(n))
        assert 0.0 <= value <= 1.0 + 1e-12
    f = rng.standard_normal(6)
    # The kernel f f^T is perfectly aligned with f; the identity has alignment 1/sqrt(n).
    assert core.kernel_alignment(np.outer(f, f), f) == pytest.approx(1.0, rel=1e-13)
    assert core.kernel_alignment(np.eye(6), f) == pytest.approx(1 / np.sqrt(6), rel=1e-13)


def test_degrees_of_freedom_matches_numpy(rng):
    K = random_psd(rng, 12, 6) / 6
    for ridge in (1e-3, 0.1, 1.0, 10.0):
        want = np.trace(K @ np.linalg.inv(K + ridge * np.eye(12)))
        eigenvalues = np.linalg.eigvalsh(K)
        assert core.degrees_of_freedom(K, ridge) == pytest.approx(want, rel=1e-10)
        assert core.degrees_of_freedom(K, ridge) == pytest.approx(np.sum(eigenvalues / (eigenvalues + ridge)),
                                                                  rel=1e-10)


def test_parameter_alignment_matches_formula(rng):
    d = 5
    W = rng.standard_normal((40, d + 1))
    W[3, :d] = 0.0  # u_k = 0 contributes 0
    u_star = rng.standard_normal(d) * 3.0  # not a unit vector: normalised by the function
    unit = u_star / np.linalg.norm(u_star)
    U = W[:, :d]
    sq = np.sum(U * U, axis=1)
    ratios = np.zeros(len(W))
    nonzero = sq > 0
    ratios[nonzero] = (U[nonzero] @ unit) ** 2 / sq[nonzero]
    want = ratios.mean()
    assert core.parameter_alignment(W, u_star) == pytest.approx(want, rel=1e-13)
    assert core.parameter_alignment(W[:, :d], u_star) == pytest.approx(want, rel=1e-13)
    # Perfectly aligned particles give 1, orthogonal ones 0.
    aligned = np.outer(rng.standard_normal(10), np.r_[unit, 0.0])
    assert core.parameter_alignment(aligned, u_star) == pytest.approx(1.0, rel=1e-13)
    e1, e2 = np.eye(d)[0], np.eye(d)[1]
    assert core.parameter_alignment(np.tile(e2, (4, 1)), e1) == 0.0


# ----------------------------------------------------------------------------------------------------------
# erf kernel: Monte Carlo Gram -> closed form at rate N^{-1/2}
# ----------------------------------------------------------------------------------------------------------

def test_erf_closed_form_kernel_matches_large_monte_carlo():
    rng = np.random.default_rng(7)
    s, d, N = 0.8, 3, 400_000
    X = rng.standard_normal((4, d)) / np.sqrt(d)
    X[0] = 0.0  # the origin is a legal point too
    UB = s * rng.standard_normal((N, d + 1))
    H = special.erf(X @ UB[:, :d].T + UB[:, d])  # (4, N), plain numpy
    closed = erf_closed_form_kernel(X, X, s)
    for i in range(4):
        for j in range(i, 4):
            products = H[i] * H[j]
            standard_error = products.std(ddof=1) / np.sqrt(N)
            assert abs(products.mean() - closed[i, j]) < 5 * standard_error


def test_erf_gram_converges_to_closed_form_at_rate_root_N():
    d, n, s, seeds = 3, 20, 1.0, 8
    X = np.random.default_rng(11).standard_normal((n, d)) / np.sqrt(d)
    closed = erf_closed_form_kernel(X, X, s)
    sizes = np.array([100, 400, 1600, 6400])
    mean_sup_errors = []
    for N in sizes:
        errors = []
        for seed in range(seeds):
            W = s * np.random.default_rng([int(N), seed]).standard_normal((N, d + 1))
            errors.append(np.abs(core.gram(W, X, activation="erf") - closed).max())
        mean_sup_errors.append(np.mean(errors))
    slope = np.polyfit(np.log(sizes), np.log(mean_sup_errors), 1)[0]
    # Slope -1/2; over 8 seeds its spread is ~0.03, so this window is about 5 standard deviations.
    assert -0.65 <= slope <= -0.35, (slope, mean_sup_errors)
    # And the error really goes to zero, not to a bias: at N=6400 it is a few times 1/sqrt(N).
    assert mean_sup_errors[-1] < 5 / np.sqrt(sizes[-1])


# ----------------------------------------------------------------------------------------------------------
# Langevin step and the counter-based noise
# ----------------------------------------------------------------------------------------------------------

def test_langevin_with_zero_targets_has_euler_maruyama_stationary_variance():
    # Y = 0: A = 0 and each coordinate follows w <- (1 - eta*lam_w_bar) w + sqrt(2 eta lam) xi, whose
    # stationary variance is 2 lam / (lam_w_bar (2 - eta lam_w_bar)) (docs/theory.md, section 10).
    lam, lam_w, eta = 0.5, 2.0, 0.5
    lam_w_bar = lam * lam_w
    contraction = 1 - eta * lam_w_bar  # 0.5: burn-in and decorrelation take a few steps
    stationary = 2 * lam / (lam_w_bar * (2 - eta * lam_w_bar))  # 2/3
    continuous = 1 / lam_w  # 1/2
    N, d, n = 10_000, 2, 3
    rng = np.random.default_rng(3)
    X = rng.standard_normal((n, d))
    Y = np.zeros(n)
    W = rng.standard_normal((N, d + 1)) / np.sqrt(lam_w)  # the prior nu
    burn_in, spacing, snapshots = 40, 10, 5
    samples = []
    step = 0
    for _ in range(burn_in + spacing * snapshots):
        W = core.langevin_step(W, X, Y, eta=eta, lam=lam, lam_a=1.0, lam_w=lam_w, seed=99, step=step)
        step += 1
        if step > burn_in and (step - burn_in) % spacing == 0:
            samples.append(W.ravel().copy())
    values = np.concatenate(samples)
    # Snapshots `spacing` steps apart have squared-value correlation contraction^(2*spacing) ~ 1e-6, and
    # the prior's memory after burn-in is contraction^(2*burn_in): the samples are effectively i.i.d.
    # normal with known mean 0, so the variance estimate has standard error stationary * sqrt(2/M).
    M = values.size
    variance = np.mean(values ** 2)
    standard_error = stationary * np.sqrt(2 / M)
    assert abs(np.mean(values)) < 5 * np.sqrt(stationary / M)
    assert abs(variance - stationary) < 5 * standard_error, (variance, stationary)
    # The test can tell the discrete chain from continuous time: the two values are far apart.
    assert abs(variance - continuous) > 20 * standard_error


@pytest.mark.parametrize("tasks", [None, 2])
@pytest.mark.parametrize("first_index", [0, 1000])
@pytest.mark.parametrize("cache_bytes", [0, DEFAULT_CACHE])
def test_langevin_step_is_drift_plus_particle_noise(make_problem, tasks, first_index, cache_bytes):
    p = make_problem(n=7, N=9, d=3, T=tasks)
    eta, seed, step = 0.05, 123456789, 17
    new = core.langevin_step(p.W, p.X, p.Y, eta=eta, **HYPER, seed=seed, step=step, first_index=first_index,
                             block_size=4, cache_bytes=cache_bytes)
    xi = core.particle_noise(seed, step, p.N, p.d + 1, first_index=first_index)
    want = p.W - eta * core.drift(p.W, p.X, p.Y, **HYPER) + np.sqrt(2 * eta * HYPER["lam"]) * xi
    np.testing.assert_allclose(new, want, rtol=1e-12, atol=1e-12)
    # Replaying a step alone gives the same bits.
    again = core.langevin_step(p.W, p.X, p.Y, eta=eta, **HYPER, seed=seed, step=step, first_index=first_index,
                               block_size=4, cache_bytes=cache_bytes)
    np.testing.assert_array_equal(new, again)


@pytest.mark.parametrize("tasks", [None, 1, 3])
def test_langevin_step_with_label_noise(make_problem, tasks):
    p = make_problem(n=7, N=9, d=3, T=tasks)
    eta, seed, step, level = 0.05, 2024, 5, 0.6
    new, A, U = core.langevin_step(p.W, p.X, p.Y, eta=eta, **HYPER, seed=seed, step=step,
                                   label_noise_level=level, return_dual=True)
    E = core.label_noise(seed, step, p.n, p.T, level)
    assert E.shape == (p.n, p.T)
    xi = core.particle_noise(seed, step, p.N, p.d + 1)
    grad, A_ref, U_ref = core.drift(p.W, p.X, p.Y, **HYPER, label_noise=E.reshape(np.shape(p.Y)),
                                    return_dual=True)
    want = p.W - eta * grad + np.sqrt(2 * eta * HYPER["lam"]) * xi
    np.testing.assert_allclose(new, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A, A_ref, rtol=1e-12, atol=1e-14)
    assert U == pytest.approx(U_ref, rel=1e-12)
    # The label noise really entered the step.
    clean = core.langevin_step(p.W, p.X, p.Y, eta=eta, **HYPER, seed=seed, step=step)
    assert not np.allclose(new, clean, rtol=1e-6, atol=0)


def test_langevin_return_dual_is_at_pre_step_particles(make_problem):
    p = make_problem(n=6, N=10, d=2, T=2)
    new, A, U = core.langevin_step(p.W, p.X, p.Y, eta=0.1, **HYPER, seed=1, step=0, return_dual=True)
    _, A_ref, U_ref = core.drift(p.W, p.X, p.Y, **HYPER, return_dual=True)
    np.testing.assert_allclose(A, A_ref, rtol=1e-12, atol=1e-14)
    assert U == pytest.approx(U_ref, rel=1e-12)
    np.testing.assert_array_equal(new, core.langevin_step(p.W, p.X, p.Y, eta=0.1, **HYPER, seed=1, step=0))


def test_particle_noise_is_standard_normal():
    z = core.particle_noise(seed=31337, step=4, count=20_000, dim=5).ravel()
    M = z.size
    assert abs(z.mean()) < 5 / np.sqrt(M)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / M)
    # E z^4 = 3 and Var z^4 = E z^8 - 9 = 105 - 9 = 96.
    assert abs(np.mean(z ** 4) - 3) < 5 * np.sqrt(96 / M)
    assert stats.kstest(z, "norm").pvalue > 1e-3


def correlation(a, b):
    """Pearson correlation of two flattened arrays."""
    return np.corrcoef(np.ravel(a), np.ravel(b))[0, 1]


def test_particle_noise_is_independent_across_steps_seeds_and_indices():
    count, dim = 20_000, 4
    base = core.particle_noise(5, 10, count, dim)
    bound = 5 / np.sqrt(base.size)
    others = {
        "next step": core.particle_noise(5, 11, count, dim),
        "last step": core.particle_noise(5, 2**32 - 1, count, dim),
        "next seed": core.particle_noise(6, 10, count, dim),
        "seed + 2**32 (high bits)": core.particle_noise(5 + 2**32, 10, count, dim),
        "shifted indices": core.particle_noise(5, 10, count, dim, first_index=1),
    }
    for name, other in others.items():
        assert not np.array_equal(other, base), name
        assert abs(correlation(base, other)) < bound, name
    # Neighbouring particles and neighbouring coordinates of one particle.
    bound_rows = 5 / np.sqrt((count - 1) * dim)
    assert abs(correlation(base[:-1], base[1:])) < bound_rows
    bound_cols = 5 / np.sqrt(count)
    for j in range(dim - 1):
        assert abs(correlation(base[:, j], base[:, j + 1])) < bound_cols
    # Label noise is a separate stream from the particle noise of the same (seed, step, index).
    label = core.label_noise(5, 10, count, 1, 1.0)[:, 0]
    assert abs(correlation(label, base[:, 0])) < bound_cols


def test_particle_noise_is_keyed_by_particle_index():
    full = core.particle_noise(8, 3, 50, 6)
    np.testing.assert_array_equal(core.particle_noise(8, 3, 20, 6, first_index=15), full[15:35])
    np.testing.assert_array_equal(core.particle_noise(8, 3, 50, 6, n_threads=1), full)
    assert core.particle_noise(8, 3, 0, 6).shape == (0, 6)
    last = core.particle_noise(8, 3, 1, 6, first_index=2**32 - 1)
    assert last.shape == (1, 6) and np.isfinite(last).all()


def test_label_noise_is_uniform():
    level, n, tasks = 0.7, 20_000, 3
    E = core.label_noise(seed=77, step=9, n=n, tasks=tasks, level=level)
    assert E.shape == (n, tasks)
    assert np.all(np.abs(E) <= level)
    values = E.ravel()
    assert stats.kstest(values, "uniform", args=(-level, 2 * level)).pvalue > 1e-3
    # Moments of Uniform[-s, s]: mean 0, variance s^2/3.
    M = values.size
    assert abs(values.mean()) < 5 * level / np.sqrt(3 * M)
    assert abs(values.var() - level ** 2 / 3) < 5 * np.sqrt((level ** 4 / 5 - level ** 4 / 9) / M)
    np.testing.assert_array_equal(E, core.label_noise(77, 9, n, tasks, level))
    assert not np.array_equal(E, core.label_noise(77, 10, n, tasks, level))
    assert not np.array_equal(E, core.label_noise(78, 9, n, tasks, level))
    np.testing.assert_array_equal(core.label_noise(77, 9, 5, 2, 0.0), np.zeros((5, 2)))


# ----------------------------------------------------------------------------------------------------------
# Determinism across thread counts and GIL release
# ----------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def large_problem():
    """A problem large enough for several particle blocks and for the parallel regions to split work."""
    rng = np.random.default_rng(42)
    n, N, d, T = 300, 3000, 10, 2
    X = rng.standard_normal((n, d)) / np.sqrt(d)
    W = rng.standard_normal((N, d + 1))
    Y = rng.standard_normal((n, T))
    X2 = rng.standard_normal((50, d)) / np.sqrt(d)
    return X, W, Y, X2


def one_and_two_threads(func):
    """Results of func(n_threads=1) and func(n_threads=2)."""
    return func(n_threads=1), func(n_threads=2)


@pytest.mark.parametrize("block_size", [None, 256])
def test_gram_is_bitwise_identical_for_one_and_two_threads(large_problem, block_size):
    X, W, _, X2 = large_problem
    one, two = one_and_two_threads(lambda n_threads: core.gram(W, X, block_size=block_size, n_threads=n_threads))
    np.testing.assert_array_equal(one, two)
    one, two = one_and_two_threads(
        lambda n_threads: core.gram(W, X, X2, block_size=block_size, n_threads=n_threads))
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("block_size", [None, 256])
@pytest.mark.parametrize("cache_bytes", [0, DEFAULT_CACHE])
def test_drift_is_bitwise_identical_for_one_and_two_threads(large_problem, block_size, cache_bytes):
    X, W, Y, _ = large_problem
    one, two = one_and_two_threads(lambda n_threads: core.drift(
        W, X, Y, **HYPER, block_size=block_size, cache_bytes=cache_bytes, n_threads=n_threads))
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("block_size", [None, 256])
@pytest.mark.parametrize("cache_bytes", [0, DEFAULT_CACHE])
@pytest.mark.parametrize("label_noise_level", [0.0, 0.5])
def test_langevin_step_is_bitwise_identical_for_one_and_two_threads(large_problem, block_size, cache_bytes,
                                                                    label_noise_level):
    X, W, Y, _ = large_problem
    one, two = one_and_two_threads(lambda n_threads: core.langevin_step(
        W, X, Y, eta=0.1, **HYPER, seed=5, step=3, label_noise_level=label_noise_level, block_size=block_size,
        cache_bytes=cache_bytes, n_threads=n_threads))
    np.testing.assert_array_equal(one, two)


def test_objective_and_outputs_are_bitwise_identical_for_one_and_two_threads(large_problem):
    X, W, Y, X2 = large_problem
    one, two = one_and_two_threads(lambda n_threads: core.objective(W, X, Y, **HYPER, block_size=256,
                                                                    n_threads=n_threads))
    np.testing.assert_array_equal(one.pop("dual"), two.pop("dual"))
    assert one == two
    one, two = one_and_two_threads(lambda n_threads: core.output_weights(W, X, Y, block_size=256,
                                                                         n_threads=n_threads))
    np.testing.assert_array_equal(one, two)
    weights = one
    one, two = one_and_two_threads(lambda n_threads: core.network_output(W, weights, X2, block_size=256,
                                                                         n_threads=n_threads))
    np.testing.assert_array_equal(one, two)
    one, two = one_and_two_threads(lambda n_threads: core.particle_noise(1, 2, 10_000, 11, n_threads=n_threads))
    np.testing.assert_array_equal(one, two)


def test_gram_in_two_python_threads_matches_sequential_runs():
    # If the GIL is released the calls overlap; either way every result must be bitwise that of a
    # sequential run. Several calls per thread and several rounds, so that the overlaps cover the calls'
    # starts and ends; numpy's BLAS is set to 2 threads around each round so that a call running with
    # anything but the core's own BLAS setting shows up in the bits.
    rng = np.random.default_rng(9)
    n, N, d, repeats, rounds = 400, 3000, 8, 3, 4
    problems = [(rng.standard_normal((N, d + 1)), rng.standard_normal((n, d)) / np.sqrt(d)) for _ in range(2)]
    sequential = [core.gram(W, X, n_threads=1) for W, X in problems]

    def work(index, results, errors):
        try:
            W, X = problems[index]
            for _ in range(repeats):
                results[index].append(core.gram(W, X, n_threads=1))
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    for _ in range(rounds):
        results, errors = [[], []], []
        with threadpool_limits(limits=2, user_api="blas"):
            threads = [threading.Thread(target=work, args=(i, results, errors)) for i in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        assert not errors, errors
        for got_list, want in zip(results, sequential):
            assert len(got_list) == repeats
            for got in got_list:
                np.testing.assert_array_equal(got, want)


def blas_thread_counts():
    """The current thread count of every BLAS library loaded in the process."""
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


def test_core_calls_leave_the_blas_thread_count_unchanged():
    # The core pins BLAS to one thread during its calls; numpy code around it must get its setting back,
    # also when two Python threads call the core at the same time.
    rng = np.random.default_rng(10)
    X = rng.standard_normal((300, 8))
    W = rng.standard_normal((2000, 9))
    Y = rng.standard_normal(300)
    before = blas_thread_counts()
    core.gram(W, X)
    core.drift(W, X, Y, **HYPER)
    assert blas_thread_counts() == before

    def work():
        for _ in range(3):
            core.gram(W, X)
            core.langevin_step(W, X, Y, eta=0.1, **HYPER, seed=0, step=0)

    # A lost setting needs a particular interleaving of the two threads: try several rounds.
    for _ in range(6):
        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert blas_thread_counts() == before
