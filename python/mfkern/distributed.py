"""Particle-sharded mean-field Langevin dynamics over MPI (mpi4py); the C++ core itself stays MPI-free.

Each of the P ranks of a communicator holds a contiguous range of the N particles (rank r: the global
indices :func:`shard_bounds` ``(N, P, r)``). One training step at particles W_t:

1. every rank computes the partial Gram ``(1/N) H_r H_r^T`` of its particles (``core.gram`` times N_r/N);
2. one ``Reduce`` (sum, in place on rank 0) of the n x n partial Grams (8 n^2 bytes per rank), and a tiny
   one of a non-finite flag (plus, at logged steps, the few sums the diagnostics need);
3. rank 0 solves ``A = (K + ridge I)^{-1} [Y | E_t]`` (one Cholesky, label noise E_t keyed by (seed, t)) and
   broadcasts A (and B = (K + ridge I)^{-1} E_t) with a status word (8 n T bytes, 16 n T with label noise);
4. every rank moves its particles with ``core.langevin_step_given_dual(..., first_index=its first global
   index)``, so particle k gets the noise keyed by (seed, t, k) whatever P is.

Why Reduce + Bcast of A instead of an Allreduce of K: MPI does not promise that an Allreduce gives the same
bits on every rank (the summation order may differ per rank), and ranks with different A would drift
apart. Solving once on rank 0 and broadcasting A makes every rank use the same bits, costs less network
traffic than an Allreduce (a Reduce plus a small Bcast), and the solve (n^3/3 flops) is the same
whichever rank does it.

Tolerance. A P-rank run follows the single-process trajectory (``MeanFieldRegressor`` with the same
parameters and ``random_state``) up to floating-point reduction order: the Gram is summed in a different
order (relative change ~1e-16 per step), which the dynamics carry along. The tests check particles agree
to 1e-10 relative over 300 steps at small sizes; in a contracting regime (moderate eta) the difference
stays at the 1e-14 level, in a chaotic one it can grow over very long runs, like any change of summation
order (thread count of the BLAS, another machine).

Entry points: :class:`DistributedMeanFieldRegressor` (``comm=MPI.COMM_WORLD`` or any mpi4py
intracommunicator; :class:`SingleProcess` runs the same code path without MPI), its ``save``/``load``
(checkpoints are ordinary ``MeanFieldRegressor`` checkpoints: they hold all particles, so a run saved on P
ranks resumes on any other P, or in a plain single process), and :func:`train_main`, the command line
``mpirun -n P python -m mfkern.distributed --data train.npz --out model.npz ...``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import core
from ._validation import integer
from .estimator import (
    _MAX_STEPS,
    HISTORY_KEYS,
    DivergenceError,
    MeanFieldRegressor,
    _particles_finite,
    _seed_from,
    _validate_data,
)

__all__ = [
    "INSTALL_HINT",
    "SingleProcess",
    "DistributedMeanFieldRegressor",
    "require_mpi",
    "shard_bounds",
    "shard_counts",
    "partial_gram",
    "initial_particles",
    "train_main",
]

#: How to get mpi4py and an MPI library with pip alone (no system MPI needed).
INSTALL_HINT = 'pip install "mfkern[mpi]"'

# Status words rank 0 broadcasts with the second layer.
_OK, _NOT_PD, _U_NOT_FINITE, _PARTICLES_NOT_FINITE = 0, 1, 2, 3
_CAUSES = {
    _NOT_PD: "K + ridge I is not positive definite",
    _U_NOT_FINITE: "the objective U is not finite",
    _PARTICLES_NOT_FINITE: "the particles became non-finite",
}
# Diagnostics travelling in the broadcast packet (the others of HISTORY_KEYS are "step" and the wall time).
_DIAG_KEYS = ("U", "G", "dof", "kernel_alignment", "train_mse", "val_mse", "parameter_alignment", "wall_time")
_INIT_CHUNK = 2**20  # normals drawn at a time while streaming the initial particles


def require_mpi():
    """The ``mpi4py.MPI`` module, or an ImportError that says how to install it.

    Raises
    ------
    ImportError
        When mpi4py (or the MPI library it needs) cannot be imported; the message gives
        :data:`INSTALL_HINT`.
    """
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            "mfkern.distributed needs mpi4py for MPI runs, and it could not be imported "
            f"({exc}). Install it with: {INSTALL_HINT}  (this brings mpi4py and a pip-installable Open MPI "
            "with its mpirun; no system MPI is needed). To run the sharded code path in one process "
            "without MPI, pass comm=mfkern.distributed.SingleProcess()."
        ) from exc
    return MPI


class SingleProcess:
    """A communicator of one process, for running the sharded code path without MPI (no mpi4py needed).

    Only ``Get_rank`` and ``Get_size`` are provided; collective operations on one process are no-ops.
    """

    def Get_rank(self):  # noqa: N802 - mpi4py's spelling
        """Always 0."""
        return 0

    def Get_size(self):  # noqa: N802 - mpi4py's spelling
        """Always 1."""
        return 1

    def __repr__(self):
        return "SingleProcess()"


def _communicator(comm):
    """The communicator to use: None -> mpi4py's COMM_WORLD (ImportError with a hint when missing)."""
    if comm is None:
        return require_mpi().COMM_WORLD
    if isinstance(comm, SingleProcess):
        return comm
    if not (callable(getattr(comm, "Get_rank", None)) and callable(getattr(comm, "Get_size", None))
            and callable(getattr(comm, "Reduce", None))):
        raise TypeError("comm must be None (MPI.COMM_WORLD), an mpi4py intracommunicator or "
                        f"mfkern.distributed.SingleProcess(), got {type(comm).__name__}")
    return comm


