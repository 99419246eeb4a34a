"""The engine against the dense path, measured side by side in the same run (one fresh process per case).

Cases (each compares the engine's second-layer solvers with the dense path on the same problem):

- ``paper``: N=2000, n=1000, d=15, the paper's hyper-parameters and task (x1*x2, x ~ N(0, I)); plain, with
  label noise s=1, and with T=3 tasks. Per step: the v0.1 stateless dense step (``core.langevin_step``), the
  engine's dense solver and its conjugate-gradient solver (averaged over enough steps to include its
  refactorisations).
- ``end_to_end``: 10,000 steps of ``MeanFieldRegressor(log_every=100)`` at the paper size, wall time.
- ``floor``: N=8192, n=2048, d=16: the cg step against the dense BLAS floor (syrk + feature and drift products
  + Cholesky by numpy/LAPACK alone).
- ``large``: N=16384, n=8192, d=16: the cg step against the dense step, with each process's peak memory.
- ``small``: N=64, n=64, d=15: steps per second of ``run(k)`` against a Python loop over ``core.langevin_step``.
- ``agreement``: after 200 steps from the same seed, the cg path's particles and predictions against the
  dense path's (maximum relative difference).

``python -m bench.engine [--cases paper small ...] [--threads 2] [--out bench/results]`` writes
``engine.json`` and ``engine.md``. Timings are wall-clock means per step over one run; the machine is
described in the JSON.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.harness import DEFAULT_OUT, benchmark_environment, log, peak_rss, reset_peak_rss, write_json  # noqa: E402
from bench.machine import REPO_ROOT, describe  # noqa: E402

CASES = ("paper", "end_to_end", "floor", "large", "small", "agreement")
PAPER = dict(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2)


def problem(N, n, d, tasks=1, seed=0):
    """Raw Gaussian inputs, the paper's targets (x1*x2, then sin(x_i) for further tasks), particles from
    the prior N(0, I / lam_w)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    Y = np.column_stack([X[:, 0] * X[:, 1]] + [np.sin(X[:, i]) for i in range(2, tasks + 1)])
    W = rng.standard_normal((N, d + 1)) / np.sqrt(PAPER["lam_w"])
    return X, Y, W


def time_engine(X, Y, W, solver, steps, warmup, threads, label_noise=0.0):
    from mfkern.engine import Engine

    engine = Engine(X, Y, W, seed=1, solver=solver, label_noise=label_noise, n_threads=threads, **PAPER)
    engine.run(warmup)
    start = time.perf_counter()
    result = engine.run(steps)
    seconds = (time.perf_counter() - start) / steps
    assert result.status == "completed", result
    return dict(seconds_per_step=seconds, steps=steps, stats=engine.stats)


def time_stateless(X, Y, W, steps, threads, label_noise=0.0):
    from mfkern import core

    W = core.langevin_step(W, X, Y, seed=1, step=0, label_noise_level=label_noise, solver="dense", n_threads=threads,
                           **PAPER)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        W = core.langevin_step(W, X, Y, seed=1, step=step, label_noise_level=label_noise, solver="dense",
                               n_threads=threads, **PAPER)
    return dict(seconds_per_step=(time.perf_counter() - start) / steps, steps=steps)


# --------------------------------------------------------------------------------------------- child cases
def case_paper(threads, variant):
    label_noise, tasks = {"plain": (0.0, 1), "label_noise": (1.0, 1), "tasks3": (0.0, 3)}[variant]
    X, Y, W = problem(2000, 1000, 15, tasks)
    out = dict(N=2000, n=1000, d=15, label_noise=label_noise, tasks=tasks)
    out["stateless_dense"] = time_stateless(X, Y, W, 20, threads, label_noise)
    out["engine_dense"] = time_engine(X, Y, W, "dense", 30, 2, threads, label_noise)
    out["engine_cg"] = time_engine(X, Y, W, "cg", 300, 2, threads, label_noise)
    out["speedup_vs_stateless_dense"] = out["stateless_dense"]["seconds_per_step"] / out["engine_cg"]["seconds_per_step"]
    out["speedup_vs_engine_dense"] = out["engine_dense"]["seconds_per_step"] / out["engine_cg"]["seconds_per_step"]
    return out


def case_end_to_end(threads):
    import numpy as np

    from mfkern import MeanFieldRegressor

    X, Y, _ = problem(2000, 1000, 15)
    est = MeanFieldRegressor(n_particles=2000, n_steps=10000, log_every=100, random_state=0, n_threads=threads)
    start = time.perf_counter()
    est.fit(X, Y[:, 0])
    wall = time.perf_counter() - start
    return dict(N=2000, n=1000, d=15, n_steps=10000, log_every=100, wall_s=wall, solver="auto (cg)",
                final_U=float(est.history_["U"][-1]), final_dof=float(est.history_["dof"][-1]),
                finite=bool(np.isfinite(est.particles_).all()))


