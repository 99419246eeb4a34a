"""Types of mfkern's compiled core (built from cpp/bindings.cpp; private: use mfkern.core).

Every array argument must already be a C-contiguous float64 ndarray (mfkern.core converts and validates;
rows_dot and rows_axpy also take float32); matrices are 2-D, targets and duals (n, T). A block size left at
0 means the core's default.
"""
from typing import Any, Optional

import numpy as np
import numpy.typing as npt

_Array = npt.NDArray[np.float64]

#: Whether the BLAS/LAPACK routines of scipy were found at import (otherwise Eigen's own products are used).
scipy_blas: bool
#: The variant of the activation kernels chosen for this CPU at load time: "avx512", "avx2" or "generic".
activation_isa: str
#: Whether the core can pin the BLAS to one thread inside its calls.
blas_thread_control: bool

class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """K + ridge I is not numerically positive definite."""

def use_eigen_fallback(arg0: bool) -> bool:
    """Use Eigen's products (True) or scipy's BLAS (False); returns whether the fallback is now in use."""

def rows_dot(a: _Array, x: _Array, n_threads: int) -> _Array:
    """(a @ x.T).T for a (rows, cols) and x (m, cols), both float64 or both float32, C-contiguous."""

def rows_axpy(a: _Array, g: _Array, n_threads: int) -> _Array:
    """(a.T @ g.T).T for a (rows, cols) and g (m, rows), both float64 or both float32, C-contiguous."""

def features(w: _Array, x: _Array, activation: str, n_threads: int) -> _Array:
    """H (n, N), H[j, k] = act(u_k.x_j + b_k)."""

def gram(w: _Array, x: _Array, x2: Optional[_Array], activation: str, block_size: int, n_threads: int) -> _Array:
    """(1/N) H(x) H(x2)^T; x2 None: the symmetric Gram of x."""

def second_layer(k: _Array, y: _Array, ridge: float, n_threads: int) -> _Array:
    """A = (K + ridge I)^{-1} Y by Cholesky."""

def ridge_inverse_stats(k: _Array, ridge: float, n_threads: int) -> tuple[float, float]:
    """(trace of (K + ridge I)^{-1}, 1-norm condition number of K + ridge I)."""

def objective(w: _Array, x: _Array, y: _Array, lam: float, lam_a: float, lam_w: float, activation: str,
              block_size: int, n_threads: int, solver: str, precision: str) -> dict:
    """{"dual": A, "U", "G", "dof", "condition", "mean_sq_norm"} at particles w."""

def drift(w: _Array, x: _Array, y: _Array, lam: float, lam_a: float, lam_w: float, activation: str,
          label_noise: Optional[_Array], block_size: int, cache_bytes: int, n_threads: int, solver: str,
          precision: str) -> tuple[_Array, _Array, float]:
    """(drift (N, d+1), dual A (n, T), U)."""

def langevin_step(w: _Array, x: _Array, y: _Array, eta: float, lam: float, lam_a: float, lam_w: float, seed: int,
                  step: int, activation: str, label_noise_level: float, first_index: int, block_size: int,
                  cache_bytes: int, n_threads: int, solver: str, precision: str) -> tuple[_Array, _Array, float]:
    """(stepped particles, dual A at the old particles, U at the old particles)."""

def drift_given_dual(w: _Array, x: _Array, a: _Array, b: Optional[_Array], lam: float, lam_a: float, lam_w: float,
                     activation: str, n_threads: int, precision: str) -> _Array:
    """The drift for given dual coefficients A (and B = S E for the label-noise procedure)."""

def langevin_step_given_dual(w: _Array, x: _Array, a: _Array, b: Optional[_Array], eta: float, lam: float,
                             lam_a: float, lam_w: float, seed: int, step: int, first_index: int, activation: str,
                             n_threads: int, precision: str) -> _Array:
    """One step with the drift of drift_given_dual and the noise keyed by (seed, step, first_index + k)."""

def output_weights(w: _Array, x: _Array, dual: _Array, activation: str, n_threads: int) -> _Array:
    """Second-layer weights a_k = H[:, k]^T A, shape (N, T)."""

def network_output(w: _Array, weights: _Array, x: _Array, activation: str, block_size: int,
                   n_threads: int) -> _Array:
    """f(x) = (1/N) sum_k a_k h(x; w_k) at the rows of x, shape (m, T)."""

def particle_noise(seed: int, step: int, first_index: int, count: int, dim: int, n_threads: int) -> _Array:
    """The standard normals (count, dim) a step adds to particles first_index, first_index + 1, ..."""

def label_noise(seed: int, step: int, n: int, tasks: int, level: float) -> _Array:
    """The label noise (n, tasks), Uniform[-level, level], of a step."""

def run_ensemble(engines: list["Engine"], k: int, n_threads: int) -> list[dict]:
    """Advance independent engines k steps each, in parallel across engines."""

class Engine:
    """Stateful MFLD trainer (private: use mfkern.engine.Engine). Holds the staged data, the particles, the
    step counter and the second layer's solver state; run/diagnostics release the GIL."""

    def __init__(self, x: _Array, y: _Array, w: _Array, lam: float, lam_a: float, lam_w: float, activation: str,
                 eta: float, seed: int, step: int, label_noise_level: float, second_layer: str, precision: str,
                 n_threads: int, block_size: int, tol: float, max_iterations: int, first_index: int) -> None: ...
    def run(self, k: int, stop: object = None) -> dict:
        """Advance up to k steps; {'steps', 'status', 'message'}."""
    def diagnostics(self) -> dict:
        """U, G, dof, condition, mean_sq_norm, train_mse, kernel_alignment at the current particles."""
    def gram(self) -> _Array:
        """The Gram (n, n) of the current particles."""
    def features(self, divisor: float, single: bool = ...) -> Any:
        """The features (n, N) of the current particles divided by divisor (and their float32 copy if single)."""
    def step_given_dual(self, a: _Array, b: Optional[_Array]) -> bool:
        """One step with the given dual coefficients (n, T)."""
    def output_weights(self) -> _Array:
        """H^T A (N, T) for the dual held."""
    def set_particles(self, w: _Array, step: int) -> None: ...
    def set_reducer(self, reduce: object, total_particles: int) -> None: ...
    def set_alignment_target(self, target: _Array) -> None: ...
    def roll_back(self) -> bool: ...
    @property
    def particles(self) -> _Array: ...
    @property
    def dual(self) -> _Array: ...
    @property
    def has_current_dual(self) -> bool: ...
    @property
    def step(self) -> int: ...
    @property
    def last_U(self) -> float: ...
    @property
    def stats(self) -> dict: ...
