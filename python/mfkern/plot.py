"""Plots of training diagnostics (matplotlib is an optional dependency, imported only when plotting)."""
from __future__ import annotations

import numpy as np

__all__ = ["history", "PANELS"]

#: The panels drawn by :func:`history`: title, history keys, whether the y axis is logarithmic.
PANELS = (
    ("objective", ("U", "G"), True),
    ("degrees of freedom", ("dof",), False),
    ("alignment", ("kernel_alignment", "parameter_alignment"), False),
    ("mean squared error", ("train_mse", "val_mse"), True),
)


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("mfkern.plot needs matplotlib, an optional dependency: "
                          "pip install matplotlib (or pip install 'mfkern[plot]')") from exc
    return plt


def _history_of(est):
    if isinstance(est, dict):
        return est
    history = getattr(est, "history_", None)
    if history is None:
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"This {type(est).__name__} instance has no history_: call fit first")
    return history


def history(est, ax=None):
    """Plot the training history of a fitted MeanFieldRegressor against the step.

    One panel per entry of :data:`PANELS` (objective U and G, degrees of freedom, kernel and parameter
    alignment, train and validation MSE); curves that are all NaN (e.g. no validation data) are skipped.

    Parameters
    ----------
    est : MeanFieldRegressor or dict
        A fitted estimator, or its ``history_`` dict.
    ax : sequence of matplotlib Axes, optional
        Four axes to draw in (a 2 x 2 array is fine); default: a new figure with a 2 x 2 grid.

    Returns
    -------
    ndarray of Axes, shape (4,)
    """
    hist = _history_of(est)
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    axes = np.asarray(ax, dtype=object).ravel()
    if axes.size != len(PANELS):
        raise ValueError(f"ax must hold {len(PANELS)} Axes (one per panel), got {axes.size}")
    steps = np.asarray(hist["step"])
    for panel, (title, keys, log_scale) in zip(axes, PANELS):
        drawn = []
        for key in keys:
            values = np.asarray(hist.get(key, []), dtype=float)
            if values.size == 0 or np.isnan(values).all():
                continue
            panel.plot(steps, values, marker=".", label=key)
            drawn.append(values[~np.isnan(values)])
        # A log axis only when every drawn value is positive (an MSE of exactly 0 would vanish from it).
        if drawn and log_scale and all((values > 0).all() for values in drawn):
            panel.set_yscale("log")
        panel.set_title(title)
        panel.set_xlabel("step")
        if drawn:
            panel.legend()
    return axes
