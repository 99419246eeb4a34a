"""Cheaper hyper-parameter tuning: the number of steps for the price of one fit per fold.

A fit of k steps is exactly the first k steps of a fit of K > k steps with the same ``random_state`` (the
noise of step t is keyed by (seed, t), and logging does not change the trajectory), so the cross-validated
score of every n_steps in a list comes from one fit per fold of the largest, scored at the intermediate
steps by a callback. :func:`steps_validation_curve` does that and returns exactly what ``GridSearchCV``
over ``n_steps`` (same folds, same random_state) would compute, at the cost of its most expensive candidate.
For the other hyper-parameters use ``GridSearchCV`` (recipe in docs/tuning.md).
"""
from __future__ import annotations

import math
from functools import reduce

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline

from ._validation import integer

__all__ = ["steps_validation_curve"]


def _split_pipeline(estimator):
    """(preprocessing or None, the MFLD estimator) of an estimator or a Pipeline ending in one."""
    if isinstance(estimator, Pipeline):
        if len(estimator.steps) == 1:
            return None, estimator.steps[-1][1]
        return Pipeline(estimator.steps[:-1]), estimator.steps[-1][1]
    return None, estimator


def _fold_scores(estimator, X, y, train, test, steps):
    """Scores on the test fold after each number of steps in `steps` (one fit of max(steps))."""
    from .estimator import MeanFieldBase

    preprocessing, model = _split_pipeline(clone(estimator))
    if not isinstance(model, MeanFieldBase):
        raise TypeError("estimator must be a MeanFieldRegressor/MeanFieldClassifier or a Pipeline ending in one, "
                        f"got {type(model).__name__}")
    X_train, X_test = X[train], X[test]
    if preprocessing is not None:
        X_train = preprocessing.fit_transform(X_train, y[train])
        X_test = preprocessing.transform(X_test)
    wanted = set(steps)
    scores = {}

    def record(est, step, diagnostics):
        if step in wanted:
            scores[step] = float(est.score(X_test, y[test]))
        return False

    callbacks = model.callbacks
    callbacks = [] if callbacks is None else ([callbacks] if callable(callbacks) else list(callbacks))
    model.set_params(n_steps=max(steps), log_every=reduce(math.gcd, [s for s in steps if s > 0] or [1]),
                     callbacks=callbacks + [record], warm_start=False)
    model.fit(X_train, y[train])
    return [scores[s] for s in steps]


def steps_validation_curve(estimator, X, y, *, steps, cv=5, n_jobs=None):
    """Cross-validated scores for every number of steps in `steps`, from one fit per fold.

    Parameters
    ----------
    estimator : MeanFieldRegressor, MeanFieldClassifier or a Pipeline ending in one
        With a fixed ``random_state`` (an int) the scores are those of ``GridSearchCV(estimator,
        {"n_steps": steps}, cv=cv)`` exactly; its ``n_steps`` and ``log_every`` are replaced. The
        preprocessing steps of a Pipeline are fitted on each training fold.
    X, y : array-like
    steps : sequence of int
        Numbers of steps to score (0 is the initial kernel).
    cv : int or cross-validation generator, default=5
        As in scikit-learn (stratified folds for classifiers).
    n_jobs : int or None, default=None
        Folds fitted in parallel worker processes (joblib); give the estimator ``n_threads=1`` so that the
        workers do not oversubscribe the cores.

    Returns
    -------
    dict with ``steps`` (sorted), ``scores`` (n_folds, len(steps)), ``mean``, ``std`` and ``best_steps``
    (the smallest number of steps with the best mean score).
    """
    from joblib import Parallel, delayed

    steps = sorted({integer(s, "steps", minimum=0) for s in steps})
    if not steps:
        raise ValueError("steps must hold at least one number of steps")
    X = np.asarray(X)
    y = np.asarray(y)
    splitter = check_cv(cv, y, classifier=is_classifier(_split_pipeline(estimator)[1]))
    folds = list(splitter.split(X, y))
    rows = Parallel(n_jobs=n_jobs)(delayed(_fold_scores)(estimator, X, y, train, test, steps)
                                   for train, test in folds)
    scores = np.array(rows)
    mean = scores.mean(axis=0)
    return dict(steps=steps, scores=scores, mean=mean, std=scores.std(axis=0),
                best_steps=steps[int(np.argmax(mean))])
