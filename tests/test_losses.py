"""Tests of mfkern.losses: the Newton second layer against independent solvers (scikit-learn on explicit
features, scipy on the dual objective, the closed form for the squared loss), its optimality conditions, and
the MFLD drift for the logistic loss against finite differences of the reduced objective G written here in
plain numpy/scipy (primal second layer, no dual coefficients)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, logsumexp
from sklearn.linear_model import LogisticRegression

from mfkern import core, losses
from mfkern.losses import (LogisticLoss, NewtonConvergenceError, SquaredLoss, get_loss, multinomial_objective,
                           reduced_objective, solve_multinomial_second_layer, solve_second_layer)


def numpy_features(W, X):
    return np.tanh(X @ W[:, :-1].T + W[:, -1])


def problem(rng, n, N, d=3, T=1, scale=1.0):
    """Inputs, particles, +-1 labels that a smooth function of the inputs explains only partly."""
    X = rng.standard_normal((n, d))
    W = scale * rng.standard_normal((N, d + 1))
    score = X[:, :1] * X[:, 1:2] + 0.5 * rng.standard_normal((n, T))
    Y = np.where(score > 0, 1.0, -1.0)
    return X, W, Y[:, 0] if T == 1 else Y


def logistic_dual_objective(A, K, y, ridge):
    """n * [(1/n) sum_j log(1 + exp(-y_j (KA)_j)) + (ridge/(2n)) A^T K A], written out."""
    f = K @ A
    return np.sum(np.log1p(np.exp(-y * f))) + 0.5 * ridge * A @ f


# ------------------------------------------------------------------------------ the second layer itself
def test_squared_loss_gives_kernel_ridge_and_paper_U(rng):
    """Normalisation: the squared loss reproduces docs/theory.md, sections 2-3 (A = (K + ridge I)^{-1} Y and U)."""
    X, W, _ = problem(rng, 30, 20)
    Y = rng.standard_normal((30, 2))
    lam, lam_a, lam_w = 0.05, 0.4, 0.3
    ridge = 30 * lam * lam_a
    K = core.gram(W, X)
    solution = solve_second_layer(K, Y, ridge=ridge, loss="squared", start=rng.standard_normal((30, 2)))
    np.testing.assert_allclose(solution.A, np.linalg.solve(K + ridge * np.eye(30), Y), rtol=1e-9, atol=1e-12)
    assert solution.iterations == 2  # one Newton step per output (the loss is quadratic)
    U = core.objective(W, X, Y, lam=lam, lam_a=lam_a, lam_w=lam_w)["U"]
    np.testing.assert_allclose(solution.objective, U, rtol=1e-10)
    np.testing.assert_allclose(reduced_objective(K, Y, solution.A, ridge=ridge, loss=SquaredLoss()), U, rtol=1e-10)


@pytest.mark.parametrize("N", [12, 80])  # N < n (singular K) and N > n
def test_logistic_second_layer_equals_sklearn_logistic_regression_on_the_features(rng, N):
    """With features phi(x) = h(x; W)/sqrt(N) (so K = Phi Phi^T), the second layer a_k = H[:,k]^T A is
    sqrt(N) beta for beta = L2-regularised logistic regression on Phi with C = 1/(n lam lam_a), no intercept:
    scikit-learn minimises 0.5 ||beta||^2 + C sum_j l, i.e. our objective times 1/(lam lam_a)."""
    n, lam_a_bar = 50, 0.02
    X, W, y = problem(rng, n, N)
    Phi = numpy_features(W, X) / np.sqrt(N)
    K = Phi @ Phi.T
    solution = solve_second_layer(K, y, ridge=n * lam_a_bar, tol=1e-12)
    sk = LogisticRegression(C=1 / (n * lam_a_bar), fit_intercept=False, tol=1e-12, max_iter=10000).fit(Phi, y)
    beta = sk.coef_[0]
    np.testing.assert_allclose(solution.outputs, Phi @ beta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(Phi.T @ solution.A, beta, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sk.decision_function(Phi), K @ solution.A, rtol=1e-6, atol=1e-6)


def test_logistic_second_layer_equals_scipy_on_the_dual_objective(rng):
    n, N, ridge = 40, 60, 0.5
    X, W, y = problem(rng, n, N)
    K = core.gram(W, X)
    solution = solve_second_layer(K, y, ridge=ridge, tol=1e-12)

    def gradient(A):
        return K @ (-y * expit(-y * (K @ A)) + ridge * A)

    def hessian(A):
        f = K @ A
        return (K * (expit(f) * expit(-f))) @ K + ridge * K

    reference = minimize(logistic_dual_objective, np.zeros(n), args=(K, y, ridge), jac=lambda A, *_: gradient(A),
                         hess=lambda A, *_: hessian(A), method="trust-exact", options={"gtol": 1e-12})
    assert np.abs(gradient(reference.x)).max() < 1e-8  # ||K|| is about n: this is rounding level
    np.testing.assert_allclose(solution.A, reference.x, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(solution.objective * n, reference.fun, rtol=1e-10)


@pytest.mark.parametrize("T", [1, 3])
def test_newton_solution_meets_the_optimality_conditions(rng, T):
    """A = -(1/(n lam_a_bar)) l'(K A, Y) (docs/theory.md, section 9), column by column, and nothing does better."""
    n, ridge, tol = 35, 0.3, 1e-11
    X, W, Y = problem(rng, n, 15, T=T)
    K = core.gram(W, X)
    solution = solve_second_layer(K, Y, ridge=ridge, tol=tol)
    A = solution.A.reshape(n, -1)
    Y2 = Y.reshape(n, -1)
    F = K @ A
    np.testing.assert_allclose(F, solution.outputs.reshape(n, -1), rtol=1e-12, atol=1e-12)
    residual = np.abs(ridge * A - Y2 * expit(-Y2 * F)).max()
    assert residual <= tol and solution.residual <= tol
    best = reduced_objective(K, Y, solution.A, ridge=ridge)
    np.testing.assert_allclose(best, solution.objective, rtol=1e-12)
    for _ in range(5):  # random nearby coefficients are worse
        assert reduced_objective(K, Y, solution.A + 1e-3 * rng.standard_normal(Y.shape), ridge=ridge) > best


