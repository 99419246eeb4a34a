"""The ``mfkern`` command line.

``mfkern demo``
    MFLD against fixed-kernel baselines on the paper's task (f(x) = x1*x2, d = 15); prints a table and
    writes JSON, markdown and PNG figures to ``./mfkern-results`` (or ``--out``). See :mod:`mfkern.experiments.demo`.
``mfkern reproduce {fig1,fig2,separation,single-index,parity,all,CLAIM} [--quick] [--seeds K] [--out DIR]
[--n-jobs J] [--seed S] [--list-claims]``
    The paper's claims (sections 4 and 5) with verdicts, one experiment, all, or one claim by its id.
    See :mod:`mfkern.experiments` and docs/protocol.md.
``mfkern discretization ...``
    The discretisation-error sweeps of :mod:`mfkern.analysis` (imported only for this subcommand).
``mfkern train ...``
    Train or resume a model from .npz/.npy data and write a checkpoint (:func:`mfkern.distributed.train_main`);
    ``mpirun -n P mfkern train ...`` shards the particles over MPI ranks.

Exit codes: 0 success, 1 a run failed (e.g. training diverged), 2 bad usage or a missing component,
130 interrupted.
"""
from __future__ import annotations

import argparse
import sys

from ._argtypes import positive_int as _positive_int
from ._argtypes import seed as _seed

__all__ = ["main", "build_parser"]

EXPERIMENT_CHOICES = ("fig1", "fig2", "separation", "single-index", "parity", "all")
_DISCRETIZATION_HELP = "discretisation-error sweeps (O(1/N) and O(eta)) of mfkern.analysis"


def _add_discretization(subparsers, load):
    """The ``discretization`` subcommand; its options come from mfkern.analysis, imported only when `load`.

    Returns an error message when the module cannot be imported (the subcommand then only reports it).
    """
    if not load:
        # Listed in `mfkern --help` without importing the analysis module.
        parser = subparsers.add_parser("discretization", help=_DISCRETIZATION_HELP, add_help=False)
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return None
    try:
        import mfkern.analysis as analysis

        add_arguments, run = analysis.add_cli_arguments, analysis.run_cli
    except (ImportError, AttributeError) as exc:
        parser = subparsers.add_parser("discretization", help=_DISCRETIZATION_HELP, add_help=False)
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        return (f"mfkern discretization: the analysis module is not available ({type(exc).__name__}: {exc}); "
                "this installation of mfkern lacks mfkern.analysis")
    parser = subparsers.add_parser("discretization", help=_DISCRETIZATION_HELP, description=_DISCRETIZATION_HELP)
    add_arguments(parser)
    parser.set_defaults(handler=lambda args: run(args))
    return None


