"""DistributedMeanFieldRegressor: MeanFieldRegressor with its particles sharded over the ranks of an MPI communicator.

The step (every sum over particles reduced to rank 0 and broadcast back, every rank then solving the same
second layer from the same bits) is described in the docstring of :mod:`mfkern.distributed`; the collective operations themselves are in
:mod:`mfkern.distributed.collectives`. Training runs the one loop of :class:`mfkern.estimator.MeanFieldBase`
(MeanFieldRegressor's engine strategy); this module supplies only where the particles live: each rank's rows
of the initial draw, an engine whose sums over particles are reduced across the ranks, the fitted state of a
shard and the ranks' side of the loop's few collective steps (:class:`_RankShard`).
"""
from __future__ import annotations

import json
import math

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import core
from .._validation import as_targets
from ..estimator import MAX_STEPS, MeanFieldRegressor, TrainingRun, seed_from
from ..engine import CG_MIN_SAMPLES, Engine
from .collectives import Collectives, checksum, initial_particles, partial_gram, shard_bounds, shard_counts

__all__ = ["DistributedMeanFieldRegressor"]

class _RankShard:
    """This rank's part of a fit whose particles are sharded over the ranks of `net` (the
    :class:`mfkern.estimator.OneProcess` protocol of the training loop): partial sums over particles are
    reduced with the same bits on every rank, a callback's stop stops every rank, rank 0 logs.

    Ctrl-C is not deferred and there is no progress bar: a rank cannot stop alone (the others would wait for
    it at the next reduction); under mpirun, Ctrl-C ends the job.
    """

    interactive = False

    def __init__(self, net, counts, first_index):
        self.net = net
        self.counts = tuple(counts)
        self.total = sum(self.counts)
        self.first_index = first_index
        self.share = self.counts[net.rank] / self.total
        self.prints = net.rank == 0
        self.label = f" x{net.size}"

    def sum(self, values):
        return self.net.sum_all(values)

    def any(self, flag):
        return self.net.any(flag)

    def common(self, value):
        return self.net.bcast(value)


