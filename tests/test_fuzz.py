"""Property-based fuzzing (hypothesis) of every public function of mfkern.core and every MeanFieldRegressor method.

Two kinds of properties:

- Valid input, drawn widely (n, N, d, T from 1 up; magnitudes from 1e-3 to 1e3 with zeros, subnormals and
  duplicated rows planted; hyper-parameters over many decades; every solver, activation and block size):
  the result matches a plain numpy computation written here, within a rounding bound derived from the
  inputs (first-order propagation of the pre-activation rounding (d+2)*eps*|x1|.|w| through h, h' and the
  sums), or the call raises a documented exception for a documented reason (NotPositiveDefiniteError only
  when K + ridge I is numerically singular, MemoryError only when the memory needed is absurd).
- Adversarial input (wrong shapes including 0 and 3-D, NaN/inf, complex/object/string/datetime dtypes,
  Fortran order, non-contiguous, negative strides, read-only, broadcast views, scalars, None, ragged lists;
  negative/NaN/huge/bool/str hyper-parameters): the call raises TypeError/ValueError naming the argument
  (never a pybind11 "incompatible function arguments" dump, never another exception type, never a crash),
  or, when the input was in fact acceptable, returns exactly what the float64 C-contiguous equivalent gives,
  and that is finite.

A fast subset runs by default (a few dozen cases per property, derandomized so CI is reproducible). Set
MFKERN_FUZZ_EXAMPLES=N for N random cases per property (e.g. 2000), as in docs/reliability.md.
"""
from __future__ import annotations

import contextlib
import fractions
import inspect
import math
import numbers
import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, given, note, settings
from hypothesis import strategies as st
from scipy.special import erf
from sklearn.exceptions import NotFittedError

from mfkern import core
from mfkern.checkpoint import CheckpointError
from mfkern.estimator import DivergenceError, MeanFieldRegressor

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None

# ------------------------------------------------------------------------------------------------- settings
_FUZZ_EXAMPLES = os.environ.get("MFKERN_FUZZ_EXAMPLES")
if _FUZZ_EXAMPLES is not None and (not _FUZZ_EXAMPLES.isdigit() or int(_FUZZ_EXAMPLES) < 1):
    raise ValueError(f"MFKERN_FUZZ_EXAMPLES must be a positive integer, got {_FUZZ_EXAMPLES!r}")
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
           HealthCheck.large_base_example]
# Fast: the default suite (fixed examples, no database, so CI is reproducible). Fuzz: the dedicated run.
# The fast profile does not shrink a failure (shrinking can take minutes): it reports the raw example; the
# fuzz run shrinks to a minimal one.
settings.register_profile("mfkern-fast", max_examples=25, derandomize=True, database=None, deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True,
                          phases=[Phase.explicit, Phase.reuse, Phase.generate])
settings.register_profile("mfkern-fuzz", max_examples=int(_FUZZ_EXAMPLES or 1000), deadline=None,
                          suppress_health_check=_HEALTH, print_blob=True)
PROFILE = settings.get_profile("mfkern-fuzz" if _FUZZ_EXAMPLES else "mfkern-fast")


def fuzz(fast_examples):
    """Hypothesis settings: `fast_examples` cases by default, MFKERN_FUZZ_EXAMPLES cases in the fuzz run."""
    return settings(PROFILE, max_examples=int(_FUZZ_EXAMPLES) if _FUZZ_EXAMPLES else fast_examples)


EPS = np.finfo(np.float64).eps
# precision="float32" evaluates features and their products in single precision: bounds use its epsilon.
PRECISION_EPS = {"float64": EPS, "float32": float(np.finfo(np.float32).eps)}
ACTIVATIONS = ("tanh", "erf")
SOLVERS = ("auto", "dense", "woodbury")
# Largest |h'| and |h''| of each activation (tanh'' peaks at 4/(3 sqrt 3); erf'' at 2 sqrt(2/pi/e)).
H1_MAX = {"tanh": 1.0, "erf": 2 / math.sqrt(math.pi)}
H2_MAX = {"tanh": 4 / (3 * math.sqrt(3)), "erf": 2 * math.sqrt(2 / (math.pi * math.e))}
# Every core function returns float64 results; a documented failure is one of these.
CORE_ERRORS = (TypeError, ValueError, MemoryError)
ESTIMATOR_ERRORS = (TypeError, ValueError, MemoryError, DivergenceError)
PYBIND_DUMP = "incompatible function arguments"


# ------------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def memory_ceiling(headroom=4 * 2**30):
    """Cap the address space at its current size + `headroom` for the duration of a call.

    A safety net, not the check itself: a request that should be refused by the core's memory guard, but is
    not, then fails with an ordinary MemoryError instead of being granted by an overcommitting kernel and
    taking the machine down when the pages are touched.
    """
    if resource is None or not os.path.exists("/proc/self/statm"):
        yield
        return
    with open("/proc/self/statm") as f:
        size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = size + headroom
    if hard != resource.RLIM_INFINITY:
        ceiling = min(ceiling, hard)
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def act(Z, activation):
    """The activation in numpy."""
    return np.tanh(Z) if activation == "tanh" else erf(Z)


def act_derivative(Z, activation):
    """h'(z) in numpy."""
    if activation == "tanh":
        return 1.0 - np.tanh(Z) ** 2
    return 2.0 / math.sqrt(math.pi) * np.exp(-Z * Z)


def with_ones(X):
    """X1 = [X, 1]."""
    return np.hstack([X, np.ones((X.shape[0], 1))])


class Features:
    """Numpy features of particles W at inputs X, with elementwise rounding bounds.

    ``dz`` bounds the rounding of the pre-activation z = x1 . w in any summation order (both the core's and
    numpy's): (d+2)*eps*|x1|.|w|, times 4. ``eh`` and ``ehp`` bound the errors of h and h' that follow, plus
    the activations' own error (< 1e-15 for the core, an ulp for numpy).
    """

    def __init__(self, W, X, activation, eps=EPS):
        X1 = with_ones(X)
        Z = X1 @ W.T
        self.eps = eps
        # Numbers and products at this precision can underflow: each loses up to the smallest normal number.
        self.tiny = float(np.finfo(np.float32 if eps > EPS else np.float64).tiny)
        self.X1 = X1
        self.H = act(Z, activation)
        self.Hp = act_derivative(Z, activation)
        self.dz = 4.0 * (X1.shape[1] + 1) * eps * (np.abs(X1) @ np.abs(W).T)
        # At that precision x and w themselves may underflow (|x| < tiny becomes 0): absolute error tiny each.
        self.dz += 4 * self.tiny * (np.abs(W).sum(axis=1)[None, :] + np.abs(X1).sum(axis=1)[:, None] + X1.shape[1])
        self.eh = H1_MAX[activation] * self.dz + 10 * eps
        self.ehp = 2.0 * (H1_MAX[activation] + H2_MAX[activation]) * self.dz + 20 * eps


def ref_gram(F, F2=None):
    """(1/N) H H2^T and an elementwise bound of its error."""
    F2 = F if F2 is None else F2
    N = F.H.shape[1]
    K = F.H @ F2.H.T / N
    absprod = np.abs(F.H) @ np.abs(F2.H).T
    bound = (F.eh @ np.abs(F2.H).T + np.abs(F.H) @ F2.eh.T + F.eh @ F2.eh.T) / N + 4 * N * F.eps * absprod / N
    return K, bound + 1e-300


def columns(Y):
    """(n, T) view of targets of shape (n,) or (n, T)."""
    Y = np.asarray(Y, dtype=np.float64)
    return Y.reshape(Y.shape[0], -1)


