"""MeanFieldClassifier: two-timescale mean-field Langevin dynamics with the logistic loss.

The first layer is a cloud of N particles moved by noisy gradient steps, as in :class:`MeanFieldRegressor`;
the second layer is always at its optimum for the logistic loss, i.e. kernel logistic regression with the
intrinsic kernel of the particles, solved by Newton's method warm-started from the previous step
(:func:`mfkern.losses.solve_second_layer`; docs/theory.md, section 9). The particle drift is the gradient of the
first variation -(lam_a_bar/(2T)) ||a_mu(w)||^2 + (lam_w_bar/2) ||w||^2 with a_mu(w) = h(X; w)^T A,
A = -(1/(n lam_a_bar)) l'(f(X), Y). Each step goes through the training engine (:mod:`mfkern.engine`):
its Gram from the step's features, the second layer solved here, then ``Engine.step_given_dual`` with the
same features and the same counter-based noise (keyed by the seed and the step) as the regressor.
Training shares the regressor's machinery (:class:`mfkern.estimator.MeanFieldBase`): history, callbacks,
deferred Ctrl-C, :class:`DivergenceError` with roll-back, checkpoints, bitwise resume and results independent
of the thread count.

Labels: any two labels (``classes_`` sorted, as scikit-learn does); internally y = +1 for ``classes_[1]``
and -1 for ``classes_[0]``, one network output f, p(classes_[1] | x) = sigmoid(f(x)). With C > 2 classes:

- ``multi_class="multinomial"`` (default): C outputs of one network and the softmax loss
  U = (1/n) sum_j CE(f(x_j), y_j) + (lam_a_bar/2) (1/N) sum_k |a_k|^2 (one loss; the ridge term sums over
  the outputs). The second layer is multinomial kernel logistic regression, solved by truncated Newton from
  the features (:func:`mfkern.losses.solve_multinomial_second_layer`); its optimum is again
  a_mu(w) = h(X; w)^T A with A = (Y - softmax(K A)) / (n lam_a_bar), so the drift is
  ``core.drift_given_dual`` with sqrt(C) A (the core averages its data term over the outputs).
  ``predict_proba`` is the softmax of the outputs.
- ``multi_class="ovr"``: one-vs-rest, C outputs sharing the first layer, output c fitted to +1 for class c
  and -1 for the others (U is the mean of the C binary objectives, which the core's drift averages);
  ``predict_proba`` normalises the C sigmoids to sum to one (as scikit-learn's one-vs-rest logistic
  regression).

``predict`` takes the largest output in both cases.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_expit, logsumexp
from sklearn.base import ClassifierMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import validate_data

from . import core
from ._validation import as_float_array, integer, n_threads_value, positive
from .engine import Engine
from .estimator import DivergenceError, MeanFieldBase, StepFailure, TrainingRun
from .losses import LogisticLoss, NewtonConvergenceError, solve_multinomial_unchecked, solve_second_layer_unchecked

__all__ = ["MeanFieldClassifier", "CLASSIFIER_HISTORY_KEYS", "MULTI_CLASS"]

#: Keys of ``MeanFieldClassifier.history_`` (a dict of equally long lists, one entry per logged step).
CLASSIFIER_HISTORY_KEYS = (
    "step",                 # number of Langevin steps done when the entry was logged (0 = initialisation)
    "U",                    # data term: mean over outputs of (1/n) sum_j l(f_j, y_j) + (lam*lam_a/2) A^T K A
    "G",                    # U + (lam*lam_w/2) mean_k ||w_k||^2
    "dof",                  # tr[K (K + n lam lam_a I)^{-1}], as for the regressor
    "kernel_alignment",     # alignment of the Gram with the +-1 targets (one column per output)
    "train_accuracy",       # fraction of training samples predicted right
    "train_log_loss",       # mean negative log-probability of the true class (predict_proba's probabilities)
    "val_accuracy",         # on X_val, y_val (NaN when not given)
    "val_log_loss",         # on X_val, y_val (NaN when not given)
    "parameter_alignment",  # alignment of the u_k with target_direction (NaN when not given)
    "newton_iterations",    # Newton iterations of the second layer since the previous entry (this one included)
    "wall_time",            # seconds of training so far, cumulated over warm-started fits
)

_LOSS = LogisticLoss()


def _pool_threads(n_threads):
    """Threads of the multinomial solver's products: n_threads, else OMP_NUM_THREADS, else the cores."""
    if n_threads is not None:
        return int(n_threads)
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "").split(",")[0]))
    except ValueError:
        return max(1, os.cpu_count() or 1)


