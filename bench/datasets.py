"""mfkern's DEFAULT settings against CV-tuned kernel baselines on named datasets (bench/results/datasets.md).

The question: a user with a standardised regression or classification dataset who takes
``MeanFieldRegressor()`` / ``MeanFieldClassifier()`` as they come (no tuning) -- how far are they from an
RBF kernel method whose hyper-parameters were tuned by 5-fold cross-validation, and from a linear model?

Protocol (every number in the results is a test-set number):

- Datasets: scikit-learn's bundled load_diabetes, load_breast_cancer, load_wine, load_iris, load_digits
  (in full: 1797 points, 10 classes; :data:`DIGITS_SAMPLES` can subsample it) and the synthetic
  make_friedman1 (n = 500, noise = 1, random_state = 0) and make_friedman2 (n = 500, noise = 125, about a
  third of the target's standard deviation, random_state = 0). :data:`USED_FOR_DEFAULTS` names the ones on
  which the defaults were chosen (bench/defaults.py: friedman1, diabetes, breast_cancer, wine); the others
  (iris, digits, friedman2) played no part in the choice and are reported separately.
- Splits: for split seed s in 0..n_splits-1, ``train_test_split(test_size=0.3, random_state=s)``
  (stratified for classification). Everything below is fitted on the training part only.
- Inputs standardised by a ``StandardScaler`` in a Pipeline; regression targets standardised too
  (``TransformedTargetRegressor``); scores are test R^2 (regression, invariant to the target scaling) or
  test accuracy (classification).
- mfkern: ``MeanFieldRegressor(random_state=s, n_threads=1)`` / ``MeanFieldClassifier(...)``: the default
  preset (N = 2000, 500 steps, input_scale="auto", lam = 0.004, lam_a = lam_w = 0.25, eta = 0.2), nothing
  tuned.
- Tuned kernel baseline: ``GridSearchCV`` (5 folds, ``KFold``/``StratifiedKFold`` shuffled with
  random_state=s, inside the training part) of RBF ``KernelRidge`` (alpha, gamma) for regression or RBF
  ``SVC`` (C, gamma) for classification, on log grids; when the best value of a parameter is at an end of
  its grid the grid is extended by :data:`WIDEN_BY` points on that side and the search rerun, up to
  :data:`MAX_WIDENINGS` times; where the choice fell (interior, or still at an edge) is recorded.
- Linear baseline: ``RidgeCV`` (efficient leave-one-out over 25 alphas) / ``LogisticRegressionCV``
  (5 folds, 21 Cs).
- Reported per dataset: mean and standard deviation of each model's score over the splits, the mean of
  the paired difference (mfkern - tuned kernel) and (mfkern - linear) with a 95% paired-t interval
  (t with n_splits - 1 degrees of freedom), and the fit times.

Budget (2-core machine shared with other jobs, n_jobs=1, one thread): every dataset in full and the
defaults untouched (no cap on n_steps or N). Until commit c25221e load_digits was subsampled to 600 points
because a default 10-class fit took minutes; the multinomial solver has since become several times faster
(bench/results/multiclass.md), so DIGITS_SAMPLES is None.

    python bench/datasets.py [--n-splits 5] [--datasets iris,wine] [--n-jobs 1] [--quick] [--out DIR]

``--quick`` is a smoke run for the tests: two tiny subsampled datasets, 2 splits, N = 40 particles and
20 steps (NOT the defaults), small grids and 3 folds; its results say so. Runs are cached in
``<out>/datasets_runs.jsonl`` (``mfkern.runner.RunCache``), so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import math
import pathlib
import sys
import time
import warnings

import numpy as np

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.harness import write_json  # noqa: E402
from bench.machine import describe, summary_line  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

REGRESSION = ("diabetes", "friedman1", "friedman2")
CLASSIFICATION = ("breast_cancer", "wine", "iris", "digits")
DATASETS = REGRESSION + CLASSIFICATION
#: The datasets on which the default input scale and number of steps were chosen (bench/defaults.py).
USED_FOR_DEFAULTS = frozenset({"friedman1", "diabetes", "breast_cancer", "wine"})
DIGITS_SAMPLES = None  # or a number of points: a stratified subsample (random_state=0)
TEST_SIZE = 0.3
CV_FOLDS = 5
WIDEN_BY = 3
MAX_WIDENINGS = 4

#: Initial log10 grids of the tuned kernel baselines (extended when the choice is at an edge).
KRR_GRID = {"alpha": np.arange(-4.0, 1.5, 1.0), "gamma": np.arange(-4.0, 1.5, 1.0)}
SVC_GRID = {"C": np.arange(-2.0, 4.5, 1.0), "gamma": np.arange(-5.0, 1.5, 1.0)}
RIDGE_ALPHAS = np.logspace(-4, 5, 25)
LOGISTIC_CS = 21

QUICK = dict(datasets=("diabetes", "iris"), n_splits=2, n_samples=80, mfkern=dict(n_particles=40, n_steps=20),
             folds=3, krr_grid={"alpha": np.arange(-2.0, 1.5, 1.0), "gamma": np.arange(-3.0, 0.5, 1.0)},
             svc_grid={"C": np.arange(-1.0, 2.5, 1.0), "gamma": np.arange(-3.0, 0.5, 1.0)})


# ----------------------------------------------------------------------------------------------------------
# Data

def load(name, n_samples=None):
    """(X, y, task) of a named dataset; `n_samples` takes a fixed (stratified) subsample."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {name!r}")
    task = "regression" if name in REGRESSION else "classification"
    if name == "friedman1":
        X, y = datasets.make_friedman1(n_samples=500, noise=1.0, random_state=0)
    elif name == "friedman2":
        X, y = datasets.make_friedman2(n_samples=500, noise=125.0, random_state=0)
    else:
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
    if name == "digits" and n_samples is None:
        n_samples = DIGITS_SAMPLES
    if n_samples is not None and n_samples < len(y):
        X, _, y, _ = train_test_split(X, y, train_size=n_samples, random_state=0,
                                      stratify=y if task == "classification" else None)
    return X, y, task


