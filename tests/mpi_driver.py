"""mpirun driver for tests/test_distributed.py: runs the jobs of a JSON file on MPI.COMM_WORLD.

Usage: ``mpirun -n P python tests/mpi_driver.py JOB.json``. The job names a data file (.npz with X, y,
X_val, y_val) and a list of tasks, each either

- ``{"kind": "fit", "params": {...}, "save": PATH}``: a fresh DistributedMeanFieldRegressor fit, or
- ``{"kind": "resume", "load": PATH, "n_steps": K, "save": PATH}``: load a checkpoint (written on any number
  of ranks, or by MeanFieldRegressor), re-shard it over this run's ranks and continue K steps.

After each task the model is saved to PATH (rank 0 writes) and every rank r writes ``PATH.rank{r}.npz``
with what it sees: its predictions and kernel on X_val, its history U, its shard and its range, so the test
can check every rank holds the right particles and gets the same bits.
"""
import json
import sys

import numpy as np
from mpi4py import MPI

from mfkern.distributed import DistributedMeanFieldRegressor


def main(job_path):
    """Run every task of the job file `job_path` on MPI.COMM_WORLD."""
    with open(job_path, encoding="utf-8") as handle:
        job = json.load(handle)
    comm = MPI.COMM_WORLD
    with np.load(job["data"]) as data:
        X, y, X_val, y_val = (data[k] for k in ("X", "y", "X_val", "y_val"))
    for task in job["tasks"]:
        if task["kind"] == "fit":
            model = DistributedMeanFieldRegressor(comm=comm, **task["params"])
        else:
            model = DistributedMeanFieldRegressor.load(task["load"], comm=comm)
            model.set_params(warm_start=True, n_steps=task["n_steps"])
        model.fit(X, y, X_val=X_val, y_val=y_val)
        model.save(task["save"])
        np.savez(f"{task['save']}.rank{comm.Get_rank()}.npz", pred=model.predict(X_val),
                 kernel=model.kernel(X_val), U=np.asarray(model.history_["U"]), local=model.local_particles_,
                 range=np.asarray(model.particle_range_), size=comm.Get_size())


if __name__ == "__main__":
    main(sys.argv[1])