class _Collectives:
    """The few collective operations the trainer needs, over mpi4py buffers (no pickling of big arrays).

    With one process (SingleProcess or an MPI communicator of size 1) every operation is a local no-op.
    """

    def __init__(self, comm):
        self.comm = _communicator(comm)
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self.mpi = None if isinstance(self.comm, SingleProcess) else require_mpi()

    @property
    def local(self):
        return self.size == 1

    def sum_to_root(self, buf, root=0):
        """Elementwise sum of the float64 arrays `buf` of all ranks, into `buf` itself on `root` (in place: no
        second n x n buffer); returns it on `root`, None elsewhere."""
        if self.local:
            return buf
        if self.rank == root:
            self.comm.Reduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM, root=root)
            return buf
        self.comm.Reduce(buf, None, op=self.mpi.SUM, root=root)
        return None

    def bcast_array(self, buf, root=0):
        """Broadcast a float64 buffer in place from `root`."""
        if not self.local:
            self.comm.Bcast(buf, root=root)
        return buf

    def sum_all(self, send, root=0):
        """Elementwise sum over ranks with the same bits on every rank (Reduce to root, then Bcast)."""
        out = np.array(send, dtype=np.float64, order="C")  # a copy: the reduction writes into it on root
        if self.local:
            return out
        self.sum_to_root(out, root)
        return self.bcast_array(out, root)

    def bcast(self, obj, root=0):
        """Broadcast a small picklable object from `root`."""
        return obj if self.local else self.comm.bcast(obj, root=root)

    def any(self, flag):
        """True on every rank when `flag` is true on some rank."""
        if self.local:
            return bool(flag)
        return bool(self.comm.allreduce(int(bool(flag)), op=self.mpi.MAX))

    def _layout(self, counts, width):
        elements = np.asarray(counts, dtype=np.int64) * width
        displacements = np.concatenate([[0], np.cumsum(elements)[:-1]])
        return elements, displacements

    def gather_rows(self, local, counts, root=0):
        """Concatenate the rows of every rank's `local` (float64, rank order) on `root`; None elsewhere."""
        local = np.ascontiguousarray(local, dtype=np.float64)
        if self.local:
            return local
        width = local.shape[1]
        full = np.empty((int(sum(counts)), width)) if self.rank == root else None
        elements, displacements = self._layout(counts, width)
        recv = [full, elements, displacements, self.mpi.DOUBLE] if self.rank == root else None
        self.comm.Gatherv(local, recv, root=root)
        return full

    def allgather_rows(self, local, counts):
        """Concatenate the rows of every rank's `local` on every rank."""
        local = np.ascontiguousarray(local, dtype=np.float64)
        if self.local:
            return local
        width = local.shape[1]
        full = np.empty((int(sum(counts)), width))
        elements, displacements = self._layout(counts, width)
        self.comm.Allgatherv(local, [full, elements, displacements, self.mpi.DOUBLE])
        return full

    def scatter_rows(self, full, counts, width, root=0):
        """Rows of `full` (given on `root` only) split by `counts`: this rank's block."""
        if self.local:
            return np.ascontiguousarray(full, dtype=np.float64)
        local = np.empty((int(counts[self.rank]), width))
        send = None
        if self.rank == root:
            full = np.ascontiguousarray(full, dtype=np.float64)
            elements, displacements = self._layout(counts, width)
            send = [full, elements, displacements, self.mpi.DOUBLE]
        self.comm.Scatterv(send, local, root=root)
        return local


