"""MeanFieldRegressor's solver and precision options: the same model, reached by other computational paths."""
import numpy as np
import pytest

from mfkern import MeanFieldRegressor

KEYS = ("U", "G", "dof", "kernel_alignment", "train_mse", "val_mse")


def _task(n, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, X[:, 0] * X[:, 1], rng.standard_normal((50, d))


def test_woodbury_and_dense_fits_agree_and_diagnostics_match():
    X, y, X_test = _task(300)
    kw = dict(n_particles=40, n_steps=20, log_every=5, random_state=1, eta=0.1)
    dense = MeanFieldRegressor(solver="dense", **kw).fit(X, y, X_val=X_test, y_val=X_test[:, 0] * X_test[:, 1])
    wood = MeanFieldRegressor(solver="woodbury", **kw).fit(X, y, X_val=X_test, y_val=X_test[:, 0] * X_test[:, 1])
    auto = MeanFieldRegressor(**kw).fit(X, y, X_val=X_test, y_val=X_test[:, 0] * X_test[:, 1])
    np.testing.assert_array_equal(auto.particles_, wood.particles_)  # N < n: auto is woodbury
    np.testing.assert_allclose(wood.particles_, dense.particles_, rtol=1e-8, atol=1e-10)
    for key in KEYS:  # the particle-space diagnostics equal the dense ones
        np.testing.assert_allclose(wood.history_[key], dense.history_[key], rtol=1e-7, err_msg=key)
    np.testing.assert_allclose(wood.predict(X_test), dense.predict(X_test), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(wood.dual_coef_, dense.dual_coef_, rtol=1e-7, atol=1e-9)


def test_float32_fit_is_close_to_float64():
    X, y, X_test = _task(200)
    kw = dict(n_particles=300, n_steps=10, log_every=5, random_state=2, eta=0.1)
    f64 = MeanFieldRegressor(**kw).fit(X, y)
    f32 = MeanFieldRegressor(precision="float32", **kw).fit(X, y)
    assert not np.array_equal(f32.particles_, f64.particles_)
    np.testing.assert_allclose(f32.particles_, f64.particles_, rtol=0, atol=1e-4)
    pred64, pred32 = f64.predict(X_test), f32.predict(X_test)
    assert np.abs(pred32 - pred64).max() <= 1e-3 * np.abs(pred64).max()


@pytest.mark.parametrize("name,value", [("solver", "cholesky"), ("precision", "float16"), ("solver", None)])
def test_bad_solver_or_precision(name, value):
    X, y, _ = _task(20)
    with pytest.raises(ValueError, match=name):
        MeanFieldRegressor(n_particles=5, n_steps=1, **{name: value}).fit(X, y)