def test_columns_are_independent_problems(rng):
    n = 30
    X, W, Y = problem(rng, n, 15, T=2)
    K = core.gram(W, X)
    both = solve_second_layer(K, Y, ridge=0.2, tol=1e-12)
    for i in range(2):
        single = solve_second_layer(K, Y[:, i], ridge=0.2, tol=1e-12)
        np.testing.assert_allclose(both.A[:, i], single.A, rtol=1e-10, atol=1e-13)


def test_small_regularisation_approaches_the_unregularised_fit(rng):
    """As lam_a_bar -> 0 with N < n and non-separable labels, f = K A tends to the unregularised logistic
    regression on the features (scikit-learn, C = inf), with a gap proportional to lam_a_bar."""
    n, N = 60, 5
    X, W, y = problem(rng, n, N)
    Phi = numpy_features(W, X) / np.sqrt(N)
    K = Phi @ Phi.T
    unregularised = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-12, max_iter=1000,
                                       solver="newton-cholesky").fit(Phi, y)
    target = unregularised.decision_function(Phi)
    gaps = np.array([np.abs(solve_second_layer(K, y, ridge=n * lam_a_bar, tol=1e-10).outputs - target).max()
                     for lam_a_bar in (1e-4, 1e-6, 1e-8)])
    ratios = gaps[:-1] / gaps[1:]
    assert np.all((ratios > 50) & (ratios < 200)), gaps  # first order in lam_a_bar
    assert gaps[-1] < 1e-4


def test_warm_start_at_the_solution_returns_it_bit_for_bit(rng):
    X, W, Y = problem(rng, 30, 20, T=2)
    K = core.gram(W, X)
    first = solve_second_layer(K, Y, ridge=0.1)
    again = solve_second_layer(K, Y, ridge=0.1, start=first.A)
    assert again.iterations == 0
    assert np.array_equal(again.A, first.A) and again.objective == first.objective


def test_line_search_converges_from_a_far_start(rng):
    n = 30
    X, W, y = problem(rng, n, 20)
    K = core.gram(W, X)
    near = solve_second_layer(K, y, ridge=0.1, tol=1e-11)
    far = solve_second_layer(K, y, ridge=0.1, tol=1e-11, start=1e3 * rng.standard_normal(n))
    np.testing.assert_allclose(far.A, near.A, rtol=1e-8, atol=1e-9)
    assert far.iterations > near.iterations