# ---------------------------------------------------------------------------------------------- sharding
def shard_counts(n_items, n_shards):
    """Sizes of `n_shards` contiguous, balanced shards of `n_items` (the first n_items % n_shards get one
    more)."""
    n_items = integer(n_items, "n_items", minimum=0)
    n_shards = integer(n_shards, "n_shards", minimum=1)
    base, extra = divmod(n_items, n_shards)
    return [base + (1 if r < extra else 0) for r in range(n_shards)]


def shard_bounds(n_items, n_shards, shard):
    """Global index range [start, stop) of shard `shard` of `n_items` split in `n_shards` contiguous parts.

    Returns
    -------
    (int, int)
    """
    counts = shard_counts(n_items, n_shards)
    shard = integer(shard, "shard", minimum=0, maximum=n_shards - 1)
    start = sum(counts[:shard])
    return start, start + counts[shard]


def partial_gram(W_shard, X, n_particles, X2=None, activation="tanh", *, block_size=None, n_threads=None):
    """One shard's share (1/N) H_shard(X) H_shard(X2)^T of the Gram of all N = `n_particles` particles.

    The sum over shards of ``partial_gram`` is ``core.gram`` of all particles (up to rounding): core.gram
    divides by the shard's own N_shard, so the result is rescaled by N_shard / N.
    """
    n_particles = integer(n_particles, "n_particles", minimum=1)
    K = core.gram(W_shard, X, X2, activation, block_size=block_size, n_threads=n_threads)
    if W_shard.shape[0] != n_particles:
        K *= W_shard.shape[0] / n_particles
    return K


def initial_particles(seed, n_particles, n_features, lam_w, start=0, stop=None):
    """Rows [start, stop) of ``default_rng(seed).standard_normal((N, d+1)) / sqrt(lam_w)``.

    These are the initial particles of ``MeanFieldRegressor`` (bit for bit), drawn by streaming the
    generator in chunks so a rank never holds more than its own rows plus one chunk: O(stop * (d+1))
    time (the generator cannot skip ahead), O((stop - start) * (d+1)) memory.
    """
    stop = n_particles if stop is None else stop
    width = n_features + 1
    first, last = start * width, stop * width
    rng = np.random.default_rng(seed)
    out = np.empty(last - first)
    position = 0
    while position < last:
        take = min(_INIT_CHUNK, last - position)
        values = rng.standard_normal(take)
        lo, hi = max(position, first), min(position + take, last)
        if lo < hi:
            out[lo - first:hi - first] = values[lo - position:hi - position]
        position += take
    W = out.reshape(stop - start, width)
    W /= math.sqrt(lam_w)
    return W


def _checksum(*arrays, text=""):
    """A CRC32 of arrays and text, to check that every rank was given the same data and parameters."""
    crc = zlib.crc32(text.encode())
    for arr in arrays:
        if arr is None:
            crc = zlib.crc32(b"none", crc)
        else:
            arr = np.ascontiguousarray(arr)
            crc = zlib.crc32(repr((arr.shape, arr.dtype.str)).encode(), crc)
            crc = zlib.crc32(arr.view(np.uint8).reshape(-1), crc)
    return crc


# ---------------------------------------------------------------------------------------------- estimator
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
                 precision="float64", input_scale=None, preset=None, comm=None):
        super().__init__(n_particles=n_particles, lam=lam, lam_a=lam_a, lam_w=lam_w, eta=eta, n_steps=n_steps,
                         activation=activation, label_noise=label_noise, random_state=random_state,
                         n_threads=n_threads, log_every=log_every, verbose=verbose, warm_start=warm_start,
                         callbacks=callbacks, block_size=block_size, solver=solver, precision=precision,
                         input_scale=input_scale, preset=preset)
        self.comm = comm

    # ------------------------------------------------------------------ plumbing
    @property
    def _n_features_out(self):
        return int(sum(self.particle_counts_))

    def _collectives(self):
        return _Collectives(self.comm)

    def _check_X(self, X, name="X"):
        check_is_fitted(self, ("local_particles_", "local_coef_"))
        if X is None:
            raise TypeError(f"{name} must be an array, got None")
        return self._scale_inputs(_validate_data(self, X, reset=False, dtype=np.float64))

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
        mine = _checksum(X, Y, X_val, Y_val, direction, text=f"{settings}|{continuing}|{start}")
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
        if noisy:  # one Cholesky for both: A = S Y and B = S E_t (PAPER.md section 5)
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
        from .checkpoint import save

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
        from .checkpoint import load

        net = _Collectives(comm)
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
        net = _Collectives(comm)
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


# ---------------------------------------------------------------------------------------------- command line
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
    comm = SingleProcess() if args.serial else _communicator(None)
    net = _Collectives(comm)
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


if __name__ == "__main__":
    from mfkern.distributed import train_main as _main  # the package's module, not a second copy

    sys.exit(_main())