def case_floor(threads):
    import numpy as np
    import threadpoolctl

    from bench.peers import BlasFloor

    X, Y, W = problem(8192, 2048, 16)
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        floor = BlasFloor(W, X, 2048 * PAPER["lam"] * PAPER["lam_a"])
        floor.run()
        runs = [floor.run() for _ in range(3)]
    floor_s = float(np.median([sum(r.values()) for r in runs]))
    cg = time_engine(X, Y, W, "cg", 60, 1, threads)
    return dict(N=8192, n=2048, d=16, floor_s=floor_s,
                floor_components_s={k: float(np.median([r[k] for r in runs])) for k in BlasFloor.COMPONENTS},
                engine_cg=cg, ratio_to_floor=cg["seconds_per_step"] / floor_s)


def case_large(threads, solver):
    X, Y, W = problem(16384, 8192, 16)
    reset_peak_rss()
    if solver == "stateless_dense":
        out = time_stateless(X, Y, W, 2, threads)
    else:
        out = time_engine(X, Y, W, solver, 40 if solver == "cg" else 2, 1, threads)
    out["peak_rss_bytes"] = peak_rss()
    return dict(N=16384, n=8192, d=16, solver=solver, **out)


def case_small(threads):
    from mfkern import core

    X, Y, W = problem(64, 64, 15)
    steps = 2000
    loop = time_stateless(X, Y, W, steps, threads)
    engine = time_engine(X, Y, W, "dense", steps, 10, threads)
    auto = time_engine(X, Y, W, "auto", steps, 10, threads)
    # An ensemble: 16 systems (seeds) advanced together, in parallel across systems.
    from mfkern.engine import Engine, run_ensemble

    engines = [Engine(X, Y, W, seed=s, solver="dense", n_threads=1, **PAPER) for s in range(16)]
    run_ensemble(engines, 10, n_threads=threads)
    start = time.perf_counter()
    run_ensemble(engines, steps, n_threads=threads)
    ensemble = (time.perf_counter() - start) / (16 * steps)
    del core
    return dict(N=64, n=64, d=15, python_loop_steps_per_s=1 / loop["seconds_per_step"],
                engine_steps_per_s=1 / engine["seconds_per_step"], engine_auto_steps_per_s=1 / auto["seconds_per_step"],
                ensemble_steps_per_s=1 / ensemble, ensemble_systems=16,
                ratio=loop["seconds_per_step"] / engine["seconds_per_step"],
                ensemble_ratio=loop["seconds_per_step"] / ensemble)


def case_agreement(threads):
    import numpy as np

    from mfkern import core
    from mfkern.engine import Engine

    X, Y, W = problem(2000, 1000, 15)
    X_new = np.random.default_rng(1).standard_normal((500, 15))
    out = {}
    for label_noise in (0.0, 1.0):
        runs = {}
        for solver in ("dense", "cg"):
            engine = Engine(X, Y, W, seed=1, solver=solver, label_noise=label_noise, n_threads=threads, **PAPER)
            engine.run(200)
            engine.diagnostics()
            runs[solver] = (engine.particles, core.network_output(engine.particles, engine.output_weights(), X_new))
        rel = [float(np.abs(runs["cg"][i] - runs["dense"][i]).max() / np.abs(runs["dense"][i]).max()) for i in (0, 1)]
        out[f"label_noise={label_noise:g}"] = dict(particles=rel[0], predictions=rel[1])
    return out


def child(case, threads, variant):
    functions = dict(paper=lambda: case_paper(threads, variant), end_to_end=lambda: case_end_to_end(threads),
                     floor=lambda: case_floor(threads), large=lambda: case_large(threads, variant),
                     small=lambda: case_small(threads), agreement=lambda: case_agreement(threads))
    return functions[case]()