def assert_within(got, want, bound, what):
    """|got - want| <= bound elementwise, with a readable report."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.isfinite(got).all(), f"{what}: non-finite result {got}"
    err = np.abs(got - want)
    bad = err > bound
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)), err.shape)
        limit = np.broadcast_to(bound, err.shape)[i]
        raise AssertionError(f"{what}: |error| {err[i]:.3e} exceeds the bound {limit:.3e}"
                             f" at {i} (got {got[i]!r}, want {want[i]!r})")


def dual_drift_reference(F, W, A, B, lam, lam_a, lam_w):
    """Numpy drift for dual coefficients A (and B), with an elementwise error bound.

    grad_k = -(lam lam_a / T) sum_i (a_ki J_k^T A_i - b_ki J_k^T B_i) + lam lam_w w_k, a = H^T A, b = H^T B,
    J_k = h'(z_k) x1 (docs/theory.md, section 1 and the docstring of core.drift_given_dual).
    """
    A = columns(A)
    T = A.shape[1]
    abs_X1 = np.abs(F.X1)
    a = F.H.T @ A
    ea = F.eh.T @ np.abs(A) + 4 * A.shape[0] * F.eps * (np.abs(F.H).T @ np.abs(A)) + 4 * A.shape[0] * F.tiny
    C = (A @ a.T)
    C_abs = np.abs(A) @ np.abs(a).T
    C_err = np.abs(A) @ ea.T
    if B is not None:
        B = columns(B)
        b = F.H.T @ B
        eb = F.eh.T @ np.abs(B) + 4 * B.shape[0] * F.eps * (np.abs(F.H).T @ np.abs(B)) + 4 * B.shape[0] * F.tiny
        C = C - B @ b.T
        C_abs = C_abs + np.abs(B) @ np.abs(b).T
        C_err = C_err + np.abs(B) @ eb.T
    scale = lam * lam_a / T
    grad = -scale * (C * F.Hp).T @ F.X1 + lam * lam_w * W
    terms = scale * (C_abs * np.abs(F.Hp)).T @ abs_X1 + lam * lam_w * np.abs(W)
    err = scale * ((C_abs * F.ehp + (C_err + 4 * F.tiny) * (np.abs(F.Hp) + F.ehp)).T @ (abs_X1 + 4 * F.tiny))
    bound = err + 8 * (A.shape[0] + T + W.shape[1]) * F.eps * terms + 1e-300
    return grad, bound


def check_documented_error(exc, names=(), allowed=CORE_ERRORS):
    """`exc` is a documented exception; a TypeError/ValueError from validation names one of `names`."""
    assert isinstance(exc, allowed), f"undocumented exception {type(exc).__name__}: {exc}"
    message = str(exc)
    assert message.strip(), f"{type(exc).__name__} without a message"
    assert PYBIND_DUMP not in message, f"unclear error (raw pybind11 signature dump): {message[:300]}"
    if names and isinstance(exc, (TypeError, ValueError)) and not isinstance(
            exc, (core.NotPositiveDefiniteError, DivergenceError, CheckpointError, NotFittedError)):
        pattern = "|".join(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])" for name in names)
        assert re.search(pattern, message), f"the message does not name {names}: {message}"


def ridge_is_lost(K, K_err, ridge):
    """Whether K + ridge I may be numerically singular: ridge within Cholesky's breakdown threshold
    16 m^1.5 eps ||K + ridge I|| (m = n, or N for the particle-space system, which has the same nonzero
    spectrum as K up to the factor N) plus the Gram's own rounding, which can make K slightly indefinite."""
    m = max(K.shape[0], 64)
    return ridge <= 16 * m**1.5 * EPS * (np.linalg.norm(K, 2) + ridge) + np.linalg.norm(K_err)


def lam_values():
    """Hyper-parameter values over 10 decades, planted with round numbers."""
    return st.one_of(st.sampled_from([1e-6, 1e-3, 0.004, 0.25, 1.0, 10.0, 1e3]),
                     st.builds(lambda m, e: m * 10.0 ** e, st.floats(1.0, 9.99), st.integers(-6, 2)))


SPECIAL_VALUES = [0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1e-300, 1.0, -1.0, 0.5, 1e-8]


@st.composite
def real_arrays(draw, shape, scale):
    """A float64 array: standard normals (from a drawn seed) times `scale`, with up to 3 planted entries."""
    a = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).standard_normal(shape) * scale
    for _ in range(draw(st.integers(0, 3)) if a.size else 0):
        position = draw(st.integers(0, a.size - 1))
        a.flat[position] = draw(st.one_of(st.sampled_from(SPECIAL_VALUES),
                                          st.floats(-10 * scale, 10 * scale, allow_nan=False)))
    return a


@st.composite
def problems(draw, max_n=9, max_N=12, max_d=4, big_N=True):
    """A valid problem: X (n, d), W (N, d+1), Y (n,) or (n, T), activation."""
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    N = draw(st.one_of(st.integers(1, max_N), st.integers(60, 140))) if big_N else draw(st.integers(1, max_N))
    T = draw(st.sampled_from([None, 1, 2, 3]))
    X = draw(real_arrays((n, d), draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]))))
    if n > 1 and draw(st.booleans()):  # duplicated samples: singular Gram without the ridge
        X[draw(st.integers(1, n - 1))] = X[0]
    W = draw(real_arrays((N, d + 1), draw(st.sampled_from([1e-3, 1.0, 10.0, 1e3]))))
    Y = draw(real_arrays((n,) if T is None else (n, T), draw(st.sampled_from([1e-3, 1.0, 1e3]))))
    if draw(st.booleans()):  # constant targets
        Y[...] = draw(st.sampled_from([0.0, 1.0, -3.5]))
    activation = draw(st.sampled_from(ACTIVATIONS))
    note(f"n={n} N={N} d={d} T={T} activation={activation}")
    return X, W, Y, activation


@st.composite
def layouts(draw, array):
    """(variant, float64 equivalent): the same values in another memory layout, dtype or container."""
    kind = draw(st.sampled_from(["C", "F", "strided", "negative", "readonly", "list", "float32", "broadcast"]))
    a = np.array(array, dtype=np.float64)
    if kind == "F":
        return np.asfortranarray(a), a
    if kind == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],)) if a.ndim else a
        if a.ndim:
            wide[..., ::2] = a
            return wide[..., ::2], a
        return a, a
    if kind == "negative":
        return a[::-1].copy()[::-1], a
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b, a
    if kind == "list":
        return a.tolist(), a
    if kind == "float32":
        b = a.astype(np.float32)
        return b, b.astype(np.float64)
    if kind == "broadcast" and a.ndim == 2 and a.shape[0] > 1:
        return np.broadcast_to(a[:1], a.shape), np.repeat(a[:1], a.shape[0], axis=0)
    return a, a


# ======================================================================================= valid input vs numpy
@fuzz(40)
@given(problem=problems(), data=st.data())
def test_features_match_numpy(problem, data):
    X, W, _, activation = problem
    Wv, W64 = data.draw(layouts(W))
    Xv, X64 = data.draw(layouts(X))
    F = Features(W64, X64, activation)
    with memory_ceiling():
        H = core.features(Wv, Xv, activation, n_threads=data.draw(st.sampled_from([None, 1, 2])))
    assert H.dtype == np.float64 and H.flags.c_contiguous
    assert_within(H, F.H, F.eh, "features")


@fuzz(40)
@given(problem=problems(), data=st.data())
def test_gram_matches_numpy(problem, data):
    X, W, _, activation = problem
    block_size = data.draw(st.sampled_from([None, 1, 3, 64, 65, 2**20]))
    F = Features(W, X, activation)
    if data.draw(st.booleans()):
        X2 = data.draw(real_arrays((data.draw(st.integers(1, 7)), X.shape[1]), 1.0))
        want, bound = ref_gram(F, Features(W, X2, activation))
    else:
        X2 = None
        want, bound = ref_gram(F)
    with memory_ceiling():
        K = core.gram(W, X, X2, activation, block_size=block_size, n_threads=data.draw(st.sampled_from([None, 1])))
    assert_within(K, want, bound, "gram")
    if X2 is None:
        np.testing.assert_array_equal(K, K.T)


def symmetric_matrices(n):
    """PSD Grams of any rank, or symmetric indefinite matrices, at various scales."""
    @st.composite
    def draw_matrix(draw):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        kind = draw(st.sampled_from(["psd", "low-rank", "indefinite", "diagonal"]))
        scale = draw(st.sampled_from([1e-6, 1.0, 1e4]))
        if kind == "psd":
            B = rng.standard_normal((n, n + 2))
            K = B @ B.T / (n + 2)
        elif kind == "low-rank":
            B = rng.standard_normal((n, draw(st.integers(1, n))))
            K = B @ B.T
        elif kind == "indefinite":
            B = rng.standard_normal((n, n))
            K = (B + B.T) / 2
        else:
            K = np.diag(rng.uniform(-1, 2, n))
        return scale * K
    return draw_matrix()


@st.composite
def kernel_problems(draw):
    """A symmetric matrix K (n = 1..12), targets Y of n rows and a ridge."""
    n = draw(st.integers(1, 12))
    K = draw(symmetric_matrices(n))
    Y = draw(real_arrays(draw(st.sampled_from([(n,), (n, 1), (n, 3)])), draw(st.sampled_from([1e-3, 1.0, 1e3]))))
    ridge = draw(lam_values())
    return K, Y, ridge


