"""Log-log slope fits with confidence intervals, and confidence intervals of per-grid-point errors.

The error at grid point j (a number of particles or a step size) is a statistic of its per-seed values:
the mean (non-negative errors), |mean| (a signed gap: the bias) or sqrt(mean) (a root-mean-square). The
slope is the ordinary-least-squares slope of log(error) against log(grid). Three intervals are reported
(:func:`seed_slope`), because they answer different questions:

* ``ci`` (the primary one): the delta method with the t distribution. The slope is a linear combination
  sum_j c_j log(e_j) of the log errors; the seed-to-seed variance of each e_j (sample variance / number of
  seeds) is carried to log e_j by the delta method, summed with weights c_j^2, and the interval uses the t
  quantile with Welch-Satterthwaite degrees of freedom. Measured coverage of the nominal 95% interval: 94%
  and 96% on synthetic power laws with chi-square(2) and chi-square(8) noise, 8 seeds, 5 grid points (400
  data sets each), and 37/40 on the erf-kernel sweep (tests/test_analysis.py checks the synthetic case).
* ``ci_bootstrap``: percentile bootstrap over seeds (resample the seeds of every grid point, refit). With
  few seeds it is too narrow (91-93% in the same checks), so it is secondary.
* ``ci_ols``: the textbook t interval of the OLS slope from the residuals of the fit (m - 2 degrees of
  freedom for m grid points): how far the points sit from a straight line (NaN with 2 points).

None of them sees the noise of a shared reference (one realisation, common to all grid points).
"""
from __future__ import annotations

import numpy as np
from scipy import stats as _scipy_stats

from .._validation import as_float_array, integer

__all__ = ["fit_loglog", "bootstrap_loglog", "seed_slope", "STATISTICS", "mean_statistic", "abs_mean_statistic",
           "root_mean_statistic", "mean_interval", "stationarity"]


def mean_statistic(samples):
    """The mean over the last axis (the error statistic of a non-negative per-seed error)."""
    return np.mean(samples, axis=-1)


def abs_mean_statistic(samples):
    """|mean| over the last axis (the error statistic of a signed per-seed gap: the bias)."""
    return np.abs(np.mean(samples, axis=-1))


def root_mean_statistic(samples):
    """sqrt(mean) over the last axis (a root-mean-square error from per-seed mean squares)."""
    return np.sqrt(np.mean(samples, axis=-1))


#: The error statistics by name: (function of per-seed values along the last axis, power p such that the
#: statistic is |mean|^p, used by the delta method: Var log e = p^2 Var(mean) / mean^2).
STATISTICS = {
    "mean": (mean_statistic, 1.0),
    "abs_mean": (abs_mean_statistic, 1.0),
    "root_mean": (root_mean_statistic, 0.5),
}


def _level(level):
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return level


def _ols_slopes(log_x, log_y):
    """OLS slopes of each row of log_y (..., m) against log_x (m,)."""
    centred = log_x - log_x.mean()
    return (log_y - log_y.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred)


def fit_loglog(x, y, level=0.95):
    """Ordinary least squares of log(y) on log(x), with the t confidence interval of the slope.

    Parameters
    ----------
    x, y : array-like, shape (m,)
        Positive grid values and errors, m >= 2, at least two distinct x.
    level : float
        Confidence level of the interval.

    Returns
    -------
    dict with ``slope``, ``intercept`` (of the natural-log fit: y ~ exp(intercept) x^slope), ``ci_ols``
    (low, high) from the t distribution with m - 2 degrees of freedom (NaN when m = 2) and ``n_points``.
    """
    x = as_float_array(x, "x", ndim=(1,))
    y = as_float_array(y, "y", ndim=(1,))
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least 2 points to fit a slope, got {x.shape[0]}")
    if (x <= 0).any():
        raise ValueError("x must be positive (log-log fit)")
    if (y <= 0).any():
        raise ValueError("y must be positive (log-log fit)")
    level = _level(level)
    log_x, log_y = np.log(x), np.log(y)
    if np.ptp(log_x) == 0:
        raise ValueError("x must hold at least two distinct values")
    slope = float(_ols_slopes(log_x, log_y))
    intercept = float(log_y.mean() - slope * log_x.mean())
    m = x.shape[0]
    if m > 2:
        residuals = log_y - (intercept + slope * log_x)
        centred = log_x - log_x.mean()
        stderr = float(np.sqrt(residuals @ residuals / (m - 2) / (centred @ centred)))
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, m - 2)) * stderr
        ci = (slope - half, slope + half)
    else:
        stderr, ci = float("nan"), (float("nan"), float("nan"))
    return {"slope": slope, "intercept": intercept, "stderr": stderr, "ci_ols": ci, "n_points": m}