def split(X, y, task, seed):
    """The split of seed `seed`: (X_train, X_test, y_train, y_test), stratified for classification."""
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=TEST_SIZE, random_state=seed,
                            stratify=y if task == "classification" else None)


def folds(task, seed, n_folds=CV_FOLDS):
    """The cross-validation splitter used inside a training part."""
    from sklearn.model_selection import KFold, StratifiedKFold

    kind = StratifiedKFold if task == "classification" else KFold
    return kind(n_splits=n_folds, shuffle=True, random_state=seed)


# ----------------------------------------------------------------------------------------------------------
# Models

def _regression_pipeline(model):
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return TransformedTargetRegressor(Pipeline([("scale", StandardScaler()), ("model", model)]),
                                      transformer=StandardScaler())


def _classification_pipeline(model):
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", model)])


def pipeline(task, model):
    """StandardScaler -> model (and standardised targets for regression)."""
    return _regression_pipeline(model) if task == "regression" else _classification_pipeline(model)


def mfkern_model(task, seed, **overrides):
    """mfkern with its default settings (only random_state and n_threads set, unless `overrides`)."""
    from mfkern import MeanFieldClassifier, MeanFieldRegressor

    kind = MeanFieldRegressor if task == "regression" else MeanFieldClassifier
    return pipeline(task, kind(random_state=seed, n_threads=1, **overrides))


