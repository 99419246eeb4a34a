"""The discretisation microbenchmark for one's own dynamics: errors, slopes with intervals, and figures."""
from __future__ import annotations

import dataclasses
import pathlib

from ._config import checked_config
from .particle import particle_error
from .timestep import time_error

__all__ = ["BenchmarkResult", "discretization_benchmark"]


@dataclasses.dataclass
class BenchmarkResult:
    """What :func:`discretization_benchmark` returns.

    Attributes
    ----------
    particle, time : ErrorSweep or None
        The particle sweep (over Ns) and the time sweep (over etas), when asked for: errors with
        intervals (``table``), slopes with intervals (``slopes``), errors and slopes against time
        (``by_time``), the stationarity check of the averaging window and the eta * L diagnostics.
    figures : list of str
        The PNG files written (empty without figure_dir).
    """

    particle: object = None
    time: object = None
    figures: list = dataclasses.field(default_factory=list)

    def slopes(self):
        """{"particle" / "time": {metric: (slope, (ci_low, ci_high), theory)}} of the sweeps run."""
        out = {}
        for name in ("particle", "time"):
            sweep = getattr(self, name)
            if sweep is not None:
                out[name] = {m: (f["slope"], tuple(f["ci"]), f["theory"]) for m, f in sweep.slopes.items()}
        return out

    def format(self):
        """The sweeps' plain-text tables (errors, slopes, slopes against time, stationarity)."""
        return "\n\n".join(sweep.format_table() for sweep in (self.particle, self.time) if sweep is not None)

    def to_dict(self):
        """A JSON-ready dict of both sweeps and the figure paths."""
        return {"particle": None if self.particle is None else self.particle.to_dict(),
                "time": None if self.time is None else self.time.to_dict(), "figures": list(self.figures)}


def discretization_benchmark(config, *, Ns=None, etas=None, seeds=8, n_particles=128, reference_factor=8,
                             reference_seeds=2, reference_ratio=4, horizon=None, figure_dir=None, n_jobs=1,
                             out_dir=None, progress=False, backend="ensemble"):
    """Measure the particle (O(1/N)) and/or time (O(eta)) discretisation errors of one configuration.

    Parameters
    ----------
    config : DiscretizationConfig
        The dynamics: task ("product": y = x1 x2; "ou": data term off), d, n, lam, lam_a, lam_w,
        activation, the particle sweep's step eta and number of steps n_steps, the averaging window
        (average_from, record_every), n_times report times, seed.
    Ns : sequence of int, optional
        Particle counts of a particle sweep (:func:`mfkern.analysis.particle_error`) against a reference of
        reference_factor * max(Ns) particles (reference_seeds replicates).
    etas : sequence of float, optional
        Step sizes of a time sweep (:func:`mfkern.analysis.time_error`) with N = n_particles, coupled to a
        reference step min(etas) / reference_ratio, up to `horizon` (default eta * n_steps of the config).
    seeds : int
        Replicates per grid point (the intervals are over them).
    figure_dir : path, optional
        Where to write the figures: benchmark_particle.png, benchmark_particle_time.png (error against
        time), benchmark_time.png, benchmark_time_time.png. Needs matplotlib.
    n_jobs, out_dir, progress :
        Runs advanced at a time (-1: one per CPU), resume-cache directory, progress bars.
    backend : {"ensemble", "engine", "core_loop"}
        How the runs are advanced (see :func:`mfkern.analysis.particle_error`; bitwise the same results).

    Returns
    -------
    BenchmarkResult
    """
    cfg = checked_config(config)
    if Ns is None and etas is None:
        raise ValueError("Ns and etas are both None: give the particle counts (Ns), the step sizes (etas), or both")
    result = BenchmarkResult()
    common = {"seeds": seeds, "n_jobs": n_jobs, "out_dir": out_dir, "progress": progress, "backend": backend}
    if Ns is not None:
        result.particle = particle_error(cfg, Ns=Ns, reference_factor=reference_factor,
                                         reference_seeds=reference_seeds, **common)
    if etas is not None:
        result.time = time_error(cfg, etas=etas, n_particles=n_particles, reference_ratio=reference_ratio,
                                 horizon=horizon, **common)
    if figure_dir is not None:
        from ._command import plot_by_time, plot_sweep

        figure_dir = pathlib.Path(figure_dir)
        figure_dir.mkdir(parents=True, exist_ok=True)
        for name in ("particle", "time"):
            sweep = getattr(result, name)
            if sweep is None:
                continue
            path = figure_dir / f"benchmark_{name}.png"
            plot_sweep(sweep, path, title=f"{name} discretisation error ({cfg.task}, d={cfg.d}, n={cfg.n}, "
                                          f"lam={cfg.lam:g}, lam_a={cfg.lam_a:g}, lam_w={cfg.lam_w:g})")
            result.figures.append(str(path))
            path = figure_dir / f"benchmark_{name}_time.png"
            plot_by_time(sweep, path, title=f"{name} discretisation error against time")
            result.figures.append(str(path))
    return result