def build_parser(load_discretization=False):
    """The argparse parser of ``mfkern``.

    Parameters
    ----------
    load_discretization : bool
        Import :mod:`mfkern.analysis` to add the options of ``discretization`` (only needed when that
        subcommand is run).

    Returns
    -------
    (parser, discretization_error) : the parser, and a message when mfkern.analysis could not be imported.
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mfkern",
        description="Two-layer networks trained by mean-field Langevin dynamics (two-timescale limit): "
                    "the demo, the reproduction of the paper's experiments, and the discretisation analysis.")
    parser.add_argument("--version", action="version", version=f"mfkern {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,reproduce,discretization,train}")

    demo = sub.add_parser("demo", help="MFLD vs fixed kernels on f(x) = x1*x2, d = 15 (a few minutes)",
                          description="Train MFLD and fixed-kernel baselines on the paper's task "
                                      "(f(x) = x1*x2, x ~ N(0, I_15)); print a comparison table and write "
                                      "demo.json, demo.md and PNG figures to --out.")
    demo.add_argument("--out", metavar="DIR", default="mfkern-results",
                      help="output folder (default: %(default)s)")
    demo.add_argument("--seed", metavar="S", type=_seed, default=0, help="seed (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a tiny version (seconds) for smoke tests")
    demo.add_argument("--n-threads", metavar="T", type=_positive_int, default=None,
                      help="threads for the core (default: the OpenMP/BLAS defaults)")
    demo.add_argument("--n-jobs", metavar="J", type=_positive_int, default=1,
                      help="processes for independent runs (default: %(default)s)")
    demo.set_defaults(handler=_run_demo)

    rep = sub.add_parser("reproduce", help="reproduce the paper's claims with verdicts (HOLDS/FAILS/INCONCLUSIVE)",
                         description="Reproduce the claims of the paper's sections 4 and 5 under the protocol of "
                                     "docs/protocol.md: fig1 (alignment and dof for several label-noise levels), "
                                     "fig2 (the label-noise procedure), separation (samples needed against d, MFLD vs "
                                     "tuned fixed kernels), single-index (alignments against d at the theorem's "
                                     "scalings), parity (k-sparse parities, MeanFieldClassifier vs tuned kernels); "
                                     "'all' runs every one; a claim id (e.g. separation-parity2-exponent; "
                                     "--list-claims) reruns only what that claim needs and prints its verdict. "
                                     "Writes <name>.json, <name>.md and <name>*.png to --out and caches every run "
                                     "in --out/cache, so that a rerun or an interrupted run resumes.")
    rep.add_argument("experiment", nargs="?", metavar="{" + ",".join(EXPERIMENT_CHOICES) + ",CLAIM}",
                     help="an experiment, 'all', or a claim id")
    rep.add_argument("--list-claims", action="store_true", help="list the claim ids and exit")
    rep.add_argument("--quick", action="store_true",
                     help="small sizes that finish in minutes (a smoke test: verdicts mostly INCONCLUSIVE)")
    rep.add_argument("--seeds", metavar="K", type=_positive_int, default=None,
                     help="number of evaluation seeds (default: 5; 2 with --quick)")
    rep.add_argument("--out", metavar="DIR", default="mfkern-results", help="output folder (default: %(default)s)")
    rep.add_argument("--n-jobs", metavar="J", type=_positive_int, default=1,
                     help="processes for independent runs (default: %(default)s)")
    rep.add_argument("--seed", metavar="S", type=_seed, default=0,
                     help="base seed; every tuning and evaluation seed derives from it (default: %(default)s)")
    rep.set_defaults(handler=_run_reproduce)

    error = _add_discretization(sub, load_discretization)
    sub.add_parser("train", add_help=False,
                   help="train or resume a model from .npz/.npy data and write a checkpoint; under "
                        "`mpirun -n P` its particles are sharded over the ranks (options: mfkern train --help)")
    return parser, error


def _run_demo(args):
    from .experiments.demo import run_demo

    run_demo(args.out, quick=args.quick, seed=args.seed, n_jobs=args.n_jobs, n_threads=args.n_threads, verbose=True)
    return 0


def _run_reproduce(args):
    from .experiments import EXPERIMENTS, claim_ids, reproduce_claim, run_experiment

    if args.list_claims:
        for cid, name in sorted(claim_ids().items()):
            print(f"{cid}  ({name})")
        return 0
    if args.experiment is None:
        print("mfkern reproduce: error: give an experiment, 'all' or a claim id (--list-claims)", file=sys.stderr)
        return 2
    choice = args.experiment
    try:
        if choice in EXPERIMENT_CHOICES:
            names = EXPERIMENTS if choice == "all" else (choice,)
            for name in names:
                print(f"== mfkern reproduce {name}{' --quick' if args.quick else ''}", flush=True)
                run_experiment(name, args.out, quick=args.quick, seeds=args.seeds, n_jobs=args.n_jobs,
                               base_seed=args.seed)
            return 0
        if choice not in claim_ids():
            print(f"mfkern reproduce: error: unknown experiment or claim {choice!r} (experiments: "
                  f"{', '.join(EXPERIMENT_CHOICES)}; claims: mfkern reproduce --list-claims)", file=sys.stderr)
            return 2
        record = reproduce_claim(choice, args.out, quick=args.quick, seeds=args.seeds, n_jobs=args.n_jobs,
                                 base_seed=args.seed, verbose=False)
    except ImportError as exc:  # an optional component (e.g. the classifier of `parity`) is missing
        print(f"mfkern reproduce {choice}: cannot run, a component is missing: {exc}", file=sys.stderr)
        return 2
    from .experiments.protocol import claims_markdown

    print(claims_markdown([record]))
    return 0


def _command(argv):
    """The subcommand in argv (the first argument not starting with '-'), or None."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def _wants_discretization(argv):
    """Whether the subcommand in argv is ``discretization``."""
    return _command(argv) == "discretization"


def main(argv=None):
    """Entry point of the ``mfkern`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if _command(argv) == "train":
        # `mfkern train` is mfkern.distributed's command line (it has its own options and runs under mpirun).
        from .distributed import train_main

        rest = list(argv)
        rest.remove("train")
        return int(train_main(rest) or 0)
    wants = _wants_discretization(argv)
    parser, error = build_parser(load_discretization=wants)
    if wants and error:
        # Without mfkern.analysis its options are unknown: report the missing module, whatever the options.
        print(error, file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "discretization" and (error or not hasattr(args, "handler")):
        print(error or "mfkern discretization: the analysis module is not available", file=sys.stderr)
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("\nmfkern: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as exc:
        print(f"mfkern {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, FloatingPointError, ArithmeticError) as exc:
        print(f"mfkern {args.command}: failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