def kernel_model(task):
    """The RBF kernel baseline (untuned): KernelRidge for regression, SVC for classification."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.svm import SVC

    return pipeline(task, KernelRidge(kernel="rbf") if task == "regression" else SVC(kernel="rbf"))


def _param_prefix(task):
    return "regressor__model__" if task == "regression" else "model__"


def tuned_kernel(task, X_train, y_train, seed, *, grid=None, n_folds=CV_FOLDS, widen=True):
    """GridSearchCV of the RBF kernel baseline inside the training part, widened until interior.

    Parameters
    ----------
    grid : dict of name -> array of log10 values, or None for :data:`KRR_GRID` / :data:`SVC_GRID`.
    widen : bool
        Extend a parameter's grid by :data:`WIDEN_BY` decades on the side where its best value lies at the
        end (at most :data:`MAX_WIDENINGS` times).

    Returns
    -------
    (search, info): the fitted ``GridSearchCV`` (refitted on the whole training part) and a dict with the
    final log10 grids, the chosen values, where each fell ("interior", "lower edge", "upper edge") and the
    number of widenings.
    """
    from sklearn.model_selection import GridSearchCV

    grid = dict(KRR_GRID if task == "regression" else SVC_GRID) if grid is None else dict(grid)
    grid = {name: np.asarray(values, dtype=float) for name, values in grid.items()}
    prefix = _param_prefix(task)
    widenings = 0
    while True:
        search = GridSearchCV(kernel_model(task), {prefix + name: list(10.0 ** values) for name, values in grid.items()},
                              cv=folds(task, seed, n_folds), n_jobs=1)
        search.fit(X_train, y_train)
        chosen = {name: math.log10(search.best_params_[prefix + name]) for name in grid}
        where = {}
        for name, values in grid.items():
            index = int(np.argmin(np.abs(values - chosen[name])))
            where[name] = ("lower edge" if index == 0 else "upper edge" if index == len(values) - 1
                           else "interior")
        at_edge = [name for name in grid if where[name] != "interior"]
        if not widen or not at_edge or widenings >= MAX_WIDENINGS:
            break
        widenings += 1
        for name in at_edge:
            values = grid[name]
            step = values[1] - values[0]
            extra = step * np.arange(1, WIDEN_BY + 1)
            grid[name] = (np.concatenate([values[0] - extra[::-1], values]) if where[name] == "lower edge"
                          else np.concatenate([values, values[-1] + extra]))
    info = dict(grid_log10={name: [float(v) for v in values] for name, values in grid.items()},
                chosen_log10=chosen, where=where, widenings=widenings,
                cv_score=float(search.best_score_))
    return search, info


def linear_model(task, seed, n_folds=CV_FOLDS):
    """RidgeCV (leave-one-out) / LogisticRegressionCV (n_folds stratified folds), in the same pipeline."""
    from sklearn.linear_model import LogisticRegressionCV, RidgeCV

    import inspect

    if task == "regression":
        return pipeline(task, RidgeCV(alphas=RIDGE_ALPHAS))
    # Spelled out so that scikit-learn >= 1.8 does not warn about changing defaults (plain L2, accuracy).
    explicit = dict(scoring="accuracy", l1_ratios=(0.0,), use_legacy_attributes=False)
    accepted = inspect.signature(LogisticRegressionCV).parameters
    extra = {key: value for key, value in explicit.items() if key in accepted}
    if "l1_ratios" not in accepted or "use_legacy_attributes" not in accepted:
        extra.pop("l1_ratios", None)
    return pipeline(task, LogisticRegressionCV(Cs=LOGISTIC_CS, cv=folds(task, seed, n_folds), max_iter=5000,
                                               **extra))


# ----------------------------------------------------------------------------------------------------------
# One run = one model on one split of one dataset (cached by its spec)

def run_one(spec, n_threads=1):
    """Fit one model of `spec` on its split and score it on the test part (a JSON-able dict)."""
    from threadpoolctl import threadpool_limits

    X, y, task = load(spec["dataset"], spec.get("n_samples"))
    X_train, X_test, y_train, y_test = split(X, y, task, spec["split_seed"])
    seed = spec["split_seed"]
    result = {}
    with threadpool_limits(n_threads), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        if spec["model"] == "mfkern":
            model = mfkern_model(task, seed, **spec.get("mfkern", {})).fit(X_train, y_train)
        elif spec["model"] == "kernel":
            grid = spec.get("grid")
            model, info = tuned_kernel(task, X_train, y_train, seed, n_folds=spec["folds"],
                                       grid=None if grid is None else {k: np.asarray(v) for k, v in grid.items()})
            result["search"] = info
        elif spec["model"] == "linear":
            model = linear_model(task, seed, spec["folds"]).fit(X_train, y_train)
            inner = model.regressor_ if task == "regression" else model
            last = inner.named_steps["model"]
            values = RIDGE_ALPHAS if task == "regression" else last.Cs_
            chosen = float(last.alpha_ if task == "regression" else np.ravel(last.C_)[0])
            index = int(np.argmin(np.abs(np.log10(values) - math.log10(chosen))))
            result["search"] = dict(chosen=chosen, where=("lower edge" if index == 0 else "upper edge"
                                                          if index == len(values) - 1 else "interior"))
        else:
            raise ValueError(f"model must be 'mfkern', 'kernel' or 'linear', got {spec['model']!r}")
        result["fit_seconds"] = time.perf_counter() - start
        result["score"] = float(model.score(X_test, y_test))
    result["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught})
    result.update(n_train=len(y_train), n_test=len(y_test), n_features=X.shape[1])
    return result


def paired_interval(differences, level=0.95):
    """(mean, low, high) of the paired-t interval of the mean of `differences` (None bounds when n < 2)."""
    from scipy import stats

    d = np.asarray(differences, dtype=float)
    mean = float(d.mean())
    if d.size < 2:
        return mean, None, None
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def protocol_version():
    """What every run's result depends on beyond its spec: mfkern's version and default settings, the
    split, subsample and data settings, the search grids and their widening. It is part of every cache key
    (a short hash), so a change to any of them reruns instead of reusing old scores."""
    import hashlib
    import json

    import mfkern
    from mfkern import PRESETS, MeanFieldClassifier, MeanFieldRegressor

    settings = dict(mfkern=mfkern.__version__, presets=PRESETS, regressor=MeanFieldRegressor().get_params(),
                    classifier=MeanFieldClassifier().get_params(), test_size=TEST_SIZE,
                    digits_samples=DIGITS_SAMPLES, friedman=dict(n_samples=500, noise=(1.0, 125.0), random_state=0),
                    widen_by=WIDEN_BY, max_widenings=MAX_WIDENINGS,
                    grids={name: {k: [float(v) for v in values] for k, values in grid.items()}
                           for name, grid in (("krr", KRR_GRID), ("svc", SVC_GRID))},
                    ridge_alphas=[float(a) for a in RIDGE_ALPHAS], logistic_cs=LOGISTIC_CS)
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def specs_for(names, n_splits, quick):
    specs = []
    for name in names:
        for seed in range(n_splits):
            for model in ("mfkern", "kernel", "linear"):
                spec = dict(dataset=name, split_seed=seed, model=model, folds=QUICK["folds"] if quick else CV_FOLDS)
                if quick:
                    spec["n_samples"] = QUICK["n_samples"]
                    if model == "mfkern":
                        spec["mfkern"] = QUICK["mfkern"]
                    if model == "kernel":
                        grid = QUICK["krr_grid"] if name in REGRESSION else QUICK["svc_grid"]
                        spec["grid"] = {k: [float(v) for v in values] for k, values in grid.items()}
                specs.append(spec)
    return specs


def summarise(names, specs, results, n_splits):
    """Per dataset: scores per split, means, paired intervals, fit times, where the grids' choices fell."""
    table = {}
    for name in names:
        by_model = {}
        for spec, result in zip(specs, results):
            if spec["dataset"] == name:
                by_model.setdefault(spec["model"], [None] * n_splits)[spec["split_seed"]] = result
        scores = {model: [r["score"] for r in rows] for model, rows in by_model.items()}
        entry = dict(task="regression" if name in REGRESSION else "classification",
                     metric="R^2" if name in REGRESSION else "accuracy",
                     used_for_defaults=name in USED_FOR_DEFAULTS,
                     split_seeds=list(range(n_splits)),
                     n_train=by_model["mfkern"][0]["n_train"], n_test=by_model["mfkern"][0]["n_test"],
                     n_features=by_model["mfkern"][0]["n_features"],
                     scores=scores,
                     mean={m: float(np.mean(s)) for m, s in scores.items()},
                     std={m: float(np.std(s, ddof=1)) if len(s) > 1 else 0.0 for m, s in scores.items()},
                     fit_seconds={m: float(np.mean([r["fit_seconds"] for r in rows])) for m, rows in by_model.items()},
                     kernel_search=[r["search"] for r in by_model["kernel"]],
                     linear_search=[r["search"] for r in by_model["linear"]],
                     warnings={m: sorted({w for r in rows for w in r["warnings"]}) for m, rows in by_model.items()})
        for other in ("kernel", "linear"):
            diff = np.subtract(scores["mfkern"], scores[other])
            mean, low, high = paired_interval(diff)
            entry[f"mfkern_minus_{other}"] = dict(mean=mean, ci95=[low, high], per_split=diff.tolist(),
                                                  wins=int(np.sum(diff > 0)), ties=int(np.sum(diff == 0)))
        table[name] = entry
    return table


