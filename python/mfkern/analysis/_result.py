"""The result of a sweep: a tidy table of errors, fitted slopes, per-run values, and the reference used."""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .._validation import integer
from . import stats

__all__ = ["ErrorSweep", "METRICS", "CACHE_NAME", "CACHE_VERSION", "check_replicates", "summarize"]

#: File name of the resume cache of finished runs (in the sweep's out_dir; see mfkern.runner.RunCache).
CACHE_NAME = "discretization_runs.jsonl"
#: Bumped whenever a run's result changes meaning, so stale cached results are never reused (2: per-time
#: records, window series of U, curvature; runs advanced through mfkern.analysis._system.advance).
CACHE_VERSION = 2

#: What every metric measures and its error statistic over seeds.
METRICS = {
    "G_gap": ("|E Gbar_N - Gbar_ref|, G averaged over the window (run and reference alike)", "abs_mean"),
    "U_gap": ("|E Ubar_N - Ubar_ref| (data term of G), averaged over the window", "abs_mean"),
    "G_gap_at_t": ("|E G_N(t) - G_ref(t)| at one time t", "abs_mean"),
    "kernel_sq_sup": ("E max_{x,x' in probe} (k_W(x,x') - k_ref(x,x'))^2, both at the same (last) step",
                      "mean"),
    "predictor_sq_sup": ("E max_{x in probe} (f_W(x) - f_ref(x))^2, both at the same (last) step", "mean"),
    "kernel_sq_sup_window": ("E max_{x,x' in probe} (kbar_W - kbar_ref)^2, both averaged over the window",
                             "mean"),
    "predictor_sq_sup_window": ("E max_{x in probe} (fbar_W - fbar_ref)^2, both averaged over the window", "mean"),
    "G_weak": ("|E G(W_eta) - E G(W_ref)| at matched times, averaged over the window", "abs_mean"),
    "G_weak_at_t": ("|E G(W_eta)(t) - E G(W_ref)(t)| at one time t", "abs_mean"),
    "strong": ("sqrt(E (1/N) sum_k |w_k^eta - w_k^ref|^2) at matched times, averaged over the window",
               "root_mean"),
    "strong_at_t": ("sqrt(E (1/N) sum_k |w_k^eta - w_k^ref|^2) at one time t", "root_mean"),
    "median_distance_at_t": ("E median_k |w_k^eta - w_k^ref| at one time t (the bulk of the particles)", "mean"),
    "far_fraction_at_t": ("E fraction of particles with |w_k^eta - w_k^ref| > 0.25 rms_k |w_k^ref| at time t",
                          "mean"),
    "variance_weak_exact": ("|E mean(w^2) - 1/lam_w|: weak error against the exact continuous OU variance",
                            "abs_mean"),
}


def check_replicates(seeds):
    """Replicate ids from `seeds`: an int s >= 1 means 0..s-1; a sequence gives them (distinct ints >= 0)."""
    if isinstance(seeds, numbers.Integral) and not isinstance(seeds, (bool, np.bool_)):
        count = integer(seeds, "seeds", minimum=1)
        return list(range(count))
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise TypeError(f"seeds must be a positive int or a sequence of non-negative ints, got "
                        f"{type(seeds).__name__}")
    replicates = [integer(s, "seeds", minimum=0) for s in seeds]
    if not replicates:
        raise ValueError("seeds must not be empty")
    if len(set(replicates)) != len(replicates):
        raise ValueError(f"seeds must be distinct, got {replicates}")
    return replicates


def _interval(values, statistic, level):
    """Point estimate and per-point CI: t interval of the mean, mapped through abs or sqrt."""
    if statistic == "root_mean":
        mean, (low, high) = stats.mean_interval(values, level)
        clip = lambda v: math.sqrt(max(v, 0.0)) if not math.isnan(v) else v  # noqa: E731
        return math.sqrt(mean), (clip(low), clip(high))
    return stats.mean_interval(values, level, absolute=(statistic == "abs_mean"))


def summarize(grid_name, grid, per_run, metrics, theory, *, level=0.95, n_boot=2000, boot_seed=0,
              extra_columns=None):
    """Tidy table rows and fitted slopes from per-run values.

    per_run : list of dicts with the grid value under `grid_name` and one value per metric.
    metrics : the metric names to summarise; theory : metric -> theoretical slope (or None).
    extra_columns : optional metric -> {grid value: {column: value}} added to the table rows.
    """
    table, slopes = [], {}
    for metric in metrics:
        statistic = METRICS[metric][1]
        function, _ = stats.STATISTICS[statistic]
        groups = []
        for value in grid:
            values = np.array([run[metric] for run in per_run if run[grid_name] == value], dtype=float)
            groups.append(values)
            error, (low, high) = _interval(values, statistic, level)
            row = {"metric": metric, grid_name: value, "error": error, "ci_low": low, "ci_high": high,
                   "n_seeds": int(values.shape[0])}
            row.update((extra_columns or {}).get(metric, {}).get(value, {}))
            table.append(row)
        fit = {"theory": theory.get(metric), "statistic": statistic, "description": METRICS[metric][0]}
        errors = np.array([float(function(g)) for g in groups])
        if len(grid) >= 2 and (errors > 0).all():
            fit.update(stats.seed_slope(grid, groups, statistic, n_boot=n_boot, level=level, seed=boot_seed))
        else:
            fit.update(slope=float("nan"), intercept=float("nan"), ci=(float("nan"), float("nan")),
                       ci_bootstrap=(float("nan"), float("nan")), ci_ols=(float("nan"), float("nan")),
                       note="no fit: fewer than 2 grid points or an error equal to 0")
        exact = [row.get("exact") for row in table if row["metric"] == metric]
        if len(grid) >= 2 and all(e is not None and e > 0 for e in exact):
            # The slope the exact expected errors have on this grid (higher-order terms included): what
            # the measured slope should recover.
            fit["exact_slope"] = stats.fit_loglog(grid, exact, level)["slope"]
        slopes[metric] = fit
    return table, slopes