def test_iteration_cap_raises_a_clear_error(rng):
    X, W, y = problem(rng, 30, 20)
    K = core.gram(W, X)
    with pytest.raises(NewtonConvergenceError, match=r"not converged after 1 iterations.*residual.*tol 1e-13") as info:
        solve_second_layer(K, y, ridge=0.1, tol=1e-13, max_iter=1)
    assert info.value.iterations == 1 and info.value.residual > 1e-13 and info.value.tol == 1e-13
    assert isinstance(info.value, RuntimeError)


def test_solution_is_the_same_for_any_blas_thread_count(rng):
    n = 400
    X, W, y = problem(rng, n, 300)
    K = core.gram(W, X)
    with core.thread_limits(1):
        one = solve_second_layer(K, y, ridge=0.05)
    with core.thread_limits(2):
        two = solve_second_layer(K, y, ridge=0.05)
    assert np.array_equal(one.A, two.A)


def test_loss_derivatives_match_finite_differences(rng):
    z = rng.standard_normal(20) * 5
    labels = np.where(rng.random(20) > 0.5, 1.0, -1.0)
    for loss, y in [(LogisticLoss(), labels), (SquaredLoss(), rng.standard_normal(20))]:
        h = 1e-6
        np.testing.assert_allclose(loss.derivative(z, y), (loss.value(z + h, y) - loss.value(z - h, y)) / (2 * h),
                                   rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(loss.second_derivative(z, y),
                                   (loss.derivative(z + h, y) - loss.derivative(z - h, y)) / (2 * h),
                                   rtol=1e-6, atol=1e-9)
    # no overflow for large margins
    assert np.isfinite(LogisticLoss().value(np.array([1e4, -1e4]), np.array([-1.0, 1.0]))).all()


# --------------------------------------------------------------------------- the drift, by differences
def numpy_reduced_objective(W, X, Y, lam, lam_a, lam_w):
    """G(mu_W) = (1/T) sum_i min_a [(1/n) sum_j l(f_a(x_j), y_ji) + (lam lam_a/2)(1/N) sum_k a_k^2]
    + (lam lam_w/2) mean_k ||w_k||^2 with f_a = (1/N) sum_k a_k h(.; w_k): the primal problem in the second-layer
    weights a (length N), solved by scipy's trust-region Newton to machine precision."""
    n, T = Y.shape
    N = W.shape[0]
    H = numpy_features(W, X)
    lam_a_bar = lam * lam_a
    total = 0.0
    for i in range(T):
        y = Y[:, i]

        def value(a):
            f = H @ a / N
            return np.mean(np.logaddexp(0, -y * f)) + lam_a_bar / (2 * N) * a @ a

        def gradient(a):
            f = H @ a / N
            return H.T @ (-y * expit(-y * f)) / (n * N) + lam_a_bar / N * a

        def hessian(a):
            f = H @ a / N
            d = expit(f) * expit(-f)
            return (H.T * d) @ H / (n * N**2) + lam_a_bar / N * np.eye(N)

        result = minimize(value, np.zeros(N), jac=gradient, hess=hessian, method="trust-exact",
                          options={"gtol": 1e-14})
        # strongly convex (curvature >= lam_a_bar/N): a gradient of 1e-10 leaves the value off by < 1e-17
        assert np.abs(gradient(result.x)).max() < 1e-10
        total += result.fun
    return total / T + lam * lam_w / 2 * np.mean(np.sum(W**2, axis=1))


@pytest.mark.parametrize("T", [1, 2])
def test_drift_at_the_newton_solution_is_n_times_the_gradient_of_G(rng, T):
    n, N, d = 14, 6, 2
    lam, lam_a, lam_w = 0.05, 0.5, 0.3
    X, W, Y = problem(rng, n, N, d=d, T=T)
    Y = Y.reshape(n, T)
    K = core.gram(W, X)
    A = solve_second_layer(K, Y, ridge=n * lam * lam_a, tol=1e-13).A
    drift = core.drift_given_dual(W, X, A, lam=lam, lam_a=lam_a, lam_w=lam_w)
    h = 1e-5
    fd = np.empty_like(W)
    for k in range(N):
        for l in range(d + 1):
            plus, minus = W.copy(), W.copy()
            plus[k, l] += h
            minus[k, l] -= h
            fd[k, l] = N * (numpy_reduced_objective(plus, X, Y, lam, lam_a, lam_w)
                            - numpy_reduced_objective(minus, X, Y, lam, lam_a, lam_w)) / (2 * h)
    data_part = drift - lam * lam_w * W  # the data term alone: the part a wrong normalisation would change
    assert np.abs(data_part).max() > 1e-3
    np.testing.assert_allclose(drift, fd, rtol=0, atol=1e-6 * np.abs(drift).max())


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(Y=np.array([1.0, 0.0, -1.0])), ValueError, "labels -1 or \\+1"),
    (dict(K=np.ones((3, 2))), ValueError, "square"),
    (dict(K=np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]])), ValueError, "symmetric"),
    (dict(K=np.full((3, 3), np.nan)), ValueError, "finite"),
    (dict(ridge=0.0), ValueError, "ridge"),
    (dict(ridge="1"), TypeError, "ridge"),
    (dict(tol=-1.0), ValueError, "tol"),
    (dict(max_iter=-1), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(start=np.zeros(4)), ValueError, "start must have 3 rows"),
    (dict(start=np.zeros((3, 2))), ValueError, "start must have the shape of Y"),
    (dict(Y=np.ones(4)), ValueError, "Y must have 3 rows"),
    (dict(loss="hinge"), ValueError, "loss must be one of"),
])
def test_bad_input_raises_naming_the_argument(kwargs, error, match):
    args = dict(K=np.eye(3), Y=np.array([1.0, -1.0, 1.0]), ridge=0.1)
    args.update(kwargs)
    K, Y = args.pop("K"), args.pop("Y")
    with pytest.raises(error, match=match):
        solve_second_layer(K, Y, **args)


