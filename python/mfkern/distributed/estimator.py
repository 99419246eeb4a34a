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
from ..estimator import (
    _MAX_STEPS,
    HISTORY_KEYS,
    DivergenceError,
    MeanFieldRegressor,
    _particles_finite,
    _seed_from,
)
from .collectives import Collectives, checksum, initial_particles, partial_gram, shard_bounds, shard_counts

__all__ = ["DistributedMeanFieldRegressor"]

# Status words rank 0 broadcasts with the second layer.
_OK, _NOT_PD, _U_NOT_FINITE, _PARTICLES_NOT_FINITE = 0, 1, 2, 3
_CAUSES = {
    _NOT_PD: "K + ridge I is not positive definite",
    _U_NOT_FINITE: "the objective U is not finite",
    _PARTICLES_NOT_FINITE: "the particles became non-finite",
}
# Diagnostics travelling in the broadcast packet (the others of HISTORY_KEYS are "step" and the wall time).
_DIAG_KEYS = ("U", "G", "dof", "kernel_alignment", "train_mse", "val_mse", "parameter_alignment", "wall_time")


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

    def __init__(self, n_particles=2000, lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, n_steps=10000,
                 activation="tanh", label_noise=0.0, random_state=None, n_threads=None, log_every=100,
                 verbose=0, warm_start=False, callbacks=None, block_size=None, solver="auto",
                 precision="float64", comm=None):
        super().__init__(n_particles=n_particles, lam=lam, lam_a=lam_a, lam_w=lam_w, eta=eta, n_steps=n_steps,
                         activation=activation, label_noise=label_noise, random_state=random_state,
                         n_threads=n_threads, log_every=log_every, verbose=verbose, warm_start=warm_start,
                         callbacks=callbacks, block_size=block_size, solver=solver, precision=precision)
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
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _fraction(self):
        return self.local_particles_.shape[0] / sum(self.particle_counts_)

    def _local_coef_2d(self):
        return self.local_coef_.reshape(self.local_coef_.shape[0], -1)

    # ------------------------------------------------------------------ training
    def fit(self, X, y, *, X_val=None, y_val=None, target_direction=None):
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
        mine = checksum(X, Y, X_val, Y_val, direction, text=f"{settings}|{continuing}|{start}")
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

        core._hyper(p["lam"], p["lam_a"], p["lam_w"], n)  # the products (and the ridge) must be representable
        run = dict(p, X=X, Y=Y, X_val=X_val, Y_val=Y_val, direction=direction, ridge=n * p["lam"] * p["lam_a"],
                   one_d=one_d, seed=seed, start=start, last=start + p["n_steps"], counts=counts,
                   first_index=start_index, net=net, fresh=not continuing, t0=time.perf_counter(),
                   wall_offset=(self.history_["wall_time"][-1] if continuing and self.history_["wall_time"]
                                else 0.0))
        if continuing:
            W = self.local_particles_
        else:
            W = initial_particles(seed, N, d, p["lam_w"], start_index, stop_index)
        with core.thread_limits(p["n_threads"]):
            self._train(W, run)
        return self

    def _is_log_step(self, t, run):
        if t == run["start"]:
            return run["fresh"] or t == run["last"]
        return t % run["log_every"] == 0 or t == run["last"]

    def _train(self, W, run):
        """The step loop; one Reduce and one Bcast per step (see the module docstring)."""
        net = run["net"]
        t = run["start"]
        previous = None  # (step, particles, A) of the last state whose second layer is known
        while True:
            log = self._is_log_step(t, run)
            status, A, B, diag = self._second_layer(W, t, log, run)
            if status != _OK:
                self._diverge(run, previous, t, status)
            if log:
                self._commit(W, t, A, run, fresh_history=(t == 0 and run["fresh"]))
                self._record(diag, t, run)
                if net.any(self._call_back(diag, t, run)):
                    break
            if t == run["last"]:  # always a logged step, so the second layer is committed
                break
            previous = (t, W, A)
            try:
                W = core.langevin_step_given_dual(
                    W, run["X"], A, B=B, eta=run["eta"], lam=run["lam"], lam_a=run["lam_a"], lam_w=run["lam_w"],
                    seed=run["seed"], step=t, activation=run["activation"], first_index=run["first_index"],
                    n_threads=run["n_threads"], precision=run["precision"])
            except FloatingPointError:
                # Non-finite particles on this rank: every rank learns it in the next step's collective
                # status check, and all of them raise the same DivergenceError there.
                W = np.full_like(W, np.nan)
            t += 1
            # Commit the particles at once, so the fitted state follows the run (the second layer follows at
            # the next logged step, as in MeanFieldRegressor).
            self.local_particles_ = W
            self.n_steps_done_ = t

    def _second_layer(self, W, t, log, run):
        """Reduce the partial Gram (and, at logged steps, what the diagnostics need) to rank 0; rank 0 solves
        for A (and B), computes the diagnostics and broadcasts status, A, B and diagnostics."""
        net, X, Y = run["net"], run["X"], run["Y"]
        n, T = Y.shape
        N = sum(run["counts"])
        fraction = W.shape[0] / N
        noisy = run["label_noise"] > 0 and t < run["last"]
        m = 0 if run["X_val"] is None else run["X_val"].shape[0]
        # As in MeanFieldRegressor: particles whose term (lam lam_w / 2) ||w||^2 of G overflows count as non-finite.
        finite = _particles_finite(W, run["lam"] * run["lam_w"])
        # The partial Gram is reduced in place (no copy of the n x n buffer); the few other sums travel in a
        # second, small Reduce: [non-finite count | (log) sum ||w||^2, alignment part, K(X_val, X)].
        if finite:
            K = np.ascontiguousarray(partial_gram(W, X, N, activation=run["activation"],
                                                  block_size=run["block_size"], n_threads=run["n_threads"]))
        else:
            K = np.zeros((n, n))
        extras = np.zeros(3 + m * n if log else 1)
        extras[0] = 0.0 if finite else 1.0
        if log and finite:
            extras[1] = float(np.einsum("kl,kl->", W, W))
            if run["direction"] is not None:
                extras[2] = core.parameter_alignment(W, run["direction"]) * fraction
            if m:
                extras[3:] = partial_gram(W, run["X_val"], N, X2=X, activation=run["activation"],
                                          block_size=run["block_size"], n_threads=run["n_threads"]).reshape(-1)
        K = net.sum_to_root(K)
        extras = net.sum_to_root(extras)
        # Packet: [status, diagnostics (8), A (n*T), B (n*T)].
        packet = np.zeros(1 + len(_DIAG_KEYS) + 2 * n * T)
        if net.rank == 0:
            self._solve_on_root(K, extras, packet, t, log, noisy, run)
        net.bcast_array(packet)
        status = int(packet[0])
        diag = dict(zip(_DIAG_KEYS, packet[1:1 + len(_DIAG_KEYS)].tolist()))
        body = packet[1 + len(_DIAG_KEYS):]
        A = body[:n * T].reshape(n, T).copy()
        B = body[n * T:].reshape(n, T).copy() if noisy else None
        return status, A, B, diag

    def _solve_on_root(self, K, extras, packet, t, log, noisy, run):
        """Rank 0: status, diagnostics and the dual coefficients from the reduced Gram and extras, into
        `packet`."""
        Y, n, T = run["Y"], run["Y"].shape[0], run["Y"].shape[1]
        if extras[0] > 0:
            packet[0] = _PARTICLES_NOT_FINITE
            return
        rhs = Y
        if noisy:  # one Cholesky for both: A = S Y and B = S E_t (docs/theory.md, section 6)
            E = core.label_noise(run["seed"], t, n, T, run["label_noise"])
            rhs = np.hstack([Y, E])
        try:
            solution = core.second_layer(K, rhs, run["ridge"], n_threads=run["n_threads"])
        except core.NotPositiveDefiniteError:
            packet[0] = _NOT_PD
            return
        A = solution[:, :T]
        U = run["lam"] * run["lam_a"] / (2 * T) * float(np.sum(Y * A))
        if not math.isfinite(U):
            packet[0] = _U_NOT_FINITE
            return
        values = dict.fromkeys(_DIAG_KEYS, math.nan)
        values["U"] = U
        if log:
            N = sum(run["counts"])
            values["G"] = U + run["lam"] * run["lam_w"] / 2 * extras[1] / N
            values["dof"] = core.degrees_of_freedom(K, run["ridge"])
            values["kernel_alignment"] = core.kernel_alignment(K, Y) if np.any(Y) and np.any(K) else math.nan
            values["train_mse"] = float(np.mean((K @ A - Y) ** 2))
            if run["X_val"] is not None:
                cross = extras[3:].reshape(-1, n)
                values["val_mse"] = float(np.mean((cross @ A - run["Y_val"]) ** 2))
            if run["direction"] is not None:
                values["parameter_alignment"] = float(extras[2])
            values["wall_time"] = run["wall_offset"] + time.perf_counter() - run["t0"]
        packet[1:1 + len(_DIAG_KEYS)] = [values[k] for k in _DIAG_KEYS]
        body = packet[1 + len(_DIAG_KEYS):]
        body[:n * T] = A.reshape(-1)
        if noisy:
            body[n * T:] = solution[:, T:].reshape(-1)

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

    def _diverge(self, run, previous, t, status):
        """Every rank: fall back to the last state whose second layer is known, raise DivergenceError."""
        cause = _CAUSES[status]
        if run["fresh"] and t == 0:
            failed_step = 0  # the initial particles already fail; no fitted state of this fit exists
        else:
            failed_step = t if status == _PARTICLES_NOT_FINITE else t + 1
        if previous is not None:
            step, W, A = previous
            self._commit(W, step, A, run)
            keep = sum(1 for s in self.history_["step"] if s <= step)
            for key in HISTORY_KEYS:
                del self.history_[key][keep:]
            if not self.history_["step"] or self.history_["step"][-1] != step:
                # Log the state we fall back to, as MeanFieldRegressor does (collective: all ranks are here).
                fallback_status, _, _, diag = self._second_layer(W, step, True, run)
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
        for name in ("n_steps_done_", "seed_", "n_features_in_", "n_outputs_", "_y_one_d"):
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
                          n_outputs=int(estimator.n_outputs_), history={k: list(v) for k, v in
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
        model._y_one_d = header["y_one_d"]
        model.dual_coef_ = header["dual_coef"]
        model.history_ = header["history"]
        if header["feature_names_in"] is not None:
            model.feature_names_in_ = header["feature_names_in"]
        return model

