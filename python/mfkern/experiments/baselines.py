"""Fixed-kernel baselines, tuned by cross-validation inside the training set with grids that widen themselves.

Every baseline is a scikit-learn estimator (``KernelRidge``, ``Ridge``, ``SVC``, ``LogisticRegression``,
composed in a ``Pipeline`` where a feature map is needed); the choice of its hyper-parameters is
``GridSearchCV``'s, run by :func:`search`, which widens a grid when the chosen value sits on its edge (up to
a limit) and reports where every choice fell ("interior", "edge" when the limit stopped the widening,
"fixed" for a one-value grid). See docs/protocol.md.

Regression (:data:`REGRESSION`; inputs as given, the kernel scales tuned):
    ``krr_rbf``, ``krr_laplacian``   KernelRidge, gamma = factor / d and ridge alpha by CV.
    ``krr_poly2``, ``krr_poly3``     KernelRidge, (gamma <x, x'> + 1)^k, k = 2, 3 (the degree of a k-parity).
    ``krr_arcsine``                  KernelRidge on the closed-form infinite-width kernel of erf neurons with
                                     (u, b) ~ N(0, s^2 I) on (x, 1) (:func:`arcsine_kernel`), s^2 = factor / d
                                     and alpha by CV. It is the closed-form analogue of the tanh network's
                                     initial kernel (erf(sqrt(pi) z / 2) matches tanh to first order at 0);
                                     the initial distribution's own scale is one point of the grid.
    ``init_kernel``                  the finite initial kernel: ridge regression on the features
                                     h(x; w_k)/sqrt(N) of MFLD's own initial particles (so kernel ridge with
                                     k_mu0), ridge by CV.
    ``random_features``              the same with M = 4N fresh particles from the same prior.
Classification (:data:`CLASSIFICATION`): ``svc_rbf``, ``svc_poly2``, ``svc_poly3`` (SVC, C and gamma by CV),
``klr_init_kernel`` and ``klr_random_features`` (LogisticRegression without intercept on those features).
"""
from __future__ import annotations

import itertools
import math
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

from .. import core

__all__ = [
    "REGRESSION",
    "CLASSIFICATION",
    "LABELS",
    "arcsine_kernel",
    "ArcSineKernelRidge",
    "scaled_features",
    "search",
    "grid_description",
    "fit_baseline",
]

REGRESSION = ("krr_rbf", "krr_laplacian", "krr_poly2", "krr_poly3", "krr_arcsine", "init_kernel",
              "random_features")
CLASSIFICATION = ("svc_rbf", "svc_poly2", "svc_poly3", "klr_init_kernel", "klr_random_features")
LABELS = dict(
    krr_rbf="KRR, RBF", krr_laplacian="KRR, Laplacian", krr_poly2="KRR, polynomial degree 2",
    krr_poly3="KRR, polynomial degree 3", krr_arcsine="KRR, arc-sine (erf, infinite width)",
    init_kernel="KRR, finite initial kernel k_mu0", random_features="random features (M = 4N)",
    svc_rbf="SVC, RBF", svc_poly2="SVC, polynomial degree 2", svc_poly3="SVC, polynomial degree 3",
    klr_init_kernel="KLR, finite initial kernel k_mu0", klr_random_features="KLR, random features (M = 4N)",
)

#: Starting grids (widened by :func:`search` when a choice falls on an edge) and the limits of widening.
ALPHAS = tuple(10.0 ** np.arange(-5, 0))          # ridge of the regressions
CS = tuple(10.0 ** np.arange(-1, 3))              # inverse regularisation of SVC / logistic regression
SCALE_FACTORS = (0.03, 0.1, 0.3, 1.0)             # gamma (or s^2) = factor / d
LIMITS = dict(alpha=(1e-12, 1e4), C=(1e-4, 1e8), factor=(1e-5, 1e3))
MAX_ROUNDS = 10


def grid_description():
    """The starting grids and widening limits, as recorded with (and keyed into) every cached baseline run."""
    return dict(alphas=list(ALPHAS), Cs=list(CS), scale_factors=list(SCALE_FACTORS),
                limits={k: list(v) for k, v in LIMITS.items()}, max_rounds=MAX_ROUNDS)