def test_get_loss_accepts_names_and_instances():
    assert isinstance(get_loss("logistic"), LogisticLoss)
    loss = SquaredLoss()
    assert get_loss(loss) is loss


# ---------------------------------------------------------------------------------------- multinomial
def one_hot_problem(rng, n, N, d=3, T=4, scale=1.0):
    """Inputs, particles and one-hot labels of T classes that the inputs explain only partly."""
    X = rng.standard_normal((n, d))
    W = scale * rng.standard_normal((N, d + 1))
    score = X @ rng.standard_normal((d, T)) + 0.7 * rng.standard_normal((n, T))
    index = np.argmax(score, axis=1)
    return X, W, np.eye(T)[index], index


def softmax_hessian(Phi, F, scale):
    """Hessian of sum_j CE(Phi_j beta) in beta flattened row-major (N, T): sum_j S_j (x) phi_j phi_j^T, with
    S_j = diag(p_j) - p_j p_j^T, times `scale`."""
    N, T = Phi.shape[1], F.shape[1]
    P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
    cross = -np.einsum("jk,jm,ji,jl->kiml", Phi, Phi, P, P)
    diagonal = np.einsum("jk,jm,ji->kim", Phi, Phi, P)
    for i in range(T):
        cross[:, i, :, i] += diagonal[:, i, :]
    return scale * cross.reshape(N * T, N * T)


def softmax_primal_objective(beta, Phi, Y, ridge):
    """sum_j [logsumexp(Phi_j beta) - (Phi_j beta) . y_j] + (ridge/2) |beta|^2, written out (no mfkern code)."""
    F = Phi @ beta
    return float(np.sum(logsumexp(F, axis=1)) - np.sum(F * Y) + 0.5 * ridge * np.sum(beta * beta))


