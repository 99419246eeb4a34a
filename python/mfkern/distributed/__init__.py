"""Particle-sharded mean-field Langevin dynamics over MPI (mpi4py); the C++ core itself stays MPI-free.

Each of the P ranks of a communicator holds a contiguous range of the N particles (rank r: the global
indices :func:`shard_bounds` ``(N, P, r)``) in a training engine made one shard of N particles
(:meth:`mfkern.engine.Engine.shard`). Every sum over particles goes through one reduction, a ``Reduce``
(sum, in place on rank 0) followed by a ``Bcast``, so every rank holds the same bits and computes everything
else redundantly from them. One training step at particles W_t:

1. every rank computes the features of its particles and, for the dense second layer (and cg at a
   factorisation), the partial Gram ``(N_r/N) K_r``, reduced to K (8 n^2 bytes each way); with cg the other
   steps reduce one partial product ``H_r (H_r^T v) / N`` per iteration instead (a few n-vectors);
2. every rank solves ``A = (K + ridge I)^{-1} [Y | E_t]`` from the same bits (label noise E_t keyed by
   (seed, t));
3. every rank moves its particles, the noise keyed by their global index, so particle k gets the noise keyed
   by (seed, t, k) whatever P is; whether the step is finite (and, at logged steps, ||w||^2 and the few sums
   the diagnostics need) is reduced too, so all ranks stop at the same step.

Why Reduce + Bcast instead of an Allreduce: MPI does not promise that an Allreduce gives the same bits on
every rank (the summation order may differ per rank), and ranks with different sums would drift apart.
Training runs the one loop of :class:`mfkern.estimator.MeanFieldBase`; docs/distributed.md, section 2, gives
the costs.

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
