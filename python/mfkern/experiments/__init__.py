"""End-to-end experiments: the demo and the reproduction of the paper's claims (docs/theory.md, sections 6, 7 and 11).

Every experiment follows one protocol (docs/protocol.md, implemented in :mod:`~mfkern.experiments.protocol`):
hyper-parameters chosen on tuning seeds or by CV inside the training set, evaluation on fresh seeds, 95%
intervals paired across methods, and a verdict per claim (HOLDS / FAILS / INCONCLUSIVE).

* :mod:`~mfkern.experiments.tasks` -- data; :mod:`~mfkern.experiments.baselines` -- tuned fixed kernels;
  :mod:`~mfkern.experiments.mfld` -- the cached units of work (MFLD runs, baseline runs, tuning);
  :mod:`~mfkern.experiments.results` -- result files.
* :mod:`~mfkern.experiments.demo` -- ``mfkern demo``.
* ``mfkern reproduce {fig1,fig2,separation,single-index,parity,all}`` or ``mfkern reproduce <claim id>``
  (:data:`CLAIMS`): :mod:`~mfkern.experiments.fig1`, :mod:`~mfkern.experiments.fig2`,
  :mod:`~mfkern.experiments.separation`, :mod:`~mfkern.experiments.single_index`,
  :mod:`~mfkern.experiments.parity`.

Every experiment writes a JSON file (sizes, seeds, versions, commit, machine, wall time, results, claims), PNG
figures and a markdown summary into its output folder, and caches every finished run in
``<out>/cache/<experiment>.jsonl`` so that an interrupted run resumes where it stopped.
"""
import inspect

EXPERIMENTS = ("fig1", "fig2", "separation", "single-index", "parity")

__all__ = ["EXPERIMENTS", "run_experiment", "claim_ids", "experiment_of_claim", "reproduce_claim"]


def _runner(name):
    if name == "fig1":
        from .fig1 import run_fig1 as run
    elif name == "fig2":
        from .fig2 import run_fig2 as run
    elif name == "separation":
        from .separation import run_separation as run
    elif name == "single-index":
        from .single_index import run_single_index as run
    elif name == "parity":
        from .parity import run_parity as run
    elif name == "demo":
        from .demo import run_demo as run
    else:
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    return run


def run_experiment(name, out_dir, *, quick=False, seeds=None, n_jobs=1, base_seed=0, verbose=True, **options):
    """Run the reproduction experiment `name` (one of :data:`EXPERIMENTS`); returns its results dict.

    Parameters
    ----------
    name : str
        One of :data:`EXPERIMENTS`.
    out_dir : str or path-like
        Folder for the JSON, PNG and markdown outputs and the run cache (created when missing).
    quick : bool
        The small variant (minutes on 2 cores; a smoke test whose verdicts are mostly INCONCLUSIVE).
    seeds : int or None
        Number of evaluation seeds (None: the experiment's default, 5 at full size).
    n_jobs : int
        Processes for independent runs.
    base_seed : int
        Every run's seeds derive from it.
    options : dict
        Further keyword arguments the experiment accepts (e.g. ``tasks`` of separation, ``settings`` of fig1).
    """
    run = _runner(name) if name in EXPERIMENTS else None
    if run is None:
        raise ValueError(f"name must be one of {EXPERIMENTS}, got {name!r}")
    kwargs = dict(quick=quick, seeds=seeds, n_jobs=n_jobs, base_seed=base_seed, verbose=verbose, **options)
    accepted = inspect.signature(run).parameters
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"experiment {name!r} does not take {unknown}")
    return run(out_dir, **{key: value for key, value in kwargs.items() if key in accepted})


def claim_ids():
    """{claim id: experiment} for every claim the experiments check."""
    from . import demo, fig1, fig2, parity, separation, single_index

    out = {}
    for name, module in (("fig1", fig1), ("fig2", fig2), ("separation", separation),
                         ("single-index", single_index), ("parity", parity), ("demo", demo)):
        for cid in module.CLAIMS:
            out[cid] = name
    return out


def experiment_of_claim(claim_id):
    """(experiment, options restricting the run to what the claim needs) of a claim id."""
    ids = claim_ids()
    if claim_id not in ids:
        raise ValueError(f"unknown claim {claim_id!r}; known claims: {', '.join(sorted(ids))}")
    name = ids[claim_id]
    options = {}
    if name == "separation":
        options["tasks"] = (claim_id.split("-")[1],)
    elif name in ("fig1", "fig2"):
        options["settings"] = (claim_id.split("-")[1],)
    elif name == "parity":  # parity-k<k>-d<d>
        _, k, d = claim_id.split("-")
        options["cells"] = ((int(k[1:]), int(d[1:])),)
    return name, options


def reproduce_claim(claim_id, out_dir, *, quick=False, seeds=None, n_jobs=1, base_seed=0, verbose=True):
    """Rerun what one claim needs (finished runs come from the cache in out_dir) and return its record."""
    import os

    name, options = experiment_of_claim(claim_id)
    # The claim's own files go to out_dir/claims/<id>; the runs come from (and go to) the experiment's cache.
    cache_dir = os.path.join(os.fspath(out_dir), "cache")
    claim_dir = os.path.join(os.fspath(out_dir), "claims", claim_id)
    if name == "demo":
        results = _runner("demo")(claim_dir, quick=quick, seed=base_seed, n_jobs=n_jobs, cache_dir=cache_dir,
                                  verbose=verbose)
    else:
        results = run_experiment(name, claim_dir, quick=quick, seeds=seeds, n_jobs=n_jobs, base_seed=base_seed,
                                 verbose=verbose, cache_dir=cache_dir, **options)
    for c in results["claims"]:
        if c["id"] == claim_id:
            return c
    raise RuntimeError(f"experiment {name!r} did not report claim {claim_id!r}")
