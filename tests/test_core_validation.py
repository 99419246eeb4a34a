"""Argument validation of mfkern.core: every bad input raises the documented exception, naming the argument,
and accepted conversions (non-contiguous, Fortran order, float32, integers) give the float64 answer."""
from __future__ import annotations

import numpy as np
import pytest

from mfkern import core

RNG = np.random.default_rng(5)
N_SAMPLES, N_PARTICLES, DIM = 5, 7, 3
X = RNG.standard_normal((N_SAMPLES, DIM))
W = RNG.standard_normal((N_PARTICLES, DIM + 1))
Y = RNG.standard_normal(N_SAMPLES)
Y2 = RNG.standard_normal((N_SAMPLES, 2))
_B = RNG.standard_normal((N_SAMPLES, N_SAMPLES))
K = _B @ _B.T / N_SAMPLES
HYPER = dict(lam=0.1, lam_a=0.5, lam_w=1.0)
STEP = dict(eta=0.1, **HYPER, seed=0, step=0)


def with_nan(array):
    """A copy of `array` with one NaN."""
    out = np.array(array, dtype=float)
    out.flat[1] = np.nan
    return out


def with_inf(array):
    """A copy of `array` with one -inf."""
    out = np.array(array, dtype=float)
    out.flat[0] = -np.inf
    return out


def call_features(**kw):
    """core.features with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X)
    args.update(kw)
    return core.features(**args)


def call_gram(**kw):
    """core.gram with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X)
    args.update(kw)
    return core.gram(**args)


def call_second_layer(**kw):
    """core.second_layer with valid default arguments, overridden by kw."""
    args = dict(K=K, Y=Y, ridge=0.5)
    args.update(kw)
    return core.second_layer(**args)


def call_objective(**kw):
    """core.objective with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X, Y=Y, **HYPER)
    args.update(kw)
    return core.objective(**args)


def call_drift(**kw):
    """core.drift with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X, Y=Y, **HYPER)
    args.update(kw)
    return core.drift(**args)