@dataclass
class _ClassifierRun(TrainingRun):
    """A fit of the classifier: the regressor's run plus the labels and the Newton settings."""

    classes: Any = None                # sorted labels
    y_index: Any = None                # (n,) index into classes of each training label
    val_index: Any = None              # (n_val,) index into classes of each validation label
    newton_tol: float = 1e-8
    newton_max_iter: int = 50
    newton_iterations: int = 0         # Newton iterations since the last history entry
    multinomial: bool = False          # softmax loss on T = n_classes outputs (else binary / one-vs-rest)
    solver_threads: int = 1            # threads of the multinomial solver's products (result independent)


#: Conjugate-gradient iterations allowed per Newton iteration of the multinomial second layer.
_MAX_CG_ITER = 200
MULTI_CLASS = ("multinomial", "ovr")


def _log_probabilities(F, multinomial=False):
    """log p(class | x) from the outputs F (m, T): T = 1 binary, else the softmax of F (multinomial) or the
    one-vs-rest sigmoids normalised to sum to one."""
    if F.shape[1] == 1:
        return np.column_stack([log_expit(-F[:, 0]), log_expit(F[:, 0])])
    if multinomial:
        return F - logsumexp(F, axis=1, keepdims=True)
    logs = log_expit(F)
    return logs - logsumexp(logs, axis=1, keepdims=True)


def _predicted_index(F):
    """Index of the predicted class from the outputs F (m, T)."""
    if F.shape[1] == 1:
        return (F[:, 0] > 0).astype(np.intp)
    return np.argmax(F, axis=1)


def _scores(F, index, multinomial=False):
    """(accuracy, log-loss) of the outputs F (m, T) against true class indices."""
    accuracy = float(np.mean(_predicted_index(F) == index))
    log_loss = -float(np.mean(_log_probabilities(F, multinomial)[np.arange(len(index)), index]))
    return accuracy, log_loss


