"""Shared pieces of the experiments: data, baselines, the MFLD runner, seeds, parallel runs, result files.

Data (:func:`make_task`)
    ``"product"``: x ~ N(0, I_d), f(x) = x1*x2 (the paper's task; relevant subspace span(e1, e2)).
    ``"parity"``: x uniform on the hypercube {-1, 1}^d, f(x) = x1*x2*...*xk (a k-sparse parity; span(e1..ek)).
    ``"single-index"``: x ~ N(0, I_d), f(x) = (z^2 - 1)/sqrt(2) with z = e1.x (unit variance; span(e1)).
    Training labels are f(x) + Uniform[-sigma, sigma] noise; test error is always measured against the clean
    f on a fresh test set.

Baselines (all without intercept, like the network)
    * :func:`init_kernel_krr` -- kernel ridge regression with the initial intrinsic kernel k_{mu_0} of the very
      particles MFLD starts from, ridge n*lam*lam_a: exactly the MFLD predictor at step 0 (the lazy /
      NNGP-type baseline). ``cv=True`` chooses the ridge by 5-fold cross-validation instead.
    * :func:`rbf_krr_cv` -- scikit-learn ``GridSearchCV(KernelRidge(kernel="rbf"))`` over bandwidth and ridge.
    * :func:`random_features` -- the random-features model: first layer frozen at a draw from nu, second layer
      fitted by ridge regression on the features (1/sqrt M) h(x; w_k). With M = N, the same draw and ridge
      n*lam*lam_a this is *identical* to :func:`init_kernel_krr` (the two-timescale second layer on frozen
      features is kernel ridge regression with k_{mu_0}); so the experiments report it with M = 4N fresh
      features and the ridge chosen by leave-one-out cross-validation (scikit-learn ``RidgeCV``), i.e. the
      best a frozen random first layer of that width can do.

MFLD (:func:`run_mfld`)
    Trains :class:`mfkern.MeanFieldRegressor` and records, at every logged step, the test MSE against the
    clean target, the kernel alignment of the Gram with the clean target f(X_train), the degrees of freedom
    and the parameter alignment with the relevant subspace (:func:`subspace_alignment`).
"""
from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from .. import core
from .._validation import as_float_array, integer, non_negative, positive

__all__ = [
    "TASKS",
    "Task",
    "MFLDConfig",
    "make_task",
    "derive_seed",
    "initial_particles",
    "subspace_alignment",
    "init_kernel_krr",
    "rbf_krr_cv",
    "rbf_cv_scores",
    "random_features",
    "run_mfld",
    "run_baselines",
    "map_runs",
    "run_case",
    "SETTINGS",
    "mfld_config",
    "metadata",
    "write_json",
    "markdown_table",
    "mean_std",
    "parse_seeds",
    "run_grid",
    "stack",
    "claim",
    "claims_markdown",
    "write_outputs",
    "pyplot",
    "band",
    "RBF_GAMMA_FACTORS",
    "RBF_ALPHAS",
]

TASKS = ("product", "parity", "single-index")

#: RBF bandwidth grid, as multiples of 1/d (gamma = factor/d): from nearly polynomial to very local.
RBF_GAMMA_FACTORS = tuple(np.logspace(-3, 0, 7))
#: Ridge grid of the cross-validated baselines.
RBF_ALPHAS = tuple(np.logspace(-8, 0, 9))


# ---------------------------------------------------------------------------------------------- seeds, data
def derive_seed(base, *keys):
    """A uint64 seed derived from an integer `base` and any number of int/str `keys` (numpy SeedSequence).

    Different keys give independent streams; the same keys give the same seed on every machine.
    """
    base = integer(base, "base", minimum=0)
    words = [base]
    for key in keys:
        if isinstance(key, str):
            words.append(zlib.crc32(key.encode()))
        else:
            words.append(integer(key, "key", minimum=0))
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint64)
    return int(state[0])