# ----------------------------------------------------------------------------------------------------------
# Report

def _fmt_ci(d):
    low, high = d["ci95"]
    if low is None:
        return f"{d['mean']:+.3f}"
    return f"{d['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"


def _where_summary(searches):
    """'alpha: interior 5/5; gamma: interior 4/5, upper edge 1/5' over the splits."""
    parts = []
    for name in searches[0]["where"]:
        counts = {}
        for s in searches:
            counts[s["where"][name]] = counts.get(s["where"][name], 0) + 1
        text = ", ".join(f"{k} {v}/{len(searches)}" for k, v in sorted(counts.items()))
        values = sorted({round(s["chosen_log10"][name], 3) for s in searches})
        parts.append(f"{name}: {text} (log10 chosen {', '.join(f'{v:g}' for v in values)})")
    widened = sum(s["widenings"] for s in searches)
    return "; ".join(parts) + (f"; widened {widened} time(s)" if widened else "")


def markdown(document):
    s = document["settings"]
    lines = ["# mfkern's defaults against CV-tuned kernel baselines", "",
             f"Produced by `python bench/datasets.py{' --quick' if s['quick'] else ''}` (protocol in its docstring) "
             f"at commit {document['machine']['git']['commit']} ({document['total_fit_seconds']:.0f} s of fitting in all, "
             f"{document['wall_seconds']:.0f} s wall time for the last invocation) on: "
             f"{summary_line(document['machine'])}.", ""]
    if s["quick"]:
        lines += ["**Quick smoke run: tiny subsamples, N = 40 particles and 20 steps -- NOT the defaults; "
                  "these numbers say nothing about mfkern's accuracy.**", ""]
    lines += [f"{s['n_splits']} random train/test splits per dataset (split seeds {s['split_seeds']}, test "
              f"fraction {TEST_SIZE}); mfkern with its default settings ({s['mfkern']}) and random_state = the "
              f"split seed; the kernel baseline tuned by GridSearchCV ({s['folds']}-fold, inside the training "
              "part) over log grids widened until the choice is interior; RidgeCV / LogisticRegressionCV as the "
              "linear baseline. Scores: test R^2 (regression) or test accuracy (classification), mean (sd) over "
              "the splits. Differences: mean over the splits of the paired difference, with its 95% paired-t "
              "interval.", ""]
    header = ["| dataset | n_train, d | metric | mfkern (defaults) | tuned RBF kernel | linear | mfkern - kernel "
              "[95% CI] | mfkern - linear [95% CI] | fit s: mfkern / kernel search / linear |",
              "|---|---|---|---|---|---|---|---|---|"]

    def row(name, e):
        m, sd, t = e["mean"], e["std"], e["fit_seconds"]
        kernel = "KRR" if e["task"] == "regression" else "SVC"
        return (f"| {name} | {e['n_train']}, {e['n_features']} | {e['metric']} | {m['mfkern']:.3f} ({sd['mfkern']:.3f}) | "
                f"{m['kernel']:.3f} ({sd['kernel']:.3f}) {kernel} | {m['linear']:.3f} ({sd['linear']:.3f}) | "
                f"{_fmt_ci(e['mfkern_minus_kernel'])} | {_fmt_ci(e['mfkern_minus_linear'])} | "
                f"{t['mfkern']:.1f} / {t['kernel']:.1f} / {t['linear']:.2f} |")

    groups = (("Datasets used to choose the defaults (bench/defaults.py)", True),
              ("Datasets NOT used to choose the defaults (held out)", False))
    for title, used in groups:
        names = [n for n, e in document["datasets"].items() if e["used_for_defaults"] == used]
        if names:
            lines += [f"## {title}", ""] + header + [row(n, document["datasets"][n]) for n in names] + [""]
    lines += ["## Where the grid choices fell", ""]
    for name, e in document["datasets"].items():
        lines.append(f"- {name}: kernel: {_where_summary(e['kernel_search'])}; linear: "
                     + ", ".join(sorted({s['where'] for s in e['linear_search']})))
    lines.append("")
    noted = [(n, m, w) for n, e in document["datasets"].items() for m, ws in e["warnings"].items() for w in ws]
    if noted:
        lines += ["## Warnings raised during the fits", ""] + [f"- {n}, {m}: {w}" for n, m, w in noted] + [""]
    lines += ["Per-split scores, chosen hyper-parameters and the machine description are in the JSON file "
              "next to this one.", ""]
    return "\n".join(lines)