def _fmt(value, spec=".3g"):
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return format(value, spec)


@dataclasses.dataclass
class ErrorSweep:
    """Result of :func:`particle_error` or :func:`time_error`.

    Attributes
    ----------
    kind : "particle" or "time"
    grid_name : "N" or "eta"
    grid : list of the grid values (ascending)
    config : dict of the DiscretizationConfig
    table : list of dicts, one per (metric, grid value): ``metric``, the grid value, ``error``,
        ``ci_low``, ``ci_high`` (t interval over seeds, see :func:`mfkern.analysis.stats.mean_interval`),
        ``n_seeds`` and, where known, ``exact`` (the exact expected error).
    slopes : dict metric -> fit: ``slope``, ``ci`` (delta method, t; the primary interval),
        ``ci_bootstrap`` (over seeds), ``ci_ols`` (t interval of the OLS residuals), ``theory``,
        ``intercept`` (natural-log fit), ``statistic``, ``description`` and, where the exact errors are
        known, ``exact_slope`` (their slope on the same grid). See :mod:`mfkern.analysis.stats`.
    runs : list of dicts, one per run: grid value, ``replicate``, ``seed`` and the per-run metric values.
    reference : dict describing the reference (exact, or the large-N / small-eta runs used).
    settings : dict of the sweep's other arguments.
    by_time : dict metric -> list (one per report time) of {``t``, ``step``, ``table`` (rows as in
        `table`), ``slope`` (fit as in `slopes`)}: the error against time.
    stationarity : dict: the check of the averaging window (see :func:`mfkern.analysis.stats.stationarity`)
        per grid value and for the reference, and ``all_stationary``.
    diagnostics : dict, e.g. the drift's curvature L and eta * L (small-step regime when eta * L << 1).
    """

    kind: str
    grid_name: str
    grid: list
    config: dict
    table: list
    slopes: dict
    runs: list
    reference: dict
    settings: dict
    by_time: dict = dataclasses.field(default_factory=dict)
    stationarity: dict = dataclasses.field(default_factory=dict)
    diagnostics: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        """A JSON-ready dict of everything (tuples become lists)."""
        return dataclasses.asdict(self)

    def rows(self, metric):
        """The table rows of one metric, in grid order."""
        return [row for row in self.table if row["metric"] == metric]

    def format_table(self):
        """A plain-text table: grid value, error, CI per metric, then the fitted slopes against theory."""
        lines = []
        width = max(len(m) for m in self.slopes) if self.slopes else 10
        lines.append(f"{'metric':<{width}}  {self.grid_name:>8}  {'error':>10}  {'95% CI':>23}  {'exact':>10}")
        for row in self.table:
            ci = f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]"
            lines.append(f"{row['metric']:<{width}}  {_fmt(row[self.grid_name], 'g'):>8}  "
                         f"{_fmt(row['error']):>10}  {ci:>23}  {_fmt(row.get('exact')):>10}")
        for metric, fit in self.slopes.items():
            ci, ci_ols = fit.get("ci"), fit.get("ci_ols")
            exact = f"  exact {fit['exact_slope']:.3f}" if "exact_slope" in fit else ""
            if "slope_vs_eta_minus_reference" in fit:
                exact += f"  (vs eta - eta_ref: {fit['slope_vs_eta_minus_reference']:.3f})"
            lines.append(f"slope {metric:<{width}} = {_fmt(fit['slope'], '.3f')}  "
                         f"95% CI [{_fmt(ci[0], '.3f')}, {_fmt(ci[1], '.3f')}]  "
                         f"OLS-t CI [{_fmt(ci_ols[0], '.3f')}, {_fmt(ci_ols[1], '.3f')}]  "
                         f"theory {_fmt(fit['theory'], 'g')}{exact}")
        for metric, entries in self.by_time.items():
            parts = []
            for entry in entries:
                fit = entry["slope"]
                parts.append(f"t={entry['t']:g}: {_fmt(fit['slope'], '.2f')} "
                             f"[{_fmt(fit['ci'][0], '.2f')}, {_fmt(fit['ci'][1], '.2f')}]")
            lines.append(f"slope {metric} against time: " + "; ".join(parts))
        for label, check in _stationarity_items(self.stationarity):
            lines.append(f"stationarity ({label}): {check}")
        if self.diagnostics:
            lines.append("diagnostics: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in self.diagnostics.items()
                                                     if isinstance(v, (int, float))))
        return "\n".join(lines)


def _stationarity_items(info):
    """(label, one-line summary) of every stationarity check in a sweep's `stationarity` dict."""
    groups = [(f"N={key}" if not isinstance(key, float) else f"eta={key:g}", value)
              for key, value in (info.get("by_N") or info.get("by_eta") or {}).items()]
    if info.get("reference") is not None:
        groups.append(("reference", info["reference"]))
    items = []
    for label, checks in groups:
        if checks is None:
            continue
        parts = []
        for name, check in checks.items():
            parts.append(f"{name}: 2nd-1st half {_fmt(check['half_difference'])} "
                         f"[{_fmt(check['ci'][0])}, {_fmt(check['ci'][1])}] "
                         f"({_fmt(100 * check['relative_half_difference'], '.2f')}%), "
                         f"{'stationary' if check['stationary'] else 'DRIFT' if check['stationary'] is False else '?'}")
        items.append((label, "; ".join(parts)))
    return items