@dataclass
class Task:
    """One regression problem: training data, a clean test set, and the relevant subspace.

    Attributes
    ----------
    name : str
        One of :data:`TASKS`.
    X, y : ndarray
        Training inputs (n, d) and noisy labels (n,).
    f_train : ndarray
        Clean target at the training inputs (n,).
    X_test, f_test : ndarray
        Test inputs (m, d) and the clean target there (m,).
    subspace : ndarray
        Orthonormal rows spanning the directions the target depends on, shape (r, d).
    params : dict
        The generator's arguments.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    f_train: np.ndarray
    X_test: np.ndarray
    f_test: np.ndarray
    subspace: np.ndarray
    params: dict = field(default_factory=dict)


def _target(name, X, k):
    if name == "product":
        return X[:, 0] * X[:, 1]
    if name == "parity":
        return np.prod(X[:, :k], axis=1)
    z = X[:, 0]
    return (z * z - 1.0) / math.sqrt(2.0)


def make_task(name, n, d, *, seed, sigma=0.0, n_test=2000, k=2):
    """Draw a task of :data:`TASKS` (see the module docstring): n training points in dimension d.

    Parameters
    ----------
    name : str
    n, d : int
        Training size and input dimension (d >= 2, and d >= k for the parity).
    seed : int
        Seed of the data (training and test sets).
    sigma : float
        Label noise: Uniform[-sigma, sigma] added to the training labels.
    n_test : int
        Size of the clean test set.
    k : int
        Order of the parity (``name="parity"`` only).
    """
    if name not in TASKS:
        raise ValueError(f"name must be one of {TASKS}, got {name!r}")
    n = integer(n, "n", minimum=2)
    d = integer(d, "d", minimum=2)
    k = integer(k, "k", minimum=1, maximum=d)
    n_test = integer(n_test, "n_test", minimum=1)
    sigma = non_negative(sigma, "sigma")
    rng = np.random.default_rng(derive_seed(seed, "data", name, n, d, k))
    if name == "parity":
        X = rng.choice([-1.0, 1.0], size=(n, d))
        X_test = rng.choice([-1.0, 1.0], size=(n_test, d))
        r = k
    else:
        X = rng.standard_normal((n, d))
        X_test = rng.standard_normal((n_test, d))
        r = 2 if name == "product" else 1
    f_train, f_test = _target(name, X, k), _target(name, X_test, k)
    y = f_train + (rng.uniform(-sigma, sigma, n) if sigma > 0 else 0.0)
    subspace = np.eye(d)[:r]
    params = dict(name=name, n=n, d=d, sigma=sigma, n_test=n_test, seed=int(seed))
    if name == "parity":
        params["k"] = k
    return Task(name, X, y, f_train, X_test, f_test, subspace, params)


def initial_particles(n_particles, d, lam_w, seed):
    """The initial particles of :class:`mfkern.MeanFieldRegressor` with ``random_state=seed``: draws from
    nu = N(0, I/lam_w), shape (n_particles, d+1)."""
    W = np.random.default_rng(seed).standard_normal((n_particles, d + 1))
    return W / math.sqrt(lam_w)


def subspace_alignment(W, subspace):
    """Parameter alignment with a subspace: mean over particles of ||P u_k||^2 / ||u_k||^2 (0 for u_k = 0).

    P projects onto the span of the rows of `subspace` (orthonormalised here); with one row this is
    :func:`mfkern.core.parameter_alignment`. W is (N, d+1) (the bias column is ignored) or (N, d). For
    isotropic u_k the expected value is r/d (r = dimension of the subspace).
    """
    W = as_float_array(W, "W", ndim=(2,))
    S = as_float_array(subspace, "subspace", ndim=(1, 2))
    S = S.reshape(-1, S.shape[-1])
    d = S.shape[1]
    if W.shape[1] not in (d, d + 1):
        raise ValueError(f"W must have d = {d} or d+1 = {d + 1} columns for a subspace in R^{d}, got {W.shape[1]}")
    Q, R = np.linalg.qr(S.T)  # orthonormal basis of the row span
    if np.min(np.abs(np.diag(R))) <= 1e-12 * max(1.0, np.abs(R).max()):
        raise ValueError("subspace must have linearly independent rows")
    U = W[:, :d]
    sq = np.einsum("kl,kl->k", U, U)
    proj = U @ Q
    num = np.einsum("kl,kl->k", proj, proj)
    ratio = np.divide(num, sq, out=np.zeros_like(sq), where=sq > 0)
    return float(ratio.mean())


# ---------------------------------------------------------------------------------------------- baselines
def _mse(pred, truth):
    return float(np.mean((np.asarray(pred) - np.asarray(truth)) ** 2))


def init_kernel_krr(W0, X, y, X_test, *, ridge=None, cv=False, activation="tanh", alphas=RBF_ALPHAS):
    """Kernel ridge regression with the intrinsic kernel of the particles W0 (scikit-learn, precomputed).

    Parameters
    ----------
    W0 : ndarray (N, d+1)
        The particles (for the lazy baseline: MFLD's initial particles).
    X, y, X_test : ndarray
        Training inputs and labels; test inputs.
    ridge : float
        The ridge added to the Gram's diagonal, n*lam*lam_a for MFLD's second layer (needed unless `cv`).
    cv : bool
        Choose the ridge from `alphas` by 5-fold cross-validation instead.

    Returns
    -------
    dict with ``pred`` (predictions at X_test) and ``ridge`` (the ridge used).
    """
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV

    K = core.gram(W0, X, activation=activation)
    K_test = core.gram(W0, X_test, X, activation=activation)
    if cv:
        search = GridSearchCV(KernelRidge(kernel="precomputed"), {"alpha": list(alphas)}, cv=5,
                              scoring="neg_mean_squared_error")
        search.fit(K, y)
        model, ridge = search.best_estimator_, float(search.best_params_["alpha"])
    else:
        if ridge is None:
            raise TypeError("ridge must be given when cv=False")
        ridge = positive(ridge, "ridge")
        model = KernelRidge(alpha=ridge, kernel="precomputed").fit(K, y)
    return dict(pred=model.predict(K_test), ridge=ridge)


def _rbf_gram(A, B, gamma):
    sq = (np.einsum("ij,ij->i", A, A)[:, None] + np.einsum("ij,ij->i", B, B)[None, :] - 2.0 * A @ B.T)
    return np.exp(-gamma * np.maximum(sq, 0.0))


def rbf_cv_scores(X, y, gammas, alphas, n_splits=5):
    """Mean 5-fold CV mean squared error of RBF kernel ridge regression for every (alpha, gamma) pair.

    The folds are scikit-learn's ``KFold(n_splits)`` (no shuffling), i.e. those of ``GridSearchCV(cv=5)``.
    For each bandwidth and fold one eigendecomposition of the training Gram gives the predictions for all
    ridges at once (exact, and immune to the ill-conditioning of nearly flat kernels at tiny ridges).
    Returns an array of shape (len(alphas), len(gammas)).
    """
    from sklearn.model_selection import KFold

    alphas = np.asarray(alphas, dtype=float)
    scores = np.zeros((alphas.size, len(gammas)))
    for train, test in KFold(n_splits).split(X):
        for j, gamma in enumerate(gammas):
            K = _rbf_gram(X[train], X[train], gamma)
            K_cross = _rbf_gram(X[test], X[train], gamma)
            evals, evecs = np.linalg.eigh(K)
            evals = np.maximum(evals, 0.0)  # PSD up to rounding
            proj = evecs.T @ y[train]
            cross = K_cross @ evecs
            for i, alpha in enumerate(alphas):
                pred = cross @ (proj / (evals + alpha))
                scores[i, j] += np.mean((pred - y[test]) ** 2) / n_splits
    return scores


def rbf_krr_cv(X, y, X_test, *, gamma_factors=RBF_GAMMA_FACTORS, alphas=RBF_ALPHAS):
    """RBF kernel ridge regression with bandwidth gamma = factor/d and ridge chosen by 5-fold CV.

    The same selection as ``GridSearchCV(KernelRidge(kernel="rbf"), {"alpha": alphas, "gamma": gammas},
    cv=5, scoring="neg_mean_squared_error")`` (scores by :func:`rbf_cv_scores`, ties to the first grid point
    in scikit-learn's order), then scikit-learn's ``KernelRidge`` refitted on all of (X, y) with the chosen
    values. Returns a dict with ``pred``, ``gamma``, ``alpha`` and ``cv_mse`` (the best mean CV error).
    """
    from sklearn.kernel_ridge import KernelRidge

    d = X.shape[1]
    gammas = [float(g) / d for g in gamma_factors]
    alphas = [float(a) for a in alphas]
    scores = rbf_cv_scores(X, y, gammas, alphas)
    i, j = np.unravel_index(np.argmin(scores), scores.shape)  # row-major = ParameterGrid order (alpha, gamma)
    model = KernelRidge(kernel="rbf", alpha=alphas[i], gamma=gammas[j]).fit(X, y)
    return dict(pred=model.predict(X_test), gamma=gammas[j], alpha=alphas[i], cv_mse=float(scores[i, j]))


def random_features(X, y, X_test, *, n_features, lam_w, seed, ridge=None, alphas=RBF_ALPHAS,
                    activation="tanh", W=None):
    """The random-features model: frozen first layer from nu = N(0, I/lam_w), ridge-trained second layer.

    Features are (1/sqrt M) h(x; w_k) for M = `n_features` particles (or the given `W`), so the model's kernel
    is the intrinsic kernel of that draw. With a fixed `ridge` the second layer minimises
    ||Phi a - y||^2 + ridge ||a||^2, which makes the predictions equal to :func:`init_kernel_krr` with the same
    particles and ridge. With ``ridge=None`` the ridge is chosen from `alphas` by efficient leave-one-out CV
    (scikit-learn ``RidgeCV``).

    Returns a dict with ``pred``, ``ridge`` and ``n_features``.
    """
    from sklearn.linear_model import Ridge, RidgeCV

    d = X.shape[1]
    if W is None:
        W = initial_particles(integer(n_features, "n_features", minimum=1), d, positive(lam_w, "lam_w"), seed)
    M = W.shape[0]
    scale = 1.0 / math.sqrt(M)
    Phi = core.features(W, X, activation) * scale
    Phi_test = core.features(W, X_test, activation) * scale
    if ridge is None:
        model = RidgeCV(alphas=list(alphas), fit_intercept=False).fit(Phi, y)
        ridge = float(model.alpha_)
    else:
        model = Ridge(alpha=positive(ridge, "ridge"), fit_intercept=False, solver="cholesky").fit(Phi, y)
    return dict(pred=model.predict(Phi_test), ridge=float(ridge), n_features=int(M))


def run_baselines(task, W0, *, lam, lam_a, lam_w, seed, input_scale=1.0, rf_factor=4, which=None,
                  activation="tanh"):
    """Test MSE (against the clean target) of the fixed-kernel baselines on `task`.

    Keys of the returned dict (each a dict with ``test_mse`` and the chosen settings): ``init_kernel``
    (ridge n*lam*lam_a, MFLD's step-0 predictor), ``init_kernel_cv`` (ridge by CV), ``rbf_cv`` and
    ``random_features`` (M = rf_factor*N fresh features, ridge by leave-one-out CV). `which` restricts the
    set. The network's baselines see the inputs scaled by `input_scale` like MFLD; the RBF sees them raw
    (its CV bandwidth makes it scale-free).
    """
    which = ("init_kernel", "init_kernel_cv", "rbf_cv", "random_features") if which is None else tuple(which)
    X, X_test = task.X * input_scale, task.X_test * input_scale
    n = X.shape[0]
    out = {}
    for name in which:
        t0 = time.perf_counter()
        if name == "init_kernel":
            res = init_kernel_krr(W0, X, task.y, X_test, ridge=n * lam * lam_a, activation=activation)
        elif name == "init_kernel_cv":
            res = init_kernel_krr(W0, X, task.y, X_test, cv=True, activation=activation)
        elif name == "rbf_cv":
            res = rbf_krr_cv(task.X, task.y, task.X_test)
        elif name == "random_features":
            res = random_features(X, task.y, X_test, n_features=rf_factor * W0.shape[0], lam_w=lam_w,
                                  seed=derive_seed(seed, "random-features"), activation=activation)
        else:
            raise ValueError(f"unknown baseline {name!r}")
        pred = res.pop("pred")
        res["test_mse"] = _mse(pred, task.f_test)
        res["wall_time"] = time.perf_counter() - t0
        out[name] = res
    return out


# ---------------------------------------------------------------------------------------------- MFLD
@dataclass
class MFLDConfig:
    """Hyper-parameters of one MFLD run (defaults: the paper's, with a smaller N and fewer steps).

    ``input_scale`` multiplies the inputs the network sees (1/sqrt(d) puts the pre-activations u.x + b of the
    initial particles at unit scale per coordinate instead of deep in tanh's saturation; see demo.py).
    """

    n_particles: int = 2000
    n_steps: int = 10000
    lam: float = 0.004
    lam_a: float = 0.25
    lam_w: float = 0.25
    eta: float = 0.2
    label_noise: float = 0.0
    input_scale: float = 1.0
    log_every: int = 100
    activation: str = "tanh"

    def as_dict(self):
        """The configuration as a plain dict (for JSON)."""
        return dict(self.__dict__)


#: Named hyper-parameter settings. "paper": the paper's (lam = 0.004, lam_a = lam_w = 0.25, eta = 0.2) on raw
#: inputs. "normalised": the same lam, lam_a, eta, with inputs scaled by 1/sqrt(d) and lam_w = 4, which keeps
#: the initial tanh features out of saturation (measurements in mfkern.experiments.demo).
SETTINGS = {
    "normalised": dict(lam=0.004, lam_a=0.25, lam_w=4.0, eta=0.2, input_scale="1/sqrt(d)"),
    "paper": dict(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, input_scale=1.0),
}


def mfld_config(setting, d, **overrides):
    """The :class:`MFLDConfig` of a named setting of :data:`SETTINGS` for inputs of dimension d.

    `overrides` set any other field (n_particles, n_steps, label_noise, log_every, ...).
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {tuple(SETTINGS)}, got {setting!r}")
    values = dict(SETTINGS[setting])
    if values["input_scale"] == "1/sqrt(d)":
        values["input_scale"] = 1.0 / math.sqrt(integer(d, "d", minimum=1))
    values.update(overrides)
    return MFLDConfig(**values)


def run_case(task_kwargs, config, seed, *, baselines=(), n_threads=None, rf_factor=4):
    """One MFLD run (and optionally baselines) on a freshly drawn task; the unit of work of the experiments.

    Parameters
    ----------
    task_kwargs : dict
        Arguments of :func:`make_task` (its ``seed`` is the data seed).
    config : MFLDConfig or dict
    seed : int
        Seed of the estimator (initial particles and Langevin noise).
    baselines : sequence of str
        Keys of :func:`run_baselines` to run as well.

    Returns
    -------
    dict with ``task`` (its parameters), ``config``, ``seed``, ``mfld`` (history, initial, final, wall_time)
    and ``baselines``.
    """
    if isinstance(config, dict):
        config = MFLDConfig(**config)
    task = make_task(**task_kwargs)
    mfld = run_mfld(task, config, seed=seed, n_threads=n_threads)
    W0 = mfld.pop("W0")
    base = {}
    if baselines:
        base = run_baselines(task, W0, lam=config.lam, lam_a=config.lam_a, lam_w=config.lam_w, seed=seed,
                             input_scale=config.input_scale, which=baselines, rf_factor=rf_factor,
                             activation=config.activation)
    return dict(task=task.params, config=config.as_dict(), seed=int(seed), mfld=mfld, baselines=base,
                zero_predictor_mse=float(np.mean(task.f_test ** 2)))


def _estimator_class():
    try:
        from ..estimator import MeanFieldRegressor
    except ImportError as exc:  # pragma: no cover - the estimator ships with the package
        raise ImportError(f"mfkern.estimator.MeanFieldRegressor is needed by the experiments: {exc}") from exc
    return MeanFieldRegressor


def run_mfld(task, config, *, seed, n_threads=None, track_alignment=True):
    """Train MFLD on `task` with `config`; returns the curves and final metrics as a dict.

    Parameters
    ----------
    task : Task
    config : MFLDConfig
    seed : int
        ``random_state`` of the estimator: the initial particles are :func:`initial_particles` with it.
    n_threads : int or None
        Threads for the core.
    track_alignment : bool
        Compute the kernel alignment with the clean target at every logged step (one extra Gram each).

    Returns
    -------
    dict with ``history`` (lists over logged steps: step, test_mse, train_mse, kernel_alignment, dof,
    parameter_alignment, U, G, wall_time), ``final`` (the last entry of each), ``initial`` (the first),
    ``W0`` (initial particles, ndarray) and ``wall_time``.
    """
    Estimator = _estimator_class()
    X, X_test = task.X * config.input_scale, task.X_test * config.input_scale
    extra = {"kernel_alignment": [], "parameter_alignment": [], "step": []}
    saved = {}

    def record(est, step, diag):
        W = est.particles_
        if step == 0:
            saved["W0"] = W.copy()
        extra["step"].append(int(step))
        extra["parameter_alignment"].append(subspace_alignment(W, task.subspace))
        if track_alignment:
            K = core.gram(W, X, activation=config.activation, n_threads=n_threads)
            extra["kernel_alignment"].append(core.kernel_alignment(K, task.f_train))
        return False

    est = Estimator(n_particles=config.n_particles, lam=config.lam, lam_a=config.lam_a, lam_w=config.lam_w,
                    eta=config.eta, n_steps=config.n_steps, activation=config.activation,
                    label_noise=config.label_noise, random_state=seed, n_threads=n_threads,
                    log_every=config.log_every, callbacks=[record], input_scale=1.0)  # X is scaled above
    t0 = time.perf_counter()
    est.fit(X, task.y, X_val=X_test, y_val=task.f_test)
    wall = time.perf_counter() - t0
    h = est.history_
    if list(h["step"]) != extra["step"]:  # the callback sees every logged step; anything else is a bug
        raise RuntimeError("history steps and callback steps differ")
    history = dict(step=[int(s) for s in h["step"]], test_mse=list(map(float, h["val_mse"])),
                   train_mse=list(map(float, h["train_mse"])), dof=list(map(float, h["dof"])),
                   U=list(map(float, h["U"])), G=list(map(float, h["G"])),
                   parameter_alignment=extra["parameter_alignment"],
                   kernel_alignment=extra["kernel_alignment"] if track_alignment else
                   list(map(float, h["kernel_alignment"])),
                   wall_time=list(map(float, h["wall_time"])))
    return dict(history=history, initial={k: v[0] for k, v in history.items()},
                final={k: v[-1] for k, v in history.items()}, W0=saved["W0"], wall_time=wall,
                seed=int(seed))


# ---------------------------------------------------------------------------------------------- parallel runs
def map_runs(function, kwargs_list, n_jobs=1):
    """``[function(**kw) for kw in kwargs_list]``, in `n_jobs` processes when n_jobs > 1.

    Processes are started with "spawn" (forking a process that has used OpenMP threads can hang), and each
    worker should then run its core with one thread to keep the machine from being oversubscribed.
    `function` must be importable (a module-level function). Results come back in the order of kwargs_list.
    """
    n_jobs = integer(n_jobs, "n_jobs", minimum=1)
    kwargs_list = list(kwargs_list)
    if n_jobs == 1 or len(kwargs_list) <= 1:
        return [function(**kw) for kw in kwargs_list]
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(n_jobs, len(kwargs_list)), mp_context=ctx) as pool:
        futures = [pool.submit(function, **kw) for kw in kwargs_list]
        return [f.result() for f in futures]


# ---------------------------------------------------------------------------------------------- results
def metadata():
    """Versions and machine facts recorded in every result file."""
    import numpy
    import scipy
    import sklearn

    from .. import __version__

    versions = dict(mfkern=__version__, python=sys.version.split()[0], numpy=numpy.__version__,
                    scipy=scipy.__version__, sklearn=sklearn.__version__)
    try:
        import matplotlib

        versions["matplotlib"] = matplotlib.__version__
    except ImportError:  # pragma: no cover - matplotlib is optional
        versions["matplotlib"] = None
    return dict(versions=versions, platform=platform.platform(), machine=platform.machine(),
                cpu_count=os.cpu_count(), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                argv=list(sys.argv))


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None  # JSON has no NaN/inf
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def write_json(path, payload):
    """Write `payload` (numpy values allowed; NaN/inf become null) as indented JSON, atomically."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(_jsonable(payload), fh, indent=1)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def markdown_table(headers, rows):
    """A GitHub markdown table; floats are written with 4 significant digits."""
    def cell(v):
        if isinstance(v, (float, np.floating)):
            return "nan" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def mean_std(values, axis=0):
    """Mean and standard deviation (ddof=0; 0 for a single seed) of `values` along `axis`."""
    arr = np.asarray(values, dtype=float)
    return arr.mean(axis=axis), arr.std(axis=axis)


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (figures are only saved)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("the experiments' figures need matplotlib: pip install 'mfkern[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def band(ax, x, curves, label, **kw):
    """Plot the mean over seeds of `curves` (seeds x points) against x with a +-1 std band."""
    mean, std = mean_std(curves)
    line, = ax.plot(x, mean, label=label, **kw)
    if np.asarray(curves).shape[0] > 1:
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    return line


# ---------------------------------------------------------------------------------------------- sweeps
def parse_seeds(seeds, quick):
    """Number of seeds: `seeds` when given, else 5 (the paper's) or 2 with `quick`."""
    if seeds is None:
        return 2 if quick else 5
    return integer(seeds, "seeds", minimum=1)


def run_grid(cases, *, n_jobs=1, progress=None):
    """Run :func:`run_case` for every kwargs dict in `cases` (in `n_jobs` processes); returns the results.

    With n_jobs > 1 each process runs the core with one thread. `progress` (a callable taking a message)
    is told about every finished case.
    """
    n_jobs = integer(n_jobs, "n_jobs", minimum=1)
    cases = [dict(case) for case in cases]
    if n_jobs > 1:
        for case in cases:
            case.setdefault("n_threads", 1)
    t0 = time.perf_counter()
    if n_jobs == 1 or len(cases) <= 1:
        out = []
        for i, case in enumerate(cases):
            out.append(run_case(**case))
            if progress is not None:
                progress(f"  [{i + 1}/{len(cases)}] done, {time.perf_counter() - t0:.0f} s")
        return out
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(n_jobs, len(cases)), mp_context=ctx) as pool:
        futures = [pool.submit(run_case, **case) for case in cases]
        for i, _ in enumerate(concurrent.futures.as_completed(futures)):
            if progress is not None:
                progress(f"  [{i + 1}/{len(cases)}] done, {time.perf_counter() - t0:.0f} s")
        return [f.result() for f in futures]


def stack(runs, key):
    """The history curve `key` of several runs as an array (runs x logged steps), and the steps."""
    steps = runs[0]["mfld"]["history"]["step"]
    for run in runs:
        if run["mfld"]["history"]["step"] != steps:
            raise ValueError("runs were logged at different steps")
    return np.asarray(steps), np.array([run["mfld"]["history"][key] for run in runs], dtype=float)


def claim(text, holds, detail):
    """A checked claim of the paper, as recorded in the results: {'claim', 'holds', 'detail'}."""
    return dict(claim=text, holds=bool(holds), detail=detail)


def claims_markdown(claims):
    """Markdown bullet list of checked claims."""
    return "\n".join(f"- **{'holds' if c['holds'] else 'does NOT hold'}**: {c['claim']} ({c['detail']})"
                     for c in claims)


def write_outputs(out_dir, name, results, markdown):
    """Write ``<name>.json`` and ``<name>.md`` into out_dir; adds their paths to results['files']."""
    md_path = os.path.join(out_dir, f"{name}.md")
    json_path = os.path.join(out_dir, f"{name}.json")
    results.setdefault("files", [])
    results["files"] = [json_path, md_path] + list(results["files"])
    with open(md_path, "w", encoding="utf-8") as fh:
        fh.write(markdown.rstrip() + "\n")
    write_json(json_path, results)
    return results["files"]
