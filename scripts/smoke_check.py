"""Smoke check of an installed mfkern (no extras needed): import, version, a tiny fit of each estimator.

Run by scripts/smoke_test.sh on the built wheel and sdist, and by cibuildwheel on every wheel. Exits non-zero
with a message on the first failure.
"""
import sys

import numpy as np

import mfkern
from mfkern import MeanFieldClassifier, MeanFieldRegressor

print(f"mfkern {mfkern.__version__} from {mfkern.__file__}")
rng = np.random.default_rng(0)
X = rng.standard_normal((60, 5))
y = X[:, 0] * X[:, 1]
reg = MeanFieldRegressor(n_particles=50, n_steps=20, random_state=0, n_threads=1).fit(X, y)
labels = np.array(["a", "b", "c"])[(X[:, 0] > 0.5).astype(int) + (X[:, 0] > -0.5).astype(int)]
clf = MeanFieldClassifier(n_particles=50, n_steps=20, random_state=0, n_threads=1).fit(X, labels)
checks = {
    "regressor predictions are finite": np.isfinite(reg.predict(X)).all(),
    "regressor fits its training data better than the mean": reg.score(X, y) > 0.0,
    "classifier probabilities sum to one": np.allclose(clf.predict_proba(X).sum(axis=1), 1.0),
    "classifier beats chance on its training data": clf.score(X, labels) > 0.5,
    "core activation kernel chosen": bool(mfkern._core.activation_isa),
}
failed = [name for name, ok in checks.items() if not ok]
for name, ok in checks.items():
    print(f"  {'ok  ' if ok else 'FAIL'} {name}")
sys.exit(1 if failed else 0)