# --------------------------------------------------------------------------------------------- parent
def run_case(case, threads, variant=None, timeout_s=3600):
    env, _ = benchmark_environment(threads)
    command = [sys.executable, "-m", "bench.engine", "--child", case, "--threads", str(threads)]
    if variant:
        command += ["--variant", variant]
    log(f"engine benchmark: {case} {variant or ''} ({threads} threads)")
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        return dict(status="failed", stderr=done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ms(seconds):
    return f"{1000 * seconds:.1f} ms"


def _ratio(values):
    """Median ratio, with its range when there are several."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x [{min(values):.2f}, {max(values):.2f}]"


def write_markdown(path, doc):
    r = doc["results"]
    lines = [f"# Engine benchmark ({doc['threads']} threads)", "", f"Machine: {doc['machine_line']}", "",
             "Wall-clock time per step, averaged over the steps of one run in a fresh process (engine cg: 300 steps, "
             "its factorisations included; dense: 30; v0.1 dense step: 20); every comparison was measured in "
             "the same run, one case after another.", ""]
    if "paper" in r:
        lines += ["## Paper size (N=2000, n=1000, d=15, paper hyper-parameters, x1*x2)", "",
                  "| variant | v0.1 dense step | engine dense | engine cg | cg vs v0.1 dense | cg vs engine dense | "
                  "cg iterations per solve | factorisations per 100 steps |", "|---|---|---|---|---|---|---|---|"]
        repeats = 1
        for variant, runs in r["paper"].items():
            runs = runs if isinstance(runs, list) else [runs]  # one run per variant before --repeats
            repeats = len(runs)
            st = runs[0]["engine_cg"]["stats"]  # the same in every repeat (deterministic)
            per_solve = st["cg_iterations"] / max(st["cg_solves"], 1)
            factor_rate = 100 * st["factorizations"] / max(st["solves"], 1)
            median_ms = {key: _ms(statistics.median(v[key]["seconds_per_step"] for v in runs))
                    for key in ("stateless_dense", "engine_dense", "engine_cg")}
            lines.append(f"| {variant} | {median_ms['stateless_dense']} | {median_ms['engine_dense']} | "
                         f"{median_ms['engine_cg']} | "
                         f"{_ratio([v['speedup_vs_stateless_dense'] for v in runs])} | "
                         f"{_ratio([v['speedup_vs_engine_dense'] for v in runs])} | {per_solve:.1f} | {factor_rate:.1f} |")
        if repeats > 1:
            lines += ["", f"Each variant ran {repeats} times, the variants interleaved (round after round); the times "
                      "are medians over the repeats and each ratio is the median of the per-repeat ratios [smallest, "
                      "largest]: the spread is the run-to-run noise of the machine."]
        lines.append("")
    if "end_to_end" in r:
        e = r["end_to_end"]
        lines += [f"**End to end**: `MeanFieldRegressor(n_particles=2000, n_steps=10000, log_every=100)` at n=1000: "
                  f"{e['wall_s']:.0f} s ({e['wall_s'] / 60:.2f} min).", ""]
    if "floor" in r:
        f = r["floor"]
        lines += [f"**N=8192, n=2048, d=16**: cg step {_ms(f['engine_cg']['seconds_per_step'])} against a dense BLAS "
                  f"floor of {_ms(f['floor_s'])}: {f['ratio_to_floor']:.2f}x the floor.", ""]
    if "large" in r:
        lines += ["## N=16384, n=8192, d=16 (N > n: no Woodbury)", "", "| path | per step | peak memory |",
                  "|---|---|---|"]
        for solver, v in r["large"].items():
            lines.append(f"| {solver} | {v['seconds_per_step']:.2f} s | {v['peak_rss_bytes'] / 2**30:.2f} GiB |")
        base = r["large"].get("stateless_dense") or r["large"].get("dense")
        if base and "cg" in r["large"]:
            lines.append(f"\ncg is {base['seconds_per_step'] / r['large']['cg']['seconds_per_step']:.2f}x faster than "
                         "the dense step.")
        lines.append("")
    if "small" in r:
        s = r["small"]
        lines += [f"**Small systems (N=64, n=64, d=15)**: run(k) {s['engine_steps_per_s']:.0f} steps/s against "
                  f"{s['python_loop_steps_per_s']:.0f} steps/s for a Python loop over core.langevin_step "
                  f"({s['ratio']:.1f}x); an ensemble of {s['ensemble_systems']} such systems advanced by one "
                  f"`run_ensemble` call: {s['ensemble_steps_per_s']:.0f} system-steps/s ({s['ensemble_ratio']:.1f}x the loop).",
                  ""]
    if "agreement" in r:
        lines += ["**Agreement** after 200 steps (paper size), cg against dense, maximum relative difference: " +
                  "; ".join(f"{k}: particles {v['particles']:.1e}, predictions {v['predictions']:.1e}"
                            for k, v in r["agreement"].items()), ""]
    pathlib.Path(path).write_text("\n".join(lines))


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--threads", type=_positive, default=2)
    parser.add_argument("--repeats", type=_positive, default=1, help="runs of each paper-size variant (default 1)")
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    parser.add_argument("--child", choices=CASES)
    parser.add_argument("--variant")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads, args.variant)))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "engine.json"
    doc = json.loads(path.read_text()) if path.exists() else {"results": {}}
    doc.update(threads=args.threads, machine=describe(), machine_line=None)
    from bench.machine import summary_line

    doc["machine_line"] = summary_line(doc["machine"])
    for case in args.cases:
        if case == "paper":
            variants = ("plain", "label_noise", "tasks3")
            runs = {v: [] for v in variants}
            for _ in range(args.repeats):  # rounds interleave the variants, so slow spells hit all of them
                for v in variants:
                    runs[v].append(run_case(case, args.threads, v))
            doc["results"]["paper"] = runs
        elif case == "large":
            doc["results"]["large"] = {v: run_case(case, args.threads, v) for v in ("stateless_dense", "dense", "cg")}
        else:
            doc["results"][case] = run_case(case, args.threads)
        write_json(path, doc)
        write_markdown(args.out / "engine.md", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