@fuzz(60)
@given(problem=kernel_problems(), data=st.data())
def test_second_layer_is_a_backward_stable_solve_or_reports_a_singular_matrix(problem, data):
    K, Y, ridge = problem
    Kv, K64 = data.draw(layouts(K))
    if not np.array_equal(K64, K64.T):
        Kv, K64 = K, K  # float32 rounding is symmetric; a broadcast view of a symmetric matrix is not
    M = K64 + ridge * np.eye(K.shape[0])
    eigenvalues = np.linalg.eigvalsh(M)
    norm = np.abs(eigenvalues).max()
    n = K.shape[0]
    try:
        A = core.second_layer(Kv, Y, ridge)
    except core.NotPositiveDefiniteError:
        # Cholesky in floating point succeeds whenever 20 n^1.5 cond(M) u < 1 (Higham, Thm 10.7; u = eps/2),
        # so a breakdown means lambda_min <= 10 n^1.5 eps ||M||.
        assert eigenvalues.min() <= 16 * n**1.5 * EPS * norm, f"raised for a PD matrix, eigenvalues {eigenvalues}"
        event("second_layer: not positive definite")
        return
    # A completed factorisation is exact for M + dM with ||dM|| <= (n+1) n eps ||M|| (Higham, Thm 10.3).
    assert eigenvalues.min() >= -2 * n * (n + 1) * EPS * norm, f"solved an indefinite matrix, eigenvalues {eigenvalues}"
    assert A.shape == np.shape(Y)
    A2, Y2 = columns(A), columns(Y)
    residual = M @ A2 - Y2
    # Cholesky is backward stable: (M + dM) A = Y with ||dM|| <= c n eps ||M||.
    bound = 64 * n * EPS * (np.abs(M) @ np.abs(A2)) + 8 * EPS * np.abs(Y2) + 1e-300  # (subnormal rounding)
    assert_within(residual, np.zeros_like(residual), bound, "residual of (K + ridge I) A = Y")


@fuzz(40)
@given(problem=problems(max_n=8, max_N=10), hyper=st.tuples(lam_values(), lam_values(), lam_values()),
       solver=st.sampled_from(SOLVERS), precision=st.sampled_from(sorted(PRECISION_EPS)), data=st.data())
def test_objective_matches_numpy(problem, hyper, solver, precision, data):
    X, W, Y, activation = problem
    lam, lam_a, lam_w = hyper
    n, N = X.shape[0], W.shape[0]
    Y2 = columns(Y)
    T = Y2.shape[1]
    F = Features(W, X, activation, PRECISION_EPS[precision])
    K, K_err = ref_gram(F)
    ridge = n * lam * lam_a
    M = K + ridge * np.eye(n)
    eig = np.linalg.eigvalsh(M)
    try:
        out = core.objective(W, X, Y, lam=lam, lam_a=lam_a, lam_w=lam_w, activation=activation, solver=solver,
                             precision=precision, block_size=data.draw(st.sampled_from([None, 1, 7])))
    except core.NotPositiveDefiniteError:
        assert ridge_is_lost(K, K_err, ridge), f"raised with ridge {ridge}, eigenvalues {eig}"
        event("objective: not positive definite")
        return
    for key in ("U", "G", "dof", "condition", "ridge"):
        assert np.isfinite(out[key]), f"{key} = {out[key]}"
    A = np.linalg.solve(M, Y2)
    # Rounding of the solve (relative, times the condition number) plus the Gram's rounding propagated:
    # dU = (lam lam_a / 2T) A^T dK A.
    cond = eig.max() / eig.min()
    kappa = (np.abs(K).max() * n + ridge) / ridge  # >= cond(K + ridge I) and cond(N ridge I + H^T H) / N
    solve_eps = EPS  # the dense factorisation is float64 at any precision
    if solver == "woodbury" or (solver == "auto" and N < n):
        # The particle-space path forms (Y - H S H^T Y) / ridge (with products at `precision`): a
        # cancellation that loses eps ||K|| / ridge even where K + ridge I itself is well conditioned.
        cond, solve_eps = kappa, F.eps
    U = lam * lam_a / (2 * T) * np.sum(Y2 * A)
    U_err = (lam * lam_a / (2 * T) * np.sum(np.abs(A) * (K_err @ np.abs(A)))
             + 64 * (n + N) * solve_eps * cond * (abs(U) + lam * lam_a / (2 * T) * np.sum(np.abs(Y2 * A))))
    assert abs(out["U"] - U) <= U_err, f"U {out['U']} vs numpy {U} (bound {U_err})"
    prior = 0.5 * lam * lam_w * np.mean(np.sum(W * W, axis=1))
    G = U + prior
    # The prior term is a sum of N (d+1) squares: rounding up to that many eps relative.
    assert abs(out["G"] - G) <= U_err + 2 * (W.size + 4) * EPS * prior + 8 * EPS * abs(G), \
        f"G {out['G']} vs numpy {G}"
    dof = np.sum((eig - ridge) / eig)  # eigenvalues of K over those of K + ridge I
    dof_err = 64 * (n + N) * solve_eps * n * cond + np.abs(K_err).sum() / ridge
    assert abs(out["dof"] - dof) <= dof_err, f"dof {out['dof']} vs numpy {dof}"
    assert -dof_err <= out["dof"] <= n + dof_err
    assert out["condition"] >= 1.0 - 1e-12
    assert out["ridge"] == pytest.approx(ridge, rel=4 * EPS)


@fuzz(40)
@given(problem=problems(max_n=8, max_N=10), hyper=st.tuples(lam_values(), lam_values(), lam_values()),
       solver=st.sampled_from(SOLVERS), with_noise=st.booleans(), data=st.data())
def test_drift_matches_the_numpy_formula(problem, hyper, solver, with_noise, data):
    X, W, Y, activation = problem
    lam, lam_a, lam_w = hyper
    n = X.shape[0]
    precision = data.draw(st.sampled_from(sorted(PRECISION_EPS)))
    F = Features(W, X, activation, PRECISION_EPS[precision])
    E = data.draw(real_arrays(np.shape(Y), 0.5)) if with_noise else None
    kwargs = dict(lam=lam, lam_a=lam_a, lam_w=lam_w, activation=activation, solver=solver, label_noise=E,
                  precision=precision,
                  block_size=data.draw(st.sampled_from([None, 1, 64])),
                  cache_bytes=data.draw(st.sampled_from([0, core.DEFAULT_CACHE_BYTES])))
    K, K_err = ref_gram(F)
    ridge = n * lam * lam_a
    try:
        grad, A, U = core.drift(W, X, Y, return_dual=True, **kwargs)
    except core.NotPositiveDefiniteError:
        assert ridge_is_lost(K, K_err, ridge), f"raised with ridge {ridge}"
        event("drift: not positive definite")
        return
    assert grad.shape == W.shape and A.shape == np.shape(Y) and np.isfinite(U)
    # A solves (K + ridge I) A = Y: Cholesky is backward stable for M = K + ridge I (the core's K is within
    # K_err of numpy's); the particle-space (Woodbury) path solves N ridge I + H^T H instead, whose forward
    # error is eps times its condition number (||K|| + ridge) / ridge. Then the drift is the formula at that A.
    M = K + ridge * np.eye(n)
    A2 = columns(A)
    N = W.shape[0]
    bound = 64 * (n + N) * EPS * (np.abs(M) @ np.abs(A2)) + 8 * EPS * np.abs(columns(Y)) + K_err @ np.abs(A2) \
        + 1e-300
    woodbury = solver == "woodbury" or (solver == "auto" and N < n)
    if woodbury:
        norm_K = np.linalg.norm(K, 2)
        bound = bound + 64 * (n + N) * F.eps * (norm_K + ridge) ** 2 / ridge ** 2 * np.abs(Y).max()
    assert_within(M @ A2 - columns(Y), np.zeros_like(A2), bound, "residual of the dual coefficients")
    B = None
    if E is not None:
        B = np.linalg.solve(M, columns(E))
        # B from numpy: usable as a reference only where the system is well conditioned.
        cond = np.linalg.cond(M)
        if woodbury:
            cond = max(cond, (np.linalg.norm(K, 2) + ridge) / ridge)
        if cond > 1e6:
            event("drift: ill-conditioned, label-noise reference skipped")
            return
        grad_ref, grad_bound = dual_drift_reference(F, W, A2, B, lam, lam_a, lam_w)
        b_term = lam * lam_a / A2.shape[1] * np.abs(
            ((np.abs(B) @ np.abs(F.H.T @ B).T) * np.abs(F.Hp)).T @ np.abs(F.X1))
        grad_bound = grad_bound + 1e3 * cond * (n + W.shape[0]) * F.eps * b_term
    else:
        grad_ref, grad_bound = dual_drift_reference(F, W, A2, None, lam, lam_a, lam_w)
    assert_within(grad, grad_ref, grad_bound, "drift")


