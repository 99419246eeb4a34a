"""The intrinsic-kernel Gram K = (1/N) H H^T: mfkern.core.gram against numpy in the same run.

numpy's route is the obvious one, `P = np.tanh(X1 @ W.T); P @ P.T / N` (numpy spots A @ A.T and calls
OpenBLAS syrk), which needs the whole n x N feature matrix; mfkern sums over panels of particles. Both are
checked to agree to 1e-12 before timing. Writes bench/results/gram.json and gram.md.

    python bench/gram.py [--N 10000] [--n 2000] [--d 20] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench.machine import describe  # noqa: E402

import mfkern.core as core  # noqa: E402


def _best(f, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(min(times)), float(max(times))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--N", type=int, default=10000)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.n, args.d)) / np.sqrt(args.d)
    W = rng.standard_normal((args.N, args.d + 1))
    X1 = np.hstack([X, np.ones((args.n, 1))])

    def numpy_gram():
        P = np.tanh(X1 @ W.T)
        return P @ P.T / args.N

    check = float(np.abs(core.gram(W, X) - numpy_gram()).max())
    assert check < 1e-12, check
    rows = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            t_np = _best(numpy_gram, args.repeats)
        t_mf = _best(lambda: core.gram(W, X, n_threads=threads), args.repeats)
        rows.append(dict(threads=threads, numpy_s=t_np, mfkern_s=t_mf, numpy_over_mfkern=t_np[0] / t_mf[0]))
        print(f"{threads} thread(s): numpy {t_np[0]:.3f} s, mfkern {t_mf[0]:.3f} s, "
              f"ratio numpy/mfkern {t_np[0] / t_mf[0]:.2f}", flush=True)
    result = dict(N=args.N, n=args.n, d=args.d, repeats=args.repeats, max_abs_difference=check, rows=rows,
                  machine=describe(), load_average=os.getloadavg()[0])
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gram.json").write_text(json.dumps(result, indent=2, default=str))
    lines = [f"# Gram matrix: mfkern.core.gram vs numpy (N = {args.N}, n = {args.n}, d = {args.d})", "",
             f"Median of {args.repeats} runs (min-max); max |difference| {check:.1e}; load average at start "
             f"{result['load_average']:.2f}.", "",
             "| threads | numpy `tanh(X1 W^T)`, `P P^T / N` (s) | mfkern `core.gram` (s) | numpy / mfkern |",
             "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threads']} | {r['numpy_s'][0]:.3f} ({r['numpy_s'][1]:.3f}-{r['numpy_s'][2]:.3f}) | "
                     f"{r['mfkern_s'][0]:.3f} ({r['mfkern_s'][1]:.3f}-{r['mfkern_s'][2]:.3f}) | "
                     f"{r['numpy_over_mfkern']:.2f} |")
    (out / "gram.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
