"""The evaluation protocol of every experiment (docs/protocol.md): seeds, intervals, verdicts.

* Seeds. :func:`tuning_seeds` and :func:`evaluation_seeds` derive data/estimator seeds from the base seed
  with different purposes ("tune" / "eval") through :func:`mfkern.runner.derive_seed`: the two sets are
  disjoint (checked) and each depends only on (base seed, experiment, index).
* Intervals. :func:`mean_interval` (one-sample Student t), :func:`paired_interval` (paired t, or a
  percentile bootstrap over seeds, of the mean difference a - b), :func:`slopes` (per-seed log-log slopes,
  whose mean gets a t interval). Level 95% unless stated.
* Verdicts. A claim about a quantity theta with interval [low, high] HOLDS when the interval excludes the
  opposite of the claim, FAILS when it excludes the claim, and is INCONCLUSIVE otherwise (:func:`verdict`);
  a conjunction of claims (:func:`all_of`) HOLDS when every part holds and FAILS when any part fails.
"""
from __future__ import annotations

import math

import numpy as np

from .._validation import integer
from ..runner import derive_seed

__all__ = [
    "LEVEL",
    "MIN_EVALUATION_SEEDS",
    "HOLDS",
    "FAILS",
    "INCONCLUSIVE",
    "tuning_seeds",
    "evaluation_seeds",
    "mean_interval",
    "paired_interval",
    "bootstrap_interval",
    "slopes",
    "verdict",
    "all_of",
    "claim",
    "part",
    "claims_markdown",
    "format_interval",
]

#: Confidence level of every interval.
LEVEL = 0.95
#: Evaluation seeds of a full-size run (the protocol's minimum).
MIN_EVALUATION_SEEDS = 5
HOLDS, FAILS, INCONCLUSIVE = "HOLDS", "FAILS", "INCONCLUSIVE"


def tuning_seeds(base_seed, experiment, count):
    """`count` seeds for tuning data of `experiment` (disjoint from :func:`evaluation_seeds`)."""
    count = integer(count, "count", minimum=0)
    return [derive_seed(base_seed, experiment, "tune", i) for i in range(count)]


def evaluation_seeds(base_seed, experiment, count):
    """`count` seeds for the evaluation data of `experiment`; never used for tuning."""
    count = integer(count, "count", minimum=0)
    seeds = [derive_seed(base_seed, experiment, "eval", i) for i in range(count)]
    # Collisions of 64-bit derived seeds are astronomically unlikely; checked because the protocol rests on it.
    if set(seeds) & set(tuning_seeds(base_seed, experiment, count)):
        raise RuntimeError("an evaluation seed coincides with a tuning seed")
    return seeds


def _values(values, name):
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    return arr


def _level(level):
    level = float(level)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return level


def mean_interval(values, level=LEVEL):
    """Student-t interval of the mean of `values` (one per seed): dict(estimate, low, high, n, level, method).

    With one value (or zero spread and n = 1) the interval is infinite, so no claim can be decided from it.
    """
    from scipy import stats

    x = _values(values, "values")
    level = _level(level)
    mean = float(x.mean())
    n = x.size
    if n < 2:
        low, high = -math.inf, math.inf
    else:
        half = stats.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
        low, high = mean - half, mean + half
    return dict(estimate=mean, low=float(low), high=float(high), n=int(n), level=level, method="t")


def bootstrap_interval(values, level=LEVEL, n_resamples=10000, seed=0):
    """Percentile bootstrap interval of the mean of `values` (resampling seeds with replacement)."""
    x = _values(values, "values")
    level = _level(level)
    n_resamples = integer(n_resamples, "n_resamples", minimum=100)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return dict(estimate=float(x.mean()), low=float(low), high=float(high), n=int(x.size), level=level,
                method="bootstrap")


def paired_interval(a, b, level=LEVEL, method="t", n_resamples=10000, seed=0):
    """Interval of the mean of a - b over seeds (a[i], b[i] measured on the same data): paired t or bootstrap."""
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up (same number of seeds), got {a.size} and {b.size}")
    if method == "t":
        out = mean_interval(a - b, level)
        out["method"] = "paired t"
    elif method == "bootstrap":
        out = bootstrap_interval(a - b, level, n_resamples, seed)
        out["method"] = "paired bootstrap"
    else:
        raise ValueError(f"method must be 't' or 'bootstrap', got {method!r}")
    return out