# ------------------------------------------------------------------------------------------- kernels
def arcsine_kernel(X, Y, s2):
    """Infinite-width kernel of erf neurons, E_{(u,b)~N(0, s2 I)}[erf(u.x + b) erf(u.y + b)] in closed form:
    (2/pi) arcsin(2 s2 (x.y + 1) / sqrt((1 + 2 s2 (|x|^2 + 1)) (1 + 2 s2 (|y|^2 + 1))))."""
    X, Y = np.asarray(X, dtype=float), np.asarray(Y, dtype=float)
    s2 = float(s2)
    if not s2 > 0:
        raise ValueError(f"s2 must be positive, got {s2}")
    nx = 1.0 + 2.0 * s2 * (np.einsum("ij,ij->i", X, X) + 1.0)
    ny = 1.0 + 2.0 * s2 * (np.einsum("ij,ij->i", Y, Y) + 1.0)
    arg = 2.0 * s2 * (X @ Y.T + 1.0) / np.sqrt(np.outer(nx, ny))
    return (2.0 / math.pi) * np.arcsin(np.clip(arg, -1.0, 1.0))


class ArcSineKernelRidge(RegressorMixin, BaseEstimator):
    """scikit-learn ``KernelRidge`` on :func:`arcsine_kernel` with s2 = factor / d (d = number of features).

    Parameters
    ----------
    factor : float
        Weight variance times d.
    alpha : float
        Ridge of ``KernelRidge``.
    """

    def __init__(self, factor=1.0, alpha=1.0):
        self.factor = factor
        self.alpha = alpha

    def fit(self, X, y):
        from sklearn.kernel_ridge import KernelRidge

        X = np.asarray(X, dtype=float)
        if not float(self.factor) > 0:
            raise ValueError(f"factor must be positive, got {self.factor}")
        self.s2_ = float(self.factor) / X.shape[1]
        self.X_fit_ = X
        self.model_ = KernelRidge(alpha=self.alpha, kernel="precomputed").fit(arcsine_kernel(X, X, self.s2_), y)
        return self

    def predict(self, X):
        return self.model_.predict(arcsine_kernel(np.asarray(X, dtype=float), self.X_fit_, self.s2_))


def scaled_features(X, W, activation="tanh"):
    """Features h(x; w_k)/sqrt(N) of the particles W (their inner products are the intrinsic kernel)."""
    return core.features(W, np.ascontiguousarray(X, dtype=float), activation) / math.sqrt(W.shape[0])


def _feature_pipeline(W, final, activation):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    return Pipeline([("features", FunctionTransformer(scaled_features, kw_args=dict(W=W, activation=activation))),
                     ("model", final)])


