"""End-to-end experiments: the demo and the reproduction of the paper's claims (PAPER.md sections 4, 5, 7).

* :mod:`mfkern.experiments.common` -- data generators, fixed-kernel baselines, the MFLD runner, result files.
* :mod:`mfkern.experiments.demo` -- ``mfkern demo``: MFLD against fixed kernels on f(x) = x1*x2, d = 15.
* :mod:`mfkern.experiments.fig1`, :mod:`~mfkern.experiments.fig2`, :mod:`~mfkern.experiments.separation`,
  :mod:`~mfkern.experiments.single_index` -- ``mfkern reproduce {fig1,fig2,separation,single-index}``.
* :mod:`mfkern.experiments.parity` (with :class:`mfkern.MeanFieldClassifier`) -- ``mfkern reproduce parity``.

Every experiment writes a JSON file (parameters, seeds, versions, wall time, results), PNG figures and a
markdown summary into its output folder, and returns the results as a dict.
"""
import inspect

EXPERIMENTS = ("fig1", "fig2", "separation", "single-index", "parity")

__all__ = ["EXPERIMENTS", "run_experiment"]


def run_experiment(name, out_dir, *, quick=False, seeds=None, n_jobs=1, setting="normalised", base_seed=0,
                   verbose=True):
    """Run the reproduction experiment `name` (one of :data:`EXPERIMENTS`); returns its results dict.

    Parameters
    ----------
    name : str
        One of :data:`EXPERIMENTS`.
    out_dir : str or path-like
        Folder for the JSON, PNG and markdown outputs (created when missing).
    quick : bool
        The small variant that finishes in minutes on 2 cores.
    seeds : int or None
        Number of seeds (None: the experiment's default, 5 as in the paper, 2 with `quick`).
    n_jobs : int
        Processes for independent runs.
    setting : str
        Hyper-parameter setting, a key of :data:`mfkern.experiments.common.SETTINGS` ("normalised": the
        paper's lam, lam_a, eta with lam_w = 4 and inputs / sqrt(d); "paper": exactly the paper's).
    base_seed : int
        Every run's seeds derive from it.
    verbose : bool
        Print progress and the summary.
    """
    if name == "fig1":
        from .fig1 import run_fig1 as run
    elif name == "fig2":
        from .fig2 import run_fig2 as run
    elif name == "separation":
        from .separation import run_separation as run
    elif name == "single-index":
        from .single_index import run_single_index as run
    elif name == "parity":
        # The classification experiment has its own fixed hyper-parameters and seeding: it takes neither
        # `setting` nor `base_seed` (only what its signature accepts is passed on).
        from .parity import run_parity as run
    else:
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    from .common import SETTINGS

    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {tuple(SETTINGS)}, got {setting!r}")
    options = dict(quick=quick, seeds=seeds, n_jobs=n_jobs, setting=setting, base_seed=base_seed, verbose=verbose)
    accepted = inspect.signature(run).parameters
    return run(out_dir, **{key: value for key, value in options.items() if key in accepted})