def bootstrap_loglog(x, groups, statistic=mean_statistic, *, n_boot=2000, level=0.95, seed=0):
    """Log-log slope of statistic(group) against x, with a percentile bootstrap CI over each group's values.

    Parameters
    ----------
    x : array-like, shape (m,)
        Positive grid values (numbers of particles or step sizes).
    groups : sequence of m array-likes
        The per-seed values at each grid point (any number >= 1 of them per point).
    statistic : callable
        Maps an array (..., s) of per-seed values to the error along the last axis, e.g.
        :func:`mean_statistic` or :func:`abs_mean_statistic`.
    n_boot : int
        Bootstrap resamples. Resamples where some statistic is not positive are dropped (counted in
        ``n_boot_used``).
    level : float
        Confidence level.
    seed : int
        Seed of the resampling (the interval is reproducible).

    Returns
    -------
    dict: everything :func:`fit_loglog` returns for the point estimate (statistic of the full groups),
    plus ``ci`` (low, high) from the bootstrap (NaN when some group has a single value, or when fewer than
    half of the resamples were usable), ``n_boot_used`` and ``ci_method``.
    """
    x = as_float_array(x, "x", ndim=(1,))
    if len(groups) != x.shape[0]:
        raise ValueError(f"groups must hold one array per x value ({x.shape[0]}), got {len(groups)}")
    groups = [as_float_array(g, f"groups[{i}]", ndim=(1,)) for i, g in enumerate(groups)]
    n_boot = integer(n_boot, "n_boot", minimum=1)
    level = _level(level)
    point = fit_loglog(x, np.array([float(statistic(g)) for g in groups]), level)
    rng = np.random.default_rng(seed)
    boot = np.empty((n_boot, len(groups)))
    for j, g in enumerate(groups):
        boot[:, j] = statistic(g[rng.integers(0, g.shape[0], size=(n_boot, g.shape[0]))])
    usable = (boot > 0).all(axis=1)
    slopes = _ols_slopes(np.log(x), np.log(boot[usable])) if usable.any() else np.empty(0)
    if min(g.shape[0] for g in groups) < 2 or slopes.shape[0] < n_boot / 2:
        ci = (float("nan"), float("nan"))
    else:
        low, high = np.quantile(slopes, [0.5 - level / 2, 0.5 + level / 2])
        ci = (float(low), float(high))
    point.update(ci=ci, n_boot_used=int(slopes.shape[0]),
                 ci_method=f"percentile bootstrap over seeds, {n_boot} resamples, level {level}")
    return point


def mean_interval(values, level=0.95, absolute=False):
    """Mean of per-seed values and its t confidence interval (NaN interval for a single value).

    With ``absolute`` the estimate is |mean| (a bias) and the interval is that of |mean|: the image of the
    mean's interval under the absolute value (from 0 when the interval contains 0).
    """
    values = as_float_array(values, "values", ndim=(1,))
    level = _level(level)
    mean = float(values.mean())
    m = values.shape[0]
    if m > 1:
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, m - 1)) * float(values.std(ddof=1)) / np.sqrt(m)
        low, high = mean - half, mean + half
    else:
        low = high = float("nan")
    if absolute:
        if low <= 0 <= high:
            low, high = 0.0, max(-low, high)
        else:
            low, high = sorted((abs(low), abs(high)))
        mean = abs(mean)
    return mean, (float(low), float(high))


