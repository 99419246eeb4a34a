"""The command line of the sharded trainer: ``train_main`` (``mpirun -n P python -m mfkern.distributed ...``,
also ``mfkern train``): read the data on rank 0, train or resume, write checkpoints.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from .collectives import Collectives, SingleProcess, resolve_communicator
from .estimator import DistributedMeanFieldRegressor

__all__ = ["train_main"]


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m mfkern.distributed",
        description="Train a MeanFieldRegressor with its particles sharded over MPI ranks "
                    "(run under mpirun -n P). Rank 0 reads the data and writes the checkpoint.")
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="training data: an .npz holding arrays --x-key and --y-key, or an .npy of X "
                                     "(then give --targets)")
    data.add_argument("--targets", help="an .npy of y, when --data is an .npy of X")
    data.add_argument("--x-key", default="X", help="name of X in an .npz (default: X)")
    data.add_argument("--y-key", default="y", help="name of y in an .npz (default: y)")
    data.add_argument("--val", help="validation data: an .npz with the same keys (scored at logged steps)")
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, help="checkpoint written by rank 0 (an .npz, atomically)")
    out.add_argument("--resume", help="continue from this checkpoint (any rank count); adds --n-steps steps")
    out.add_argument("--checkpoint-every", type=int, default=0,
                     help="also write --out every this many steps (0: only at the end)")
    model = parser.add_argument_group("model (defaults: MeanFieldRegressor's; fixed by the checkpoint on --resume)")
    model.add_argument("--n-particles", type=int)
    model.add_argument("--lam", type=float)
    model.add_argument("--lam-a", type=float)
    model.add_argument("--lam-w", type=float)
    model.add_argument("--eta", type=float)
    model.add_argument("--activation", choices=("tanh", "erf"))
    model.add_argument("--label-noise", type=float)
    model.add_argument("--seed", type=int, help="random_state (default: fresh entropy, recorded in the checkpoint)")
    model.add_argument("--block-size", type=int)
    model.add_argument("--input-scale", type=_input_scale_option,
                       help="'auto' (0.5/sqrt(d), for standardised inputs) or a number (default: the preset's)")
    model.add_argument("--preset", choices=("default", "paper"),
                       help="where unset hyper-parameters come from (default: 'default'; 'paper': the paper's)")
    run = parser.add_argument_group("run")
    steps = run.add_mutually_exclusive_group()
    steps.add_argument("--n-steps", type=int, help="steps to do (added to a resumed run; default 1000)")
    steps.add_argument("--total-steps", type=int,
                       help="train until this many steps are done in all (a resumed run does only the rest; "
                            "for job scripts that may be restarted)")
    run.add_argument("--log-every", type=int, default=100)
    run.add_argument("--n-threads", type=int, help="core threads per rank (default: OpenMP's default)")
    run.add_argument("--serial", action="store_true", help="run in this process without MPI (no mpi4py needed)")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return parser


_MODEL_OPTIONS = {"n_particles": "n_particles", "lam": "lam", "lam_a": "lam_a", "lam_w": "lam_w", "eta": "eta",
                  "activation": "activation", "label_noise": "label_noise", "seed": "random_state",
                  "block_size": "block_size", "input_scale": "input_scale", "preset": "preset"}


def _input_scale_option(text):
    """--input-scale: 'auto' or a number (the estimator validates it)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number, got {text!r}") from None


def _read_arrays(path, keys):
    """Arrays `keys` from an .npz at `path` (nothing unpickled); ValueError naming what is wrong."""
    data = np.load(path, allow_pickle=False)
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} must be an .npz holding {', '.join(keys)} (got a single .npy array)")
    with data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"{path} has no array(s) {missing} (it has {data.files}); see --x-key/--y-key")
        return [data[k] for k in keys]


def _load_data(args):
    """(X, y, X_val, y_val) read on the calling rank; ValueError/OSError on bad files."""
    if args.data.endswith(".npy"):
        if args.targets is None:
            raise ValueError("--data is an .npy of X: give y with --targets")
        X, y = np.load(args.data, allow_pickle=False), np.load(args.targets, allow_pickle=False)
    else:
        X, y = _read_arrays(args.data, (args.x_key, args.y_key))
    X_val = y_val = None
    if args.val is not None:
        X_val, y_val = _read_arrays(args.val, (args.x_key, args.y_key))
    return X, y, X_val, y_val


def train_main(argv=None):
    """Command line: train (or resume) a sharded MFLD run and write a checkpoint. Collective under mpirun.

    ``mpirun -n P python -m mfkern.distributed --data train.npz --out model.npz --n-particles 100000
    --n-steps 5000 --seed 0``; ``--resume model.npz`` continues on any number of ranks. Rank 0 reads the
    data and broadcasts it, and writes the checkpoint. Returns the exit status (0).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.checkpoint_every < 0:
        parser.error("--checkpoint-every must be >= 0")
    if (args.n_steps or 0) < 0 or (args.total_steps or 0) < 0:
        parser.error("--n-steps and --total-steps must be >= 0")
    comm = SingleProcess() if args.serial else resolve_communicator(None)
    net = Collectives(comm)
    if args.data is None:
        parser.error("--data is required")
    # Rank 0 reads the data and broadcasts it, or its error, so that every rank exits the same way (a rank
    # exiting alone would leave the others waiting in a collective).
    data = None
    if net.rank == 0:
        try:
            data = _load_data(args)
        except (OSError, ValueError) as exc:
            data = f"cannot read the data: {exc}"
    data = net.bcast(data)
    if isinstance(data, str):
        parser.error(data)
    X, y, X_val, y_val = data
    explicit = {name: getattr(args, option) for option, name in _MODEL_OPTIONS.items()
                if getattr(args, option) is not None}
    if args.resume:
        model = DistributedMeanFieldRegressor.load(args.resume, comm=comm)
        fixed = model.get_params(deep=False)
        changed = {k: v for k, v in explicit.items() if k != "random_state" and fixed[k] != v}
        if changed:
            parser.error(f"--resume continues the checkpoint's run: cannot change {sorted(changed)}")
        model.set_params(warm_start=True)
    else:
        model = DistributedMeanFieldRegressor(comm=comm, **explicit)
    model.set_params(log_every=args.log_every, n_threads=args.n_threads, verbose=0 if args.quiet else 1)
    done = getattr(model, "n_steps_done_", 0)
    if args.total_steps is not None:
        remaining = max(args.total_steps - done, 0)
    else:
        remaining = 1000 if args.n_steps is None else args.n_steps
    chunk = args.checkpoint_every or max(remaining, 1)
    started = time.perf_counter()
    if args.resume and remaining == 0:  # a restarted job whose run is already complete
        model.save(args.out)
    while not (args.resume and remaining == 0):
        steps = min(chunk, remaining)
        model.set_params(n_steps=steps)
        model.fit(X, y, X_val=X_val, y_val=y_val)
        model.set_params(warm_start=True)
        remaining -= steps
        model.save(args.out)
        if remaining <= 0:
            break
    if net.rank == 0:
        last = {key: values[-1] for key, values in model.history_.items()}
        print(json.dumps({"ranks": net.size, "n_particles": sum(model.particle_counts_),
                          "n_steps_done": model.n_steps_done_, "seed": model.seed_, "U": last["U"],
                          "train_mse": last["train_mse"], "val_mse": last["val_mse"],
                          "seconds": round(time.perf_counter() - started, 3), "checkpoint": os.fspath(args.out)}),
              flush=True)
    return 0

