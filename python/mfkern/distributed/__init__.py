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

Modules: :mod:`~mfkern.distributed.collectives` (MPI helpers, reductions and the particle shards),
:mod:`~mfkern.distributed.estimator` (the estimator) and :mod:`~mfkern.distributed.cli` (the command line).
"""
from __future__ import annotations

from .cli import train_main
from .collectives import (
    INSTALL_HINT,
    SingleProcess,
    initial_particles,
    partial_gram,
    require_mpi,
    shard_bounds,
    shard_counts,
)
from .estimator import DistributedMeanFieldRegressor

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