def seed_slope(x, groups, statistic="mean", *, level=0.95, n_boot=2000, seed=0):
    """Log-log slope of the error against the grid, with delta-method t, bootstrap and OLS intervals.

    Parameters
    ----------
    x : array-like, shape (m,)
        Positive grid values, m >= 2.
    groups : sequence of m array-likes
        The per-seed values at each grid point; at least 2 per point for the intervals.
    statistic : {"mean", "abs_mean", "root_mean"}
        How the error is made from the per-seed values (see :data:`STATISTICS`).
    level, n_boot, seed : float, int, int
        Confidence level, bootstrap resamples and the bootstrap's seed.

    Returns
    -------
    dict with ``slope``, ``intercept`` (natural-log fit), ``ci`` (delta method, t with Welch-Satterthwaite
    df ``df``), ``ci_bootstrap``, ``ci_ols``, ``stderr`` (of the delta method), ``ci_method``.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {tuple(STATISTICS)}, got {statistic!r}")
    function, power = STATISTICS[statistic]
    out = bootstrap_loglog(x, groups, function, n_boot=n_boot, level=level, seed=seed)
    out["ci_bootstrap"] = out.pop("ci")
    out["ci_ols_stderr"] = out.pop("stderr")
    x = np.asarray(x, dtype=float)
    groups = [np.asarray(g, dtype=float) for g in groups]
    log_x = np.log(x)
    weights = (log_x - log_x.mean()) / np.sum((log_x - log_x.mean()) ** 2)
    counts = np.array([g.shape[0] for g in groups])
    if counts.min() < 2:
        out.update(ci=(float("nan"), float("nan")), stderr=float("nan"), df=float("nan"))
    else:
        means = np.array([g.mean() for g in groups])
        var_mean = np.array([g.var(ddof=1) for g in groups]) / counts
        # Var(log e_j) = p^2 Var(mean_j) / mean_j^2 (delta method), weighted into the slope's variance.
        terms = weights ** 2 * power ** 2 * var_mean / means ** 2
        variance = float(terms.sum())
        df = variance ** 2 / float(np.sum(terms ** 2 / (counts - 1))) if variance > 0 else float("inf")
        stderr = float(np.sqrt(variance))
        half = float(_scipy_stats.t.ppf(0.5 + level / 2, df)) * stderr
        out.update(ci=(out["slope"] - half, out["slope"] + half), stderr=stderr, df=float(df))
    out["ci_method"] = (f"delta method on the per-seed means, t with Welch-Satterthwaite df, level {level}; "
                        f"ci_bootstrap: percentile bootstrap over seeds, {n_boot} resamples")
    return out


def stationarity(series, times=None, level=0.95):
    """Is a window of snapshots stationary? Half-difference and trend of each run, with t intervals over runs.

    Parameters
    ----------
    series : array-like, shape (runs, snapshots)
        One scalar (e.g. G) per snapshot of the averaging window, for independent runs (>= 4 snapshots).
    times : array-like, shape (snapshots,), optional
        Snapshot times (default 0, 1, ...), for the trend.
    level : float

    Returns
    -------
    dict with ``half_difference`` (mean over runs of: mean of the window's second half minus mean of its
    first half) and its t interval ``ci`` over runs, ``trend_change`` (mean over runs of the OLS slope
    against time, times the window's length) and ``trend_ci``, ``window_mean``, ``relative_half_difference``
    (half_difference / |window_mean|), ``n_runs``, ``n_snapshots`` and ``stationary``: True when both
    intervals contain 0 (no drift detected at this precision), False when one excludes it, None when there
    is a single run (no interval). The runs are independent, so the t intervals are valid however strongly
    the snapshots within one run are correlated.
    """
    values = as_float_array(series, "series", ndim=(2,))
    runs, count = values.shape
    if count < 4:
        raise ValueError(f"series must hold at least 4 snapshots per run, got {count}")
    times = np.arange(count, dtype=float) if times is None else as_float_array(times, "times", ndim=(1,))
    if times.shape[0] != count:
        raise ValueError(f"times must have one entry per snapshot ({count}), got {times.shape[0]}")
    half = count // 2
    differences = values[:, count - half:].mean(axis=1) - values[:, :half].mean(axis=1)
    centred = times - times.mean()
    trends = (values - values.mean(axis=1, keepdims=True)) @ centred / (centred @ centred) * np.ptp(times)
    diff_mean, diff_ci = mean_interval(differences, level)
    trend_mean, trend_ci = mean_interval(trends, level)
    window_mean = float(values.mean())
    if runs < 2:
        verdict = None
    else:
        verdict = bool(diff_ci[0] <= 0 <= diff_ci[1] and trend_ci[0] <= 0 <= trend_ci[1])
    return {"half_difference": diff_mean, "ci": diff_ci, "trend_change": trend_mean, "trend_ci": trend_ci,
            "window_mean": window_mean,
            "relative_half_difference": diff_mean / abs(window_mean) if window_mean != 0 else float("nan"),
            "n_runs": int(runs), "n_snapshots": int(count), "stationary": verdict, "level": level}
