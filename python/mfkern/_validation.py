"""Argument checks shared by the public API: every check names the argument and what was expected."""
from __future__ import annotations

import numbers
import operator

import numpy as np

ACTIVATIONS = ("tanh", "erf")
_MAX_UINT32 = 2**32 - 1
_MAX_UINT64 = 2**64 - 1


def as_float_array(value, name, *, ndim=(2,), allow_empty=False):
    """Return `value` as a C-contiguous float64 array with finite entries.

    `ndim` lists the accepted numbers of dimensions. Integer, boolean and float input is converted;
    complex, object and string input raises TypeError; NaN or infinity raises ValueError.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like of real numbers: {exc}") from None
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        want = " or ".join(f"{d}-D" for d in ndim)
        raise ValueError(f"{name} must be {want}, got an array of shape {arr.shape}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must contain only finite values (found NaN or infinity)")
    return arr


def as_targets(y, name, n):
    """Targets as a C-contiguous (n, T) array, and whether they were given 1-D."""
    arr = as_float_array(y, name, ndim=(1, 2))
    one_d = arr.ndim == 1
    if one_d:
        arr = arr.reshape(-1, 1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per sample of X), got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one column (task)")
    return arr, one_d


def check_particles(W, X, name="W"):
    """Particles (N, d+1) consistent with inputs X (n, d)."""
    if W.shape[1] != X.shape[1] + 1:
        raise ValueError(
            f"{name} must have d+1 = {X.shape[1] + 1} columns (weights u and bias b) for X with "
            f"d = {X.shape[1]} features, got {W.shape[1]} columns"
        )


def _real(value, name, what):
    """float(value) for a real number; TypeError for other types, ValueError when it does not fit a float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:  # e.g. 10**400 or Fraction(10**400, 3)
        raise ValueError(f"{name} must be {what}, got a number too large for a float") from None


def positive(value, name):
    """A finite real number > 0, returned as float."""
    value = _real(value, name, "a finite number > 0")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


def non_negative(value, name):
    value = _real(value, name, "a finite number >= 0")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def integer(value, name, *, minimum=None, maximum=None):
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def seed_value(seed, name="seed"):
    return integer(seed, name, minimum=0, maximum=_MAX_UINT64)


def step_value(step, name="step"):
    return integer(step, name, minimum=0, maximum=_MAX_UINT32)


def activation_name(activation):
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


#: Most threads one call may ask for (OpenMP would fail to create more; no machine has that many cores).
MAX_THREADS = 1024
#: Largest size argument passed to the core's 64-bit integers.
MAX_SIZE = 2**62


def n_threads_value(n_threads):
    """None (the OpenMP/BLAS default) or an integer in [1, MAX_THREADS]; returned as the core's int (0 = default)."""
    if n_threads is None:
        return 0
    return integer(n_threads, "n_threads", minimum=1, maximum=MAX_THREADS)


def block_size_value(block_size):
    if block_size is None:
        return 0
    return integer(block_size, "block_size", minimum=1, maximum=MAX_SIZE)