def _model(name, *, W0=None, W_random=None, activation="tanh"):
    """(estimator, starting grid, which grid keys are scales) for baseline `name`."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.svm import SVC

    alphas, cs, factors = list(ALPHAS), list(CS), list(SCALE_FACTORS)
    if name in ("krr_rbf", "krr_laplacian", "krr_poly2", "krr_poly3"):
        kernel = {"krr_rbf": "rbf", "krr_laplacian": "laplacian"}.get(name, "poly")
        extra = dict(degree=int(name[-1]), coef0=1.0) if kernel == "poly" else {}
        return KernelRidge(kernel=kernel, **extra), dict(alpha=alphas, gamma=factors), ("gamma",)
    if name == "krr_arcsine":
        return ArcSineKernelRidge(), dict(alpha=alphas, factor=factors), ()
    if name in ("svc_rbf", "svc_poly2", "svc_poly3"):
        extra = dict(degree=int(name[-1]), coef0=1.0, kernel="poly") if "poly" in name else dict(kernel="rbf")
        return SVC(**extra), dict(C=cs, gamma=factors), ("gamma",)
    if name in ("init_kernel", "random_features", "klr_init_kernel", "klr_random_features"):
        W = W0 if "init_kernel" in name else W_random
        if W is None:
            raise ValueError(f"baseline {name!r} needs its particles ({'W0' if 'init' in name else 'W_random'})")
        if name.startswith("klr"):
            final = LogisticRegression(fit_intercept=False, solver="lbfgs", max_iter=1000)
            return _feature_pipeline(W, final, activation), {"model__C": cs}, ()
        return _feature_pipeline(W, Ridge(fit_intercept=False), activation), {"model__alpha": alphas}, ()
    raise ValueError(f"unknown baseline {name!r}; expected one of {REGRESSION + CLASSIFICATION}")


def _limit(param):
    base = param.split("__")[-1]
    return LIMITS["factor"] if base in ("gamma", "factor") else LIMITS[base]


def search(estimator, grid, X, y, *, cv, scoring, max_rounds=MAX_ROUNDS, scale_params=(), d=None):
    """Choose hyper-parameters by ``GridSearchCV`` and widen the grid wherever the choice is on an edge.

    Parameters
    ----------
    estimator : scikit-learn estimator
    grid : dict of name -> increasing, geometric list of values
        Values of a name in `scale_params` are factors: the estimator gets factor / d.
    cv : list of (train, test) index pairs
        Fixed folds, so scores from different rounds compare.
    scoring : str
        scikit-learn scorer (greater is better).
    max_rounds : int
        Widening rounds at most; each adds one grid point beyond the edge where the choice fell (within the
        parameter's limit) and scores only the new combinations.

    Returns
    -------
    dict: ``params`` (chosen, as passed to the estimator), ``factors`` (chosen grid values), ``cv_score``,
    ``placement`` (per parameter: interior / edge / fixed), ``grid`` (final range per parameter),
    ``n_configs`` (combinations scored) and ``model`` (refitted on all of X, y).
    """
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    names = list(grid)
    values = {k: sorted(float(v) for v in grid[k]) for k in names}
    scores = {}

    def actual(combo):
        return {k: (v / d if k in scale_params else v) for k, v in combo.items()}

    for round_ in range(max_rounds + 1):
        combos = [dict(zip(names, c)) for c in itertools.product(*(values[k] for k in names))]
        new = [c for c in combos if tuple(c.values()) not in scores]
        if new:
            gs = GridSearchCV(estimator, [{k: [v] for k, v in actual(c).items()} for c in new], cv=cv,
                              scoring=scoring, refit=False, error_score="raise")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ill-conditioned tiny ridges: scipy warns, the score decides
                gs.fit(X, y)
            for c, score in zip(new, gs.cv_results_["mean_test_score"]):
                scores[tuple(c.values())] = float(score) if np.isfinite(score) else -math.inf
        best_key = max(scores, key=lambda key: scores[key])  # first maximum in insertion order
        best = dict(zip(names, best_key))
        if round_ == max_rounds:
            break
        widened = False
        for k in names:
            vals = values[k]
            if len(vals) < 2:
                continue
            step = vals[1] / vals[0]
            low, high = _limit(k)
            if best[k] == vals[0] and vals[0] / step >= low * (1 - 1e-9):
                values[k] = [vals[0] / step] + vals
                widened = True
            elif best[k] == vals[-1] and vals[-1] * step <= high * (1 + 1e-9):
                values[k] = vals + [vals[-1] * step]
                widened = True
        if not widened:
            break
    placement = {}
    for k in names:
        vals = values[k]
        placement[k] = ("fixed" if len(vals) < 2 else "interior" if vals[0] < best[k] < vals[-1] else "edge")
    model = clone(estimator).set_params(**actual(best))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y)
    return dict(params=actual(best), factors=best, cv_score=scores[best_key], placement=placement,
                grid={k: [values[k][0], values[k][-1]] for k in names}, n_configs=len(scores), model=model)


def fit_baseline(name, X, y, X_test, *, seed, W0=None, W_random=None, activation="tanh", n_folds=5):
    """Tune baseline `name` by CV on (X, y) and predict X_test; returns a JSON-ready dict with ``pred``.

    `seed` fixes the folds (shuffled KFold, or StratifiedKFold for the classifiers). W0: MFLD's initial
    particles (for the ``*init_kernel`` baselines); W_random: the random-features particles.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    t0 = time.perf_counter()
    X, X_test = np.asarray(X, dtype=float), np.asarray(X_test, dtype=float)
    estimator, grid, scale_params = _model(name, W0=W0, W_random=W_random, activation=activation)
    classify = name in CLASSIFICATION
    seed32 = int(seed) % (2**32)
    splitter = (StratifiedKFold(n_folds, shuffle=True, random_state=seed32) if classify
                else KFold(n_folds, shuffle=True, random_state=seed32))
    cv = list(splitter.split(X, y))
    res = search(estimator, grid, X, y, cv=cv, scoring="accuracy" if classify else "neg_mean_squared_error",
                 scale_params=scale_params, d=X.shape[1])
    pred = res.pop("model").predict(X_test)
    res["pred"] = pred
    res["wall_time"] = time.perf_counter() - t0
    return res