@fuzz(30)
@given(problem=problems(max_n=8, max_N=10), hyper=st.tuples(lam_values(), lam_values(), lam_values()),
       eta=lam_values(), seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**32 - 1),
       level=st.sampled_from([0.0, 0.1, 2.0]), first=st.integers(0, 1000), data=st.data())
def test_langevin_step_is_drift_plus_scaled_particle_noise(problem, hyper, eta, seed, step, level, first, data):
    X, W, Y, activation = problem
    lam, lam_a, lam_w = hyper
    n, T = X.shape[0], columns(Y).shape[1]
    solver = data.draw(st.sampled_from(SOLVERS))
    kwargs = dict(lam=lam, lam_a=lam_a, lam_w=lam_w, activation=activation, solver=solver)
    try:
        W_new = core.langevin_step(W, X, Y, eta=eta, seed=seed, step=step, label_noise_level=level,
                                   first_index=first, **kwargs)
    except core.NotPositiveDefiniteError:
        with pytest.raises(core.NotPositiveDefiniteError):
            core.drift(W, X, Y, **kwargs)
        event("langevin_step: not positive definite")
        return
    E = core.label_noise(seed, step, n, T, level).reshape(np.shape(Y)) if level > 0 else None
    grad = core.drift(W, X, Y, label_noise=E, **kwargs)
    xi = core.particle_noise(seed, step, W.shape[0], W.shape[1], first_index=first)
    scale = math.sqrt(2 * eta * lam)
    want = W - eta * grad + scale * xi
    bound = 4 * EPS * (np.abs(W) + eta * np.abs(grad) + scale * np.abs(xi)) + 1e-300
    assert_within(W_new, want, bound, "langevin_step")


@fuzz(40)
@given(problem=problems(), hyper=st.tuples(lam_values(), lam_values(), lam_values()), with_b=st.booleans(),
       eta=lam_values(), seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**32 - 1), data=st.data())
def test_given_dual_functions_match_the_numpy_formula(problem, hyper, with_b, eta, seed, step, data):
    X, W, Y, activation = problem
    lam, lam_a, lam_w = hyper
    A = data.draw(real_arrays(np.shape(Y), data.draw(st.sampled_from([1e-3, 1.0, 1e3]))))
    B = data.draw(real_arrays(np.shape(Y), 1.0)) if with_b else None
    Av, A = data.draw(layouts(A))
    F = Features(W, X, activation)
    grad = core.drift_given_dual(W, X, Av, B=B, lam=lam, lam_a=lam_a, lam_w=lam_w, activation=activation)
    want, bound = dual_drift_reference(F, W, A, B, lam, lam_a, lam_w)
    assert_within(grad, want, bound, "drift_given_dual")
    first = data.draw(st.integers(0, 2**32 - W.shape[0]))
    W_new = core.langevin_step_given_dual(W, X, A, B=B, eta=eta, lam=lam, lam_a=lam_a, lam_w=lam_w, seed=seed,
                                          step=step, activation=activation, first_index=first)
    xi = core.particle_noise(seed, step, W.shape[0], W.shape[1], first_index=first)
    s = math.sqrt(2 * eta * lam)
    assert_within(W_new, W - eta * grad + s * xi,
                  4 * EPS * (np.abs(W) + eta * np.abs(grad) + s * np.abs(xi)) + 1e-300, "langevin_step_given_dual")


@fuzz(40)
@given(problem=problems(), data=st.data())
def test_output_weights_and_network_output_match_numpy(problem, data):
    X, W, Y, activation = problem
    A = data.draw(real_arrays(np.shape(Y), 1.0))
    F = Features(W, X, activation)
    block = data.draw(st.sampled_from([None, 1, 5, 2**30]))
    Av, A = data.draw(layouts(A))
    weights = core.output_weights(W, X, Av, activation, block_size=block)
    A2 = columns(A)
    want = F.H.T @ A2
    bound = F.eh.T @ np.abs(A2) + 4 * X.shape[0] * EPS * (np.abs(F.H).T @ np.abs(A2)) + 1e-300
    assert_within(columns(weights), want, bound, "output_weights")
    assert weights.shape == (W.shape[0],) + np.shape(A)[1:]
    X_new = data.draw(real_arrays((data.draw(st.integers(1, 6)), X.shape[1]), 1.0))
    F_new = Features(W, X_new, activation)
    f = core.network_output(W, weights, X_new, activation, block_size=block)
    a = columns(weights)
    N = W.shape[0]
    assert_within(columns(f), F_new.H @ a / N,
                  (F_new.eh @ np.abs(a) + 4 * N * EPS * (np.abs(F_new.H) @ np.abs(a))) / N + 1e-300, "network_output")


# Box-Muller with u0 >= 2**-53: |xi| <= sqrt(-2 log 2**-53).
MAX_NORMAL = math.sqrt(-2 * math.log(2.0 ** -53))


@fuzz(60)
@given(seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**32 - 1), count=st.integers(0, 70),
       dim=st.integers(1, 9), first=st.integers(0, 2**32 - 71), extra=st.integers(0, 5))
def test_particle_noise_is_bounded_deterministic_and_keyed_by_index(seed, step, count, dim, first, extra):
    xi = core.particle_noise(seed, step, count, dim, first_index=first)
    assert xi.shape == (count, dim) and xi.dtype == np.float64
    assert np.isfinite(xi).all() and (np.abs(xi) <= MAX_NORMAL).all()
    np.testing.assert_array_equal(xi, core.particle_noise(seed, step, count, dim, first_index=first, n_threads=1))
    # Row k depends only on (seed, step, first + k): a longer draw starting earlier contains it, and the first
    # `dim` numbers of a longer row are the row (so any particle's noise can be replayed alone).
    start = max(0, first - extra)
    longer = core.particle_noise(seed, step, count + (first - start), dim + extra, first_index=start)
    np.testing.assert_array_equal(longer[first - start:, :dim], xi)


@fuzz(60)
@given(seed=st.integers(0, 2**64 - 1), step=st.integers(0, 2**32 - 1), n=st.integers(1, 50),
       tasks=st.integers(1, 5), level=st.one_of(st.sampled_from([0.0, 5e-324, 1.0, 1e300]),
                                                st.floats(0, 1e6, allow_nan=False)))
def test_label_noise_is_bounded_deterministic_and_scales_with_level(seed, step, n, tasks, level):
    E = core.label_noise(seed, step, n, tasks, level)
    assert E.shape == (n, tasks) and np.isfinite(E).all()
    assert (np.abs(E) <= level).all()
    # The level multiplies a fixed draw: bitwise level * (the draw at level 1).
    np.testing.assert_array_equal(E, level * core.label_noise(seed, step, n, tasks, 1.0))


@fuzz(60)
@given(problem=kernel_problems(), data=st.data())
def test_kernel_alignment_matches_a_scaled_reference(problem, data):
    K, Y, _ = problem
    magnitude = data.draw(st.sampled_from([1e-150, 1.0, 1e150]))
    K, F = K * magnitude, columns(Y) * data.draw(st.sampled_from([1e-160, 1.0, 1e160]))
    # The alignment is scale-invariant in K and f: the reference works on rescaled copies (no overflow).
    Ks, Fs = K / max(np.abs(K).max(), 1e-300), F / max(np.abs(F).max(), 1e-300)
    try:
        got = core.kernel_alignment(K, F)
    except ValueError as exc:
        assert not np.any(F) or not np.any(K), f"raised for nonzero K and f: {exc}"
        event("kernel_alignment: raised")
        return
    quad = np.einsum("ji,jk,ki->", Fs, Ks, Fs)
    want = quad / (np.sum(Fs * Fs) * np.linalg.norm(Ks))
    bound = 16 * K.shape[0] ** 2 * EPS * np.einsum("ji,jk,ki->", np.abs(Fs), np.abs(Ks), np.abs(Fs)) \
        / (np.sum(Fs * Fs) * np.linalg.norm(Ks)) + 1e-15
    assert math.isfinite(got), f"non-finite alignment {got} for finite K and f"
    assert abs(got - want) <= bound, f"alignment {got} vs {want}"
    if np.linalg.eigvalsh(Ks).min() >= 0:
        assert -bound <= got <= 1 + bound


