"""mfkern: two-layer neural networks trained by mean-field Langevin dynamics in the two-timescale limit.

The second layer is always solved exactly (kernel ridge regression on the intrinsic kernel of the first
layer); the first layer follows noisy particle gradient descent. See ``mfkern.core`` for the low-level API.
"""
from . import checkpoint, core, losses, plot  # plot imports matplotlib only when called
from .checkpoint import CheckpointError
from .classifier import MeanFieldClassifier
from .estimator import PRESETS, DivergenceError, MeanFieldRegressor, SaturationWarning
from .core import (
    MemoryLimitError,
    NotPositiveDefiniteError,
    degrees_of_freedom,
    drift,
    features,
    gram,
    kernel_alignment,
    langevin_step,
    objective,
    parameter_alignment,
    second_layer,
)

from ._version import __version__

__all__ = [
    "MeanFieldRegressor",
    "MeanFieldClassifier",
    "DivergenceError",
    "SaturationWarning",
    "PRESETS",
    "CheckpointError",
    "checkpoint",
    "core",
    "losses",
    "plot",
    "MemoryLimitError",
    "NotPositiveDefiniteError",
    "degrees_of_freedom",
    "drift",
    "features",
    "gram",
    "kernel_alignment",
    "langevin_step",
    "objective",
    "parameter_alignment",
    "second_layer",
]