@pytest.mark.parametrize("N", [25, 80])  # fewer and more features than samples
def test_multinomial_second_layer_equals_sklearn_multinomial_logistic_regression(rng, N):
    """scikit-learn minimises (1/2)|beta|^2 + C sum_j CE_j on explicit features: C = 1/ridge, no intercept."""
    n, ridge = 50, 0.4
    X, W, Y, index = one_hot_problem(rng, n, N)
    Phi = numpy_features(W, X) / np.sqrt(N)
    solution = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-12)
    sk = LogisticRegression(C=1 / ridge, fit_intercept=False, tol=1e-12, max_iter=100000).fit(Phi, index)
    beta = sk.coef_.T  # (N, T), one column per class
    np.testing.assert_allclose(Phi.T @ solution.A, beta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(solution.outputs, Phi @ beta, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(solution.outputs - logsumexp(solution.outputs, axis=1, keepdims=True)),
                               sk.predict_proba(Phi), atol=1e-6)


def test_multinomial_second_layer_equals_scipy_on_the_primal_objective(rng):
    n, N, T, ridge = 40, 30, 3, 0.25
    X, W, Y, _ = one_hot_problem(rng, n, N, T=T)
    Phi = numpy_features(W, X) / np.sqrt(N)
    solution = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-12)

    def gradient(flat):
        beta = flat.reshape(N, T)
        F = Phi @ beta
        P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
        return (Phi.T @ (P - Y) + ridge * beta).ravel()

    def hessian(flat):
        return softmax_hessian(Phi, Phi @ flat.reshape(N, T), 1.0) + ridge * np.eye(N * T)

    reference = minimize(lambda b: softmax_primal_objective(b.reshape(N, T), Phi, Y, ridge), np.zeros(N * T),
                         jac=gradient, hess=hessian, method="trust-exact", options={"gtol": 1e-12})
    # the objective is a sum of n terms, about 24 here: a gradient of 1e-8 is rounding level, and strong
    # convexity (ridge) puts the reference within |gradient| / ridge = 4e-8 of the minimiser
    assert np.abs(gradient(reference.x)).max() < 1e-8
    np.testing.assert_allclose(Phi.T @ solution.A, reference.x.reshape(N, T), rtol=0, atol=1e-7)
    np.testing.assert_allclose(solution.objective * n, reference.fun, rtol=1e-10)
    K = Phi @ Phi.T
    np.testing.assert_allclose(multinomial_objective(K, Y, solution.A, ridge=ridge), solution.objective,
                               rtol=1e-12)


def test_multinomial_solution_meets_the_optimality_conditions(rng):
    """ridge A = -(softmax(K A) - Y) (the optimal second layer, l' = softmax - one-hot); rows of A sum to
    zero; the solution is the minimum of the dual objective; the residual is what it says."""
    n, N, T, ridge, tol = 45, 35, 5, 0.3, 1e-11
    X, W, Y, _ = one_hot_problem(rng, n, N, T=T, scale=2.0)
    Phi = numpy_features(W, X) / np.sqrt(N)
    K = Phi @ Phi.T
    solution = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=tol)
    A = solution.A
    F = K @ A
    np.testing.assert_allclose(F, solution.outputs, rtol=1e-10, atol=1e-12)
    P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
    residual = np.abs(ridge * A + P - Y).max()
    assert residual <= tol and solution.residual <= tol and solution.iterations >= 1
    np.testing.assert_allclose(A.sum(axis=1), 0.0, atol=1e-10)
    best = multinomial_objective(K, Y, A, ridge=ridge)
    for _ in range(5):
        assert multinomial_objective(K, Y, A + 1e-3 * rng.standard_normal(A.shape), ridge=ridge) > best


def test_multinomial_warm_start_thread_count_and_far_starts(rng):
    n, N, T, ridge = 300, 70, 4, 0.05  # 2 panels of rows: the pool really splits the products
    X, W, Y, _ = one_hot_problem(rng, n, N, T=T, scale=3.0)
    Phi = numpy_features(W, X) / np.sqrt(N)
    solution = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10)
    again = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10, start=solution.A, n_threads=3)
    assert again.iterations == 0 and np.array_equal(again.A, solution.A)  # bit for bit: resumes replay
    for threads in (2, 3):
        other = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10, n_threads=threads)
        assert np.array_equal(other.A, solution.A)
    far = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10, start=50 * rng.standard_normal((n, T)))
    np.testing.assert_allclose(far.A, solution.A, atol=1e-8)
    with pytest.raises(NewtonConvergenceError, match="multinomial.*not converged after 1 iterations"):
        solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-14, max_iter=1)