@fuzz(40)
@given(problem=problems())
def test_kernel_alignment_features_matches_the_gram_formula(problem):
    X, W, Y, activation = problem
    F = Features(W, X, activation)
    K, K_err = ref_gram(F)
    Yc = columns(Y)
    try:
        got = core.kernel_alignment_features(W, X, Y, activation)
    except ValueError as exc:
        assert not np.any(Yc) or not np.any(K), f"raised for nonzero K and f: {exc}"
        event("kernel_alignment_features: raised")
        return
    Yc = Yc / np.abs(Yc).max()  # the alignment is scale-invariant in f: no underflow in the reference
    f2, k_norm = np.sum(Yc * Yc), np.linalg.norm(K)
    want = np.einsum("ji,jk,ki->", Yc, K, Yc) / (f2 * k_norm)
    # Gram rounding through the quadratic form and the Frobenius norm, plus the summations.
    bound = (np.einsum("ji,jk,ki->", np.abs(Yc), K_err + 8 * X.shape[0] * EPS * np.abs(K), np.abs(Yc)) / (f2 * k_norm)
             + abs(want) * (np.linalg.norm(K_err) / k_norm + 8 * X.shape[0] * EPS)) * 2 + 1e-300
    assert math.isfinite(got) and abs(got - want) <= bound, f"alignment {got} vs {want} (bound {bound})"


@fuzz(60)
@given(problem=kernel_problems())
def test_degrees_of_freedom_matches_the_eigenvalues(problem):
    K, _, ridge = problem
    n = K.shape[0]
    eig = np.linalg.eigvalsh(K)
    norm = max(np.abs(eig).max() + ridge, 1e-300)
    try:
        dof = core.degrees_of_freedom(K, ridge)
    except core.NotPositiveDefiniteError:
        assert (eig + ridge).min() <= 64 * n * EPS * norm
        event("degrees_of_freedom: not positive definite")
        return
    assert (eig + ridge).min() > -64 * n * EPS * norm
    want = np.sum(eig / (eig + ridge))
    cond = norm / (eig + ridge).min() if (eig + ridge).min() > 0 else np.inf
    assert math.isfinite(dof)
    assert abs(dof - want) <= 64 * n * n * EPS * min(cond, 1e300) * max(1.0, abs(want)) + 1e-12


@fuzz(60)
@given(N=st.integers(1, 20), d=st.integers(1, 5), bias=st.booleans(),
       w_scale=st.sampled_from([1e-200, 1e-3, 1.0, 1e200]), u_scale=st.sampled_from([1e-200, 1.0, 1e200]),
       data=st.data())
def test_parameter_alignment_matches_a_scaled_reference(N, d, bias, w_scale, u_scale, data):
    W = data.draw(real_arrays((N, d + 1 if bias else d), 1.0)) * w_scale
    u = data.draw(real_arrays((d,), 1.0)) * u_scale
    try:
        got = core.parameter_alignment(W, u)
    except ValueError as exc:
        assert not np.any(u), f"raised for a nonzero u_star: {exc}"
        event("parameter_alignment: raised")
        return
    U = W[:, :d]
    # Each row and u* rescaled by its own largest entry: the cosines cannot overflow or underflow.
    row_max = np.abs(U).max(axis=1, keepdims=True)
    Us = np.divide(U, row_max, out=np.zeros_like(U), where=row_max > 0)
    us = u / np.abs(u).max()
    norms = np.linalg.norm(Us, axis=1)
    cos = np.divide(Us @ us, norms * np.linalg.norm(us), out=np.zeros(N), where=norms > 0)
    want = float(np.mean(cos ** 2))
    assert math.isfinite(got) and -1e-15 <= got <= 1 + 1e-12
    assert abs(got - want) <= 64 * d * EPS + 1e-15, f"alignment {got} vs {want}"


@fuzz(25)
@given(n_threads=st.one_of(st.none(), st.integers(1, 4)))
def test_thread_limits_is_a_context_manager_that_restores_blas(n_threads):
    from threadpoolctl import threadpool_info

    before = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
    with core.thread_limits(n_threads):
        inside = [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]
        if n_threads is not None:
            assert all(count == n_threads for count in inside)
    assert [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"] == before


@fuzz(40)
@given(bad=st.one_of(st.integers(-3, 0), st.floats(allow_nan=True), st.text(max_size=3), st.booleans(),
                     st.just([2])))
def test_thread_limits_rejects_what_the_other_functions_reject(bad):
    # The other functions refuse these n_threads (TypeError/ValueError naming n_threads); so must this one.
    with pytest.raises((TypeError, ValueError)) as other:
        core.gram(np.ones((2, 2)), np.ones((3, 1)), n_threads=bad)
    check_documented_error(other.value, ("n_threads",))
    with pytest.raises((TypeError, ValueError)) as info:
        with core.thread_limits(bad):
            pass
    check_documented_error(info.value, ("n_threads",))


# =============================================================================================== adversarial
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix is deprecated: that is the point
    # Objects that are not plain float arrays, for junk_arrays.
    _NON_ARRAYS = [
        None, 1.0, float("nan"), "1.0", b"x", [], [[]], [[1.0, 2.0], [3.0]], {"a": 1}, {1.0, 2.0}, 1 + 2j,
        np.array(["a", "b"]), np.array([[1.0, None]], dtype=object), np.array([[1, 2]], dtype="datetime64[s]"),
        np.array([[1, 2]], dtype="timedelta64[s]"), np.zeros((2, 2), dtype=[("a", "f8"), ("b", "f8")]),
        np.ma.masked_array([[1.0, 2.0]], mask=[[True, False]]), np.matrix([[1.0, 2.0], [3.0, 4.0]]),
        np.empty((0, 0)), np.empty((3, 0)), np.ones((1, 1, 1)), np.array(5.0),
    ]


def junk_arrays():
    """Array-likes that a careless caller might pass: every dtype, odd shapes, odd layouts, non-arrays."""
    shapes = st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple)
    floats = st.floats(allow_nan=True, allow_infinity=True)

    @st.composite
    def numeric(draw):
        shape = draw(shapes)
        dtype = draw(st.sampled_from(["f8", "f4", "f2", "g", "i1", "i8", "u1", "u8", "?", "c16", "c8"]))
        values = [draw(floats) for _ in range(min(int(np.prod(shape)), 6))]
        a = np.zeros(shape, dtype=np.float64)
        for i, v in enumerate(values):
            a.flat[i] = v
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = np.asarray(a.astype(dtype) if dtype not in ("c16", "c8") else (a + 1j * a).astype(dtype))
        layout = draw(st.sampled_from(["C", "F", "strided", "negative", "readonly", "broadcast"]))
        if layout == "F":
            a = np.asfortranarray(a)
        elif layout == "strided" and a.ndim:
            a = np.repeat(a, 2, axis=-1)[..., ::2]
        elif layout == "negative" and a.ndim:
            a = a[::-1]
        elif layout == "readonly":
            a.flags.writeable = False
        elif layout == "broadcast" and a.ndim:
            a = np.broadcast_to(a[..., :1], a.shape)
        return a

    others = st.sampled_from(_NON_ARRAYS)
    return st.one_of(numeric(), others)


def junk_scalars(kind):
    """Scalars for hyper-parameters and counters: wrong types, out of range, NaN, huge, numpy scalars."""
    common = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True), st.integers(-2**70, 2**70), st.booleans(), st.none(),
        st.text(max_size=3), st.sampled_from([np.float32(np.nan), np.float16(-1), np.int8(-3), np.uint64(2**63),
                                              np.float64(1e308), fractions.Fraction(1, 3), 10**400, -10**400,
                                              fractions.Fraction(10**400, 3), 1 + 0j, np.array([1.0]),
                                              np.array(0.5), [1.0], "tanh", b"1"]))
    if kind == "threads":
        # Huge thread counts are checked in a subprocess (they can take the interpreter down).
        return st.one_of(st.floats(allow_nan=True), st.integers(-5, 4), st.integers(2**31, 2**70), st.booleans(),
                         st.none(), st.text(max_size=3), st.sampled_from([np.int8(2), np.float64(2.0), "2"]))
    if kind == "name":
        return st.one_of(st.text(max_size=8), st.sampled_from(["TANH", "relu", " tanh", "tanh\0", None, 1, b"tanh",
                                                             "Dense", "cholesky", ""]))
    return common


# Valid arguments of every function, at a small problem; the fuzzed argument replaces one of them.
_R = np.random.default_rng(123)
_X = _R.standard_normal((5, 3))
_W = _R.standard_normal((7, 4))
_Y = _R.standard_normal(5)
_A = _R.standard_normal((5, 2))
_Bm = _R.standard_normal((5, 5))
_K = _Bm @ _Bm.T / 5 + 0.1 * np.eye(5)
_HYPER = dict(lam=0.1, lam_a=0.5, lam_w=1.0)
_STEP = dict(eta=0.1, seed=3, step=4)

