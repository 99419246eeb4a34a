"""Tests of mfkern.plot.history: what is drawn, where, and the messages when it cannot draw."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from mfkern import plot
from mfkern.estimator import MeanFieldRegressor

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")  # no display in tests
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture
def fitted(rng):
    X = rng.standard_normal((30, 3))
    y = X[:, 0] * X[:, 1]
    est = MeanFieldRegressor(n_particles=30, n_steps=12, log_every=4, random_state=0, n_threads=1)
    return est.fit(X, y, X_val=X[:10], y_val=y[:10])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def lines_by_label(axes):
    return {line.get_label(): (panel, line) for panel in axes for line in panel.get_lines()}


def test_draws_every_available_history_curve_against_the_step(fitted):
    axes = plot.history(fitted)
    assert axes.shape == (4,)
    lines = lines_by_label(axes)
    # parameter_alignment is all NaN (no target_direction): skipped; val_mse was given: drawn.
    assert set(lines) == {"U", "G", "dof", "kernel_alignment", "train_mse", "val_mse"}
    for key, (_, line) in lines.items():
        np.testing.assert_array_equal(line.get_xdata(), fitted.history_["step"])
        np.testing.assert_array_equal(line.get_ydata(), fitted.history_[key])
    assert lines["U"][0] is lines["G"][0] and lines["U"][0].get_yscale() == "log"
    assert lines["dof"][0].get_yscale() == "linear"


def test_draws_into_given_axes_and_accepts_a_history_dict(fitted):
    fig, given = plt.subplots(1, 4)
    axes = plot.history(fitted.history_, ax=given)
    assert list(axes) == list(given)
    assert all(panel.figure is fig for panel in axes)
    assert len(given[1].get_lines()) == 1  # dof


def test_wrong_number_of_axes_is_rejected(fitted):
    _, given = plt.subplots(1, 3)
    with pytest.raises(ValueError, match="ax must hold 4 Axes"):
        plot.history(fitted, ax=given)


def test_unfitted_estimator_raises_not_fitted():
    with pytest.raises(NotFittedError):
        plot.history(MeanFieldRegressor())


def test_missing_matplotlib_gives_an_install_hint(fitted, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot.history(fitted)


def test_importing_mfkern_plot_does_not_import_matplotlib():
    import subprocess

    code = "import sys, mfkern.plot; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip().splitlines()[-1] == "False"
