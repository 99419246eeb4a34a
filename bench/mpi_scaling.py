"""Time per MFLD step of the particle-sharded trainer (mfkern.distributed) on P = 1, 2 MPI ranks with the
dense and the conjugate-gradient second layers, its parts (partial Gram, Reduce of the n x n Gram, Reduce+Bcast
of an n-vector as in each CG iteration, solve, local step), and a communication-cost model for cluster sizes.

Writes bench/results/mpi_scaling.json (every measurement, the machine, the load) and
bench/results/mpi_scaling.md (tables). Each rank uses one core thread (n_threads=1), so P ranks use P cores;
the single-process MeanFieldRegressor (core.langevin_step, features cached between Gram and drift) is timed
with 1 thread as the baseline.

    python bench/mpi_scaling.py [--ranks 1 2] [--steps 10] [--out bench/results]

Runs mpirun itself (``--allow-run-as-root --oversubscribe`` for Open MPI); the worker mode
(``--worker CASE``) is what runs under mpirun.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

# (name, n, d, N): one Gram-bound case (N >> n), one where the n x n Reduce and the solve weigh (N ~ n).
CASES = {
    "gram_bound": dict(n=500, d=20, N=20000),
    "solve_and_reduce_heavy": dict(n=2000, d=20, N=2000),
}
HYPER = dict(lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2)


def _data(n, d):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)) / math.sqrt(d)
    return X, X[:, 0] * X[:, 1] * d


def _median_time(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def worker(case, steps, out):
    """Under mpirun: time whole fits and the parts of a step; rank 0 writes JSON to `out`."""
    from mpi4py import MPI

    import mfkern.core as core
    from mfkern.distributed import DistributedMeanFieldRegressor, partial_gram, shard_bounds

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    n, d, N = CASES[case]["n"], CASES[case]["d"], CASES[case]["N"]
    X, y = _data(n, d)

    def fit(n_steps, solver):
        comm.Barrier()
        started = time.perf_counter()
        DistributedMeanFieldRegressor(n_particles=N, n_steps=n_steps, random_state=0, n_threads=1,
                                      log_every=10**9, comm=comm, solver=solver, **HYPER).fit(X, y)
        comm.Barrier()
        return time.perf_counter() - started

    fit(1, "dense")  # warm-up (imports, first-touch of buffers)
    per_solver = {}
    for solver, count in (("dense", steps), ("cg", 5 * steps)):  # cg: enough steps to include refactorisations
        short, long = fit(2, solver), fit(2 + count, solver)
        per_solver[solver] = (long - short) / count  # both fits log twice (step 0 and the last): the logs cancel
    per_step = per_solver["dense"]

    # Parts of one step, each timed alone (median of 3).
    start, stop = shard_bounds(N, size, rank)
    W = np.random.default_rng(1).standard_normal((stop - start, d + 1)) * 2
    K_part = partial_gram(W, X, N, n_threads=1)
    t_gram = _median_time(lambda: partial_gram(W, X, N, n_threads=1), 3)

    def reduce():
        comm.Barrier()
        comm.Reduce(K_part, np.empty_like(K_part) if rank == 0 else None, op=MPI.SUM, root=0)

    comm.Barrier()
    t_reduce = _median_time(reduce, 3)
    vector = np.ones(n)

    def reduce_vector():  # what each CG iteration exchanges: an n-vector, Reduce to rank 0 then Bcast
        comm.Reduce(MPI.IN_PLACE if rank == 0 else vector, vector if rank == 0 else None, op=MPI.SUM, root=0)
        comm.Bcast(vector, root=0)

    comm.Barrier()
    t_reduce_vector = _median_time(reduce_vector, 101)
    K = np.empty_like(K_part)
    comm.Allreduce(K_part, K, op=MPI.SUM)
    t_solve = _median_time(lambda: core.second_layer(K, y, n * HYPER["lam"] * HYPER["lam_a"], n_threads=1), 3)
    A = core.second_layer(K, y, n * HYPER["lam"] * HYPER["lam_a"], n_threads=1)
    t_step = _median_time(lambda: core.langevin_step_given_dual(W, X, A, seed=0, step=0, first_index=start,
                                                                n_threads=1, **HYPER), 3)
    parts = comm.gather(dict(gram=t_gram, reduce=t_reduce, reduce_vector=t_reduce_vector, solve=t_solve,
                             local_step=t_step), root=0)
    if rank == 0:
        result = dict(case=case, ranks=size, n=n, d=d, N=N, steps=steps, seconds_per_step=per_step,
                      seconds_per_step_by_solver=per_solver,
                      reduce_bytes=8 * n * n, parts_rank0=parts[0],
                      parts_max_over_ranks={k: max(p[k] for p in parts) for k in parts[0]})
        pathlib.Path(out).write_text(json.dumps(result))


def baseline(case, steps):
    """The single-process estimator (one thread): seconds per step."""
    from mfkern import MeanFieldRegressor

    n, d, N = CASES[case]["n"], CASES[case]["d"], CASES[case]["N"]
    X, y = _data(n, d)

    def fit(n_steps):
        started = time.perf_counter()
        MeanFieldRegressor(n_particles=N, n_steps=n_steps, random_state=0, n_threads=1, log_every=10**9,
                           **HYPER).fit(X, y)
        return time.perf_counter() - started

    fit(1)
    return (fit(2 + steps) - fit(2)) / steps


def gram_rate():
    """Effective flop rate of core.gram on one thread: n^2 N / seconds (the syrk's n(n+1)/2 * N * 2 flops)."""
    import mfkern.core as core

    n, d, N = 1000, 20, 8000
    X, _ = _data(n, d)
    W = np.random.default_rng(2).standard_normal((N, d + 1))
    seconds = _median_time(lambda: core.gram(W, X, n_threads=1), 3)
    return n * n * N / seconds, seconds


def solve_rate():
    """Effective flop rate of the n x n Cholesky solve on one thread: (n^3 / 3) / seconds."""
    import mfkern.core as core

    n = 2000
    G = np.random.default_rng(3).standard_normal((n, n + 50))
    K = G @ G.T / n
    y = np.ones(n)
    seconds = _median_time(lambda: core.second_layer(K, y, 1.0, n_threads=1), 3)
    return n ** 3 / 3 / seconds, seconds


def _mpirun():
    mpirun = pathlib.Path(sys.executable).with_name("mpirun")
    mpirun = str(mpirun) if mpirun.exists() else shutil.which("mpirun")
    if mpirun is None:
        sys.exit('mpirun not found: pip install "mfkern[mpi]"')
    version = subprocess.run([mpirun, "--version"], capture_output=True, text=True).stdout
    flags = ["--oversubscribe"] if "Open MPI" in version else []
    if flags and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return [mpirun, *flags], version.splitlines()[0] if version else "?"


NETWORKS = {"10 GbE": 1.2e9, "100 Gb/s InfiniBand": 12e9}  # bytes/s a rank can push (rough, sustained)
MODEL_SIZES = [(1000, 10**5), (2000, 10**6), (5000, 10**6), (10000, 10**7)]  # (n, N)
MODEL_RANKS = (8, 64, 512)


def step_model(n, N, P, gram_flops, solve_flops, bandwidth, solve_threads=1, latency=2e-6):
    """Modelled seconds per step on P ranks (see docs/distributed.md): dict of the parts and the total.

    compute = n^2 (N/P) / gram_flops (the partial Gram; features and drift add O(n d N/P), less when n >> d);
    solve = (n^3/3) / (solve_flops * solve_threads) on rank 0 while the others wait;
    reduce = 2 (P-1)/P * 8 n^2 / bandwidth + log2(P) * latency (large-message Reduce: reduce-scatter then
    gather, Rabenseifner), 0 for P = 1; the Bcast of A (8 n T bytes) is negligible.
    """
    compute = n * n * (N / P) / gram_flops
    solve = n ** 3 / 3 / (solve_flops * solve_threads)
    reduce = 0.0 if P == 1 else 2 * (P - 1) / P * 8 * n * n / bandwidth + math.log2(P) * latency
    total = compute + solve + reduce
    serial = n * n * N / gram_flops + solve
    return dict(compute_s=compute, solve_s=solve, reduce_s=reduce, total_s=total,
                efficiency=serial / (P * total), reduce_MB=8 * n * n / 1e6)


def model_table(gram_flops, solve_flops):
    """Rows of the model for MODEL_SIZES x MODEL_RANKS x NETWORKS."""
    rows = []
    for n, N in MODEL_SIZES:
        for P in MODEL_RANKS:
            for network, bandwidth in NETWORKS.items():
                rows.append(dict(n=n, N=N, P=P, network=network,
                                 **step_model(n, N, P, gram_flops, solve_flops, bandwidth)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps, args.worker_out)
        return
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command, mpi_version = _mpirun()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    started = time.time()
    load_before = os.getloadavg()
    runs = []
    for case in CASES:
        for P in args.ranks:
            target = out / f".mpi_{case}_{P}.json"
            subprocess.run([*command, "-n", str(P), sys.executable, __file__, "--worker", case, "--steps",
                            str(args.steps), "--worker-out", str(target)], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            runs.append(json.loads(target.read_text()))
            target.unlink()
            print(f"{case} P={P}: {runs[-1]['seconds_per_step']:.4f} s/step", flush=True)
    baselines = {case: baseline(case, args.steps) for case in CASES}
    gram_flops, gram_seconds = gram_rate()
    solve_flops, solve_seconds = solve_rate()
    model = model_table(gram_flops, solve_flops)
    from threadpoolctl import threadpool_info

    document = dict(
        note=("Measured on the project's 2-core machine (the load average before and after is below; other jobs "
              "raise it and make the numbers noisy). P = 2 runs two single-threaded ranks on the two cores "
              "(mpirun --oversubscribe where the cores are not free). Read the model, not these timings, for "
              "cluster planning."),
        machine=dict(cpus=os.cpu_count(), platform=platform.platform(), processor=platform.processor(),
                     python=sys.version.split()[0], mpi=mpi_version, threadpools=threadpool_info()),
        load_average_before=load_before, load_average_after=os.getloadavg(),
        runs=runs, single_process_seconds_per_step=baselines,
        gram_rate=dict(flops_per_s=gram_flops, seconds=gram_seconds, n=1000, d=20, N=8000),
        solve_rate=dict(flops_per_s=solve_flops, seconds=solve_seconds, n=2000),
        model=model, networks=NETWORKS, elapsed_s=time.time() - started)
    (out / "mpi_scaling.json").write_text(json.dumps(document, indent=1))
    (out / "mpi_scaling.md").write_text(markdown(document))
    print((out / "mpi_scaling.md").read_text())


def markdown(doc):
    """The tables of mpi_scaling.md."""
    lines = ["# Sharded MFLD over MPI: time per step (P = 1, 2) and a communication-cost model", "",
             f"> {doc['note']}", "",
             f"Machine: {doc['machine']['cpus']} CPUs, {doc['machine']['platform']}, {doc['machine']['mpi']}; "
             f"load average before/after: {', '.join(f'{v:.1f}' for v in doc['load_average_before'])} / "
             f"{', '.join(f'{v:.1f}' for v in doc['load_average_after'])}. One core thread per rank.", "",
             "## Measured", "",
             "| case | n | d | N | P | s/step dense | s/step cg | speed-up vs P=1 (dense) | "
             "single-process estimator s/step | partial Gram s | Reduce s (8n^2 B) | Reduce+Bcast of an n-vector s | "
             "solve s | local step s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    first = {r["case"]: r["seconds_per_step"] for r in doc["runs"] if r["ranks"] == 1}
    for r in doc["runs"]:
        parts = r["parts_max_over_ranks"]
        speedup = first.get(r["case"], float("nan")) / r["seconds_per_step"]
        by_solver = r.get("seconds_per_step_by_solver", {})
        lines.append(f"| {r['case']} | {r['n']} | {r['d']} | {r['N']} | {r['ranks']} | {r['seconds_per_step']:.4f} | "
                     f"{by_solver.get('cg', float('nan')):.4f} | "
                     f"{speedup:.2f} | {doc['single_process_seconds_per_step'][r['case']]:.4f} | "
                     f"{parts['gram']:.4f} | {parts['reduce']:.4f} ({r['reduce_bytes'] / 1e6:.1f} MB) | "
                     f"{parts.get('reduce_vector', float('nan')):.2e} | "
                     f"{parts['solve']:.4f} | {parts['local_step']:.4f} |")
    g, s = doc["gram_rate"], doc["solve_rate"]
    lines += ["", f"One-thread rates used by the model: partial Gram {g['flops_per_s'] / 1e9:.1f} GFLOP/s "
              f"(n^2 N per second; n={g['n']}, N={g['N']}, d={g['d']}), Cholesky solve "
              f"{s['flops_per_s'] / 1e9:.1f} GFLOP/s (n^3/3 per second, n={s['n']}).", "",
              "## Model per step, at the rates just measured (one thread per rank; see docs/distributed.md)", "",
              "compute = n^2 N/P / Gram rate; solve = n^3/3 / solve rate (rank 0, the others wait); Reduce = "
              "2 (P-1)/P * 8 n^2 / bandwidth; efficiency = (time on 1 rank) / (P * time on P ranks).", "",
              "| n | N | P | network | Gram per rank s | solve s | Reduce MB | Reduce s | step s | efficiency |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in doc["model"]:
        lines.append(f"| {row['n']} | {row['N']:.0e} | {row['P']} | {row['network']} | {row['compute_s']:.3g} | "
                     f"{row['solve_s']:.3g} | {row['reduce_MB']:.0f} | {row['reduce_s']:.3g} | {row['total_s']:.3g} | "
                     f"{row['efficiency']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