CALLS = {
    # name: (function, valid keyword arguments, {argument: kind})
    "features": (core.features, dict(W=_W, X=_X, activation="tanh", n_threads=None),
                 dict(W="array", X="array", activation="name", n_threads="threads")),
    "gram": (core.gram, dict(W=_W, X=_X, X2=None, activation="tanh", block_size=None, n_threads=None),
             dict(W="array", X="array", X2="array", activation="name", block_size="int", n_threads="threads")),
    "second_layer": (core.second_layer, dict(K=_K, Y=_Y, ridge=0.5, n_threads=None),
                     dict(K="array", Y="array", ridge="real", n_threads="threads")),
    "objective": (core.objective, dict(W=_W, X=_X, Y=_Y, **_HYPER, activation="tanh", block_size=None,
                                       n_threads=None, solver="auto"),
                  dict(W="array", X="array", Y="array", lam="real", lam_a="real", lam_w="real", activation="name",
                       block_size="int", n_threads="threads", solver="name", precision="name")),
    "drift": (core.drift, dict(W=_W, X=_X, Y=_Y, **_HYPER, activation="tanh", label_noise=None, block_size=None,
                               cache_bytes=core.DEFAULT_CACHE_BYTES, n_threads=None, solver="auto"),
              dict(W="array", X="array", Y="array", lam="real", lam_a="real", lam_w="real", activation="name",
                   label_noise="array", block_size="int", cache_bytes="int", n_threads="threads", solver="name",
                   precision="name")),
    "langevin_step": (core.langevin_step, dict(W=_W, X=_X, Y=_Y, **_HYPER, **_STEP, activation="tanh",
                                               label_noise_level=0.1, first_index=0, block_size=None,
                                               cache_bytes=core.DEFAULT_CACHE_BYTES, n_threads=None, solver="auto"),
                      dict(W="array", X="array", Y="array", eta="real", lam="real", lam_a="real", lam_w="real",
                           seed="int", step="int", activation="name", label_noise_level="real", first_index="int",
                           block_size="int", cache_bytes="int", n_threads="threads", solver="name",
                           precision="name")),
    "drift_given_dual": (core.drift_given_dual, dict(W=_W, X=_X, A=_A, **_HYPER, B=None, activation="tanh",
                                                     n_threads=None),
                         dict(W="array", X="array", A="array", lam="real", lam_a="real", lam_w="real", B="array",
                              activation="name", n_threads="threads", precision="name")),
    "langevin_step_given_dual": (core.langevin_step_given_dual,
                                 dict(W=_W, X=_X, A=_A, **_HYPER, **_STEP, B=None, activation="tanh", first_index=0,
                                      n_threads=None),
                                 dict(W="array", X="array", A="array", eta="real", lam="real", lam_a="real",
                                      lam_w="real", seed="int", step="int", B="array", activation="name",
                                      first_index="int", n_threads="threads", precision="name")),
    "output_weights": (core.output_weights, dict(W=_W, X=_X, A=_A, activation="tanh", block_size=None,
                                                 n_threads=None),
                       dict(W="array", X="array", A="array", activation="name", block_size="int",
                            n_threads="threads")),
    "network_output": (core.network_output, dict(W=_W, weights=_A[:1].repeat(7, axis=0), X=_X, activation="tanh",
                                                 block_size=None, n_threads=None),
                       dict(W="array", weights="array", X="array", activation="name", block_size="int",
                            n_threads="threads")),
    "particle_noise": (core.particle_noise, dict(seed=1, step=2, count=5, dim=3, first_index=0, n_threads=None),
                       dict(seed="int", step="int", count="int", dim="int", first_index="int", n_threads="threads")),
    "label_noise": (core.label_noise, dict(seed=1, step=2, n=5, tasks=2, level=1.0),
                    dict(seed="int", step="int", n="int", tasks="int", level="real")),
    "kernel_alignment": (core.kernel_alignment, dict(K=_K, f=_Y), dict(K="array", f="array")),
    "kernel_alignment_features": (core.kernel_alignment_features,
                                  dict(W=_W, X=_X, f=_Y, activation="tanh", n_threads=None),
                                  dict(W="array", X="array", f="array", activation="name", n_threads="threads")),
    "degrees_of_freedom": (core.degrees_of_freedom, dict(K=_K, ridge=0.5, n_threads=None),
                           dict(K="array", ridge="real", n_threads="threads")),
    "parameter_alignment": (core.parameter_alignment, dict(W=_W, u_star=np.ones(3)),
                            dict(W="array", u_star="array")),
}


def test_every_public_function_is_fuzzed():
    # A function added to mfkern.core must be added to CALLS (its valid arguments and their kinds) above.
    public = {name for name in core.__all__
              if callable(getattr(core, name)) and not isinstance(getattr(core, name), type)}
    assert public - set(CALLS) - {"thread_limits"} == set()
    for name, (function, valid, kinds) in CALLS.items():
        parameters = set(inspect.signature(function).parameters)
        assert set(kinds) == parameters - {"return_dual"}, f"{name}: fuzzed {sorted(kinds)}, has {sorted(parameters)}"


def junk_for(kind):
    """The junk strategy for an argument of the given kind."""
    if kind == "array":
        return junk_arrays()
    if kind == "threads":
        return junk_scalars("threads")
    if kind == "name":
        return junk_scalars("name")
    return junk_scalars(kind)


def is_finite_result(value):
    """Whether every number in a core result (array, float, dict or tuple of them) is finite."""
    if isinstance(value, dict):
        return all(is_finite_result(v) for v in value.values())
    if isinstance(value, tuple):
        return all(is_finite_result(v) for v in value)
    return bool(np.isfinite(np.asarray(value, dtype=np.float64)).all())


def equivalent_float64(value):
    """The float64 C-contiguous array a junk value stands for, or None when it is not plainly one."""
    if not isinstance(value, np.ndarray) or isinstance(value, (np.matrix, np.ma.MaskedArray)):
        return None
    if value.dtype.kind not in "biuf":
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.ascontiguousarray(value, dtype=np.float64)


