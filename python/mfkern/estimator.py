"""MeanFieldRegressor: a two-layer network trained by two-timescale mean-field Langevin dynamics.

The first layer is a cloud of N particles w_k = (u_k, b_k) moved by noisy gradient steps (docs/theory.md, section 5);
the second layer is always at its closed-form optimum, kernel ridge regression with the intrinsic kernel of
the particles (docs/theory.md, section 3). The estimator follows scikit-learn conventions: parameters are stored
unchanged in ``__init__`` and validated in ``fit``; fitted state ends with an underscore.

Long runs are safe: Ctrl-C stops at the end of the current step and leaves a usable estimator, divergence
raises :class:`DivergenceError` and leaves the estimator at its last good step, ``save``/``load`` write a
portable checkpoint atomically, and a reloaded run continued with ``warm_start=True`` follows the same
trajectory bit for bit (the noise is counter-based: its position is just ``(seed_, n_steps_done_)``).

The training loop and these guarantees live in :class:`MeanFieldBase`, shared with
:class:`mfkern.classifier.MeanFieldClassifier` and :class:`mfkern.distributed.DistributedMeanFieldRegressor`;
each estimator supplies its loss-specific step and diagnostics, and where its particles live (the engine it
trains with and the :class:`OneProcess` protocol of a :class:`TrainingRun`).
"""
from __future__ import annotations

import math
import numbers
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, RegressorMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import checkpoint, core
from .checkpoint import CheckpointError
from .checkpoint import scalar as checkpoint_scalar
from .engine import ENGINE_SOLVERS, Engine, choose_solver
from ._validation import (
    activation_name,
    as_float_array,
    as_targets,
    block_size_value,
    integer,
    n_threads_value,
    non_negative,
    positive,
    seed_value,
)

__all__ = ["MeanFieldRegressor", "DivergenceError", "SaturationWarning", "HISTORY_KEYS", "PRESETS"]

#: Keys of ``MeanFieldRegressor.history_`` (a dict of equally long lists, one entry per logged step).
HISTORY_KEYS = (
    "step",                 # number of Langevin steps done when the entry was logged (0 = initialisation)
    "U",                    # data term of the reduced objective (docs/theory.md, section 2), clean labels
    "G",                    # U + (lam*lam_w/2) mean_k ||w_k||^2
    "dof",                  # tr[K (K + ridge I)^{-1}]
    "kernel_alignment",     # alignment of the Gram with y (noisy labels included) or fit's alignment_target
    "train_mse",            # mean squared training error of the network
    "val_mse",              # validation MSE (NaN when no X_val was given)
    "parameter_alignment",  # alignment of the u_k with target_direction (NaN when not given)
    "wall_time",            # seconds of training so far, cumulated over warm-started fits
)

MAX_STEPS = 2**32  # the step counter of the noise generator is 32-bit
_MAX_STEPS = MAX_STEPS  # the former private name

#: Hyper-parameter presets. A hyper-parameter left at None takes its value from the preset (``preset=None``
#: means "default"); a value given explicitly always wins over the preset. "paper" is the experiment of
#: Takakura and Suzuki (ICML 2024) exactly, on unscaled inputs. "default" differs from it in the input scale
#: ("auto" = 0.5/sqrt(d): standardised inputs then give unsaturated initial features) and the number of
#: steps, both chosen by measurement (bench/defaults.py; results in bench/results/defaults.md).
PRESETS = {
    "default": dict(input_scale="auto", n_particles=2000, lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2,
                    n_steps=500),
    "paper": dict(input_scale=1.0, n_particles=2000, lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, n_steps=10000),
}
_PRESET_PARAMS = tuple(PRESETS["default"])
# input_scale="auto" is AUTO_SCALE / sqrt(d): measured best of {0.5, 1} / sqrt(d) and 1 (bench/defaults.py).
AUTO_SCALE = 0.5

# Initial features |h| above this count as saturated; more than this fraction saturated triggers the warning.
_SATURATED = 0.99
_SATURATION_WARNING_FRACTION = 0.5


class SaturationWarning(UserWarning):
    """Most initial features are saturated (the inputs are too large for the prior of the particles).

    Saturated tanh/erf features are nearly constant in the particles, so their gradients vanish and MFLD
    learns slowly. Standardise the inputs and keep ``input_scale="auto"``, or lower ``input_scale``.
    """


class DivergenceError(RuntimeError, FloatingPointError):
    """Training diverged: non-finite particles or objective, or a failed Cholesky factorisation.

    The estimator is left at its last good step (``n_steps_done_``, ``particles_``, ``history_`` and the
    second layer are consistent, and ``predict`` works) whenever such a step exists.

    Attributes
    ----------
    step : int
        Number (1-based) of the Langevin step that failed: the one whose second layer could not be solved at
        the particles it starts from, or whose new particles are not finite (so an unsolvable second layer
        at the particles after t steps is step t + 1, at a logged step or not, also the last one of a fit,
        where step t + 1 is the step that could not be taken); 0 when the initial particles of a fresh fit
        already failed.
    n_steps_done : int or None
        The step the estimator was left at (None when no good state exists).
    cause : str
        What went wrong, in words.
    """

    def __init__(self, message, *, step, n_steps_done, cause):
        super().__init__(message)
        self.step = step
        self.n_steps_done = n_steps_done
        self.cause = cause


def seed_from(random_state):
    """A uint64 seed (as a Python int) from an int, None, a RandomState or a Generator (``random_state`` of
    the estimators)."""
    if random_state is None:
        # Fresh OS entropy; stored in `seed_` so the run can be replayed.
        return int(np.random.SeedSequence().entropy) % 2**64
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**64, dtype=np.uint64))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**64, dtype=np.uint64))
    if isinstance(random_state, (bool, np.bool_)) or not isinstance(random_state, numbers.Integral):
        raise TypeError("random_state must be None, an int in [0, 2**64), a numpy RandomState or Generator, "
                        f"got {type(random_state).__name__}")
    return seed_value(random_state, "random_state")


_seed_from = seed_from  # the former private name


def _callback_list(callbacks):
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (list, tuple)):
        for i, cb in enumerate(callbacks):
            if not callable(cb):
                raise TypeError(f"callbacks[{i}] must be callable, got {type(cb).__name__}")
        return list(callbacks)
    raise TypeError(f"callbacks must be None, a callable or a list of callables, got {type(callbacks).__name__}")