@pytest.mark.parametrize("shape", [(1, 1, 1), (37, 203, 7), (300, 90, 10), (5, 1000, 48)])
def test_feature_products_equal_numpy_and_do_not_depend_on_the_thread_count(rng, shape):
    """The solver's products (the core's skinny-product loops) against numpy in float64: Phi V, Phi^T G, the
    float32 versions, the sketch's Gram and the Hessian product Phi^T S(Phi v) with S the per-sample softmax
    Jacobian written out; sizes with every kind of tail; the same bits for 1 and 3 threads."""
    n, m, k = shape
    Phi = rng.standard_normal((n, m))
    V, G = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    F = rng.standard_normal((n, k))
    P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
    runs = []
    for threads in (1, 3):
        products = losses._Products(Phi, threads)
        with core.thread_limits(1):  # as in the solver: the Gram blocks are single-threaded BLAS calls
            Z = products.forward32(V)
            runs.append([products.forward(V), products.backward(G), Z, products.backward32(G), products.gram32(Z),
                         *products.hessian(P, V)])
    for one, three in zip(*runs):
        np.testing.assert_array_equal(one, three)
    forward, backward, forward32, backward32, gram32, hessian, Fv = runs[0]
    np.testing.assert_allclose(forward, Phi @ V, rtol=1e-12, atol=1e-12 * np.abs(Phi @ V).max())
    np.testing.assert_allclose(backward, Phi.T @ G, rtol=1e-12, atol=1e-12 * np.abs(Phi.T @ G).max())
    assert forward32.dtype == backward32.dtype == gram32.dtype == np.float32
    np.testing.assert_allclose(forward32, Phi @ V, rtol=1e-4, atol=1e-5 * np.abs(Phi @ V).max())
    np.testing.assert_allclose(backward32, Phi.T @ G, rtol=1e-4, atol=1e-5 * np.abs(Phi.T @ G).max())
    Z = forward32.astype(np.float64)
    np.testing.assert_allclose(gram32, Z.T @ Z, rtol=1e-4, atol=1e-5 * np.abs(Z.T @ Z).max())
    Phi_v = Phi @ V
    S_Phi_v = np.einsum("jab,jb->ja", P[:, :, None] * np.eye(k) - P[:, :, None] * P[:, None, :], Phi_v)
    np.testing.assert_allclose(Fv, Phi_v, rtol=1e-4, atol=1e-5 * np.abs(Phi_v).max())
    np.testing.assert_allclose(hessian, Phi.T @ S_Phi_v, rtol=1e-4, atol=1e-5 * np.abs(Phi.T @ S_Phi_v).max())


def test_skinny_products_refuse_what_they_cannot_read():
    """The compiled loops take exactly two C-contiguous matrices of one float dtype and matching sizes."""
    from mfkern import _core

    a = np.ones((3, 4))
    for bad in [(a, np.ones((2, 4), np.float32)), (a, np.ones((2, 5))), (np.asfortranarray(np.ones((3, 4))), a[:2]),
                (np.ones(4), np.ones((2, 4)))]:
        with pytest.raises(ValueError, match="rows_dot|C-contiguous"):
            _core.rows_dot(*bad, 1)
    with pytest.raises(ValueError, match="rows_axpy"):
        _core.rows_axpy(a, np.ones((2, 4)), 1)


@pytest.mark.parametrize("condition", [1.0, 1e6, 1e12])
def test_sketch_basis_is_orthonormal_and_spans_the_sketch(rng, condition):
    """Cholesky QR (or Householder QR where Y is too ill-conditioned for it) against numpy's QR: Q^T Q = I and
    the same projector, at condition numbers on either side of the switch, and for a rank-deficient Y."""
    U = np.linalg.qr(rng.standard_normal((500, 20)))[0]
    Y = U @ np.diag(np.logspace(0, -np.log10(condition), 20)) @ np.linalg.qr(rng.standard_normal((20, 20)))[0]
    Q = losses._orthonormal_basis(Y)
    reference = np.linalg.qr(Y)[0]
    np.testing.assert_allclose(Q.T @ Q, np.eye(20), atol=1e-12)
    np.testing.assert_allclose(Q @ Q.T, reference @ reference.T, atol=1e-9)
    Y[:, 3] = Y[:, 2]
    Q = losses._orthonormal_basis(Y)
    np.testing.assert_allclose(Q.T @ Q, np.eye(20), atol=1e-12)


def test_deflation_preconditioner_is_the_exact_inverse_hessian_when_it_spans_the_features(rng):
    """With as many sketched directions as features, the preconditioner is (Hessian + ridge I)^{-1} at the
    probabilities it was built from, checked against the Hessian written out in numpy (softmax_hessian)."""
    n, N, T, ridge = 90, 12, 4, 0.3
    X, W, Y, _ = one_hot_problem(rng, n, N, T=T)
    Phi = numpy_features(W, X) / np.sqrt(N)
    F = Phi @ rng.standard_normal((N, T))
    P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
    products = losses._Products(Phi, 1)
    preconditioner = losses._Deflation(products, P, ridge, rank=N)
    v = rng.standard_normal((N, T))
    exact = np.linalg.solve(softmax_hessian(Phi, F, 1.0) + ridge * np.eye(N * T), v.reshape(-1)).reshape(N, T)
    np.testing.assert_allclose(preconditioner.apply(v), exact, rtol=1e-4, atol=1e-6 * np.abs(exact).max())


