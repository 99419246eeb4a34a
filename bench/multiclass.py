"""Multi-class MFLD on scikit-learn's digits against a cross-validated RBF SVC (results: bench/results/multiclass.md).

Data: ``load_digits`` (1797 images, 10 classes, d = 64), split 75/25 (stratified, seed 0; n = 1347 training
points), standardised on the training part. Baseline: ``SVC(kernel="rbf")`` tuned by 5-fold GridSearchCV on
the training part only (C in {0.1, 1, 10, 100}, gamma in {"scale", 1e-3, 3e-3, 1e-2, 3e-2}). MFLD:
``MeanFieldClassifier`` with input_scale = 1/sqrt(d) = 0.125 (chosen before the default "auto" became
0.5/sqrt(d); not tuned on digits) and the default lam = 0.004, lam_a = lam_w = 0.25, eta = 0.2, at N = 2000 for
1000 steps, the multinomial second layer, with 2 threads, for each seed given and each precision given
(float64, the default, and float32: single-precision features, Gram and drift, the second layer still
solved in float64); test accuracy every 100 steps. One-vs-rest, multinomial and a binary fit (even against odd digits, one logistic
output: what one binary fit costs) are also run for ``--ovr-steps`` steps (seed of the first run) and compared
in time per step and accuracy. The multinomial second layer's solver is compared in
the same run with itself without its preconditioner (plain CG, the solver before the deflation
preconditioner) over ``--plain-steps`` steps, alternating, ``--repeats`` times. The load average of the
machine is recorded before and after each fit (the machine is shared).

    OMP_NUM_THREADS=2 python bench/multiclass.py [--seeds 0] [--steps 1000] [--precisions float64 float32]
        [--ovr-steps 20] [--plain-steps 200] [--repeats 2]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "python"))
sys.path.insert(0, str(HERE.parent))  # bench.machine


def data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), y_train, scaler.transform(X_test), y_test


def svc_baseline(X, y, X_test, y_test):
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    grid = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 1e-3, 3e-3, 1e-2, 3e-2]}
    t0 = time.perf_counter()
    search = GridSearchCV(SVC(kernel="rbf"), grid, cv=5).fit(X, y)
    return dict(best_params=search.best_params_, cv_accuracy=float(search.best_score_),
                test_accuracy=float(search.score(X_test, y_test)), seconds=time.perf_counter() - t0)


def mfld(X, y, X_test, y_test, *, seed, steps, multi_class, threads, precision="float64"):
    from mfkern import MeanFieldClassifier

    est = MeanFieldClassifier(n_particles=2000, n_steps=steps, log_every=min(100, steps), random_state=seed,
                              n_threads=threads, multi_class=multi_class, input_scale=1 / np.sqrt(X.shape[1]),
                              precision=precision)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    est.fit(X, y, X_val=X_test, y_val=y_test)
    seconds = time.perf_counter() - t0
    h = est.history_
    return dict(seed=seed, multi_class=multi_class, precision=precision, steps=steps, seconds=seconds,
                load_before=load_before,
                load_after=os.getloadavg(), test_accuracy=float(est.score(X_test, y_test)),
                history=dict(step=h["step"], val_accuracy=h["val_accuracy"], train_accuracy=h["train_accuracy"],
                             newton_iterations=h["newton_iterations"], wall_time=h["wall_time"]))


def solver_comparison(X, y, *, seed, steps, threads, repeats):
    """Seconds per step and Newton / CG iterations per solve of the multinomial classifier, with and without
    the deflation preconditioner, alternating (same seed, same steps)."""
    from mfkern import MeanFieldClassifier, classifier, losses

    runs = []
    solve = losses.solve_multinomial_unchecked
    deflation = losses._deflation  # bench only: switching the preconditioner off to time what it saves
    for repeat in range(repeats):
        for variant in ("preconditioned", "plain"):
            counts = []

            def counted(*args, **kwargs):
                solution = solve(*args, **kwargs)
                counts.append((solution.iterations, solution.cg_iterations))
                return solution

            classifier.solve_multinomial_unchecked = counted
            losses._deflation = deflation if variant == "preconditioned" else (lambda products, P, c: None)
            try:
                est = MeanFieldClassifier(n_particles=2000, n_steps=steps, log_every=steps, random_state=seed,
                                          n_threads=threads, input_scale=1 / np.sqrt(X.shape[1]))
                t0 = time.perf_counter()
                est.fit(X, y)
                seconds = time.perf_counter() - t0
            finally:
                classifier.solve_multinomial_unchecked = solve
                losses._deflation = deflation
            counts = np.array(counts, dtype=float)
            runs.append(dict(repeat=repeat, variant=variant, steps=steps, seconds=seconds,
                             seconds_per_step=seconds / steps, newton_per_solve=float(counts[:, 0].mean()),
                             cg_per_solve=float(counts[:, 1].mean()), load_after=os.getloadavg()))
            print("solver", runs[-1], flush=True)
    return runs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--precisions", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    parser.add_argument("--ovr-steps", type=int, default=20)
    parser.add_argument("--plain-steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    X, y, X_test, y_test = data()
    from bench.machine import describe
    results = dict(n_train=len(X), n_test=len(X_test), d=X.shape[1], omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                   machine_details=describe())  # CPU model, cores, memory, BLAS, ISA, git commit
    results["svc"] = svc_baseline(X, y, X_test, y_test)
    print("SVC", results["svc"], flush=True)
    (out / "multiclass_svc.json").write_text(json.dumps(results, indent=1))
    results["multinomial"] = []
    for seed in args.seeds:
        for precision in args.precisions:
            run = mfld(X, y, X_test, y_test, seed=seed, steps=args.steps, multi_class="multinomial",
                       threads=args.threads, precision=precision)
            results["multinomial"].append(run)
            print("multinomial", {k: v for k, v in run.items() if k != "history"}, flush=True)
            (out / "multiclass.json").write_text(json.dumps(results, indent=1))
    # One-vs-rest against multinomial over the same few steps (one-vs-rest costs C factorisations a step).
    results["short"] = []
    if args.ovr_steps:
        for multi_class in ("ovr", "multinomial", "binary"):
            # "binary": one logistic output on the same data (even against odd digits), what one binary fit
            # costs at this size
            labels, labels_test = (y % 2, y_test % 2) if multi_class == "binary" else (y, y_test)
            run = mfld(X, labels, X_test, labels_test, seed=args.seeds[0], steps=args.ovr_steps,
                       multi_class="multinomial" if multi_class == "binary" else multi_class, threads=args.threads)
            run["multi_class"] = multi_class
            results["short"].append(run)
            print("short", {k: v for k, v in run.items() if k != "history"}, flush=True)
    if args.plain_steps:
        results["solver"] = solver_comparison(X, y, seed=args.seeds[0], steps=args.plain_steps,
                                              threads=args.threads, repeats=args.repeats)
    (out / "multiclass.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, out / "multiclass.md")
    print((out / "multiclass.md").read_text())



def write_markdown(results, path):
    """bench/results/multiclass.md from the results dict of :func:`main`."""
    svc = results["svc"]
    lines = ["# Multi-class MFLD on scikit-learn's digits", "",
             f"Produced by `OMP_NUM_THREADS=2 python bench/multiclass.py` (protocol in its docstring): digits, "
             f"n = {results['n_train']} training / {results['n_test']} test points, d = {results['d']}, 10 classes, "
             "standardised on the training part.", "",
             "| method | test accuracy | wall time (s) | load average (1 min) before -> after |", "|---|---|---|---|",
             f"| RBF SVC, 5-fold GridSearchCV on the training part (best C = {svc['best_params']['C']}, gamma = "
             f"{svc['best_params']['gamma']}; CV accuracy {svc['cv_accuracy']:.3f}) | {svc['test_accuracy']:.4f} | "
             f"{svc['seconds']:.0f} (the whole search) | |"]
    for run in results["multinomial"]:
        lines.append(f"| MFLD multinomial, N = 2000, {run['steps']} steps, seed {run['seed']}, "
                     f"precision={run.get('precision', 'float64')!r}, 2 threads | "
                     f"{run['test_accuracy']:.4f} | {run['seconds']:.0f} | {run['load_before'][0]:.1f} -> "
                     f"{run['load_after'][0]:.1f} |")
    lines += ["", "Test accuracy along the multinomial run(s) (every 100 steps):", "",
              "| step | " + " | ".join(f"seed {r['seed']}, {r.get('precision', 'float64')}"
                                       for r in results["multinomial"]) + " |",
              "|---|" + "---|" * len(results["multinomial"])]
    if results["multinomial"]:
        for i, step in enumerate(results["multinomial"][0]["history"]["step"]):
            lines.append(f"| {step} | " + " | ".join(f"{r['history']['val_accuracy'][i]:.4f}"
                                                    for r in results["multinomial"]) + " |")
    if results.get("short"):
        lines += ["", "One-vs-rest against multinomial, and one binary fit (even against odd digits) on the same "
                  "data, same seed, same number of steps:", "",
                  "| multi_class | steps | test accuracy | wall time (s) | s per step | Newton iterations per step "
                  "| load before -> after |", "|---|---|---|---|---|---|---|"]
        for run in results["short"]:
            h = run["history"]
            lines.append(f"| {run['multi_class']} | {run['steps']} | {run['test_accuracy']:.4f} | "
                         f"{run['seconds']:.0f} | {run['seconds'] / run['steps']:.2f} | "
                         f"{sum(h['newton_iterations']) / run['steps']:.1f} | {run['load_before'][0]:.1f} -> "
                         f"{run['load_after'][0]:.1f} |")
    if results.get("solver"):
        solver = results["solver"]
        steps = solver[0]["steps"]
        lines += ["", f"The multinomial second layer with and without its preconditioner (seed "
                  f"{results['multinomial'][0]['seed'] if results['multinomial'] else 0}, {steps} steps each, "
                  "alternating; plain = conjugate gradients without the deflation preconditioner):", "",
                  "| repeat | variant | s per step | Newton iterations per solve | CG iterations per solve |",
                  "|---|---|---|---|---|"]
        for run in solver:
            lines.append(f"| {run['repeat']} | {run['variant']} | {run['seconds_per_step']:.3f} | "
                         f"{run['newton_per_solve']:.2f} | {run['cg_per_solve']:.1f} |")
        ratios = [plain["seconds"] / pre["seconds"] for pre, plain in zip(solver[0::2], solver[1::2])]
        lines += ["", f"Plain / preconditioned time per step: median {np.median(ratios):.2f}x "
                  f"(per repeat: {', '.join(f'{r:.2f}' for r in ratios)}). The load average after the last fit: "
                  f"{solver[-1]['load_after'][0]:.1f}."]
    if results["multinomial"]:
        per_step = {short["multi_class"]: short["seconds"] / short["steps"] for short in results.get("short", [])}
        lines += ["", "## Reading", ""]
        for run in results["multinomial"]:
            gap = run["test_accuracy"] - svc["test_accuracy"]
            label = f"seed {run['seed']}, precision={run.get('precision', 'float64')!r}"
            lines += [f"- {label}: test accuracy {run['test_accuracy']:.4f} against the tuned SVC's "
                      f"{svc['test_accuracy']:.4f}, a difference of {gap:+.4f} (target: within 0.03); "
                      f"{run['steps']} steps took {run['seconds']:.0f} s ({run['seconds'] / 60:.1f} min, "
                      f"{1e3 * run['seconds'] / run['steps']:.0f} ms per step) against the 2-minute target for "
                      f"1000 steps: {'met' if run['seconds'] * 1000 / run['steps'] <= 120 else 'not met'}."]
        lines += [f"- One seed and {results['n_test']} test points (one error = {1 / results['n_test']:.4f}): no "
                  "interval on the accuracies.",
                  *([f"- Cost against one binary fit: multinomial {per_step['multinomial']:.2f} s per step, "
                     f"binary {per_step['binary']:.2f}, one-vs-rest {per_step['ovr']:.2f} (the short runs): the "
                     f"10-class fit costs {per_step['multinomial'] / per_step['binary']:.2f} binary fits."]
                    if {"multinomial", "binary", "ovr"} <= set(per_step) else []),
                  f"- Machine: {_machine_line(results)}, OMP_NUM_THREADS="
                  f"{results['omp_num_threads']}; the load average before and after each fit is in the tables."]
    pathlib.Path(path).write_text("\n".join(lines) + "\n")


def _machine_line(results):
    """The machine in one line (results written before machine_details was recorded have only CPU and count)."""
    if "machine_details" in results:
        from bench.machine import summary_line
        return summary_line(results["machine_details"])
    return f"{results['machine']}, {results['cpus']} CPUs"


if __name__ == "__main__":
    main()
