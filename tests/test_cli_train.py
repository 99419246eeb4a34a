"""`mfkern train`: the console entry of mfkern.distributed's command line (serial here; MPI in test_distributed)."""
import numpy as np
import pytest

import mfkern
from mfkern.cli import main


def test_train_writes_a_checkpoint_that_resumes(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3))
    np.savez(tmp_path / "data.npz", X=X, y=X[:, 0] * X[:, 1])
    out = tmp_path / "model.npz"
    args = ["train", "--data", str(tmp_path / "data.npz"), "--out", str(out), "--n-particles", "30", "--seed", "1",
            "--serial", "--quiet"]
    assert main(args + ["--n-steps", "6"]) == 0
    first = mfkern.MeanFieldRegressor.load(out)
    assert first.n_steps_done_ == 6
    assert main(args + ["--resume", str(out), "--n-steps", "4"]) == 0
    resumed = mfkern.MeanFieldRegressor.load(out)
    # the command line trains with the (dense) MPI code path, serially here
    straight = mfkern.MeanFieldRegressor(n_particles=30, n_steps=10, random_state=1, log_every=100,
                                         solver="dense").fit(X, X[:, 0] * X[:, 1])
    assert resumed.n_steps_done_ == 10
    np.testing.assert_array_equal(resumed.particles_, straight.particles_)


def test_train_reports_bad_usage(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "m.npz"), "--n-steps", "-1", "--serial"])
    assert info.value.code == 2
    assert "--n-steps" in capsys.readouterr().err