class DistributedMeanFieldRegressor(MeanFieldRegressor):
    """MeanFieldRegressor with its particles sharded over the ranks of an MPI communicator.

    Same parameters and the same trajectory as :class:`~mfkern.MeanFieldRegressor` (up to floating-point
    reduction order, see the module docstring), plus ``comm``. ``fit``, ``predict``, ``score``, ``kernel``,
    ``transform``, ``save``, :meth:`gather_particles` and :meth:`to_estimator` are *collective*: every rank
    of ``comm`` must call them, with the same arguments (``fit`` checks that X, y and the parameters agree
    on every rank and raises ValueError on all ranks when they do not). Results of ``predict``, ``kernel``
    and the history are bitwise identical on every rank.

    Parameters
    ----------
    n_particles, lam, lam_a, lam_w, eta, n_steps, activation, label_noise, random_state, n_threads, \
log_every, verbose, warm_start, callbacks, block_size, solver, precision
        As in :class:`~mfkern.MeanFieldRegressor`, except that the second layer is always solved densely
        (the ranks reduce the n x n Gram; ``solver='woodbury'`` raises ValueError) and ``precision`` applies
        to the particle step. ``random_state`` is resolved on rank 0 and broadcast.
        ``n_threads`` is per rank. Callbacks run on every rank at logged steps; training stops when one
        returns True on any rank. ``verbose`` prints one line per logged step on rank 0 (no progress bar).
    comm : mpi4py communicator, SingleProcess or None, default=None
        None means ``MPI.COMM_WORLD`` (needs mpi4py: ImportError with the install hint otherwise). Needs
        ``n_particles >= comm.Get_size()``.

    Attributes
    ----------
    local_particles_ : ndarray of shape (N_r, n_features_in_ + 1)
        This rank's particles, global indices ``particle_range_``.
    local_coef_ : ndarray of shape (N_r,) or (N_r, n_targets)
        Second-layer weights a_k = H[:, k]^T A of this rank's particles.
    particle_range_ : tuple of int
        Global index range [start, stop) of this rank's particles.
    particle_counts_ : tuple of int
        Particles per rank (the shard layout; sum = n_particles).
    dual_coef_, n_steps_done_, seed_, history_, n_features_in_, feature_names_in_, n_outputs_
        As in MeanFieldRegressor, identical on every rank.

    Notes
    -----
    There is no ``particles_``/``coef_`` (they would need all particles on every rank): use
    :meth:`gather_particles`, :meth:`gather_coef` or :meth:`to_estimator`. Ctrl-C under mpirun ends the
    job (mpirun forwards the signal to every rank): save checkpoints regularly (``train_main
    --checkpoint-every``). On divergence, every rank raises DivergenceError and is left at the last step
    whose second layer is known (the history keeps the entries up to that step).
    """

    def __init__(self, n_particles=None, lam=None, lam_a=None, lam_w=None, eta=None, n_steps=None,
                 activation="tanh", label_noise=0.0, random_state=None, n_threads=None, log_every=100,
                 verbose=0, warm_start=False, callbacks=None, block_size=None, solver="auto",
                 precision="float64", tol=1e-10, input_scale=None, preset=None, comm=None):
        super().__init__(n_particles=n_particles, lam=lam, lam_a=lam_a, lam_w=lam_w, eta=eta, n_steps=n_steps,
                         activation=activation, label_noise=label_noise, random_state=random_state,
                         n_threads=n_threads, log_every=log_every, verbose=verbose, warm_start=warm_start,
                         callbacks=callbacks, block_size=block_size, solver=solver, precision=precision, tol=tol,
                         input_scale=input_scale, preset=preset)
        self.comm = comm

    _particles_attribute = "local_particles_"  # there is no particles_ (see Notes)
    _coef_attribute = "local_coef_"

    # ------------------------------------------------------------------ plumbing
    @property
    def _n_features_out(self):
        return int(sum(self.particle_counts_))

    def _collectives(self):
        return Collectives(self.comm)

    def _check_X(self, X, name="X"):
        check_is_fitted(self, ("local_particles_", "local_coef_"))
        if X is None:
            raise TypeError(f"{name} must be an array, got None")
        return self._scale_inputs(validate_data(self, X, reset=False, dtype=np.float64))

    def _fraction(self):
        return self.local_particles_.shape[0] / sum(self.particle_counts_)

    def _local_coef_2d(self):
        return self.local_coef_.reshape(self.local_coef_.shape[0], -1)

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, X_val=None, y_val=None, target_direction=None, alignment_target=None):
        """Train by ``n_steps`` mean-field Langevin steps with the particles sharded over ``comm``.

        Collective. Parameters and exceptions as in :meth:`mfkern.MeanFieldRegressor.fit`; X, y, the
        validation data and the parameters must be the same on every rank (checked).

        Returns
        -------
        self
        """
        p = self._check_params()
        if p["solver"] == "woodbury":
            raise ValueError("solver='woodbury' is not available with MPI: the ranks reduce the n x n Gram "
                             "(use solver='auto' or 'dense')")
        net = self._collectives()
        N = p["n_particles"]
        if N < net.size:
            raise ValueError(f"n_particles={N} must be at least the number of ranks ({net.size})")
        continuing = bool(self.warm_start) and hasattr(self, "local_particles_")
        X, Y, one_d, X_val, Y_val, direction = self._fit_data(X, y, X_val, y_val, target_direction, continuing)
        n = X.shape[0]
        target = None
        if alignment_target is not None:
            target, _ = as_targets(alignment_target, "alignment_target", n)
        counts = shard_counts(N, net.size)
        start_index, stop_index = shard_bounds(N, net.size, net.rank)
        if continuing:
            if sum(self.particle_counts_) != N:
                raise ValueError(f"n_particles={N} differs from the {sum(self.particle_counts_)} particles being "
                                 "continued (warm_start=True)")
            if tuple(self.particle_counts_) != tuple(counts) or \
                    tuple(self.particle_range_) != (start_index, stop_index):
                raise ValueError(f"the fitted shards (layout {tuple(self.particle_counts_)}) do not match comm of "
                                 f"size {net.size}; to change the number of ranks, save and load the model "
                                 "(load re-shards)")
            start = self.n_steps_done_
        else:
            start = 0
        if start + p["n_steps"] > MAX_STEPS:
            raise ValueError(f"n_steps={p['n_steps']} would take the step counter past 2**32 "
                             f"({start} steps already done)")
        # Every rank must run the same problem: compare a checksum of data and parameters with rank 0's.
        settings = json.dumps({k: v for k, v in p.items() if k not in ("callbacks", "verbose", "n_threads")},
                              sort_keys=True)
        mine = checksum(X, Y, X_val, Y_val, direction, target, text=f"{settings}|{continuing}|{start}")
        if net.any(net.bcast(mine) != mine):
            raise ValueError("X, y, the validation data or the parameters differ between MPI ranks; every rank "
                             "must call fit with the same data and parameters")
        if continuing:
            seed = self.seed_
        else:
            # Drawn on rank 0 only (None or a generator would give each rank its own seed); the other ranks
            # only validate random_state, without drawing from a generator the user passed.
            rs = self.random_state
            if net.rank != 0 and not (rs is None or isinstance(rs, (np.random.RandomState, np.random.Generator))):
                seed_from(rs)
            seed = net.bcast(seed_from(rs) if net.rank == 0 else None)

        core.check_hyper(p["lam"], p["lam_a"], p["lam_w"], n)  # the products (and the ridge) must be representable
        run = TrainingRun(X=X, Y=Y, X_val=X_val, Y_val=Y_val, direction=direction, ridge=n * p["lam"] * p["lam_a"],
                          one_d=one_d, alignment_target=target, shards=_RankShard(net, counts, start_index), **p)
        self._run_training(run, seed, continuing)
        self.alignment_target_ = "y" if target is None else "alignment_target"
        return self

    # The training loop is MeanFieldRegressor's; what differs is where the particles live: this rank's rows
    # of the initial draw, an engine whose sums over particles are reduced across the ranks, and the
    # fitted state of a shard.
    def _initial_particles(self, run, seed):
        """This rank's rows of the initial particles (the same rows as one process draws)."""
        shards = run.shards
        return initial_particles(seed, shards.total, run.X.shape[1], run.lam_w, shards.first_index,
                                 shards.first_index + shards.counts[shards.net.rank])

    def _new_engine(self, run, W, step):
        """This rank's engine over its shard, its sums over particles reduced across the ranks."""
        n = run.X.shape[0]
        solver = run.solver
        if solver == "auto":  # as for one process, but the Woodbury system cannot be sharded
            solver = "cg" if run.precision == "float64" and n >= CG_MIN_SAMPLES else "dense"
        engine = Engine(run.X, run.Y, W, lam=run.lam, lam_a=run.lam_a, lam_w=run.lam_w, eta=run.eta, seed=run.seed,
                        step=step, activation=run.activation, label_noise=run.label_noise, solver=solver,
                        precision=run.precision, n_threads=run.n_threads, block_size=run.block_size, tol=run.tol,
                        first_index=run.shards.first_index, alignment_target=run.alignment_target)
        net = run.shards.net
        if not net.local:
            def reduce(buffer):  # the same bits on every rank: Reduce to rank 0, then Bcast
                net.sum_to_root(buffer)
                net.bcast_array(buffer)

            engine.shard(reduce, run.shards.total)
        return engine

    def _set_second_layer(self, A, coef, run):
        """dual_coef_ (the same on every rank), this rank's local_coef_ and its place in the shard layout."""
        super()._set_second_layer(A, coef, run)
        self.particle_counts_ = run.shards.counts
        self.particle_range_ = (run.shards.first_index, run.shards.first_index + coef.shape[0])

    def _progress_bar(self, run):
        return None  # one line per logged step from rank 0 instead (see verbose)

    def _log_line(self, diag):
        return (f"U={diag['U']:.6g} G={diag['G']:.6g} dof={diag['dof']:.2f} train_mse={diag['train_mse']:.4g} "
                f"val_mse={diag['val_mse']:.4g}")

    # ------------------------------------------------------------------ inference (collective)
    def predict(self, X):
        """Network output f(x) = (1/N) sum_k a_k h(x; w_k): the ranks' partial sums, summed. Collective;
        the same bits on every rank."""
        X = self._check_X(X)
        partial = core.network_output(self.local_particles_, self._local_coef_2d(), X, **self._core_kwargs())
        partial *= self._fraction()
        out = self._collectives().sum_all(partial)
        return out[:, 0] if self._y_one_d else out

    def kernel(self, X, X2=None):
        """The learned kernel (1/N) sum_k h(x; w_k) h(x'; w_k) between rows of X and X2. Collective."""
        X = self._check_X(X)
        if X2 is not None:
            X2 = self._check_X(X2, "X2")
        partial = partial_gram(self.local_particles_, X, sum(self.particle_counts_), X2, **self._core_kwargs())
        return self._collectives().sum_all(partial)

    def transform(self, X):
        """Features (1/sqrt N) h(x; w_k) of all N particles, shape (m, N), on every rank. Collective."""
        X = self._check_X(X)
        H = core.features(self.local_particles_, X, self.activation, n_threads=self.n_threads)
        H /= math.sqrt(sum(self.particle_counts_))
        return self._collectives().allgather_rows(H.T, self.particle_counts_).T.copy()

    # ------------------------------------------------------------------ gathering, checkpoints
    def gather_particles(self, root=0):
        """All particles (N, d+1) in global order on `root` (every rank when root is None); None elsewhere.
        Collective."""
        check_is_fitted(self, ("local_particles_",))
        net = self._collectives()
        if root is None:
            return net.allgather_rows(self.local_particles_, self.particle_counts_)
        return net.gather_rows(self.local_particles_, self.particle_counts_, root)

    def gather_coef(self, root=0):
        """All second-layer weights (N,) or (N, T) on `root` (every rank when root is None). Collective."""
        check_is_fitted(self, ("local_coef_",))
        net = self._collectives()
        coef = self._local_coef_2d()
        full = (net.allgather_rows(coef, self.particle_counts_) if root is None
                else net.gather_rows(coef, self.particle_counts_, root))
        if full is not None and self._y_one_d:
            full = full[:, 0]
        return full

    def to_estimator(self, root=0):
        """A plain, fitted MeanFieldRegressor with all particles: on `root` (every rank when root is None),
        None elsewhere. Collective. Its parameters are this one's without ``comm``."""
        particles = self.gather_particles(root)
        coef = self.gather_coef(root)
        if particles is None:
            return None
        params = self.get_params(deep=False)
        params.pop("comm")
        estimator = MeanFieldRegressor(**params)
        for name in ("n_steps_done_", "seed_", "n_features_in_", "n_outputs_", "_y_one_d", "input_scale_"):
            setattr(estimator, name, getattr(self, name))
        if hasattr(self, "feature_names_in_"):
            estimator.feature_names_in_ = self.feature_names_in_
        estimator.dual_coef_ = np.array(self.dual_coef_)
        estimator.history_ = {key: list(values) for key, values in self.history_.items()}
        estimator.particles_ = particles
        estimator.coef_ = coef
        return estimator

    def save(self, path, root=0):
        """Write an ordinary MeanFieldRegressor checkpoint (all particles) from `root`. Collective.

        ``MeanFieldRegressor.load`` reads it; :meth:`load` reads it back sharded over any number of ranks.
        When writing fails on `root`, every rank raises.
        """
        from ..checkpoint import save

        net = self._collectives()
        estimator = self.to_estimator(root)
        error = None
        if net.rank == root:
            try:
                save(estimator, path)
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
                error = exc
        message = net.bcast(None if error is None else f"{type(error).__name__}: {error}", root)
        if error is not None:
            raise error
        if message is not None:
            raise OSError(f"saving the checkpoint on rank {root} failed: {message}")

    @classmethod
    def load(cls, path, comm=None, root=0):
        """Read a checkpoint (from ``save`` here or ``MeanFieldRegressor.save``) on `root` and shard it over
        ``comm``. Collective; only `root` reads the file (no shared file system needed)."""
        from ..checkpoint import load

        net = Collectives(comm)
        estimator, error = None, None
        if net.rank == root:
            try:
                estimator = load(path, MeanFieldRegressor)
            except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
                error = exc
        message = net.bcast(None if error is None else f"{type(error).__name__}: {error}", root)
        if error is not None:
            raise error
        if message is not None:
            raise ValueError(f"loading the checkpoint on rank {root} failed: {message}")
        return cls.from_estimator(estimator, comm=comm, root=root)

    @classmethod
    def from_estimator(cls, estimator, comm=None, root=0):
        """A DistributedMeanFieldRegressor sharded over ``comm`` from a fitted MeanFieldRegressor given on
        `root` (the other ranks pass None). Collective."""
        net = Collectives(comm)
        header = None
        if net.rank == root:
            check_is_fitted(estimator, ("particles_", "coef_"))
            params = estimator.get_params(deep=False)
            params.pop("comm", None)
            params["callbacks"] = None  # code stays on the rank that has it
            header = dict(params=params, n_steps_done=int(estimator.n_steps_done_), seed=int(estimator.seed_),
                          n_features_in=int(estimator.n_features_in_), y_one_d=bool(estimator._y_one_d),
                          n_outputs=int(estimator.n_outputs_), input_scale=float(estimator.input_scale_),
                          history={k: list(v) for k, v in
                                                                        estimator.history_.items()},
                          dual_coef=np.asarray(estimator.dual_coef_, dtype=np.float64),
                          feature_names_in=getattr(estimator, "feature_names_in_", None),
                          shape=estimator.particles_.shape,
                          coef_width=int(np.asarray(estimator.coef_).reshape(estimator.particles_.shape[0], -1)
                                         .shape[1]))
        header = net.bcast(header, root)
        unknown = sorted(set(header["params"]) - set(cls._get_param_names()))
        if unknown:
            raise ValueError(f"the estimator has parameters {unknown} that {cls.__name__} does not support")
        N, width = header["shape"]
        if N < net.size:
            raise ValueError(f"the checkpoint has {N} particles, fewer than the {net.size} ranks")
        counts = shard_counts(N, net.size)
        particles = estimator.particles_ if net.rank == root else None
        coef = (np.asarray(estimator.coef_).reshape(N, -1) if net.rank == root else None)
        model = cls(**header["params"], comm=comm)
        model.local_particles_ = net.scatter_rows(particles, counts, width, root)
        local_coef = net.scatter_rows(coef, counts, header["coef_width"], root)
        model.local_coef_ = local_coef[:, 0] if header["y_one_d"] else local_coef
        model.particle_counts_ = tuple(counts)
        model.particle_range_ = shard_bounds(N, net.size, net.rank)
        model.n_steps_done_ = header["n_steps_done"]
        model.seed_ = header["seed"]
        model.n_features_in_ = header["n_features_in"]
        model.n_outputs_ = header["n_outputs"]
        model.input_scale_ = header["input_scale"]
        model._y_one_d = header["y_one_d"]
        model.dual_coef_ = header["dual_coef"]
        model.history_ = header["history"]
        if header["feature_names_in"] is not None:
            model.feature_names_in_ = header["feature_names_in"]
        return model

