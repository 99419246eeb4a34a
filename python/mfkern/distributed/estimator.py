"""DistributedMeanFieldRegressor: MeanFieldRegressor with its particles sharded over the ranks of an MPI communicator.

The step, the Reduce of the partial Gram to rank 0, the solve there and the broadcast of the dual are
described in the docstring of :mod:`mfkern.distributed`; the collective operations themselves are in
:mod:`mfkern.distributed.collectives`.
"""
from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from .. import core
from .._validation import as_targets
from ..estimator import (
    _MAX_STEPS,
    HISTORY_KEYS,
    DivergenceError,
    MeanFieldRegressor,
    _seed_from,
)
from ..engine import CG_MIN_SAMPLES, Engine
from .collectives import Collectives, checksum, initial_particles, partial_gram, shard_bounds, shard_counts

__all__ = ["DistributedMeanFieldRegressor"]

# Status words rank 0 broadcasts with the second layer.
_OK, _NOT_PD, _U_NOT_FINITE, _PARTICLES_NOT_FINITE = 0, 1, 2, 3
_CAUSES = {
    _NOT_PD: "K + ridge I is not positive definite",
    _U_NOT_FINITE: "the objective U is not finite",
    _PARTICLES_NOT_FINITE: "the particles became non-finite",
}


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
        n, d = X.shape
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
        if start + p["n_steps"] > _MAX_STEPS:
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
                _seed_from(rs)
            seed = net.bcast(_seed_from(rs) if net.rank == 0 else None)

        core.check_hyper(p["lam"], p["lam_a"], p["lam_w"], n)  # the products (and the ridge) must be representable
        run = dict(p, X=X, Y=Y, X_val=X_val, Y_val=Y_val, direction=direction, ridge=n * p["lam"] * p["lam_a"],
                   one_d=one_d, seed=seed, alignment_target=target, start=start, last=start + p["n_steps"], counts=counts,
                   first_index=start_index, net=net, fresh=not continuing, t0=time.perf_counter(),
                   wall_offset=(self.history_["wall_time"][-1] if continuing and self.history_["wall_time"]
                                else 0.0))
        if continuing:
            W = self.local_particles_
        else:
            W = initial_particles(seed, N, d, p["lam_w"], start_index, stop_index)
        with core.thread_limits(p["n_threads"]):
            self._train(W, run)
        self.alignment_target_ = "y" if target is None else "alignment_target"
        return self

    def _is_log_step(self, t, run):
        if t == run["start"]:
            return run["fresh"] or t == run["last"]
        return t % run["log_every"] == 0 or t == run["last"]

    def _engine(self, W, run):
        """This rank's engine over its shard, its sums over particles reduced across the ranks."""
        n, N = run["X"].shape[0], sum(run["counts"])
        solver = run["solver"]
        if solver == "auto":  # as for one process, but the Woodbury system cannot be sharded
            solver = "cg" if run["precision"] == "float64" and n >= CG_MIN_SAMPLES else "dense"
        engine = Engine(run["X"], run["Y"], W, lam=run["lam"], lam_a=run["lam_a"], lam_w=run["lam_w"],
                        eta=run["eta"], seed=run["seed"], step=run["start"], activation=run["activation"],
                        label_noise=run["label_noise"], solver=solver, precision=run["precision"],
                        n_threads=run["n_threads"], block_size=run["block_size"], tol=run["tol"],
                        first_index=run["first_index"], alignment_target=run["alignment_target"])
        net = run["net"]
        if not net.local:
            def reduce(buffer):  # the same bits on every rank: Reduce to rank 0, then Bcast
                net.sum_to_root(buffer)
                net.bcast_array(buffer)

            engine.shard(reduce, N)
        return engine

    def _train(self, W, run):
        """Log, advance to the next logged step inside the engine, repeat (see the module docstring)."""
        net = run["net"]
        engine = self._engine(W, run)
        t = run["start"]
        previous = None  # (step, particles, A) of the last state whose second layer is known
        while True:
            if self._is_log_step(t, run):
                status, diag = self._diagnose(engine, t, run)
                if status != _OK:
                    self._diverge(engine, run, previous, 0 if run["fresh"] and t == 0 else t + 1, status)
                self._commit(engine.particles, t, engine.dual, run, fresh_history=(t == 0 and run["fresh"]))
                self._record(diag, t, run)
                previous = (t, self.local_particles_, engine.dual)
                if net.any(self._call_back(diag, t, run)):
                    break
            if t == run["last"]:  # always a logged step, so the second layer is committed
                break
            next_log = min((t // run["log_every"] + 1) * run["log_every"], run["last"])
            result = engine.run(next_log - t)
            # Commit the particles at once, so the fitted state follows the run (the second layer follows at
            # the next logged step, as in MeanFieldRegressor).
            self.local_particles_ = engine.particles
            self.n_steps_done_ = t = engine.step
            if result.failed:
                if engine.has_current_dual:  # the new particles were not finite; the current ones are good
                    previous = (t, self.local_particles_, engine.dual)
                    status = _PARTICLES_NOT_FINITE
                else:
                    if engine.roll_back():  # the solve failed: the previous particles' dual is known
                        previous = (engine.step, engine.particles, engine.dual)
                    status = _NOT_PD if result.status == "not_positive_definite" else _U_NOT_FINITE
                self._diverge(engine, run, previous, t + 1, status)

    def _diagnose(self, engine, t, run):
        """Collective: status and the history entry at the engine's particles (the engine reduces the Gram
        and ||w||^2; the validation predictions and the parameter alignment are reduced here)."""
        net, X, Y = run["net"], run["X"], run["Y"]
        try:
            d = engine.diagnostics()
        except core.NotPositiveDefiniteError:
            return _NOT_PD, None
        if not math.isfinite(d["U"]):
            return _U_NOT_FINITE, None
        W = engine.particles
        fraction = W.shape[0] / sum(run["counts"])
        m = 0 if run["X_val"] is None else run["X_val"].shape[0]
        extras = np.zeros(1 + m * Y.shape[1])
        if run["direction"] is not None:
            extras[0] = core.parameter_alignment(W, run["direction"]) * fraction
        if m:
            coef = engine.output_weights()
            extras[1:] = (core.network_output(W, coef, run["X_val"], activation=run["activation"],
                                              block_size=run["block_size"], n_threads=run["n_threads"])
                          * fraction).reshape(-1)
        extras = net.sum_all(extras)
        wall = net.bcast(run["wall_offset"] + time.perf_counter() - run["t0"] if net.rank == 0 else None)
        diag = dict(U=d["U"], G=d["G"], dof=d["dof"], kernel_alignment=d["kernel_alignment"],
                    train_mse=d["train_mse"], val_mse=math.nan, parameter_alignment=math.nan, wall_time=wall)
        if m:
            diag["val_mse"] = float(np.mean((extras[1:].reshape(m, -1) - run["Y_val"]) ** 2))
        if run["direction"] is not None:
            diag["parameter_alignment"] = float(extras[0])
        return _OK, diag

    def _commit(self, W, t, A, run, fresh_history=False):
        """Make (W, t, A) the fitted state on this rank; the local second-layer weights follow from A."""
        coef = core.output_weights(W, run["X"], A, activation=run["activation"], block_size=run["block_size"],
                                   n_threads=run["n_threads"])
        if fresh_history:
            self.seed_ = run["seed"]
            self.history_ = {key: [] for key in HISTORY_KEYS}
        self.local_particles_ = W
        self.n_steps_done_ = t
        self.particle_counts_ = tuple(run["counts"])
        self.particle_range_ = (run["first_index"], run["first_index"] + W.shape[0])
        self.dual_coef_ = A[:, 0] if run["one_d"] else A
        self.local_coef_ = coef[:, 0] if run["one_d"] else coef
        self.n_outputs_ = run["Y"].shape[1]
        self._y_one_d = run["one_d"]

    def _record(self, diag, t, run):
        entry = dict(diag, step=int(t))
        for key in HISTORY_KEYS:
            self.history_[key].append(entry[key])
        if run["verbose"] and run["net"].rank == 0:
            print(f"[DistributedMeanFieldRegressor x{run['net'].size}] step {t}: U={entry['U']:.6g} "
                  f"G={entry['G']:.6g} dof={entry['dof']:.2f} train_mse={entry['train_mse']:.4g} "
                  f"val_mse={entry['val_mse']:.4g} time={entry['wall_time']:.1f}s", file=sys.stderr, flush=True)

    def _call_back(self, diag, t, run):
        entry = dict(diag, step=int(t))
        stop = False
        for callback in run["callbacks"]:
            stop = bool(callback(self, int(t), dict(entry))) or stop
        return stop

    def _diverge(self, engine, run, previous, failed_step, status):
        """Every rank: fall back to the last state whose second layer is known, raise DivergenceError naming
        the step that failed (0: the initial particles; then no fitted state of this fit exists)."""
        cause = _CAUSES[status]
        if previous is not None:
            step, W, A = previous
            self._commit(W, step, A, run)
            keep = sum(1 for s in self.history_["step"] if s <= step)
            for key in HISTORY_KEYS:
                del self.history_[key][keep:]
            if not self.history_["step"] or self.history_["step"][-1] != step:
                # Log the state we fall back to, as MeanFieldRegressor does (collective: all ranks are here).
                engine.set_particles(W, step)
                fallback_status, diag = self._diagnose(engine, step, run)
                if fallback_status == _OK:
                    self._record(diag, step, run)
        # previous is None: nothing of this fit was committed, the earlier fitted state (if any) stays as it was.
        left = getattr(self, "n_steps_done_", None)
        if status == _NOT_PD:
            hint = (f"the ridge n*lam*lam_a = {run['ridge']:.3g} is probably too small (increase lam or lam_a), "
                    f"or the step size eta = {run['eta']:g} too large")
        else:
            hint = (f"the step size eta = {run['eta']:g} is probably too large (try a smaller eta), "
                    f"or the ridge n*lam*lam_a = {run['ridge']:.3g} too small")
        where = "at initialisation" if failed_step == 0 else f"at step {failed_step}"
        kept = "No fitted state was kept" if left is None else f"The estimator was left at step {left}"
        raise DivergenceError(f"DistributedMeanFieldRegressor diverged {where}: {cause}; {hint}. {kept}.",
                              step=failed_step, n_steps_done=left, cause=cause)

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