class MeanFieldClassifier(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClassifierMixin, MeanFieldBase):
    """Two-layer network classifier trained by two-timescale mean-field Langevin dynamics (logistic loss).

    The first layer is N particles w_k = (u_k, b_k), neuron h(x; w) = act(u.x + b), initialised from
    nu = N(0, I/lam_w) and moved by ``n_steps`` Euler-Maruyama steps w <- w - eta * grad + sqrt(2 eta lam) xi.
    The second layer is kept at its optimum: kernel logistic regression with the intrinsic kernel
    k(x, x') = (1/N) sum_k h(x; w_k) h(x'; w_k), i.e. the minimiser over second layers a of
    (1/n) sum_j log(1 + exp(-y_j f(x_j))) + (lam*lam_a/2) (1/N) sum_k a_k^2, solved by Newton's method
    warm-started from the previous step. Binary labels use one output; C > 2 classes use C outputs of the
    same network with the softmax loss (``multi_class="multinomial"``) or one-vs-rest (see the module
    docstring). The objective G = U + (lam*lam_w/2) mean_k ||w_k||^2
    reduces to the regressor's for the squared loss (:mod:`mfkern.losses`).

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
    multi_class : {"multinomial", "ovr"}, default="multinomial"
        With more than two classes: one softmax loss over C outputs, or C one-vs-rest binary losses on the
        same particles. Ignored for two classes (one logistic output). The multinomial second layer costs
        preconditioned conjugate-gradient products with the n x N features instead of an n x n
        factorisation per class and Newton iteration.
    newton_tol : float, default=1e-8
        Newton's method stops when max_j |n lam lam_a A_j + l'(f_j, y_j)| <= newton_tol (the optimality
        residual, in units of the loss derivative, which lies in (-1, 1); for the softmax loss
        l' = softmax(f_j) - y_j, per class).
    newton_max_iter : int, default=50
        Newton iterations allowed per solve and output; not converging raises :class:`DivergenceError`
        naming the step.
    random_state : int, RandomState, Generator or None, default=None
        Source of the uint64 seed ``seed_`` keying all randomness, as for :class:`MeanFieldRegressor`: the
        initial particles are ``np.random.default_rng(seed_).standard_normal((N, d+1)) / sqrt(lam_w)``; the
        Langevin noise of step t is keyed by (seed_, t).
    n_threads : int or None, default=None
        Threads for the core and the BLAS (None: the OpenMP/BLAS defaults). Results do not depend on it.
    log_every : int, default=100
        Diagnostics are logged to ``history_`` every ``log_every`` steps, at step 0 of a fresh fit and at
        the last step. Logging does not change the trajectory.
    verbose : int, default=0
        > 0: a tqdm progress bar when stderr is a terminal (and tqdm is installed), else one line per
        logged step on stderr.
    warm_start : bool, default=False
        Continue from ``particles_``/``n_steps_done_``/``seed_`` (and the second layer, as Newton's start) of
        the previous fit or a loaded checkpoint for another ``n_steps`` steps; the labels must have the same
        classes. ``random_state`` is then ignored.
    callbacks : callable, list of callables or None, default=None
        Called at every logged step as ``callback(estimator, step, diagnostics)`` (diagnostics: a dict with
        the keys of ``history_``); returning True stops training after that step. Not saved in checkpoints.
    block_size : int or None, default=None
        Particles per block in the Gram and feature computations (memory knob; None: automatic).
    precision : {"float64", "float32"}, default="float64"
        "float32" evaluates the features, the Gram and the drift in single precision (faster; the second
        layer is still solved in float64 on the single-precision features, exactly to ``newton_tol``, and the
        particles stay float64; trajectories differ from float64 by about 1e-7 to 1e-6 relative). Changing it
        on a warm start continues the run, but not bitwise as one fit would.
    input_scale : "auto", float or None, default=None
        The network sees the inputs X * input_scale_ (in ``fit`` and in every method that takes X).
        "auto" is 0.5/sqrt(n_features) (chosen by measurement): with standardised inputs the initial
        pre-activations u.x + b then have a standard deviation of about sqrt(1.25/lam_w) (2.2 for
        lam_w = 0.25) and few tanh features are saturated. None: the
        preset's ("auto" by default, 1 for "paper"). Standardise the inputs yourself (e.g. a
        ``StandardScaler`` in a ``Pipeline``); ``fit`` warns (:class:`mfkern.estimator.SaturationWarning`)
        when more than half of the initial features are saturated.
    preset : {None, "default", "paper"}, default=None
        Where the hyper-parameters left at None (n_particles, lam, lam_a, lam_w, eta, n_steps, input_scale)
        come from (:data:`mfkern.estimator.PRESETS`; None is "default"). A value given explicitly always wins over the
        preset: ``preset="paper", n_steps=2000`` is the paper's setting with fewer steps. "paper" is the
        paper's experiment exactly (input_scale=1, lam=0.004, lam_a=lam_w=0.25, eta=0.2, N=2000, 10000
        steps); "default" is the same but with input_scale="auto" and 500 steps, chosen by measurement
        (bench/results/defaults.md). Parameters are stored unchanged and resolved in ``fit``.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The labels, sorted.
    particles_ : ndarray of shape (n_particles, n_features_in_ + 1)
        First-layer weights (u_k, b_k), one neuron per row.
    dual_coef_ : ndarray of shape (n_samples,) (binary) or (n_samples, n_classes)
        A = -(1/(n lam lam_a)) l'(f(X), Y) at ``particles_`` on the training data of the last fit.
    coef_ : ndarray of shape (n_particles,) (binary) or (n_particles, n_classes)
        Second-layer weights a_k = H[:, k]^T A; ``decision_function(X) = (1/N) sum_k a_k h(X; w_k)``.
    n_steps_done_ : int
        Langevin steps done since initialisation (over all warm-started fits).
    seed_ : int
        The uint64 seed keying the initialisation and the noise.
    history_ : dict of lists
        Diagnostics per logged step, keys :data:`CLASSIFIER_HISTORY_KEYS`.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when X had string column names.
    input_scale_ : float
        The factor the inputs are multiplied by (``input_scale`` resolved for n_features_in_).
    """

    _history_keys = CLASSIFIER_HISTORY_KEYS
    _checkpoint_format = "mfkern.MeanFieldClassifier"

    def __init__(self, n_particles=None, lam=None, lam_a=None, lam_w=None, eta=None, n_steps=None,
                 activation="tanh", multi_class="multinomial", newton_tol=1e-8, newton_max_iter=50,
                 random_state=None, n_threads=None, log_every=100, verbose=0, warm_start=False, callbacks=None,
                 block_size=None, precision="float64", input_scale=None, preset=None):
        self.n_particles = n_particles
        self.lam = lam
        self.lam_a = lam_a
        self.lam_w = lam_w
        self.eta = eta
        self.n_steps = n_steps
        self.activation = activation
        self.multi_class = multi_class
        self.newton_tol = newton_tol
        self.newton_max_iter = newton_max_iter
        self.random_state = random_state
        self.n_threads = n_threads
        self.log_every = log_every
        self.verbose = verbose
        self.warm_start = warm_start
        self.callbacks = callbacks
        self.block_size = block_size
        self.precision = precision
        self.input_scale = input_scale
        self.preset = preset

    # ------------------------------------------------------------------ scikit-learn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.classifier_tags.multi_label = False
        return tags

    def _check_params(self):
        """Validate the parameters; returns them as a dict of clean values."""
        p = self._check_common_params()
        p["newton_tol"] = positive(self.newton_tol, "newton_tol")
        p["newton_max_iter"] = integer(self.newton_max_iter, "newton_max_iter", minimum=1)
        if not isinstance(self.multi_class, str) or self.multi_class not in MULTI_CLASS:
            raise ValueError(f"multi_class must be one of {MULTI_CLASS}, got {self.multi_class!r}")
        if not isinstance(self.precision, str) or self.precision not in core.PRECISIONS:
            raise ValueError(f"precision must be one of {core.PRECISIONS}, got {self.precision!r}")
        p["precision"] = self.precision
        return p

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, X_val=None, y_val=None, target_direction=None):
        """Train the network by ``n_steps`` mean-field Langevin steps.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
            Labels of at least two classes (numbers, strings or booleans).
        X_val, y_val : array-like, optional
            Validation data, scored at every logged step (``history_["val_accuracy"]``,
            ``history_["val_log_loss"]``). Give both or neither; y_val's labels must be among y's.
        target_direction : array-like of shape (n_features,), optional
            Direction u* for the parameter alignment ``history_["parameter_alignment"]``.

        Returns
        -------
        self

        Raises
        ------
        DivergenceError
            When training diverges (non-finite particles, or Newton's method for the second layer not
            converging); the estimator is left at its last good step.
        KeyboardInterrupt
            On Ctrl-C, after the current step; the estimator is left usable at that step.
        """
        p = self._check_params()
        continuing = bool(self.warm_start) and hasattr(self, "particles_")
        X, y = validate_data(self, X, y, reset=not continuing, dtype=np.float64)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y must hold samples of at least 2 classes to train a classifier; got 1 class "
                             f"({classes[0]!r})")
        if continuing and not np.array_equal(classes, self.classes_):
            raise ValueError(f"y has classes {list(classes)} but the model being continued (warm_start=True) was "
                             f"fitted with classes {list(self.classes_)}")
        n, d = X.shape
        X = self._fit_input_scale(X, continuing)
        multinomial = self.multi_class == "multinomial" and len(classes) > 2
        if continuing and multinomial != bool(getattr(self, "_multinomial", False)):
            raise ValueError(f"multi_class={self.multi_class!r} differs from the loss of the model being continued "
                             "(warm_start=True)")
        Y = self._one_hot(y_index, len(classes)) if multinomial else self._signed_targets(y_index, len(classes))
        X_val, val_index = self._check_validation(X_val, y_val, d, classes)
        if X_val is not None:
            X_val = self._scale_inputs(X_val)
        direction = self._check_direction(target_direction, d)
        seed = self._continuation(p, continuing)
        if not continuing:
            self._warn_if_saturated(X, seed, p)
        core.check_hyper(p["lam"], p["lam_a"], p["lam_w"], n)  # the products (and the ridge) must be representable
        run = _ClassifierRun(X=X, Y=Y, X_val=X_val, Y_val=None, direction=direction, label_noise=0.0,
                             ridge=n * p["lam"] * p["lam_a"], one_d=Y.shape[1] == 1, classes=classes,
                             y_index=y_index, val_index=val_index, multinomial=multinomial,
                             solver_threads=_pool_threads(p["n_threads"]), **p)
        if continuing and self._dual_2d().shape == Y.shape:
            run.warm = self._dual_2d()  # Newton restarts from the second layer it left (bitwise resume)
        self._run_training(run, seed, continuing)
        return self

    @staticmethod
    def _one_hot(y_index, n_classes):
        """One-hot targets (n, n_classes) of the multinomial loss."""
        Y = np.zeros((len(y_index), n_classes))
        Y[np.arange(len(y_index)), y_index] = 1.0
        return Y

    @staticmethod
    def _signed_targets(y_index, n_classes):
        """The +-1 targets (n, T): T = 1 (+1 for classes_[1]) when binary, else one-vs-rest columns."""
        if n_classes == 2:
            return np.where(y_index == 1, 1.0, -1.0)[:, None]
        Y = np.full((len(y_index), n_classes), -1.0)
        Y[np.arange(len(y_index)), y_index] = 1.0
        return Y

    def _check_validation(self, X_val, y_val, d, classes):
        if (X_val is None) != (y_val is None):
            raise ValueError("X_val and y_val must be given together")
        if X_val is None:
            return None, None
        X_val = as_float_array(X_val, "X_val", ndim=(2,))
        if X_val.shape[1] != d:
            raise ValueError(f"X_val must have {d} columns like X, got {X_val.shape[1]}")
        y_val = np.asarray(y_val)
        if y_val.ndim != 1 or y_val.shape[0] != X_val.shape[0]:
            raise ValueError(f"y_val must be 1-D with {X_val.shape[0]} labels (one per row of X_val), "
                             f"got shape {y_val.shape}")
        unknown = np.setdiff1d(y_val, classes)
        if unknown.size:
            raise ValueError(f"y_val has labels {list(unknown[:5])} that are not among y's classes {list(classes)}")
        return X_val, np.searchsorted(classes, y_val)

    def _solve_multinomial(self, engine, run):
        """The multinomial second layer at the engine's particles from its stored features (no n x n Gram),
        from run.warm; updates run.warm and the count. Returns (A, f(X) = K A, U)."""
        H, H32 = engine.features(divide_by=math.sqrt(engine.n_particles), with_float32=True)
        solution = solve_multinomial_unchecked(H, run.Y, run.ridge, run.warm, run.newton_tol, run.newton_max_iter,
                                               _MAX_CG_ITER, run.solver_threads, features32=H32)
        run.warm = solution.A
        run.newton_iterations += solution.iterations
        return solution.A, solution.outputs, solution.objective

    def _solve(self, K, run):
        """Newton's method for the second layer at Gram K, from run.warm; updates run.warm and the count."""
        # The public solve_second_layer without its input checks: K comes from the engine and Y from fit.
        A, F, U, iterations, _ = solve_second_layer_unchecked(K, run.Y, _LOSS, run.ridge, run.warm, run.newton_tol, run.newton_max_iter)
        run.warm = A
        run.newton_iterations += iterations
        return A, F, U

    def _engine_at(self, run, W, step):
        """The fit's training engine (dense: the features of a step are computed once, for the Gram and the
        drift), at particles W and step count `step`. The second layer is solved here, in Python."""
        if run.engine is None:
            run.engine = Engine(run.X, run.Y, W, lam=run.lam, lam_a=run.lam_a, lam_w=run.lam_w, eta=run.eta,
                                seed=run.seed, step=step, activation=run.activation, solver="dense",
                                precision=run.precision, n_threads=run.n_threads, block_size=run.block_size)
        elif run.engine.step != step or not np.array_equal(run.engine.particles, W):
            run.engine.set_particles(W, step)
        return run.engine

    def _step(self, run, W, step):
        """One Langevin step with the logistic second layer: (new particles, A at W, U at W)."""
        engine = self._engine_at(run, W, step)
        try:
            if run.multinomial:
                A, _, U = self._solve_multinomial(engine, run)
            else:
                A, _, U = self._solve(engine.gram(), run)
        except NewtonConvergenceError as exc:
            raise StepFailure(str(exc)) from exc
        if not engine.step_given_dual(self._drift_dual(A, run)):
            raise StepFailure("the particles became non-finite")
        return engine.particles, A, U

    @staticmethod
    def _drift_dual(A, run):
        """The dual handed to the core's drift, which averages its data term over the T outputs: right for
        one-vs-rest (U is the mean of T binary objectives); the multinomial U is one loss whose ridge term
        sums over the outputs, i.e. T times that average, hence sqrt(T) A (the drift is quadratic in A)."""
        return A * math.sqrt(A.shape[1]) if run.multinomial else A

    def _diagnostics(self, W, step, run):
        """The history entry at particles W, the dual coefficients A (n, T) and the second-layer weights (N, T)."""
        X, Y = run.X, run.Y
        engine = self._engine_at(run, W, step)
        K = engine.gram()
        try:
            A, F, U = self._solve_multinomial(engine, run) if run.multinomial else self._solve(K, run)
        except NewtonConvergenceError as exc:
            raise DivergenceError(str(exc), step=step, n_steps_done=None, cause=str(exc)) from exc
        if not math.isfinite(U):
            raise DivergenceError("non-finite U", step=step, n_steps_done=None, cause="the objective U is not finite")
        G = U + run.lam * run.lam_w / 2 * float(np.einsum("kl,kl->", W, W)) / W.shape[0]
        # K is the engine's Gram and the ridge was validated in fit: the unchecked forms skip two symmetry checks
        dof = core.degrees_of_freedom_unchecked(K, run.ridge, n_threads_value(run.n_threads))
        with core.thread_limits(1):  # numpy's threaded reductions would make the history depend on n_threads
            # with the +-1 coding of the classes for either loss, so alignments are comparable
            alignment = core.kernel_alignment_unchecked(K, 2 * Y - 1 if run.multinomial else Y) if np.any(K) else math.nan
        train_accuracy, train_log_loss = _scores(F, run.y_index, run.multinomial)
        coef = core.output_weights(W, X, A, activation=run.activation, block_size=run.block_size,
                                   n_threads=run.n_threads)
        val_accuracy = val_log_loss = math.nan
        if run.X_val is not None:
            F_val = core.network_output(W, coef, run.X_val, activation=run.activation, block_size=run.block_size,
                                        n_threads=run.n_threads)
            val_accuracy, val_log_loss = _scores(F_val, run.val_index, run.multinomial)
        param_alignment = math.nan if run.direction is None else core.parameter_alignment(W, run.direction)
        diag = dict(step=int(step), U=U, G=G, dof=float(dof), kernel_alignment=float(alignment),
                    train_accuracy=train_accuracy, train_log_loss=train_log_loss, val_accuracy=val_accuracy,
                    val_log_loss=val_log_loss, parameter_alignment=float(param_alignment),
                    newton_iterations=float(run.newton_iterations),
                    wall_time=run.wall_offset + time.perf_counter() - run.t0)
        run.newton_iterations = 0
        return diag, A, coef

    def _set_second_layer(self, A, coef, run):
        """The base's second layer, the classes and the loss."""
        super()._set_second_layer(A, coef, run)
        self.classes_ = run.classes
        self._multinomial = run.multinomial

    def _divergence_hint(self, run, cause):
        if "Newton" in cause:
            return (f"raise newton_max_iter (now {run.newton_max_iter}) or newton_tol (now {run.newton_tol:g}), or "
                    f"lam_a (a larger ridge n*lam*lam_a = {run.ridge:.3g} conditions the solve better); a smaller "
                    f"step size eta = {run.eta:g} keeps the warm start closer")
        return super()._divergence_hint(run, cause)

    def _postfix(self, diag):
        return dict(G=f"{diag['G']:.4g}", dof=f"{diag['dof']:.1f}", acc=f"{diag['train_accuracy']:.3f}")

    def _log_line(self, diag):
        return (f"U={diag['U']:.6g} G={diag['G']:.6g} dof={diag['dof']:.2f} "
                f"alignment={diag['kernel_alignment']:.4f} train_accuracy={diag['train_accuracy']:.4f} "
                f"train_log_loss={diag['train_log_loss']:.4g} val_accuracy={diag['val_accuracy']:.4f} "
                f"newton_iterations={diag['newton_iterations']:.0f}")

    # ------------------------------------------------------------------ inference
    def decision_function(self, X):
        """Network outputs f(x) = (1/N) sum_k a_k h(x; w_k): shape (m,) when binary (> 0 means
        ``classes_[1]``), else (m, n_classes) (one-vs-rest scores)."""
        F = self._network_output(self._check_X(X))
        return F[:, 0] if self._y_one_d else F

    def predict(self, X):
        """Predicted labels: ``classes_[1]`` where f(x) > 0 (binary), else the class of the largest output."""
        F = self._network_output(self._check_X(X))
        return self.classes_[_predicted_index(F)]

    def predict_proba(self, X):
        """Class probabilities (m, n_classes): [1 - sigmoid(f), sigmoid(f)] when binary, else the one-vs-rest
        sigmoids normalised to sum to one."""
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`, computed without underflow."""
        F = self._network_output(self._check_X(X))
        return _log_probabilities(F, getattr(self, "_multinomial", False))

    # ------------------------------------------------------------------ checkpoints
    def _checkpoint_arrays(self):
        classes = self.classes_
        as_object = classes.dtype == object
        plain = np.asarray(classes.tolist()) if as_object else np.asarray(classes)
        if plain.dtype.hasobject or plain.ndim != 1:
            raise TypeError(f"classes_ {classes!r} cannot be stored in a checkpoint (mixed or non-scalar labels)")
        return {"classes": plain, "classes_object": np.array(as_object),
                "multinomial": np.array(bool(getattr(self, "_multinomial", False)))}

    def _from_checkpoint(self, contents):
        classes = contents["classes"]
        if classes.ndim != 1 or len(classes) < 2:
            raise ValueError(f"classes must be a 1-D array of at least 2 labels, got shape {classes.shape}")
        if bool(contents["classes_object"][()]):
            classes = classes.astype(object)
        outputs = 1 if self._y_one_d else self.coef_.shape[1]
        if outputs != (1 if len(classes) == 2 else len(classes)):
            raise ValueError(f"{len(classes)} classes do not match a second layer with {outputs} output(s)")
        self.classes_ = classes
        self._restore_input_scale(contents)
        # Checkpoints written before the multinomial loss existed hold one-vs-rest models (mfkern.checkpoint
        # upgrades them with multinomial = False): continue them so.
        multinomial = bool(contents["multinomial"][()])
        if multinomial and len(classes) < 3:
            raise ValueError("a multinomial second layer needs at least 3 classes")
        self._multinomial = multinomial
        if len(classes) > 2 and not multinomial:
            self.multi_class = "ovr"