def slopes(x, Y):
    """OLS slope of log Y[s] against log x for every row s of Y (one row per seed); an array of slopes."""
    lx = np.log(_values(x, "x"))
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2 or Y.shape[1] != lx.size:
        raise ValueError(f"Y must be (seeds, {lx.size}), got shape {Y.shape}")
    if lx.size < 2:
        raise ValueError("x must hold at least two values to fit a slope")
    if np.any(~np.isfinite(Y)) or np.any(Y <= 0):
        raise ValueError("Y must be positive and finite to take logs")
    ly = np.log(Y)
    xc = lx - lx.mean()
    return (ly - ly.mean(axis=1, keepdims=True)) @ xc / (xc @ xc)


def verdict(interval, claim_op, value=0.0, upper=None):
    """HOLDS / FAILS / INCONCLUSIVE for a claim about the quantity whose interval is given.

    claim_op ">" (theta > value): HOLDS if low > value, FAILS if high <= value.
    claim_op "<" (theta < value): HOLDS if high < value, FAILS if low >= value.
    claim_op "in" (value <= theta <= upper): HOLDS if the interval lies inside, FAILS if it misses it.
    """
    low, high = interval["low"], interval["high"]
    if claim_op == ">":
        return HOLDS if low > value else FAILS if high <= value else INCONCLUSIVE
    if claim_op == "<":
        return HOLDS if high < value else FAILS if low >= value else INCONCLUSIVE
    if claim_op == "in":
        if upper is None or upper < value:
            raise ValueError("claim_op 'in' needs upper >= value")
        if value <= low and high <= upper:
            return HOLDS
        return FAILS if (high < value or low > upper) else INCONCLUSIVE
    raise ValueError(f"claim_op must be '>', '<' or 'in', got {claim_op!r}")


def all_of(verdicts):
    """Verdict of a conjunction: HOLDS if every part holds, FAILS if any part fails, else INCONCLUSIVE."""
    verdicts = list(verdicts)
    if not verdicts:
        raise ValueError("verdicts must not be empty")
    for v in verdicts:
        if v not in (HOLDS, FAILS, INCONCLUSIVE):
            raise ValueError(f"unknown verdict {v!r}")
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def format_interval(interval, digits=3):
    """'estimate [low, high]' with `digits` significant digits."""
    def f(v):
        if v != v:
            return "nan"
        return "inf" if v == math.inf else "-inf" if v == -math.inf else f"{v:.{digits}g}"
    return f"{f(interval['estimate'])} [{f(interval['low'])}, {f(interval['high'])}]"


def claim(claim_id, text, verdict_value, *, parts=(), detail=""):
    """A checked claim as recorded in the results.

    `parts` lists the measured pieces (dicts with ``what``, ``interval``, ``claim_op``, ``value``, ``verdict``)
    whose conjunction gave `verdict_value`.
    """
    if verdict_value not in (HOLDS, FAILS, INCONCLUSIVE):
        raise ValueError(f"unknown verdict {verdict_value!r}")
    return dict(id=claim_id, claim=text, verdict=verdict_value, parts=list(parts), detail=detail)


def part(what, interval, claim_op, value=0.0, upper=None):
    """One measured piece of a claim: the quantity, its interval and the piece's verdict."""
    return dict(what=what, interval=interval, claim_op=claim_op, value=value, upper=upper,
                verdict=verdict(interval, claim_op, value, upper))


def claims_markdown(claims):
    """Markdown: one bullet per claim with its verdict, then its measured parts."""
    lines = []
    for c in claims:
        lines.append(f"- **{c['verdict']}** `{c['id']}`: {c['claim']}" + (f" ({c['detail']})" if c["detail"] else ""))
        for p in c["parts"]:
            iv = p["interval"]
            target = (f"in [{p['value']:g}, {p['upper']:g}]" if p["claim_op"] == "in"
                      else f"{p['claim_op']} {p['value']:g}")
            lines.append(f"  - {p['what']}: {format_interval(iv)} ({iv['method']}, {iv['n']} seeds, "
                         f"{iv['level']:.0%}); claim {target}: {p['verdict']}")
    return "\n".join(lines)