def _verbosity(verbose):
    if isinstance(verbose, (bool, np.bool_)):
        return int(verbose)
    return integer(verbose, "verbose", minimum=0)


class _DeferredInterrupt:
    """Defers Ctrl-C (SIGINT) to the end of the current training step.

    Installed only in the main thread and only while SIGINT has Python's default handler (a custom or
    ignoring handler is respected), and not at all when `enabled` is false. The first Ctrl-C sets
    `requested`; a second one raises KeyboardInterrupt at once, for a user who really wants out.
    """

    def __init__(self, enabled=True):
        self.requested = False
        self._enabled = enabled
        self._previous = None
        self._installed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if (self._enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def __exit__(self, *exc_info):
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
        return False


class OneProcess:
    """Where the particles of a fit live: all of them in this process (``TrainingRun.shards``).

    The training loop reaches the other processes only through this object's few operations, identities
    here; :mod:`mfkern.distributed` supplies one for particles sharded over MPI ranks, whose sums over
    particles (validation predictions, parameter alignment) are reduced across the ranks, whose callbacks
    stop all ranks together and whose log lines come from rank 0 only.
    """

    #: This process's fraction of the particles (partial sums over particles are weighted by it).
    share = 1.0
    #: Ctrl-C is deferred to a step boundary and a progress bar may show (a rank of several cannot stop
    #: alone: the others would wait for it at the next reduction).
    interactive = True
    #: This process prints the log lines of ``verbose``.
    prints = True
    #: Appended to the class name in log lines.
    label = ""

    def sum(self, values):
        """Elementwise sum of the float64 array `values` over the processes (the same bits on each)."""
        return values

    def any(self, flag):
        """Whether `flag` is true in some process."""
        return bool(flag)

    def common(self, value):
        """The first process's `value`, in every process."""
        return value


ONE_PROCESS = OneProcess()


@dataclass
class TrainingRun:
    """Everything one call of fit needs besides the estimator's own state."""

    X: np.ndarray
    Y: np.ndarray                      # (n, T)
    X_val: Optional[np.ndarray]
    Y_val: Optional[np.ndarray]        # (n_val, T)
    direction: Optional[np.ndarray]
    n_particles: int
    lam: float
    lam_a: float
    lam_w: float
    eta: float
    n_steps: int
    activation: str
    label_noise: float
    n_threads: Optional[int]
    log_every: int
    verbose: int
    callbacks: list
    block_size: Optional[int]
    ridge: float
    solver: str = "auto"               # second-layer solver of the core (regressor only)
    precision: str = "float64"         # precision of features and their products in the core
    one_d: bool = False                # y was 1-D: predictions and coefficients are returned 1-D
    warm: Any = None                   # latest dual coefficients (n, T) on this fit's data (iterative solvers)
    tol: float = 1e-10                 # relative residual of the conjugate-gradient second layer
    alignment_target: Optional[np.ndarray] = None  # what the kernel alignment is measured against (None: Y)
    engine: Any = None                 # the training engine of this fit (regressor), made on first use
    seed: int = 0                      # the noise key of this fit (seed_ once set)
    t0: float = 0.0
    wall_offset: float = 0.0
    progress: Any = None
    shards: Any = ONE_PROCESS          # where the particles live (OneProcess protocol)


_Run = TrainingRun  # the former private name


def _particles_finite(W, lam_w_bar):
    """Whether particles are finite and so is their term (lam_w_bar / 2) mean ||w||^2 of G: particles so
    large that it overflows mean the chain has run away, as surely as non-finite ones."""
    if not np.isfinite(W).all():
        return False
    with np.errstate(over="ignore"):
        return math.isfinite(lam_w_bar / 2 * float(np.einsum("kl,kl->", W, W)) / W.shape[0])


class StepFailure(Exception):
    """Raised by a training step hook when the step cannot be computed; `cause` says why, in words.

    The original exception, if any, is chained as ``__cause__`` and ends up as the cause of the
    :class:`DivergenceError`.
    """

    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


_StepFailure = StepFailure  # the former private name


class MeanFieldBase(BaseEstimator):
    """What every two-timescale MFLD estimator shares: parameter checks, the one training loop with its
    safety guarantees (deferred Ctrl-C, divergence roll-back, callbacks, logging), the learned kernel and
    features, and checkpoints.

    A subclass provides the loss-specific hooks: ``_step`` (one Langevin step, returning the new particles and
    the dual coefficients and data term at the old ones) or ``_advance`` (several steps at once, e.g. inside an
    engine), ``_diagnostics`` (the history entry, dual coefficients and second-layer weights at given
    particles), ``_set_second_layer`` and the text hooks ``_log_line``, ``_postfix`` and ``_divergence_hint``;
    and ``fit``, which validates its data and calls ``_run_training``. Where the particles live is the
    subclass's too: ``_initial_particles`` draws this process's rows, ``_particles_attribute`` and
    ``_coef_attribute`` name the attributes holding them and their second-layer weights,
    ``TrainingRun.shards`` (see :class:`OneProcess`) connects the processes and, for the regressor's engine
    strategy, ``_new_engine`` builds the engine (sharded under MPI).
    ``_history_keys`` names the history columns and ``_checkpoint_format`` the checkpoint format (see
    :mod:`mfkern.checkpoint`).
    """

    _history_keys = HISTORY_KEYS
    _checkpoint_format = "mfkern.MeanFieldRegressor"
    #: The fitted attribute that holds the particles this process trains.
    _particles_attribute = "particles_"
    #: The fitted attribute that holds the second-layer weights of those particles.
    _coef_attribute = "coef_"

    @property
    def _particles(self):
        """The particles this process trains (the attribute ``_particles_attribute`` names)."""
        return getattr(self, self._particles_attribute)

    @_particles.setter
    def _particles(self, W):
        setattr(self, self._particles_attribute, W)

    @property
    def _n_features_out(self):
        """Number of features of `transform` (one per particle), for get_feature_names_out."""
        return self.particles_.shape[0]

    def _preset_values(self):
        """The hyper-parameters of the chosen preset (``preset=None``: "default")."""
        preset = getattr(self, "preset", None)
        if preset is None:
            return PRESETS["default"]
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ValueError(f"preset must be None or one of {tuple(PRESETS)}, got {preset!r}")
        return PRESETS[preset]

    def _resolved(self, name):
        """A hyper-parameter's value: the one given explicitly, else the preset's."""
        value = getattr(self, name, None)
        return self._preset_values()[name] if value is None else value

    def _input_scale_for(self, d):
        """The factor the inputs are multiplied by for d features: input_scale, with "auto" = 0.5/sqrt(d)."""
        value = self._resolved("input_scale")
        if isinstance(value, str):
            if value != "auto":
                raise ValueError(f"input_scale must be 'auto', None or a finite number > 0, got {value!r}")
            return AUTO_SCALE / math.sqrt(d)
        return positive(value, "input_scale")

    def _fit_input_scale(self, X, continuing):
        """Resolve and store ``input_scale_`` for a fit on X (a warm start must keep it); X scaled."""
        scale = self._input_scale_for(X.shape[1])
        if continuing:
            if scale != self.input_scale_:
                raise ValueError(f"input_scale resolves to {scale:g} but the model being continued "
                                 f"(warm_start=True) was fitted with input_scale_ = {self.input_scale_:g}")
        else:
            self.input_scale_ = scale
        return self._scale_inputs(X)

    def _scale_inputs(self, X):
        """Inputs as the network sees them: X * input_scale_ (the one place where inputs are scaled; fit and
        every inference method go through it)."""
        scale = self.input_scale_
        return X if scale == 1.0 else X * scale

    def _restore_input_scale(self, state):
        """input_scale_ of a loaded checkpoint state (files from before input scaling existed are upgraded
        to input_scale 1 by mfkern.checkpoint: their models saw the inputs unscaled)."""
        self.input_scale_ = float(checkpoint_scalar(state, "input_scale", "f"))
        if not (math.isfinite(self.input_scale_) and self.input_scale_ > 0):
            raise ValueError(f"input_scale must be a finite number > 0, got {self.input_scale_}")

    def _warn_if_saturated(self, X, seed, p):
        """SaturationWarning when more than half of the initial features (on a subsample of the scaled
        inputs X and of the initial particles, the same draws as the fit's) have |h| > 0.99."""
        rows = X[::max(1, X.shape[0] // 256)]
        count = min(p["n_particles"], 512)
        # The first rows of the generator's (N, d+1) draw are the rows of a smaller draw from the same seed.
        W = np.random.default_rng(seed).standard_normal((count, X.shape[1] + 1)) / math.sqrt(p["lam_w"])
        H = core.features(W, rows, p["activation"], n_threads=1)
        fraction = float(np.mean(np.abs(H) > _SATURATED))
        if fraction > _SATURATION_WARNING_FRACTION:
            spread = float(np.std(rows @ W[:, :-1].T + W[:, -1]))
            warnings.warn(SaturationWarning(
                f"{fraction:.0%} of the initial features are saturated (|{p['activation']}| > {_SATURATED}; the "
                f"pre-activations u.x + b have standard deviation {spread:.3g}), so MFLD will learn slowly. "
                f"Standardise the inputs (e.g. sklearn.preprocessing.StandardScaler in a Pipeline) and use "
                f"input_scale='auto' (scales them by 0.5/sqrt(d)), or lower input_scale (now "
                f"{self.input_scale_:g}) or raise lam_w (now {p['lam_w']:g})"), stacklevel=3)
        return fraction

    def _check_common_params(self):
        """Validate the parameters every MFLD estimator has; returns them as a dict of clean values (the
        hyper-parameters left at None resolved from the preset; input_scale is resolved in fit)."""
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise TypeError(f"warm_start must be a bool, got {type(self.warm_start).__name__}")
        n_threads_value(self.n_threads)
        block_size_value(self.block_size)
        self._input_scale_for(1)  # validates input_scale and preset before any work
        value = self._resolved
        return dict(
            n_particles=integer(value("n_particles"), "n_particles", minimum=1, maximum=2**32),
            lam=positive(value("lam"), "lam"),
            lam_a=positive(value("lam_a"), "lam_a"),
            lam_w=positive(value("lam_w"), "lam_w"),
            eta=positive(value("eta"), "eta"),
            n_steps=integer(value("n_steps"), "n_steps", minimum=0),
            activation=activation_name(self.activation),
            n_threads=None if self.n_threads is None else int(self.n_threads),
            log_every=integer(self.log_every, "log_every", minimum=1),
            verbose=_verbosity(self.verbose),
            callbacks=_callback_list(self.callbacks),
            block_size=None if self.block_size is None else int(self.block_size),
        )

    def _core_kwargs(self):
        return dict(activation=self.activation, block_size=self.block_size, n_threads=self.n_threads)

    def _check_X(self, X, name="X"):
        """X for a fitted estimator: validated like at fit, with the same number of features."""
        check_is_fitted(self, ("particles_", "coef_"))
        if X is None:
            raise TypeError(f"{name} must be an array, got None")
        return self._scale_inputs(validate_data(self, X, reset=False, dtype=np.float64))

    # ------------------------------------------------------------------ training
    def _continuation(self, p, continuing):
        """Checks for a warm start and the step budget; the seed of a fresh fit (None when continuing).

        The seed is drawn here, once, before any work.
        """
        if continuing:
            if self.particles_.shape[0] != p["n_particles"]:
                raise ValueError(f"n_particles={p['n_particles']} differs from the {self.particles_.shape[0]} "
                                 "particles being continued (warm_start=True)")
            start = self.n_steps_done_
        else:
            start = 0
        if start + p["n_steps"] > MAX_STEPS:
            raise ValueError(f"n_steps={p['n_steps']} would take the step counter past 2**32 "
                             f"({start} steps already done)")
        return None if continuing else seed_from(self.random_state)

    def _run_training(self, run, seed, continuing):
        """Initialise (fresh fit) and run the step loop under deferred Ctrl-C and the thread limits."""
        run.t0 = time.perf_counter()
        run.seed = self.seed_ if continuing else seed
        with core.thread_limits(run.n_threads), _DeferredInterrupt(run.shards.interactive) as interrupt:
            run.progress = self._progress_bar(run)
            try:
                if continuing:
                    run.wall_offset = self.history_["wall_time"][-1] if self.history_["wall_time"] else 0.0
                    good, stop = None, False  # nothing changed yet: on failure the previous fit stays as it was
                else:
                    good, stop = self._initialise(run, seed)
                self._train(run, good, interrupt, stop)
            except KeyboardInterrupt:
                # A second Ctrl-C (or one under a non-default handler): settle on the last complete step. A
                # rank of several cannot settle alone (its diagnostics would wait for the others).
                if run.shards.interactive:
                    self._settle(run)
                raise
            finally:
                if run.progress is not None:
                    run.progress.close()
            if interrupt.requested:
                raise KeyboardInterrupt

    @staticmethod
    def _check_direction(target_direction, d):
        if target_direction is None:
            return None
        u = as_float_array(target_direction, "target_direction", ndim=(1,))
        if u.shape[0] != d:
            raise ValueError(f"target_direction must have length {d} (one entry per feature), got {u.shape[0]}")
        if not np.any(u):
            raise ValueError("target_direction must not be the zero vector")
        return u

    def _initial_particles(self, run, seed):
        """This process's initial particles: N(0, I/lam_w), drawn from ``np.random.default_rng(seed)``."""
        W = np.random.default_rng(seed).standard_normal((run.n_particles, run.X.shape[1] + 1))
        W /= math.sqrt(run.lam_w)
        return W

    def _initialise(self, run, seed):
        """Fresh particles (``_initial_particles``), logged as step 0 (callbacks included).

        Returns the good state (0, particles, A) and whether a callback asked to stop.
        """
        W = self._initial_particles(run, seed)
        try:
            diag, A, coef = self._diagnostics(W, 0, run)
        except DivergenceError as exc:
            self._diverge(run, None, 0, exc.cause, exc.__cause__)
        # Assign the fitted state only now that it is complete and consistent.
        self.seed_ = seed
        self._particles = W
        self.n_steps_done_ = 0
        self.history_ = {key: [] for key in self._history_keys}
        self._set_second_layer(A, coef, run)
        self._record(diag, run)
        return (0, W, A), self._call_back(run, diag)

    def _train(self, run, good, interrupt, stop=False):
        """The loop: advance to the next logged step, log, call back; until n_steps or a stop.

        `good` = (step, particles, A) is the last state whose second layer is known (where a divergence
        rolls back to); the second-layer strategy (`_advance`) may move it forward.
        """
        last = self.n_steps_done_ + (0 if stop else run.n_steps)
        # A fresh fit logged step 0 already; a warm start must refresh the second layer on this fit's data.
        logged = good is not None
        while self.n_steps_done_ < last and not interrupt.requested:
            next_log = (self.n_steps_done_ // run.log_every + 1) * run.log_every
            before = self.n_steps_done_
            good = self._advance(run, min(next_log, last) - before, good, interrupt)
            if self.n_steps_done_ == before:
                break  # stopped before a step (Ctrl-C)
            logged = False
            if self.n_steps_done_ % run.log_every == 0 or self.n_steps_done_ == last:
                diag = self._log(run, good)
                good = (self.n_steps_done_, self._particles, self._dual_2d())
                logged = True
                if self._call_back(run, diag):
                    break
        if not logged:  # stopped by Ctrl-C between log steps, or a warm start with n_steps=0
            self._log(run, good)

    def _advance(self, run, k, good, interrupt):
        """Up to k steps, one ``_step`` call each (the strategy of second layers solved in Python); commits
        each step to ``particles_``/``n_steps_done_`` and returns the new `good` state. Stops early when
        Ctrl-C was requested; on a failed step rolls back and raises DivergenceError."""
        for _ in range(k):
            if interrupt.requested:
                break
            step = self.n_steps_done_
            W = self._particles
            try:
                W_new, A, U = self._step(run, W, step)
            except StepFailure as exc:
                self._diverge(run, good, step + 1, exc.cause, exc.__cause__)
            if not math.isfinite(U):
                self._diverge(run, good, step + 1, "the objective U is not finite")
            good = (step, W, A)  # the second layer at W is known now
            if not _particles_finite(W_new, run.lam * run.lam_w):
                self._diverge(run, good, step + 1, "the particles became non-finite")
            # Commit the step: particles first, so the step count never runs ahead of its particles.
            self._particles = W_new
            self.n_steps_done_ = step + 1
            if run.progress is not None:
                run.progress.update(1)
        return good

    def _log(self, run, good):
        """Diagnostics at the current particles, recorded to the history; sets the second layer."""
        try:
            diag, A, coef = self._diagnostics(self._particles, self.n_steps_done_, run)
        except DivergenceError as exc:  # the next step cannot take its second layer: it is the one that failed
            self._diverge(run, good, self.n_steps_done_ + 1, exc.cause, exc.__cause__)
        self._set_second_layer(A, coef, run)
        self._record(diag, run)
        return diag

    def _dual_2d(self):
        return self.dual_coef_.reshape(self.dual_coef_.shape[0], -1)

    def _record(self, diag, run):
        for key in self._history_keys:
            self.history_[key].append(diag[key])
        if run.verbose and run.progress is not None:
            run.progress.set_postfix(**self._postfix(diag), refresh=False)
        elif run.verbose and run.shards.prints:
            print(f"[{type(self).__name__}{run.shards.label}] step {diag['step']}: {self._log_line(diag)} "
                  f"time={diag['wall_time']:.1f}s", file=sys.stderr, flush=True)

    def _call_back(self, run, diag):
        """Call the callbacks; whether one asked to stop (in any process: all stop together)."""
        stop = False
        for callback in run.callbacks:
            stop = bool(callback(self, diag["step"], dict(diag))) or stop
        return run.shards.any(stop)

    def _progress_bar(self, run):
        if not run.verbose or run.n_steps == 0 or not run.shards.interactive or not _isatty(sys.stderr):
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=run.n_steps, desc="MFLD", unit="step", file=sys.stderr)

    def _set_second_layer(self, A, coef, run):
        """dual_coef_ and the weights attribute (``_coef_attribute``) from the dual coefficients A (n, T) and
        second-layer weights (N, T), one-dimensional when the targets were."""
        if run.one_d:
            A, coef = A[:, 0], coef[:, 0]
        self.dual_coef_ = A
        setattr(self, self._coef_attribute, coef)
        self._y_one_d = run.one_d

    def _divergence_hint(self, run, cause):
        """A hint for the DivergenceError message, from the cause."""
        if "positive definite" in cause:
            return (f"the ridge n*lam*lam_a = {run.ridge:.3g} is probably too small (increase lam or lam_a), "
                    f"or the step size eta = {run.eta:g} too large")
        return (f"the step size eta = {run.eta:g} is probably too large (try a smaller eta), "
                f"or the ridge n*lam*lam_a = {run.ridge:.3g} too small")

    def _diverge(self, run, good, step, cause, exc=None):
        """Roll the fitted state back to `good` and raise DivergenceError naming the step and the cause."""
        self._restore(run, good)
        left = getattr(self, "n_steps_done_", None)
        hint = self._divergence_hint(run, cause)
        where = "at initialisation" if step == 0 else f"at step {step}"
        kept = "No fitted state was kept" if left is None else f"The estimator was left at step {left}"
        raise DivergenceError(f"{type(self).__name__} diverged {where}: {cause}; {hint}. {kept}.",
                              step=step, n_steps_done=left, cause=cause) from exc

    def _restore(self, run, good):
        """Make the fitted state the good state (step, particles, A): particles, second layer, history."""
        if good is None:
            return
        step, W, A = good
        self._particles = W
        self.n_steps_done_ = step
        run.warm = A  # an iterative solver restarted at W from its own solution returns it unchanged
        history = self.history_
        keep = sum(1 for s in history["step"] if s <= step)
        for key in self._history_keys:
            del history[key][keep:]
        diag = None
        # Log the step we fall back to, when its diagnostics can be computed (also into an empty history).
        if not history["step"] or history["step"][-1] != step:
            try:
                diag, A, coef = self._diagnostics(W, step, run)
            except DivergenceError:
                pass
        if diag is None:
            coef = core.output_weights(W, run.X, A, activation=run.activation, block_size=run.block_size,
                                       n_threads=run.n_threads)
        self._set_second_layer(A, coef, run)
        if diag is not None:
            self._record(diag, run)

    def _settle(self, run):
        """After a hard interrupt: make the second layer and history match the last committed step."""
        if not hasattr(self, "history_") or self.history_["step"][-1:] == [self.n_steps_done_]:
            return
        try:
            diag, A, coef = self._diagnostics(self._particles, self.n_steps_done_, run)
        except DivergenceError:
            return
        self._set_second_layer(A, coef, run)
        self._record(diag, run)

    # ------------------------------------------------------------------ learned kernel and features
    def kernel(self, X, X2=None):
        """The learned intrinsic kernel k(x, x') = (1/N) sum_k h(x; w_k) h(x'; w_k) between rows of X and X2.

        Shape (m, m2) (X2=None: X2 = X, symmetric). ``KernelRidge(kernel="precomputed")`` accepts it.
        """
        X = self._check_X(X)
        if X2 is not None:
            X2 = self._check_X(X2, "X2")
        return core.gram(self.particles_, X, X2, **self._core_kwargs())

    def transform(self, X):
        """Features (1/sqrt N) h(x; w_k), shape (m, N): ``transform(X) @ transform(X2).T == kernel(X, X2)``."""
        X = self._check_X(X)
        H = core.features(self.particles_, X, self.activation, n_threads=self.n_threads)
        H /= math.sqrt(self.particles_.shape[0])
        return H

    def _network_output(self, X):
        """f(x) = (1/N) sum_k a_k h(x; w_k) at validated rows X, shape (m, T)."""
        coef = self.coef_.reshape(self.coef_.shape[0], -1)
        return core.network_output(self.particles_, coef, X, **self._core_kwargs())

    # ------------------------------------------------------------------ checkpoints
    #: Entries every checkpoint state of an MFLD estimator has (see mfkern.checkpoint).
    _checkpoint_required = ("particles", "n_steps_done", "seed", "dual_coef", "coef", "n_features_in", "y_one_d",
                            "history", "input_scale")

    def _checkpoint_state(self):
        """The fitted state as a checkpoint state dict (entry name -> ndarray, or a dict of them).

        Raises NotFittedError when the estimator is not fitted. To add a field, add an entry here and read it
        with a default in :meth:`_set_checkpoint_state` (files written before lack it).
        """
        check_is_fitted(self, ("particles_", "coef_"))
        state = {
            "particles": np.asarray(self.particles_, dtype=np.float64),
            "n_steps_done": np.array(self.n_steps_done_, dtype=np.int64),
            "seed": np.array(self.seed_, dtype=np.uint64),
            "dual_coef": np.asarray(self.dual_coef_, dtype=np.float64),
            "coef": np.asarray(self.coef_, dtype=np.float64),
            "n_features_in": np.array(self.n_features_in_, dtype=np.int64),
            "y_one_d": np.array(bool(self._y_one_d)),
            "history": {key: np.asarray(values, dtype=np.int64 if key == "step" else np.float64)
                        for key, values in self.history_.items()},
            "input_scale": np.array(float(self.input_scale_)),
        }
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            state["feature_names_in"] = np.asarray(names, dtype=str)
        state.update(self._checkpoint_arrays())
        return state

    def _set_checkpoint_state(self, state):
        """Make `state` (from :meth:`_checkpoint_state`, read back by mfkern.checkpoint) the fitted state.

        Everything is validated before any attribute is set; CheckpointError says what is inconsistent.
        """
        missing = [key for key in self._checkpoint_required if key not in state]
        if missing:
            raise CheckpointError(f"missing entries {missing}")
        particles = state["particles"]
        n_features = int(checkpoint_scalar(state, "n_features_in", "iu"))
        if not isinstance(particles, np.ndarray) or particles.dtype != np.float64 or particles.ndim != 2 \
                or particles.shape[1] != n_features + 1 or particles.shape[0] < 1 or not np.isfinite(particles).all():
            raise CheckpointError(f"particles must be a finite float64 array of shape (N, {n_features + 1}), "
                                  f"got dtype {getattr(particles, 'dtype', None)} shape {np.shape(particles)}")
        one_d = bool(checkpoint_scalar(state, "y_one_d", "b"))
        coef, dual = state["coef"], state["dual_coef"]
        want_ndim = 1 if one_d else 2
        if not isinstance(coef, np.ndarray) or not isinstance(dual, np.ndarray) or coef.ndim != want_ndim or \
                coef.shape[0] != particles.shape[0] or dual.ndim != want_ndim or \
                (not one_d and dual.shape[1] != coef.shape[1]):
            raise CheckpointError(f"coef {np.shape(coef)} and dual_coef {np.shape(dual)} do not match "
                                  f"{particles.shape[0]} particles")
        saved_history = state["history"] if isinstance(state["history"], dict) else {}
        history = {}
        for key in self._history_keys:
            values = saved_history.get(key)
            if not isinstance(values, np.ndarray) or values.ndim != 1:
                raise CheckpointError(f"missing or malformed history entry {key!r}")
            history[key] = [int(v) for v in values] if key == "step" else [float(v) for v in values]
        if len({len(v) for v in history.values()}) != 1:
            raise CheckpointError("history columns have different lengths")
        n_steps_done = int(checkpoint_scalar(state, "n_steps_done", "iu"))
        if n_steps_done < 0:
            raise CheckpointError(f"n_steps_done must be >= 0, got {n_steps_done}")
        seed = int(checkpoint_scalar(state, "seed", "u"))

        self.particles_ = particles
        self.n_steps_done_ = n_steps_done
        self.seed_ = seed
        self.dual_coef_ = dual
        self.coef_ = coef
        self.n_features_in_ = n_features
        self._y_one_d = one_d
        self.history_ = history
        if "feature_names_in" in state:
            self.feature_names_in_ = state["feature_names_in"].astype(object)
        try:
            self._from_checkpoint(state)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"invalid {self._checkpoint_format} entries: {exc}") from exc

    def _checkpoint_arrays(self):
        """Checkpoint entries particular to this estimator class (name -> plain ndarray)."""
        return {}

    def _from_checkpoint(self, contents):
        """Restore what `_checkpoint_arrays` wrote (and derived attributes) after the common entries are set."""
        self.n_outputs_ = 1 if self._y_one_d else self.coef_.shape[1]
        self._restore_input_scale(contents)

    def save(self, path):
        """Write a portable checkpoint (npz, no pickled code) atomically to `path`; see mfkern.checkpoint."""
        checkpoint.save(self, path)

    @classmethod
    def load(cls, path):
        """Read a checkpoint written by :meth:`save`; never executes code from the file."""
        return checkpoint.load(path, cls)


_MeanFieldBase = MeanFieldBase  # the former private name


class MeanFieldRegressor(ClassNamePrefixFeaturesOutMixin, TransformerMixin, RegressorMixin, MeanFieldBase):
    """Two-layer network trained by two-timescale mean-field Langevin dynamics (MFLD).

    The first layer is N particles w_k = (u_k, b_k), neuron h(x; w) = act(u.x + b), initialised from
    nu = N(0, I/lam_w) and moved by ``n_steps`` Euler-Maruyama steps
    w <- w - eta * grad + sqrt(2 eta lam) xi. The second layer is kept at its closed-form optimum: kernel ridge
    regression with the intrinsic kernel k(x, x') = (1/N) sum_k h(x; w_k) h(x'; w_k) and ridge n*lam*lam_a.
    ``preset="paper"`` is the paper's experiment (Takakura and Suzuki, ICML 2024); the default preset
    differs from it in the input scale and the number of steps (see ``preset``).

    Parameters
    ----------
    n_particles : int or None, default=None
        Number of neurons N (None: the preset's, 2000).
    lam : float or None, default=None
        Temperature and overall regularisation (None: the preset's, 0.004).
    lam_a, lam_w : float or None, default=None
        Second- and first-layer regularisation, effective values lam*lam_a, lam*lam_w (None: the preset's,
        0.25).
    eta : float or None, default=None
        Step size (None: the preset's, 0.2).
    n_steps : int or None, default=None
        Langevin steps per call of ``fit``, with ``warm_start`` steps added to those already done (None: the
        preset's, 500 by default, 10000 for "paper").
    activation : {"tanh", "erf"}, default="tanh"
    label_noise : float, default=0.0
        Level s of the label-noise procedure (docs/theory.md, section 6): each step fits the second layer to
        Y + E, E ~ Uniform[-s, s], and scores with Y. 0 switches it off.
    random_state : int, RandomState, Generator or None, default=None
        Source of the uint64 seed ``seed_`` keying all randomness: an int is used as the seed; None draws one
        from OS entropy; a RandomState/Generator draws one. The initial particles are
        ``np.random.default_rng(seed_).standard_normal((N, d+1)) / sqrt(lam_w)``; the Langevin noise of step t
        is keyed by (seed_, t).
    n_threads : int or None, default=None
        Threads for the core and the BLAS (None: the OpenMP/BLAS defaults). Results do not depend on it.
    log_every : int, default=100
        Diagnostics are logged to ``history_`` every ``log_every`` steps, at step 0 of a fresh fit and at
        the last step.
    verbose : int, default=0
        > 0: a tqdm progress bar when stderr is a terminal (and tqdm is installed), else one line per
        logged step on stderr.
    warm_start : bool, default=False
        Continue from ``particles_``/``n_steps_done_``/``seed_`` of the previous fit (or a loaded checkpoint)
        for another ``n_steps`` steps. ``random_state`` is then ignored.
    callbacks : callable, list of callables or None, default=None
        Called at every logged step as ``callback(estimator, step, diagnostics)`` (diagnostics: a dict with
        the keys of ``history_``); returning True stops training after that step. Not saved in checkpoints.
    block_size : int or None, default=None
        Particles per block in the Gram and feature computations (memory knob; None: automatic).
    solver : {"auto", "dense", "woodbury", "cg"}, default="auto"
        How the second layer is solved each step (see :mod:`mfkern.engine`): "dense" factors the n x n
        system K + ridge I, "woodbury" the N x N particle-space one (no n x n matrix is ever formed,
        diagnostics included), "cg" runs preconditioned conjugate gradients from the previous step's
        solution with products from the stored features (no Gram on most steps), every solve exact to the
        relative residual ``tol``; "auto" picks woodbury when n_particles < n_samples, cg when
        n_samples >= 256 in float64, dense otherwise. The solvers agree to about ``tol``; the dense path's
        particles do not depend on log_every, cg's agree bitwise only for the same log_every (every logged
        step refactors, and the next step reuses that factor).
    tol : float, default=1e-10
        Relative residual ||Y - (K + ridge I) A|| / ||Y|| every column of a cg solve reaches.
    precision : {"float64", "float32"}, default="float64"
        "float32" evaluates features and their products in single precision (faster; sums, factorisations
        and the particles stay float64; trajectories differ from float64 at about 1e-6 relative per step).
    input_scale : "auto", float or None, default=None
        The network sees the inputs X * input_scale_ (in ``fit`` and in every method that takes X).
        "auto" is 0.5/sqrt(n_features) (chosen by measurement): with standardised inputs the initial
        pre-activations u.x + b then have a standard deviation of about sqrt(1.25/lam_w) (2.2 for
        lam_w = 0.25) and few tanh features are saturated. None: the
        preset's ("auto" by default, 1 for "paper"). Standardise the inputs yourself (e.g. a
        ``StandardScaler`` in a ``Pipeline``); ``fit`` warns (:class:`SaturationWarning`) when more than half
        of the initial features are saturated.
    preset : {None, "default", "paper"}, default=None
        Where the hyper-parameters left at None (n_particles, lam, lam_a, lam_w, eta, n_steps, input_scale)
        come from (:data:`PRESETS`; None is "default"). A value given explicitly always wins over the
        preset: ``preset="paper", n_steps=2000`` is the paper's setting with fewer steps. "paper" is the
        paper's experiment exactly (input_scale=1, lam=0.004, lam_a=lam_w=0.25, eta=0.2, N=2000, 10000
        steps); "default" is the same but with input_scale="auto" and 500 steps, chosen by measurement
        (bench/results/defaults.md). Parameters are stored unchanged and resolved in ``fit``.

    Attributes
    ----------
    particles_ : ndarray of shape (n_particles, n_features_in_ + 1)
        First-layer weights (u_k, b_k), one neuron per row.
    dual_coef_ : ndarray of shape (n_samples,) or (n_samples, n_targets)
        A = (K + n lam lam_a I)^{-1} y at ``particles_`` on the training data of the last fit.
    coef_ : ndarray of shape (n_particles,) or (n_particles, n_targets)
        Second-layer weights a_k = H[:, k]^T A; ``predict(X) = (1/N) sum_k a_k h(X; w_k)``.
    n_steps_done_ : int
        Langevin steps done since initialisation (over all warm-started fits).
    seed_ : int
        The uint64 seed keying the initialisation and the noise.
    history_ : dict of lists
        Diagnostics per logged step, keys :data:`HISTORY_KEYS`; ``pandas.DataFrame(est.history_)`` works.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    n_outputs_ : int
        Number of targets T.
    input_scale_ : float
        The factor the inputs are multiplied by (``input_scale`` resolved for n_features_in_).
    """

    def __init__(self, n_particles=None, lam=None, lam_a=None, lam_w=None, eta=None, n_steps=None,
                 activation="tanh", label_noise=0.0, random_state=None, n_threads=None, log_every=100,
                 verbose=0, warm_start=False, callbacks=None, block_size=None, solver="auto",
                 precision="float64", tol=1e-10, input_scale=None, preset=None):
        self.n_particles = n_particles
        self.lam = lam
        self.lam_a = lam_a
        self.lam_w = lam_w
        self.eta = eta
        self.n_steps = n_steps
        self.activation = activation
        self.label_noise = label_noise
        self.random_state = random_state
        self.n_threads = n_threads
        self.log_every = log_every
        self.verbose = verbose
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.block_size = block_size
        self.solver = solver
        self.precision = precision
        self.tol = tol
        self.input_scale = input_scale
        self.preset = preset

    # ------------------------------------------------------------------ scikit-learn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def _check_params(self):
        """Validate the parameters; returns them as a dict of clean values."""
        p = self._check_common_params()
        p["label_noise"] = non_negative(self.label_noise, "label_noise")
        if not isinstance(self.solver, str) or self.solver not in ENGINE_SOLVERS:
            raise ValueError(f"solver must be one of {ENGINE_SOLVERS}, got {self.solver!r}")
        if not isinstance(self.precision, str) or self.precision not in core.PRECISIONS:
            raise ValueError(f"precision must be one of {core.PRECISIONS}, got {self.precision!r}")
        p["solver"], p["precision"] = self.solver, self.precision
        p["tol"] = positive(self.tol, "tol")
        if not p["tol"] < 1:
            raise ValueError(f"tol must be in (0, 1), got {self.tol!r}")
        return p

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, X_val=None, y_val=None, target_direction=None, alignment_target=None):
        """Train the network by ``n_steps`` mean-field Langevin steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        X_val, y_val : array-like, optional
            Validation data, scored at every logged step (``history_["val_mse"]``). Give both or neither.
        target_direction : array-like of shape (n_features,), optional
            Direction u* for the parameter alignment ``history_["parameter_alignment"]``.
        alignment_target : array-like of shape (n_samples,) or (n_samples, k), optional
            What ``history_["kernel_alignment"]`` measures the learned kernel against, e.g. the clean target
            f(X) when y carries label noise. Default: y itself. ``alignment_target_`` records which.

        Returns
        -------
        self

        Raises
        ------
        DivergenceError
            When training diverges; the estimator is left at its last good step.
        KeyboardInterrupt
            On Ctrl-C, after the current step; the estimator is left usable at that step.
        """
        p = self._check_params()
        continuing = bool(self.warm_start) and hasattr(self, "particles_")
        X, Y, one_d, X_val, Y_val, direction = self._fit_data(X, y, X_val, y_val, target_direction, continuing)
        n = X.shape[0]
        target = None
        if alignment_target is not None:
            target, _ = as_targets(alignment_target, "alignment_target", n)
        choose_solver(p["solver"], n, p["n_particles"], p["precision"])  # e.g. cg in float32 is refused here
        seed = self._continuation(p, continuing)
        if not continuing:
            self._warn_if_saturated(X, seed, p)
        core.check_hyper(p["lam"], p["lam_a"], p["lam_w"], n)  # the products (and the ridge) must be representable
        run = TrainingRun(X=X, Y=Y, X_val=X_val, Y_val=Y_val, direction=direction, ridge=n * p["lam"] * p["lam_a"],
                          one_d=one_d, alignment_target=target, **p)
        self._run_training(run, seed, continuing)
        self.alignment_target_ = "y" if target is None else "alignment_target"
        return self

    def _fit_data(self, X, y, X_val, y_val, target_direction, continuing):
        """The validated data of `fit`: X, Y (n, T), whether y was 1-D, X_val, Y_val and the direction; X and
        X_val scaled by input_scale_ (resolved here)."""
        X, y = validate_data(self, X, y, reset=not continuing, dtype=np.float64, multi_output=True,
                              y_numeric=True)
        Y, one_d = as_targets(y, "y", X.shape[0])
        X_val, Y_val = self._check_validation(X_val, y_val, X.shape[1], Y.shape[1])
        X = self._fit_input_scale(X, continuing)
        if X_val is not None:
            X_val = self._scale_inputs(X_val)
        direction = self._check_direction(target_direction, X.shape[1])
        return X, Y, one_d, X_val, Y_val, direction

    def _check_validation(self, X_val, y_val, d, T):
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val must be given together")
        if X_val is None:
            return None, None
        X_val = as_float_array(X_val, "X_val", ndim=(2,))
        if X_val.shape[1] != d:
            raise ValueError(f"X_val must have {d} columns like X, got {X_val.shape[1]}")
        Y_val, _ = as_targets(y_val, "y_val", X_val.shape[0])
        if Y_val.shape[1] != T:
            raise ValueError(f"y_val must have {T} target column(s) like y, got {Y_val.shape[1]}")
        return X_val, Y_val

    # The second layer of the squared loss is solved in C++: the engine advances many steps per call.
    def _new_engine(self, run, W, step):
        """The engine of this fit at particles W (this process's) and step count `step` (the pluggable part of
        the training: a subclass whose particles are sharded over processes supplies an engine whose sums
        over particles go through them, see :meth:`mfkern.engine.Engine.shard`)."""
        return Engine(run.X, run.Y, W, lam=run.lam, lam_a=run.lam_a, lam_w=run.lam_w, eta=run.eta,
                      seed=run.seed, step=step,
                      activation=run.activation, label_noise=run.label_noise, solver=run.solver,
                      precision=run.precision, n_threads=run.n_threads, block_size=run.block_size,
                      tol=run.tol, alignment_target=run.alignment_target)

    def _engine_at(self, run, W, step):
        """The fit's engine (``_new_engine``), made on first use, at particles W and step count `step`."""
        if run.engine is None:
            run.engine = self._new_engine(run, W, step)
        elif run.engine.step != step or not np.array_equal(run.engine.particles, W):
            run.engine.set_particles(W, step)
        return run.engine

    def _advance(self, run, k, good, interrupt):
        """k steps inside the engine (one call, GIL released); Ctrl-C stops it at a step boundary."""
        engine = self._engine_at(run, self._particles, self.n_steps_done_)
        try:
            result = engine.run(k, stop=lambda: interrupt.requested)
        finally:  # also after a second Ctrl-C, which raises out of run at a step boundary
            done = engine.step - self.n_steps_done_
            if done:
                self._particles = engine.particles
                self.n_steps_done_ = engine.step
                if run.progress is not None:
                    run.progress.update(done)
        if result.failed:
            failed_step = engine.step + 1
            if engine.has_current_dual:  # the new particles were not finite; the current ones are good
                good = (engine.step, self._particles, engine.dual)
            elif engine.roll_back():  # the solve failed; the previous particles' dual is known
                self._particles, self.n_steps_done_ = engine.particles, engine.step
                good = (engine.step, self._particles, engine.dual)
            cause = ("K + ridge I is not positive definite" if result.status == "not_positive_definite"
                     else result.message)
            self._diverge(run, good, failed_step, cause)
        return good

    def _diagnostics(self, W, step, run):
        """The history entry at particles W (one factorisation, which the next step reuses), the dual
        coefficients A (n, T) and the second-layer weights (N, T)."""
        engine = self._engine_at(run, W, step)
        try:
            d = engine.diagnostics()
        except core.NotPositiveDefiniteError as exc:
            raise DivergenceError(str(exc), step=step, n_steps_done=None,
                                  cause="K + ridge I is not positive definite") from exc
        if not math.isfinite(d["U"]):
            raise DivergenceError("non-finite U", step=step, n_steps_done=None, cause="the objective U is not finite")
        A, coef = engine.dual, engine.output_weights()
        alignment = d["kernel_alignment"]
        if engine.solver == "woodbury":  # no n x n Gram there: the alignment in particle space
            target = run.Y if run.alignment_target is None else run.alignment_target
            try:
                alignment = core.kernel_alignment_features(W, run.X, target, run.activation, n_threads=run.n_threads)
            except ValueError:  # zero targets or an identically zero kernel
                alignment = math.nan
        return self._finish_diagnostics(W, step, run, d["U"], d["G"], d["dof"], alignment, d["train_mse"], A, coef)

    def _finish_diagnostics(self, W, step, run, U, G, dof, alignment, train_mse, A, coef):
        """The history entry from the second layer's numbers and the sums over particles: the validation
        predictions and the parameter alignment (this process's share of them, summed over the processes)."""
        shards = run.shards
        m = 0 if run.X_val is None else run.X_val.shape[0]
        sums = np.zeros(1 + m * run.Y.shape[1])
        if run.direction is not None:
            sums[0] = core.parameter_alignment(W, run.direction) * shards.share
        if m:
            sums[1:] = (core.network_output(W, coef, run.X_val, activation=run.activation, block_size=run.block_size,
                                            n_threads=run.n_threads) * shards.share).reshape(-1)
        sums = shards.sum(sums)
        val_mse = math.nan if not m else float(np.mean((sums[1:].reshape(m, -1) - run.Y_val) ** 2))
        param_alignment = math.nan if run.direction is None else sums[0]
        diag = dict(step=int(step), U=U, G=G, dof=float(dof), kernel_alignment=float(alignment),
                    train_mse=train_mse, val_mse=val_mse, parameter_alignment=float(param_alignment),
                    wall_time=shards.common(run.wall_offset + time.perf_counter() - run.t0))
        return diag, A, coef

    def _set_second_layer(self, A, coef, run):
        """The base's second layer, and n_outputs_."""
        super()._set_second_layer(A, coef, run)
        self.n_outputs_ = run.Y.shape[1]

    def _postfix(self, diag):
        return dict(G=f"{diag['G']:.4g}", dof=f"{diag['dof']:.1f}", mse=f"{diag['train_mse']:.3g}")

    def _log_line(self, diag):
        return (f"U={diag['U']:.6g} G={diag['G']:.6g} dof={diag['dof']:.2f} "
                f"alignment={diag['kernel_alignment']:.4f} train_mse={diag['train_mse']:.4g} "
                f"val_mse={diag['val_mse']:.4g}")

    # ------------------------------------------------------------------ inference
    def predict(self, X):
        """Network output f(x) = (1/N) sum_k a_k h(x; w_k): shape (m,) or (m, T) like y at fit."""
        out = self._network_output(self._check_X(X))
        return out[:, 0] if self._y_one_d else out


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
