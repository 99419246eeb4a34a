"""The result of a sweep: a tidy table of errors, fitted slopes, per-run values, and the reference used."""
from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from .._validation import integer
from . import stats

__all__ = ["ErrorSweep", "METRICS", "check_replicates", "summarize"]

#: What every metric measures, its error statistic over seeds, and the theory's slope (None: no rate).
METRICS = {
    "G_gap": ("|E G(mu_N) - G_ref|, G time-averaged over the window", "abs_mean"),
    "U_gap": ("|E U(mu_N) - U_ref| (data term of G), time-averaged", "abs_mean"),
    "kernel_sq_sup": ("E max_{x,x' in probe} (k_W(x,x') - k_ref(x,x'))^2 at the last step", "mean"),
    "predictor_sq_sup": ("E max_{x in probe} (f_W(x) - f_ref(x))^2 at the last step", "mean"),
    "G_weak": ("|E G(W_eta) - E G(W_ref)| at matched times, averaged over the window", "abs_mean"),
    "strong": ("sqrt(E (1/N) sum_k |w_k^eta - w_k^ref|^2) at matched times, averaged over the window",
               "root_mean"),
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
        return "\n".join(lines)
