"""MPI plumbing of the particle-sharded trainer: communicators, the collective operations it needs, and the shards.

Nothing here knows about the estimator: :func:`require_mpi` (mpi4py or an ImportError with the install hint),
:class:`SingleProcess` (a one-process stand-in for a communicator), :class:`Collectives` (sums, broadcasts,
gathers and scatters over mpi4py buffers, no-ops on one process), the contiguous particle shards
(:func:`shard_counts`, :func:`shard_bounds`), one shard's share of the Gram (:func:`partial_gram`), one
shard's rows of the initial particles (:func:`initial_particles`) and :func:`checksum`, which lets the ranks
check they were given the same data.
"""
from __future__ import annotations

import math
import zlib

import numpy as np

from .. import core
from .._validation import integer

__all__ = [
    "INSTALL_HINT",
    "SingleProcess",
    "Collectives",
    "require_mpi",
    "resolve_communicator",
    "shard_bounds",
    "shard_counts",
    "partial_gram",
    "initial_particles",
    "checksum",
]

#: How to get mpi4py and an MPI library with pip alone (no system MPI needed).
INSTALL_HINT = 'pip install "mfkern[mpi]"'

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


def resolve_communicator(comm):
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


class Collectives:
    """The few collective operations the trainer needs, over mpi4py buffers (no pickling of big arrays).

    With one process (SingleProcess or an MPI communicator of size 1) every operation is a local no-op.
    """

    def __init__(self, comm):
        self.comm = resolve_communicator(comm)
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


def checksum(*arrays, text=""):
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