def test_deflation_preconditioner_is_exact_on_its_subspace_and_the_ridge_off_it(rng):
    """With fewer sketched directions than features: M^{-1} = V (V^T H V)^{-1} V^T + (I - V V^T) / c, written
    out in numpy from the preconditioner's own orthonormal basis V (m, r) and the Hessian H of
    softmax_hessian; the basis spans Phi's top right singular directions."""
    n, N, T, ridge, rank = 120, 30, 3, 0.2, 10
    X, W, Y, _ = one_hot_problem(rng, n, N, T=T)
    Phi = numpy_features(W, X) / np.sqrt(N)
    F = Phi @ rng.standard_normal((N, T))
    P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
    preconditioner = losses._Deflation(losses._Products(Phi, 1), P, ridge, rank=rank)
    V = preconditioner.V
    np.testing.assert_allclose(V.T @ V, np.eye(rank), atol=1e-12)
    # V is close to the top right singular subspace: it captures most of Phi's energy
    top = np.linalg.svd(Phi, full_matrices=False)[2][:rank].T
    assert np.linalg.norm(Phi @ V) ** 2 > 0.9 * np.linalg.norm(Phi @ top) ** 2
    H = softmax_hessian(Phi, F, 1.0) + ridge * np.eye(N * T)   # flattened row-major (N, T)
    blocks = np.kron(V, np.eye(T))                              # V acting on each class: (N T, r T)
    expected_matrix = (blocks @ np.linalg.solve(blocks.T @ H @ blocks, blocks.T)
                       + (np.eye(N * T) - blocks @ blocks.T) / ridge)
    v = rng.standard_normal((N, T))
    expected = (expected_matrix @ v.reshape(-1)).reshape(N, T)
    np.testing.assert_allclose(preconditioner.apply(v), expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())


def test_deflation_is_skipped_when_too_small_or_indefinite_and_exact_when_it_covers_every_feature(rng, monkeypatch):
    n, T = 60, 3
    X, W, Y, _ = one_hot_problem(rng, n, 5, T=T)
    P = np.full((n, T), 1.0 / T)
    few = losses._Products(numpy_features(W, X) / np.sqrt(5), 1)
    preconditioner = losses._deflation(few, P, 0.1)           # m = 5 < 8 features: all of them, exactly
    assert preconditioner is not None and preconditioner.r == 5
    X, W, Y, _ = one_hot_problem(rng, n, 40, T=T)
    many = losses._Products(numpy_features(W, X) / np.sqrt(40), 1)
    assert losses._deflation(many, np.full((n, 10), 0.1), 0.1).r == 32         # 10 classes: 320 // 10
    assert losses._deflation(many, np.full((n, 3), 1.0 / 3), 0.1).r == 40       # 3 classes: all 40 < 48 features
    assert losses._deflation(many, np.full((n, 50), 1.0 / 50), 0.1).r == 8      # 50 classes: at least 8 each
    assert losses._deflation(many, np.full((n, 200), 1.0 / 200), 0.1) is None  # 8 x 200 > 1024
    assert losses._deflation(many, P, -1.0) is None           # an indefinite B: plain CG instead
    # and a solve whose preconditioner cannot be built is still exact
    monkeypatch.setattr(losses, "_DEFLATION_MIN_RANK", 10**6)
    monkeypatch.setattr(losses, "_DEFLATION_RANK", 3)
    solution = solve_multinomial_second_layer(many.Phi, Y, ridge=0.1, tol=1e-10)
    assert solution.residual <= 1e-10


def test_deflation_cuts_the_conjugate_gradient_iterations_not_the_answer(rng, monkeypatch):
    """On features whose Gram is numerically low-rank against the ridge (MFLD's case), the preconditioned
    Newton-CG needs fewer Hessian products and finds the same optimum as plain CG."""
    n, N, T, ridge = 300, 200, 5, 0.05
    X, W, Y, _ = one_hot_problem(rng, n, N, d=4, T=T, scale=2.0)
    Phi = numpy_features(W, X) / np.sqrt(N)
    preconditioned = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10)
    monkeypatch.setattr(losses, "_deflation", lambda products, P, c: None)
    plain = solve_multinomial_second_layer(Phi, Y, ridge=ridge, tol=1e-10)
    assert preconditioned.cg_iterations < plain.cg_iterations / 2
    np.testing.assert_allclose(preconditioned.A, plain.A, atol=1e-8)
    assert preconditioned.residual <= 1e-10