@pytest.mark.parametrize("name", sorted(CALLS))
@fuzz(40)
@given(data=st.data())
def test_junk_argument_raises_a_documented_error_or_gives_the_float64_answer(name, data):
    function, valid, kinds = CALLS[name]
    argument = data.draw(st.sampled_from(sorted(kinds)))
    junk = data.draw(junk_for(kinds[argument]), label=argument)
    kwargs = dict(valid, **{argument: junk})
    with memory_ceiling(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy's overflow warnings on absurd values are not under test
        try:
            result = function(**kwargs)
        except CORE_ERRORS as exc:
            # A type error names the argument; a value error may instead name the array it is inconsistent with.
            others = tuple(key for key, kind in kinds.items() if kind == "array") \
                if isinstance(exc, ValueError) and kinds[argument] == "array" else ()
            check_documented_error(exc, (argument,) + others)
            event("junk: documented error")
            return
        except Exception as exc:  # anything else is a bug: report it with the input
            raise AssertionError(f"{name}({argument}={junk!r}) raised undocumented "
                                 f"{type(exc).__name__}: {exc}") from exc
    assert is_finite_result(result), f"{name}({argument}={junk!r}) returned non-finite {result!r}"
    if kinds[argument] == "array":
        plain = equivalent_float64(junk)
        if plain is not None:
            expected = function(**dict(valid, **{argument: plain}))
            if isinstance(result, dict):
                assert result == expected
            else:
                np.testing.assert_array_equal(result, expected)


def test_huge_thread_counts_do_not_take_the_interpreter_down(tmp_path):
    # libgomp aborts the process (or crashes) when asked for 10**5 or 2**31-1 threads; the Python layer must
    # refuse such counts with a ValueError naming n_threads (or run with what it can). Run in a subprocess.
    script = textwrap.dedent("""
        import sys
        import numpy as np
        from mfkern import core
        X, W = np.ones((300, 2)), np.ones((500, 3))
        try:
            core.gram(W, X, n_threads=int(sys.argv[1]))
            print("ran")
        except (TypeError, ValueError) as exc:
            assert "n_threads" in str(exc), exc
            print("refused")
    """)
    for count in (100_000, 2**31 - 1):
        done = subprocess.run([sys.executable, "-c", script, str(count)], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, (f"core.gram(..., n_threads={count}) killed the interpreter "
                                      f"(exit {done.returncode}): {done.stderr[-500:]}")
        assert done.stdout.strip().splitlines()[-1] in ("ran", "refused")


# ------------------------------------------------------------------------------------------- absurd sizes
def _absurd_calls():
    """Requests needing terabytes, built from small inputs (n = 10**6 rows of one feature is 8 MB)."""
    big_X = np.zeros((10**6, 1))
    small_X = np.zeros((3, 1))
    W = np.ones((4, 2))
    big_W = np.ones((10**6, 2))
    many_tasks = np.ones((3, 10**6))
    hyper = dict(lam=0.1, lam_a=0.5, lam_w=1.0)
    return {
        "gram n=1e6 (8 TB)": lambda: core.gram(W, big_X),
        "gram cross 1e6 x 1e6": lambda: core.gram(W, big_X, big_X),
        "features n=N=1e6": lambda: core.features(big_W, big_X),
        "objective dense n=1e6": lambda: core.objective(W, big_X, np.zeros(10**6), **hyper, solver="dense"),
        "drift dense n=1e6": lambda: core.drift(W, big_X, np.zeros(10**6), **hyper, solver="dense"),
        "drift woodbury N=1e6": lambda: core.drift(big_W, small_X, np.zeros(3), **hyper, solver="woodbury"),
        "langevin_step n=1e6": lambda: core.langevin_step(W, big_X, np.zeros(10**6), eta=0.1, **hyper, seed=0,
                                                          step=0, solver="dense"),
        "output_weights N=T=1e6": lambda: core.output_weights(big_W, small_X, many_tasks),
        "network_output m=T=1e6": lambda: core.network_output(W, np.ones((4, 10**6)), big_X),
        "particle_noise 2**32 x 2**20": lambda: core.particle_noise(0, 0, 2**32 - 1, 2**20),
        "label_noise 2**32 x 2**30": lambda: core.label_noise(0, 0, 2**32, 2**30),
        # N >= n: neither the n x n nor the N x N (particle-space) system fits.
        "estimator fit n=N=1e6": lambda: MeanFieldRegressor(n_particles=10**6, n_steps=1, random_state=0,
                                                            n_threads=1).fit(big_X, np.zeros(10**6)),
        "estimator n_particles=2**32": lambda: MeanFieldRegressor(n_particles=2**32, n_steps=1, random_state=0,
                                                                  n_threads=1).fit(small_X, np.zeros(3)),
        "estimator kernel 1e6 x 1e6": lambda: MeanFieldRegressor(n_particles=4, n_steps=0, random_state=0,
                                                                 n_threads=1).fit(small_X, [0.0, 1.0, 2.0])
        .kernel(big_X),
    }


@pytest.mark.parametrize("label", sorted(_absurd_calls()))
def test_absurd_sizes_raise_memory_error_before_allocating(label):
    call = _absurd_calls()[label]
    with memory_ceiling():
        with pytest.raises(MemoryError):
            call()


@fuzz(20)
@given(n=st.integers(200_000, 1_000_000), N=st.integers(1, 8), T=st.integers(1, 3),
       which=st.sampled_from(["gram", "objective", "drift", "langevin_step", "fit"]))
def test_fuzzed_absurd_sample_counts_raise_memory_error(n, N, T, which):
    # n >= 2e5 samples: a dense n x n Gram alone needs >= 320 GB.
    X = np.zeros((n, 1))
    W = np.ones((N, 2))
    Y = np.zeros((n, T))
    hyper = dict(lam=0.1, lam_a=0.5, lam_w=1.0)
    calls = {
        "gram": lambda: core.gram(W, X),
        "objective": lambda: core.objective(W, X, Y, **hyper, solver="dense"),
        "drift": lambda: core.drift(W, X, Y, **hyper, solver="dense"),
        "langevin_step": lambda: core.langevin_step(W, X, Y, eta=0.1, seed=0, step=0, **hyper, solver="dense"),
        "fit": lambda: MeanFieldRegressor(n_particles=N + 2 * n, n_steps=1, random_state=0, n_threads=1).fit(X, Y),
    }
    with memory_ceiling():
        with pytest.raises(MemoryError):
            calls[which]()


# --------------------------------------------------------------------------------- overflow and extremes
@fuzz(60)
@given(function=st.sampled_from(["drift", "langevin_step", "objective", "drift_given_dual",
                                 "langevin_step_given_dual"]),
       lam=st.floats(1e-300, 1e300), lam_a=st.floats(1e-300, 1e300), lam_w=st.floats(1e-300, 1e300),
       eta=st.floats(1e-300, 1e300), data=st.data())
def test_extreme_valid_hyperparameters_give_finite_results_or_a_clear_error(function, lam, lam_a, lam_w, eta, data):
    # Any finite positive number is accepted by validation, so the result must be finite or the call must
    # say why it cannot be computed (ValueError naming the cause, NotPositiveDefiniteError).
    X, W, Y = _X, _W, _Y
    hyper = dict(lam=lam, lam_a=lam_a, lam_w=lam_w)
    calls = {
        "drift": lambda: core.drift(W, X, Y, **hyper),
        "objective": lambda: core.objective(W, X, Y, **hyper),
        "langevin_step": lambda: core.langevin_step(W, X, Y, eta=eta, seed=1, step=2, **hyper),
        "drift_given_dual": lambda: core.drift_given_dual(W, X, _A, **hyper),
        "langevin_step_given_dual": lambda: core.langevin_step_given_dual(W, X, _A, eta=eta, seed=1, step=2,
                                                                          **hyper),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = calls[function]()
        except CORE_ERRORS + (FloatingPointError,) as exc:
            check_documented_error(exc, allowed=CORE_ERRORS + (FloatingPointError,))
            return
    assert is_finite_result(result), (f"{function}(lam={lam!r}, lam_a={lam_a!r}, lam_w={lam_w!r}, eta={eta!r}) "
                                      f"returned a non-finite result silently")


def test_pre_activation_overflow_is_reported_or_computed_exactly():
    # z = 2*1.7e308 - 2*1.7e308 + 0 = 0 exactly, so h = tanh(0) = 0; a float64 evaluation overflows to
    # inf - inf = NaN. The core must either raise (naming X or W) or return the exact value, not a NaN
    # silently turned into +-1 by the activation kernel.
    X = np.array([[1.7e308, 1.7e308]])
    W = np.array([[2.0, -2.0, 0.0]])
    for activation in ACTIVATIONS:
        try:
            H = core.features(W, X, activation)
        except ValueError as exc:
            check_documented_error(exc, ("X", "W"))
            continue
        assert H[0, 0] == pytest.approx(0.0, abs=1e-12), f"{activation}: features {H} for z = 0"


# ================================================================================================ estimator
@st.composite
def estimator_problems(draw):
    """Parameters and data for a small MeanFieldRegressor fit."""
    n = draw(st.integers(1, 12))
    d = draw(st.integers(1, 4))
    T = draw(st.sampled_from([None, 1, 2]))
    X = draw(real_arrays((n, d), draw(st.sampled_from([1e-3, 1.0, 1e3]))))
    if n > 1 and draw(st.booleans()):
        X[draw(st.integers(1, n - 1))] = X[0]
    y = draw(real_arrays((n,) if T is None else (n, T), draw(st.sampled_from([1e-3, 1.0, 1e3]))))
    if draw(st.booleans()):
        y[...] = draw(st.sampled_from([0.0, 2.0]))
    params = dict(
        n_particles=draw(st.one_of(st.integers(1, 12), st.integers(60, 80))),
        # A ridge n lam lam_a down to 1e-24 relative to K: the Cholesky can fail and the fit roll back.
        lam=draw(st.one_of(lam_values(), st.sampled_from([1e-9, 1e-12]))),
        lam_a=draw(st.one_of(lam_values(), st.sampled_from([1e-9, 1e-12]))), lam_w=draw(lam_values()),
        eta=draw(lam_values()), n_steps=draw(st.integers(0, 4)), activation=draw(st.sampled_from(ACTIVATIONS)),
        label_noise=draw(st.sampled_from([0.0, 0.5])), random_state=draw(st.integers(0, 2**64 - 1)),
        log_every=draw(st.integers(1, 3)), block_size=draw(st.sampled_from([None, 1, 64])), n_threads=1,
        solver=draw(st.sampled_from(SOLVERS)), precision=draw(st.sampled_from(sorted(PRECISION_EPS))),
        input_scale=1.0,  # raw inputs: the numpy references below use X as given
    )
    note(f"params={params} X.shape={X.shape} y.shape={y.shape}")
    return params, X, y


ALWAYS_FINITE_HISTORY = ("step", "U", "G", "dof", "train_mse", "wall_time")


def check_fitted(est, X, y):
    """Invariants of a fitted (or rolled-back) estimator, against numpy."""
    N, D = est.particles_.shape
    assert D == X.shape[1] + 1 and np.isfinite(est.particles_).all()
    assert np.isfinite(est.coef_).all() and np.isfinite(est.dual_coef_).all()
    lengths = {len(v) for v in est.history_.values()}
    assert len(lengths) == 1
    for key in ALWAYS_FINITE_HISTORY:
        assert np.isfinite(est.history_[key]).all(), f"history {key}: {est.history_[key]}"
    assert est.history_["step"][-1] <= est.n_steps_done_  # after a rollback the last step may be unlogged
    pred = est.predict(X)
    assert pred.shape == np.shape(y) and np.isfinite(pred).all()
    # predict = kernel ridge on the learned kernel: K(X, X) A with the fit's dual coefficients.
    F = Features(est.particles_, X, est.activation)
    K, K_err = ref_gram(F)
    A = columns(est.dual_coef_)
    bound = K_err @ np.abs(A) + 8 * (X.shape[0] + N) * EPS * (np.abs(K) @ np.abs(A)) \
        + 4 * N * EPS * (np.abs(F.H) @ np.abs(F.H.T @ A)) / N + 1e-300
    assert_within(columns(pred), K @ A, bound, "predict vs K A")
    Phi = est.transform(X)
    assert Phi.shape == (X.shape[0], N)
    assert_within(est.kernel(X), K, K_err, "kernel")
    assert_within(Phi @ Phi.T, K, K_err + 8 * N * EPS * np.abs(Phi) @ np.abs(Phi).T, "transform")
    names = est.get_feature_names_out()
    assert len(names) == N
    score = est.score(X, y)
    assert isinstance(score, float)


@fuzz(25)
@given(problem=estimator_problems())
def test_estimator_fit_gives_finite_consistent_state_or_a_documented_error(problem):
    params, X, y = problem
    est = MeanFieldRegressor(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X, y)
        except DivergenceError as exc:
            assert exc.cause and str(exc)
            if exc.n_steps_done is None:
                assert not hasattr(est, "particles_") or est.n_steps_done_ is not None
                event("fit: diverged at initialisation")
                return
            assert est.n_steps_done_ == exc.n_steps_done
        except CORE_ERRORS as exc:
            check_documented_error(exc, allowed=ESTIMATOR_ERRORS)
            event("fit: documented error")
            return
        if hasattr(est, "particles_"):
            check_fitted(est, X, y)


ESTIMATOR_METHODS = ["predict", "kernel", "kernel-X2", "transform", "score", "fit-X", "fit-y", "fit-X_val",
                     "fit-target_direction", "fit_transform"]


@pytest.fixture(scope="module")
def fitted_estimator():
    """A small fitted estimator and its training data, shared by the tests of fitted methods."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((12, 3))
    y = X[:, 0] * X[:, 1]
    est = MeanFieldRegressor(n_particles=20, n_steps=3, random_state=0, n_threads=1, input_scale=1.0)
    return est.fit(X, y), X, y


@pytest.mark.parametrize("method", ESTIMATOR_METHODS)
@fuzz(40)
@given(data=st.data())
def test_estimator_methods_on_junk_input(fitted_estimator, method, data):
    from sklearn.base import clone

    est, X, y = fitted_estimator
    junk = data.draw(junk_arrays(), label="junk")
    calls = {
        "predict": lambda v: est.predict(v),
        "kernel": lambda v: est.kernel(v),
        "kernel-X2": lambda v: est.kernel(X, v),
        "transform": lambda v: est.transform(v),
        "score": lambda v: est.score(X, v),
        "fit-X": lambda v: clone(est).fit(v, y),
        "fit-y": lambda v: clone(est).fit(X, v),
        "fit-X_val": lambda v: clone(est).fit(X, y, X_val=v, y_val=y),
        "fit-target_direction": lambda v: clone(est).fit(X, y, target_direction=v),
        "fit_transform": lambda v: clone(est).fit_transform(v, y),
    }
    with memory_ceiling(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = calls[method](junk)
        except ESTIMATOR_ERRORS as exc:
            check_documented_error(exc, allowed=ESTIMATOR_ERRORS)
            event("junk fit input: documented error")
            return
        except Exception as exc:
            raise AssertionError(f"{method}({junk!r}) raised undocumented {type(exc).__name__}: {exc}") from exc
    if isinstance(result, MeanFieldRegressor):
        result = result.predict(X)
    assert is_finite_result(result), f"{method}({junk!r}) returned non-finite {result!r}"


@pytest.mark.parametrize("parameter", ["n_particles", "lam", "lam_a", "lam_w", "eta", "n_steps", "activation",
                                       "label_noise", "random_state", "n_threads", "log_every", "verbose",
                                       "warm_start", "callbacks", "block_size", "solver", "precision"])
@fuzz(20)
@given(data=st.data())
def test_estimator_junk_parameters_raise_at_fit_naming_the_parameter(parameter, data):
    kind = {"n_threads": "threads", "activation": "name", "solver": "name", "precision": "name"}.get(parameter, "real")
    junk = data.draw(junk_for(kind), label=parameter)
    if isinstance(junk, numbers.Integral) and not isinstance(junk, (bool, np.bool_)):
        if parameter == "n_steps" and 10 < junk < 2**32:
            junk = 2**32 + 1  # valid counts would just run long; past the 32-bit step counter is an error
        if parameter == "n_particles" and 10**4 < junk <= 2**32:
            junk = 2**32  # the largest valid count: the initial particles alone need 100 GB
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((6, 2)), rng.standard_normal(6)
    # raw inputs (the checks below use X as given); None for a hyper-parameter is valid: the preset's value
    est = MeanFieldRegressor(n_particles=8, n_steps=2, n_threads=1, random_state=0, input_scale=1.0)
    est.set_params(**{parameter: junk})
    with memory_ceiling(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            est.fit(X, y)
        except ESTIMATOR_ERRORS as exc:
            check_documented_error(exc, (parameter,) if not isinstance(exc, MemoryError) else (),
                                   allowed=ESTIMATOR_ERRORS)
            event("junk parameter: documented error")
            return
        except Exception as exc:
            raise AssertionError(f"fit with {parameter}={junk!r} raised undocumented "
                                 f"{type(exc).__name__}: {exc}") from exc
    check_fitted(est, X, y)


@fuzz(15)
@given(problem=estimator_problems(), first=st.integers(0, 3), second=st.integers(0, 3))
def test_estimator_save_load_round_trip_and_warm_start_resume_bitwise(tmp_path_factory, problem, first, second):
    params, X, y = problem
    params = dict(params, n_steps=first + second)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            whole = MeanFieldRegressor(**params).fit(X, y)
        except ESTIMATOR_ERRORS:
            return  # invalid or divergent runs are covered by the fit property above
        half = MeanFieldRegressor(**dict(params, n_steps=first)).fit(X, y)
        path = tmp_path_factory.mktemp("ckpt") / "half.npz"
        half.save(path)
        loaded = MeanFieldRegressor.load(path)
        np.testing.assert_array_equal(loaded.predict(X), half.predict(X))
        assert loaded.get_params() == half.get_params()
        resumed = loaded.set_params(warm_start=True, n_steps=second).fit(X, y)
    np.testing.assert_array_equal(resumed.particles_, whole.particles_)
    np.testing.assert_array_equal(resumed.predict(X), whole.predict(X))
    assert resumed.n_steps_done_ == whole.n_steps_done_


@fuzz(30)
@given(function=st.sampled_from(["predict", "kernel", "transform"]),
       magnitude=st.sampled_from([1e100, 1e200, 1e300, 1.7e308]), data=st.data())
def test_estimator_on_huge_finite_inputs_is_finite_and_exact(fitted_estimator, function, magnitude, data):
    est, X, _ = fitted_estimator
    X_big = data.draw(real_arrays((4, X.shape[1]), 1.0))
    X_big = X_big / max(np.abs(X_big).max(), 1e-300) * magnitude  # entries up to `magnitude`, all finite
    # Where u.x + b could overflow a float (its bound max|w| (d max|x| + 1) above 1e300), a clear ValueError
    # naming the inputs is the documented outcome; below that bound the result must be computed exactly.
    bound = float(np.abs(est.particles_).max()) * (X_big.shape[1] * float(np.abs(X_big).max()) + 1.0)
    if not bound <= 1e300:
        with pytest.raises(ValueError, match="too large: the pre-activations"):
            getattr(est, function)(X_big)
        return
    result = getattr(est, function)(X_big)
    assert np.isfinite(result).all()
    # The reference in extended precision (x87 long double: no overflow below 1e4932); |z| > 40 saturates
    # tanh and erf to +-1 in float64, so z is clipped there before the float64 activation.
    W = est.particles_.astype(np.longdouble)
    Z = X_big.astype(np.longdouble) @ W[:, :-1].T + W[:, -1]
    H = act(np.clip(Z, -40, 40).astype(np.float64), est.activation)
    if function == "transform":
        want = H / math.sqrt(W.shape[0])
        np.testing.assert_allclose(result, want, atol=1e-12)
    elif function == "kernel":
        np.testing.assert_allclose(result, H @ H.T / W.shape[0], atol=1e-12)
    else:
        np.testing.assert_allclose(result, H @ est.coef_ / W.shape[0], atol=1e-9 * max(1, np.abs(est.coef_).max()))