def call_langevin_step(**kw):
    """core.langevin_step with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X, Y=Y, **STEP)
    args.update(kw)
    return core.langevin_step(**args)


def call_output_weights(**kw):
    """core.output_weights with valid default arguments, overridden by kw."""
    args = dict(W=W, X=X, A=Y)
    args.update(kw)
    return core.output_weights(**args)


def call_network_output(**kw):
    """core.network_output with valid default arguments, overridden by kw."""
    args = dict(W=W, weights=np.ones(N_PARTICLES), X=X)
    args.update(kw)
    return core.network_output(**args)


def call_particle_noise(**kw):
    """core.particle_noise with valid default arguments, overridden by kw."""
    args = dict(seed=0, step=0, count=4, dim=3)
    args.update(kw)
    return core.particle_noise(**args)


def call_label_noise(**kw):
    """core.label_noise with valid default arguments, overridden by kw."""
    args = dict(seed=0, step=0, n=4, tasks=1, level=0.5)
    args.update(kw)
    return core.label_noise(**args)


def call_kernel_alignment(**kw):
    """core.kernel_alignment with valid default arguments, overridden by kw."""
    args = dict(K=K, f=Y)
    args.update(kw)
    return core.kernel_alignment(**args)


def call_degrees_of_freedom(**kw):
    """core.degrees_of_freedom with valid default arguments, overridden by kw."""
    args = dict(K=K, ridge=0.5)
    args.update(kw)
    return core.degrees_of_freedom(**args)


def call_parameter_alignment(**kw):
    """core.parameter_alignment with valid default arguments, overridden by kw."""
    args = dict(W=W, u_star=np.ones(DIM))
    args.update(kw)
    return core.parameter_alignment(**args)


# Functions taking (W, X) particles and inputs, with their valid defaults.
PARTICLE_FUNCTIONS = {
    "features": call_features,
    "gram": call_gram,
    "objective": call_objective,
    "drift": call_drift,
    "langevin_step": call_langevin_step,
    "output_weights": call_output_weights,
    "network_output": call_network_output,
}
# Functions also taking targets Y of n rows.
TARGET_FUNCTIONS = {name: PARTICLE_FUNCTIONS[name] for name in ("objective", "drift", "langevin_step")}
HYPER_FUNCTIONS = TARGET_FUNCTIONS
KERNEL_FUNCTIONS = {
    "second_layer": call_second_layer,
    "kernel_alignment": call_kernel_alignment,
    "degrees_of_freedom": call_degrees_of_freedom,
}
ACTIVATION_FUNCTIONS = dict(PARTICLE_FUNCTIONS)
# features computes all of H at once: it has no block_size.
BLOCKED_FUNCTIONS = {name: func for name, func in PARTICLE_FUNCTIONS.items() if name != "features"}


def cases(functions, bad_values):
    """pytest params: every function with every (argument, bad value, exception) triple."""
    out = []
    for fname, func in functions.items():
        for label, kwargs, exc, match in bad_values:
            out.append(pytest.param(func, kwargs, exc, match, id=f"{fname}-{label}"))
    return out


def assert_raises(func, kwargs, exc, match):
    """func(**kwargs) raises exc with a message matching `match`."""
    with pytest.raises(exc, match=match):
        func(**kwargs)


# ----------------------------------------------------------------------------------------------------------
# Arrays: shape, dtype, finiteness, emptiness
# ----------------------------------------------------------------------------------------------------------

ARRAY_BAD = [
    ("X-1d", dict(X=X[:, 0]), ValueError, "X must be 2-D"),
    ("X-3d", dict(X=X[None]), ValueError, "X must be 2-D"),
    ("X-scalar", dict(X=1.0), ValueError, "X must be 2-D"),
    ("X-None", dict(X=None), TypeError, "X"),
    ("X-ragged", dict(X=[[1.0, 2.0], [3.0]]), TypeError, "X"),
    ("X-nan", dict(X=with_nan(X)), ValueError, "X must contain only finite"),
    ("X-inf", dict(X=with_inf(X)), ValueError, "X must contain only finite"),
    ("X-complex", dict(X=X.astype(complex)), TypeError, "X must be real"),
    ("X-object", dict(X=X.astype(object)), TypeError, "X must hold real numbers"),
    ("X-string", dict(X=X.astype(str)), TypeError, "X must hold real numbers"),
    ("X-no-rows", dict(X=np.empty((0, DIM))), ValueError, "X must not be empty"),
    ("X-no-columns", dict(X=np.empty((N_SAMPLES, 0))), ValueError, "X must not be empty"),
    ("W-1d", dict(W=W[0]), ValueError, "W must be 2-D"),
    ("W-3d", dict(W=W[None]), ValueError, "W must be 2-D"),
    ("W-d-columns", dict(W=W[:, :DIM]), ValueError, "W must have d\\+1 = 4 columns"),
    ("W-d+2-columns", dict(W=np.hstack([W, W[:, :1]])), ValueError, "W must have d\\+1 = 4 columns"),
    ("W-no-particles", dict(W=np.empty((0, DIM + 1))), ValueError, "W must not be empty"),
    ("W-nan", dict(W=with_nan(W)), ValueError, "W must contain only finite"),
    ("W-inf", dict(W=with_inf(W)), ValueError, "W must contain only finite"),
    ("W-complex", dict(W=W + 0j), TypeError, "W must be real"),
    ("W-object", dict(W=W.astype(object)), TypeError, "W must hold real numbers"),
    ("W-string", dict(W=W.astype(str)), TypeError, "W must hold real numbers"),
]


@pytest.mark.parametrize("func, kwargs, exc, match", cases(PARTICLE_FUNCTIONS, ARRAY_BAD))
def test_bad_particles_or_inputs_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


TARGETS_BAD = [
    ("Y-too-few-rows", dict(Y=Y[:-1]), ValueError, "Y must have 5 rows"),
    ("Y-too-many-rows", dict(Y=np.r_[Y, 1.0]), ValueError, "Y must have 5 rows"),
    ("Y-3d", dict(Y=Y2[None]), ValueError, "Y must be 1-D or 2-D"),
    ("Y-scalar", dict(Y=1.0), ValueError, "Y must be 1-D or 2-D"),
    ("Y-no-tasks", dict(Y=np.empty((N_SAMPLES, 0))), ValueError, "Y must not be empty"),
    ("Y-empty", dict(Y=np.empty(0)), ValueError, "Y must not be empty"),
    ("Y-nan", dict(Y=with_nan(Y2)), ValueError, "Y must contain only finite"),
    ("Y-inf", dict(Y=with_inf(Y)), ValueError, "Y must contain only finite"),
    ("Y-complex", dict(Y=Y + 1j), TypeError, "Y must be real"),
    ("Y-object", dict(Y=Y.astype(object)), TypeError, "Y must hold real numbers"),
    ("Y-string", dict(Y=np.array(["a"] * N_SAMPLES)), TypeError, "Y must hold real numbers"),
    ("Y-None", dict(Y=None), TypeError, "Y"),
]


@pytest.mark.parametrize("func, kwargs, exc, match", cases(TARGET_FUNCTIONS, TARGETS_BAD))
def test_bad_targets_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


def test_n_zero_with_matching_targets_raises():
    # n = 0 consistently in X and Y: still rejected, naming X.
    with pytest.raises(ValueError, match="X must not be empty"):
        core.drift(W, np.empty((0, DIM)), np.empty(0), **HYPER)


HYPER_BAD = []
for _name in ("lam", "lam_a", "lam_w"):
    HYPER_BAD += [
        (f"{_name}-zero", {_name: 0.0}, ValueError, f"{_name} must be a finite number > 0"),
        (f"{_name}-negative", {_name: -0.1}, ValueError, f"{_name} must be a finite number > 0"),
        (f"{_name}-nan", {_name: float("nan")}, ValueError, f"{_name} must be a finite number > 0"),
        (f"{_name}-inf", {_name: float("inf")}, ValueError, f"{_name} must be a finite number > 0"),
        (f"{_name}-bool", {_name: True}, TypeError, f"{_name} must be a real number"),
        (f"{_name}-numpy-bool", {_name: np.True_}, TypeError, f"{_name} must be a real number"),
        (f"{_name}-string", {_name: "0.1"}, TypeError, f"{_name} must be a real number"),
        (f"{_name}-None", {_name: None}, TypeError, f"{_name} must be a real number"),
        (f"{_name}-complex", {_name: 0.1 + 0j}, TypeError, f"{_name} must be a real number"),
        (f"{_name}-array", {_name: np.array([0.1])}, TypeError, f"{_name} must be a real number"),
    ]
ACTIVATION_BAD = [
    ("activation-unknown", dict(activation="relu"), ValueError, "activation must be one of"),
    ("activation-case", dict(activation="TANH"), ValueError, "activation must be one of"),
    ("activation-None", dict(activation=None), ValueError, "activation must be one of"),
]
THREADS_BAD = [
    ("n_threads-zero", dict(n_threads=0), ValueError, "n_threads must be >= 1"),
    ("n_threads-negative", dict(n_threads=-2), ValueError, "n_threads must be >= 1"),
    ("n_threads-float", dict(n_threads=2.0), TypeError, "n_threads must be an integer"),
    ("n_threads-bool", dict(n_threads=True), TypeError, "n_threads must be an integer"),
]
BLOCK_BAD = [
    ("block_size-zero", dict(block_size=0), ValueError, "block_size must be >= 1"),
    ("block_size-float", dict(block_size=8.5), TypeError, "block_size must be an integer"),
]


@pytest.mark.parametrize("func, kwargs, exc, match", cases(HYPER_FUNCTIONS, HYPER_BAD))
def test_bad_hyperparameters_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


@pytest.mark.parametrize("func, kwargs, exc, match",
                         cases(ACTIVATION_FUNCTIONS, ACTIVATION_BAD + THREADS_BAD)
                         + cases(BLOCKED_FUNCTIONS, BLOCK_BAD))
def test_bad_activation_threads_or_block_size_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


@pytest.mark.parametrize("func, kwargs, exc, match", [
    pytest.param(call_gram, dict(X2=np.ones((3, DIM + 1))), ValueError, "X2 must have d = 3 columns", id="X2-cols"),
    pytest.param(call_gram, dict(X2=np.ones(DIM)), ValueError, "X2 must be 2-D", id="X2-1d"),
    pytest.param(call_gram, dict(X2=np.empty((0, DIM))), ValueError, "X2 must not be empty", id="X2-empty"),
    pytest.param(call_gram, dict(X2=with_nan(np.ones((3, DIM)))), ValueError, "X2 must contain only finite",
                 id="X2-nan"),
    pytest.param(call_gram, dict(X2=np.ones((3, DIM), dtype=complex)), TypeError, "X2 must be real",
                 id="X2-complex"),
    pytest.param(call_drift, dict(label_noise=np.zeros(N_SAMPLES - 1)), ValueError, "label_noise must have 5 rows",
                 id="label_noise-rows"),
    pytest.param(call_drift, dict(Y=Y2, label_noise=np.zeros((N_SAMPLES, 3))), ValueError,
                 "label_noise must have the shape of Y", id="label_noise-tasks"),
    pytest.param(call_drift, dict(label_noise=with_nan(Y)), ValueError, "label_noise must contain only finite",
                 id="label_noise-nan"),
    pytest.param(call_drift, dict(label_noise=Y + 0j), TypeError, "label_noise must be real",
                 id="label_noise-complex"),
    pytest.param(call_drift, dict(cache_bytes=-1), ValueError, "cache_bytes must be >= 0", id="cache_bytes-neg"),
    pytest.param(call_drift, dict(cache_bytes=1.5), TypeError, "cache_bytes must be an integer",
                 id="cache_bytes-float"),
    pytest.param(call_langevin_step, dict(cache_bytes=-1), ValueError, "cache_bytes must be >= 0",
                 id="step-cache_bytes-neg"),
    pytest.param(call_output_weights, dict(A=np.ones(N_SAMPLES + 1)), ValueError, "A must have 5 rows",
                 id="A-rows"),
    pytest.param(call_output_weights, dict(A=with_nan(Y)), ValueError, "A must contain only finite", id="A-nan"),
    pytest.param(call_network_output, dict(weights=np.ones(N_PARTICLES - 1)), ValueError,
                 "weights must have 7 rows", id="weights-rows"),
    pytest.param(call_network_output, dict(weights=np.ones((N_PARTICLES, 2, 1))), ValueError,
                 "weights must be 1-D or 2-D", id="weights-3d"),
    pytest.param(call_network_output, dict(weights=np.ones(N_PARTICLES, dtype=complex)), TypeError,
                 "weights must be real", id="weights-complex"),
])
def test_bad_secondary_arrays_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


# ----------------------------------------------------------------------------------------------------------
# Langevin step: eta, seeds, steps, indices, label-noise level
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(eta=0.0), ValueError, "eta must be a finite number > 0"),
    (dict(eta=-0.1), ValueError, "eta must be a finite number > 0"),
    (dict(eta=float("nan")), ValueError, "eta must be a finite number > 0"),
    (dict(eta=float("inf")), ValueError, "eta must be a finite number > 0"),
    (dict(eta=True), TypeError, "eta must be a real number"),
    (dict(eta="0.1"), TypeError, "eta must be a real number"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=2**64), ValueError, "seed must be <= "),
    (dict(seed=1.0), TypeError, "seed must be an integer"),
    (dict(seed=True), TypeError, "seed must be an integer"),
    (dict(seed=None), TypeError, "seed must be an integer"),
    (dict(step=-1), ValueError, "step must be >= 0"),
    (dict(step=2**32), ValueError, "step must be <= "),
    (dict(step=2.0), TypeError, "step must be an integer"),
    (dict(step=False), TypeError, "step must be an integer"),
    (dict(label_noise_level=-0.1), ValueError, "label_noise_level must be a finite number >= 0"),
    (dict(label_noise_level=float("nan")), ValueError, "label_noise_level must be a finite number >= 0"),
    (dict(label_noise_level=float("inf")), ValueError, "label_noise_level must be a finite number >= 0"),
    (dict(label_noise_level=True), TypeError, "label_noise_level must be a real number"),
    (dict(first_index=-1), ValueError, "first_index must be >= 0"),
    (dict(first_index=2**32 - N_PARTICLES + 1), ValueError, "first_index \\+ N must be at most 2\\*\\*32"),
    (dict(first_index=1.0), TypeError, "first_index must be an integer"),
])
def test_bad_langevin_arguments_raise(kwargs, exc, match):
    assert_raises(call_langevin_step, kwargs, exc, match)


def test_langevin_extreme_valid_counters_are_accepted():
    # The largest legal seed, step and first index (the last particle gets index 2**32 - 1).
    out = call_langevin_step(seed=2**64 - 1, step=2**32 - 1, first_index=2**32 - N_PARTICLES)
    assert out.shape == W.shape and np.isfinite(out).all()
    assert call_langevin_step(seed=np.uint64(2**64 - 1), step=np.int64(3)).shape == W.shape


@pytest.mark.parametrize("func, kwargs, exc, match", [
    (call_particle_noise, dict(seed=-1), ValueError, "seed must be >= 0"),
    (call_particle_noise, dict(step=2**32), ValueError, "step must be <= "),
    (call_particle_noise, dict(step=-1), ValueError, "step must be >= 0"),
    (call_particle_noise, dict(count=-1), ValueError, "count must be >= 0"),
    (call_particle_noise, dict(count=2.0), TypeError, "count must be an integer"),
    (call_particle_noise, dict(dim=0), ValueError, "dim must be >= 1"),
    (call_particle_noise, dict(dim=True), TypeError, "dim must be an integer"),
    (call_particle_noise, dict(first_index=-1), ValueError, "first_index must be >= 0"),
    (call_particle_noise, dict(first_index=2**32 - 3), ValueError, "first_index \\+ count must be at most"),
    (call_particle_noise, dict(n_threads=0), ValueError, "n_threads must be >= 1"),
    (call_label_noise, dict(seed=-5), ValueError, "seed must be >= 0"),
    (call_label_noise, dict(step=2**32), ValueError, "step must be <= "),
    (call_label_noise, dict(n=0), ValueError, "n must be >= 1"),
    (call_label_noise, dict(n=3.0), TypeError, "n must be an integer"),
    (call_label_noise, dict(tasks=0), ValueError, "tasks must be >= 1"),
    (call_label_noise, dict(level=-1.0), ValueError, "level must be a finite number >= 0"),
    (call_label_noise, dict(level=float("nan")), ValueError, "level must be a finite number >= 0"),
    (call_label_noise, dict(level=True), TypeError, "level must be a real number"),
])
def test_bad_noise_arguments_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


# ----------------------------------------------------------------------------------------------------------
# Kernel matrices and ridge
# ----------------------------------------------------------------------------------------------------------

_ASYMMETRIC = K.copy()
_ASYMMETRIC[0, 1] += 1e-3

KERNEL_BAD = [
    ("K-1d", dict(K=np.ones(N_SAMPLES)), ValueError, "K must be 2-D"),
    ("K-not-square", dict(K=np.ones((N_SAMPLES, N_SAMPLES + 1))), ValueError, "K must be square"),
    ("K-not-symmetric", dict(K=_ASYMMETRIC), ValueError, "K must be symmetric"),
    ("K-nan", dict(K=with_nan(K)), ValueError, "K must contain only finite"),
    ("K-inf", dict(K=with_inf(K)), ValueError, "K must contain only finite"),
    ("K-complex", dict(K=K + 0j), TypeError, "K must be real"),
    ("K-object", dict(K=K.astype(object)), TypeError, "K must hold real numbers"),
    ("K-empty", dict(K=np.empty((0, 0))), ValueError, "K must not be empty"),
    ("K-None", dict(K=None), TypeError, "K"),
]


@pytest.mark.parametrize("func, kwargs, exc, match", cases(KERNEL_FUNCTIONS, KERNEL_BAD))
def test_bad_kernel_matrices_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


RIDGE_BAD = [
    ("ridge-zero", dict(ridge=0.0), ValueError, "ridge must be a finite number > 0"),
    ("ridge-negative", dict(ridge=-1.0), ValueError, "ridge must be a finite number > 0"),
    ("ridge-nan", dict(ridge=float("nan")), ValueError, "ridge must be a finite number > 0"),
    ("ridge-inf", dict(ridge=float("inf")), ValueError, "ridge must be a finite number > 0"),
    ("ridge-bool", dict(ridge=True), TypeError, "ridge must be a real number"),
    ("ridge-string", dict(ridge="1"), TypeError, "ridge must be a real number"),
]


@pytest.mark.parametrize("func, kwargs, exc, match",
                         cases({"second_layer": call_second_layer, "degrees_of_freedom": call_degrees_of_freedom},
                               RIDGE_BAD))
def test_bad_ridge_raises(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


@pytest.mark.parametrize("func, kwargs, exc, match", [
    (call_second_layer, dict(Y=np.ones(N_SAMPLES + 1)), ValueError, "Y must have 5 rows"),
    (call_second_layer, dict(Y=with_nan(Y)), ValueError, "Y must contain only finite"),
    (call_second_layer, dict(Y=np.ones((N_SAMPLES, 1, 1))), ValueError, "Y must be 1-D or 2-D"),
    (call_kernel_alignment, dict(f=np.zeros(N_SAMPLES)), ValueError, "f must not be identically zero"),
    (call_kernel_alignment, dict(K=np.zeros((N_SAMPLES, N_SAMPLES))), ValueError, "K must not be identically zero"),
    (call_kernel_alignment, dict(f=np.ones(N_SAMPLES - 1)), ValueError, "f must have 5 rows"),
    (call_kernel_alignment, dict(f=with_inf(Y)), ValueError, "f must contain only finite"),
    (call_parameter_alignment, dict(u_star=np.zeros(DIM)), ValueError, "u_star must not be the zero vector"),
    (call_parameter_alignment, dict(u_star=np.ones((DIM, 1))), ValueError, "u_star must be 1-D"),
    (call_parameter_alignment, dict(u_star=np.ones(DIM + 2)), ValueError, "W must have d = 5 or d\\+1 = 6"),
    (call_parameter_alignment, dict(W=W[0]), ValueError, "W must be 2-D"),
    (call_parameter_alignment, dict(W=with_nan(W)), ValueError, "W must contain only finite"),
    (call_parameter_alignment, dict(u_star=np.ones(DIM) + 0j), TypeError, "u_star must be real"),
    (call_parameter_alignment, dict(W=np.empty((0, DIM + 1))), ValueError, "W must not be empty"),
])
def test_bad_diagnostic_arguments_raise(func, kwargs, exc, match):
    assert_raises(func, kwargs, exc, match)


@pytest.mark.parametrize("func", [call_second_layer, call_degrees_of_freedom])
def test_not_positive_definite_after_ridge_raises(func):
    # K = -10 I is symmetric but K + 1*I = -9 I has no Cholesky factor.
    with pytest.raises(core.NotPositiveDefiniteError, match="not positive definite"):
        func(K=-10.0 * np.eye(N_SAMPLES), ridge=1.0)


def test_not_positive_definite_error_is_linalg_and_value_error():
    assert issubclass(core.NotPositiveDefiniteError, np.linalg.LinAlgError)
    assert issubclass(core.NotPositiveDefiniteError, ValueError)
    with pytest.raises(np.linalg.LinAlgError):
        core.second_layer(-10.0 * np.eye(4), np.ones(4), 1.0)
    with pytest.raises(ValueError):
        core.second_layer(-10.0 * np.eye(4), np.ones(4), 1.0)
    # Indefinite but not "negative": one eigenvalue below -ridge is enough.
    indefinite = np.diag([1.0, 2.0, -3.0, 1.0])
    with pytest.raises(core.NotPositiveDefiniteError):
        core.second_layer(indefinite, np.ones(4), 1.0)
    # The ridge rescues a matrix whose eigenvalues are above -ridge.
    A = core.second_layer(np.diag([1.0, 2.0, -0.5, 1.0]), np.ones(4), 1.0)
    np.testing.assert_allclose(A, 1 / np.array([2.0, 3.0, 0.5, 2.0]), rtol=1e-14)


# ----------------------------------------------------------------------------------------------------------
# Accepted conversions give the float64 C-contiguous answer
# ----------------------------------------------------------------------------------------------------------

def _variants(array):
    """(label, variant, float64 C-contiguous equivalent) of an array in other layouts and dtypes."""
    wide = np.zeros((array.shape[0], 2 * array.shape[1]))
    wide[:, ::2] = array
    rounded = np.round(array * 4)  # integer-valued, so the int variant is exact
    return [
        ("non-contiguous", wide[:, ::2], array),
        ("fortran", np.asfortranarray(array), array),
        ("reversed-rows", array[::-1][::-1], array),
        ("float32", array.astype(np.float32), array.astype(np.float32).astype(np.float64)),
        ("int64", rounded.astype(np.int64), rounded),
        ("int32", rounded.astype(np.int32), rounded),
        ("list", array.tolist(), array),
    ]


def _assert_same(got, want):
    """Equal up to rounding, for arrays, scalars and the dict of `objective`."""
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-13, abs=1e-15)
    elif np.isscalar(want):
        assert got == pytest.approx(want, rel=1e-13, abs=1e-15)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


ARRAY_CONSUMERS = {
    # name: (function of the array under test, which is the argument being varied)
    "features-W": lambda a: core.features(a, X),
    "features-X": lambda a: core.features(W, a),
    "gram-X": lambda a: core.gram(W, a),
    "gram-X2": lambda a: core.gram(W, X, a[:3]),
    "objective-W": lambda a: call_objective(W=a),
    "drift-X": lambda a: call_drift(X=a, Y=Y2),
    "drift-Y": lambda a: call_drift(Y=a),
    "drift-label_noise": lambda a: call_drift(Y=Y2, label_noise=a),
    "langevin_step-W": lambda a: call_langevin_step(W=a),
    "langevin_step-Y": lambda a: call_langevin_step(Y=a),
    "output_weights-A": lambda a: call_output_weights(A=a),
    "network_output-weights": lambda a: call_network_output(weights=a),
    "second_layer-K": lambda a: call_second_layer(K=a, Y=Y2),
    "second_layer-Y": lambda a: call_second_layer(Y=a),
    "kernel_alignment-K": lambda a: call_kernel_alignment(K=a),
    "degrees_of_freedom-K": lambda a: call_degrees_of_freedom(K=a),
    "parameter_alignment-W": lambda a: call_parameter_alignment(W=a),
}
ARRAY_SOURCES = {
    "features-W": W, "features-X": X, "gram-X": X, "gram-X2": X, "objective-W": W, "drift-X": X,
    "drift-Y": Y2, "drift-label_noise": Y2 / 4, "langevin_step-W": W, "langevin_step-Y": Y2[:, :1],
    "output_weights-A": Y2, "network_output-weights": np.c_[np.arange(N_PARTICLES), np.ones(N_PARTICLES)],
    "second_layer-K": K, "second_layer-Y": Y2, "kernel_alignment-K": K, "degrees_of_freedom-K": K,
    "parameter_alignment-W": W,
}


def _conversion_cases():
    """pytest params (function, converted array, its float64 C-contiguous equivalent)."""
    out = []
    for name, func in ARRAY_CONSUMERS.items():
        for label, variant, equivalent in _variants(ARRAY_SOURCES[name]):
            if name.endswith("-K") and label in ("float32", "int64", "int32"):
                # Rounding K to float32 keeps it symmetric; integer K needs a PD-after-ridge integer matrix.
                if label != "float32":
                    integer_K = np.round(K * 8) + 8 * np.eye(N_SAMPLES)
                    variant, equivalent = integer_K.astype(label), integer_K
            out.append(pytest.param(func, variant, equivalent, id=f"{name}-{label}"))
    return out


@pytest.mark.parametrize("func, variant, equivalent", _conversion_cases())
def test_converted_input_gives_the_float64_answer(func, variant, equivalent):
    _assert_same(func(variant), func(np.ascontiguousarray(equivalent, dtype=np.float64)))


@pytest.mark.parametrize("activation", ["tanh", "erf"])
def test_every_function_accepts_all_fortran_inputs_at_once(activation):
    F = np.asfortranarray
    H = core.features(F(W), F(X), activation)
    np.testing.assert_allclose(H, core.features(W, X, activation), rtol=1e-14)
    got = core.langevin_step(F(W), F(X), F(Y2), eta=0.1, **HYPER, seed=1, step=2, activation=activation)
    want = core.langevin_step(W, X, Y2, eta=0.1, **HYPER, seed=1, step=2, activation=activation)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert got.flags.c_contiguous and got.dtype == np.float64


def test_inputs_are_not_modified():
    copies = [a.copy() for a in (W, X, Y2, K)]
    call_langevin_step(Y=Y2, label_noise_level=0.3)
    call_drift(Y=Y2, label_noise=Y2 / 3)
    call_gram(X2=X)
    call_second_layer(Y=Y2)
    call_objective(Y=Y2)
    for before, after in zip(copies, (W, X, Y2, K)):
        np.testing.assert_array_equal(before, after)


def test_numpy_scalar_hyperparameters_are_accepted():
    got = core.drift(W, X, Y, lam=np.float32(0.5), lam_a=np.int64(1), lam_w=np.float64(2.0))
    want = core.drift(W, X, Y, lam=0.5, lam_a=1.0, lam_w=2.0)
    np.testing.assert_array_equal(got, want)