def numpy_multinomial_G(W, X, Y, lam, lam_a, lam_w):
    """G = min over second layers a (N, T) of (1/n) sum_j CE(f(x_j), y_j) + (lam lam_a/2) (1/N) sum_k |a_k|^2
    + (lam lam_w/2) mean_k |w_k|^2, f = (1/N) sum_k a_k h(.; w_k): the primal, minimised by scipy."""
    n, N, T = X.shape[0], W.shape[0], Y.shape[1]
    H = numpy_features(W, X)
    c = lam * lam_a

    def value(flat):
        a = flat.reshape(N, T)
        F = H @ a / N
        return (np.sum(logsumexp(F, axis=1)) - np.sum(F * Y)) / n + c / (2 * N) * np.sum(a * a)

    def gradient(flat):
        a = flat.reshape(N, T)
        F = H @ a / N
        P = np.exp(F - logsumexp(F, axis=1, keepdims=True))
        return (H.T @ (P - Y) / (n * N) + c / N * a).ravel()

    def hessian(flat):
        return softmax_hessian(H / N, H @ flat.reshape(N, T) / N, 1.0 / n) + c / N * np.eye(N * T)

    result = minimize(value, np.zeros(N * T), jac=gradient, hess=hessian, method="trust-exact",
                      options={"gtol": 1e-14})
    # strongly convex (curvature >= c/N): a gradient of 1e-10 leaves the value off by < 1e-17
    assert np.abs(gradient(result.x)).max() < 1e-10
    return result.fun + lam * lam_w / 2 * np.mean(np.sum(W**2, axis=1))


def test_multinomial_drift_is_n_times_the_gradient_of_G(rng):
    """The classifier's drift for the softmax loss: core.drift_given_dual with sqrt(T) A (the core averages its
    data term over T outputs; the multinomial ridge term sums over them) equals N dG/dw_k by finite
    differences of G computed above with no dual coefficients."""
    n, N, d, T = 14, 5, 2, 3
    lam, lam_a, lam_w = 0.05, 0.5, 0.3
    X, W, Y, _ = one_hot_problem(rng, n, N, d=d, T=T)
    Phi = core.features(W, X) / np.sqrt(N)
    A = solve_multinomial_second_layer(Phi, Y, ridge=n * lam * lam_a, tol=1e-13).A
    drift = core.drift_given_dual(W, X, np.sqrt(T) * A, lam=lam, lam_a=lam_a, lam_w=lam_w)
    h = 1e-5
    fd = np.empty_like(W)
    for k in range(N):
        for l in range(d + 1):
            plus, minus = W.copy(), W.copy()
            plus[k, l] += h
            minus[k, l] -= h
            fd[k, l] = N * (numpy_multinomial_G(plus, X, Y, lam, lam_a, lam_w)
                            - numpy_multinomial_G(minus, X, Y, lam, lam_a, lam_w)) / (2 * h)
    data_part = drift - lam * lam_w * W
    assert np.abs(data_part).max() > 1e-3
    np.testing.assert_allclose(drift, fd, rtol=0, atol=1e-6 * np.abs(drift).max())
    wrong = core.drift_given_dual(W, X, A, lam=lam, lam_a=lam_a, lam_w=lam_w)  # without sqrt(T): off
    assert np.abs(wrong - fd).max() > 1e-3 * np.abs(drift).max()


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(Y=np.eye(3)[[0, 1, 2, 0]] * 2), ValueError, "one-hot"),
    (dict(Y=np.ones((4, 1))), ValueError, "at least 2 columns"),
    (dict(features=np.ones(4)), ValueError, "features must be 2-D"),
    (dict(features=np.full((4, 2), np.nan)), ValueError, "features must contain only finite"),
    (dict(ridge=0.0), ValueError, "ridge"),
    (dict(tol=0.0), ValueError, "tol"),
    (dict(max_cg_iter=0), ValueError, "max_cg_iter"),
    (dict(n_threads=0), ValueError, "n_threads"),
    (dict(start=np.zeros((4, 2))), ValueError, "start must have the shape of Y"),
])
def test_multinomial_bad_input_raises_naming_the_argument(kwargs, error, match):
    args = dict(features=np.ones((4, 2)), Y=np.eye(3)[[0, 1, 2, 0]], ridge=1.0) | kwargs
    with pytest.raises(error, match=match):
        solve_multinomial_second_layer(**args)