def main(argv=None):
    from mfkern import PRESETS
    from mfkern.runner import RunCache, execute

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=None, help=f"comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--n-splits", type=int, default=None, help="splits per dataset (default 5; 2 with --quick)")
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (not the defaults)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    quick = args.quick
    names = tuple(args.datasets.split(",")) if args.datasets else (QUICK["datasets"] if quick else DATASETS)
    for name in names:
        if name not in DATASETS:
            parser.error(f"--datasets: unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    n_splits = args.n_splits if args.n_splits is not None else (QUICK["n_splits"] if quick else 5)
    if n_splits < 2:
        parser.error("--n-splits must be at least 2 (a paired interval needs two splits)")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "datasets_quick" if quick else "datasets"

    start = time.perf_counter()
    specs = specs_for(names, n_splits, quick)
    cache = RunCache(out, f"{stem}_runs.jsonl")
    results = execute(run_one, "datasets", specs, n_jobs=args.n_jobs, cache=cache, progress=True, n_threads=1,
                      version=protocol_version())
    wall = time.perf_counter() - start
    mfkern_settings = dict(PRESETS["default"])
    if quick:
        mfkern_settings.update(QUICK["mfkern"])
    document = dict(
        machine=describe(), wall_seconds=wall,
        total_fit_seconds=float(sum(r["fit_seconds"] for r in results)),
        settings=dict(quick=quick, n_splits=n_splits, split_seeds=list(range(n_splits)), test_size=TEST_SIZE,
                      folds=QUICK["folds"] if quick else CV_FOLDS, mfkern=mfkern_settings,
                      digits_samples=DIGITS_SAMPLES, n_samples=QUICK["n_samples"] if quick else None,
                      used_for_defaults=sorted(USED_FOR_DEFAULTS), widen_by=WIDEN_BY, max_widenings=MAX_WIDENINGS,
                      n_jobs=args.n_jobs, note="wall_seconds is this invocation's (runs read from the cache cost nothing); "
                      "total_fit_seconds sums every run's fit time"),
        datasets=summarise(names, specs, results, n_splits))
    write_json(out / f"{stem}.json", document)
    (out / f"{stem}.md").write_text(markdown(document))
    print((out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
