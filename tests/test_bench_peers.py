"""Tests of the benchmark suite in bench/: the peers compute mfkern's step, the floor does the work it claims,
and the harness writes valid JSON, markdown and PNG at a tiny grid (and records failures instead of raising).

No timing is asserted anywhere: only that times exist and are consistent with each other.
"""
from __future__ import annotations

import json
import math
import pathlib
import sys

import numpy as np
import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # bench/ is a folder of the repository, not part of the installed package
    sys.path.insert(0, str(REPO_ROOT))

from mfkern import core  # noqa: E402

from bench import harness, machine, paper_run, peers  # noqa: E402
from bench import run as bench_run  # noqa: E402

HYPER = dict(lam=0.004, lam_a=0.25, lam_w=0.25)
STEP = dict(eta=0.2, seed=11, step=3, **HYPER)
SIZES = [(40, 24, 3, 1), (30, 50, 5, 1), (64, 32, 4, 3)]  # (N, n, d, T): N > n, N < n, several tasks


def _objective_G(W, X, Y, lam, lam_a, lam_w):
    """G(mu_W) written directly from docs/theory.md, section 2 (explicit inverse, independent of the peers)."""
    n, N = X.shape[0], W.shape[0]
    Y2 = Y.reshape(n, -1)
    X1 = np.hstack([X, np.ones((n, 1))])
    H = np.tanh(X1 @ W.T)
    S = np.linalg.inv(H @ H.T / N + n * lam * lam_a * np.eye(n))
    U = lam * lam_a / (2 * Y2.shape[1]) * np.trace(Y2.T @ S @ Y2)
    return U + lam * lam_w / 2 * np.mean(np.sum(W * W, axis=1))


def _finite_difference_drift(W, X, Y, entries, h=1e-5):
    """N * dG/dW at the given (k, l) entries by central differences."""
    out = []
    for k, l in entries:
        plus, minus = W.copy(), W.copy()
        plus[k, l] += h
        minus[k, l] -= h
        out.append(W.shape[0] * (_objective_G(plus, X, Y, **HYPER) - _objective_G(minus, X, Y, **HYPER))
                   / (2 * h))
    return np.array(out)


def _problem(N, n, d, T):
    return peers.make_problem(N, n, d, tasks=T, seed=N + n + d + T)


@pytest.mark.parametrize("N, n, d, T", SIZES)
def test_numpy_drift_matches_finite_differences(N, n, d, T):
    W, X, Y = _problem(N, n, d, T)
    drift = peers.numpy_drift(W, X, Y, **HYPER)
    entries = [(0, 0), (N // 2, d), (N - 1, d // 2), (1, 1)]
    expected = _finite_difference_drift(W, X, Y, entries)
    got = np.array([drift[k, l] for k, l in entries])
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-7 * np.abs(drift).max())


@pytest.mark.parametrize("N, n, d, T", SIZES)
def test_numpy_peer_computes_mfkern_step(N, n, d, T):
    W, X, Y = _problem(N, n, d, T)
    reference_drift = core.drift(W, X, Y, **HYPER)
    reference_step = core.langevin_step(W, X, Y, **STEP)
    assert peers.max_relative_difference(peers.numpy_drift(W, X, Y, **HYPER), reference_drift) <= 1e-10
    assert peers.max_relative_difference(peers.numpy_step(W, X, Y, **STEP), reference_step) <= 1e-10
    # The increments agree too (the step's noise term alone would not make this check pass).
    increment = peers.numpy_step(W, X, Y, **STEP) - W
    assert peers.max_relative_difference(increment, reference_step - W) <= 1e-10


@pytest.mark.parametrize("N, n, d, T", SIZES)
def test_torch_peer_computes_mfkern_step(N, n, d, T):
    pytest.importorskip("torch")
    W, X, Y = _problem(N, n, d, T)
    reference_drift = core.drift(W, X, Y, **HYPER)
    reference_step = core.langevin_step(W, X, Y, **STEP)
    assert peers.max_relative_difference(peers.torch_drift(W, X, Y, **HYPER), reference_drift) <= 1e-10
    assert peers.max_relative_difference(peers.torch_step(W, X, Y, **STEP), reference_step) <= 1e-10


def test_peer_step_differs_when_the_drift_differs():
    # The agreement check is able to fail: a different hyper-parameter changes the step beyond 1e-10.
    W, X, Y = _problem(40, 24, 3, 1)
    reference = core.langevin_step(W, X, Y, **STEP)
    other = peers.numpy_step(W, X, Y, **{**STEP, "lam_a": 0.26})
    assert peers.max_relative_difference(other, reference) > 1e-6


def test_mfkern_step_wrapper_is_langevin_step():
    W, X, Y = _problem(40, 24, 3, 1)
    expected = core.langevin_step(W, X, Y, **STEP)
    assert np.array_equal(peers.mfkern_step(W, X, Y, **STEP), expected)
    if peers.solver_option_available():
        dense = peers.mfkern_step(W, X, Y, solver="dense", **STEP)
        assert peers.max_relative_difference(dense, expected) <= 1e-10


def test_blas_floor_does_the_dense_work():
    N, n, d = 50, 30, 4
    W, X, _ = peers.make_problem(N, n, d)
    ridge = 0.3
    floor = peers.BlasFloor(W, X, ridge)
    seconds = floor.run()
    assert set(seconds) == set(peers.BlasFloor.COMPONENTS) and all(t >= 0 for t in seconds.values())
    X1 = np.hstack([X, np.ones((n, 1))])
    H = np.tanh(X1 @ W.T)
    assert np.allclose(floor.Z, H, rtol=0, atol=1e-15)
    # floor.K.T holds the Cholesky factor of H H^T + N ridge I in its lower triangle.
    factor = np.tril(floor.K.T)
    expected = H @ H.T + N * ridge * np.eye(n)
    assert np.allclose(factor @ factor.T, expected, rtol=1e-13, atol=1e-12 * np.abs(expected).max())
    assert np.allclose(floor.G, floor.C.T @ X1, rtol=1e-13, atol=1e-13)
    floor.run()  # rerunnable: the Gram is recomputed before each factorisation
    factor = np.tril(floor.K.T)
    assert np.allclose(factor @ factor.T, expected, rtol=1e-13, atol=1e-12 * np.abs(expected).max())


def test_make_problem_shapes_and_bad_input():
    W, X, Y = peers.make_problem(7, 5, 2, tasks=3, seed=1)
    assert W.shape == (7, 3) and X.shape == (5, 2) and Y.shape == (5, 3)
    assert np.allclose(Y[:, 2], X[:, 0] * X[:, 1])
    with pytest.raises(ValueError, match="N"):
        peers.make_problem(0, 5, 2)
    with pytest.raises(TypeError, match="d"):
        peers.make_problem(3, 5, 2.0)
    with pytest.raises(ValueError, match="W"):
        peers.numpy_drift(W[:, :2], X, Y, **HYPER)
    with pytest.raises(TypeError, match="X"):
        peers.numpy_drift(W, X.astype(np.float32), Y, **HYPER)


def test_max_relative_difference():
    ref = np.array([1.0, -4.0, 2.0])
    assert peers.max_relative_difference(ref, ref) == 0.0
    assert peers.max_relative_difference(ref + [0.0, 0.0, 0.4], ref) == pytest.approx(0.1)
    assert peers.max_relative_difference(np.zeros(2), np.zeros(2)) == 0.0
    assert peers.max_relative_difference(np.ones(2), np.zeros(2)) == math.inf
    with pytest.raises(ValueError, match="shape"):
        peers.max_relative_difference(np.ones(2), np.ones(3))


def test_cpu_info_parses_cpuinfo():
    text = "\n".join([
        "processor\t: 0", "model name\t: Test CPU 9000", "physical id\t: 0", "core id\t: 0",
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f", "",
        "processor\t: 1", "model name\t: Test CPU 9000", "physical id\t: 0", "core id\t: 0",
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f", "",
        "processor\t: 2", "model name\t: Test CPU 9000", "physical id\t: 0", "core id\t: 1",
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f", ""])
    info = machine.cpu_info(text)
    assert info["model"] == "Test CPU 9000"
    assert info["physical_cores"] == 2  # two hyper-threads share core 0
    assert info["isa_flags"] == ["sse4_2", "avx", "avx2", "fma", "avx512f"]


def test_benchmark_environment_removes_unfair_overrides():
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "123", "OMP_NUM_THREADS": "7", "KEEP": "x"}
    env, removed = harness.benchmark_environment(3, base=base)
    assert removed == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "123"}
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert env["OMP_NUM_THREADS"] == env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["KEEP"] == "x" and env["PYTHONPATH"].split(":")[0] == str(REPO_ROOT)


def test_failures_are_recorded_not_raised():
    spec = {"mode": "time", "impl": "numpy", "N": 16, "n": 20000, "d": 2, "hyper": dict(peers.PAPER_HYPER),
            "seed": 0, "data_seed": 0, "repeats": 1, "warmup": 0, "threads": 1}
    # The 20000 x 20000 Gram (3 GiB) cannot be allocated under a 1 GiB address-space limit.
    result = harness.run_child(spec, threads=1, timeout_s=300, memory_limit_bytes=2**30)
    assert result["status"] == "memory_error" and "MemoryError" in result["note"]
    result = harness.run_child({**spec, "impl": "no-such-implementation", "n": 8}, threads=1, timeout_s=300)
    assert result["status"] == "error" and "no-such-implementation" in result["note"]


def _strict_json(path):
    def reject(constant):
        raise ValueError(f"invalid JSON constant {constant}")

    return json.loads(pathlib.Path(path).read_text(), parse_constant=reject)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("bench")
    monkeypatch_module.setitem(bench_run.GRIDS, "tiny", {**bench_run.GRIDS["tiny"],
                                                          "sizes": bench_run.GRIDS["tiny"]["sizes"][:1]})
    document = bench_run.run_grid("tiny", repeats=2, warmup=1, threads=2, out_dir=out, timeout_s=600)
    return out, document


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_harness_writes_valid_json(tiny_run):
    out, _ = tiny_run
    document = _strict_json(out / "step_tiny.json")
    assert document["grid"] == "tiny" and document["settings"]["threads"] == 2
    assert document["machine"]["cpu"]["logical_cores"] >= 1
    assert isinstance(document["machine"]["blas"], list)
    size = document["sizes"][0]
    expected = {("floor", 2), ("mfkern", 2), ("mfkern", 1), ("numpy", 2), ("torch", 2)}
    got = {(entry["impl"], entry["threads"]) for entry in document["results"]}
    assert got == expected
    torch_installed = peers.torch_available()
    for entry in document["results"]:
        assert (entry["N"], entry["n"], entry["d"]) == (size["N"], size["n"], size["d"])
        if entry["impl"] == "torch" and not torch_installed:
            assert entry["status"] == "skipped" and "torch" in entry["note"]
            continue
        assert entry["status"] == "ok", entry
        assert len(entry["times_s"]) == 2 and all(t > 0 for t in entry["times_s"])
        assert entry["min_s"] <= entry["median_s"] <= entry["max_s"]
        assert entry["median_s"] == pytest.approx(np.median(entry["times_s"]))
        assert entry["peak_rss_bytes"] > 10 * 2**20  # a Python process with numpy holds far more than 10 MiB
    checks = {c["peer"]: c for c in document["verification"]}
    assert set(checks) == ({"numpy", "torch"} if torch_installed else {"numpy"})
    for check in checks.values():
        assert check["passed"] and check["step_max_rel_diff"] <= 1e-10 and check["drift_max_rel_diff"] <= 1e-10
    (ratios,) = document["ratios"]
    by_impl = {(e["impl"], e["threads"]): e.get("median_s") for e in document["results"]}
    assert ratios["mfkern_over_floor"] == pytest.approx(by_impl["mfkern", 2] / by_impl["floor", 2])
    assert ratios["numpy_over_mfkern"] == pytest.approx(by_impl["numpy", 2] / by_impl["mfkern", 2])
    assert ratios["one_thread_over_threads"] == pytest.approx(by_impl["mfkern", 1] / by_impl["mfkern", 2])


def test_harness_writes_markdown_and_png(tiny_run):
    out, document = tiny_run
    text = (out / "step_tiny.md").read_text()
    size = document["sizes"][0]
    assert "## Time per step (s)" in text and "## Ratios of median times" in text
    assert "## Peak resident memory (MiB)" in text and "## Agreement with mfkern's step" in text
    row = [line for line in text.splitlines() if line.startswith(f"| {size['N']} | {size['n']} | {size['d']} |")]
    assert len(row) >= 4  # times, ratios, memory and agreement rows for the size
    mfkern = next(e for e in document["results"] if e["impl"] == "mfkern" and e["threads"] == 2)
    assert f"{mfkern['median_s']:.4g}" in text
    assert (out / "step_tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_paper_run_writes_json(tmp_path):
    document = paper_run.run(steps=2, warmup=1, threads=1, out_dir=tmp_path, size={"N": 40, "n": 20, "d": 3})
    saved = _strict_json(tmp_path / "paper_run.json")
    assert saved["size"] == {"N": 40, "n": 20, "d": 3}
    for impl in ("mfkern", "numpy"):
        result = saved["results"][impl]
        assert result["status"] == "ok" and len(result["times_s"]) == 2
        assert result["extrapolated_s"] == pytest.approx(np.mean(result["times_s"]) * 10_000)
        # Both chains follow the same noise from the same start: they end at the same particles (to rounding).
        assert math.isfinite(result["final_mean_sq_norm"])
    assert saved["results"]["mfkern"]["final_mean_sq_norm"] == pytest.approx(
        saved["results"]["numpy"]["final_mean_sq_norm"], rel=1e-10)
    assert document["numpy_over_mfkern"] == pytest.approx(saved["numpy_over_mfkern"])


def test_child_falls_back_when_the_solver_option_is_missing(monkeypatch):
    # An mfkern without the 'solver' option is still measured (default path), with a note saying so.
    monkeypatch.setattr(peers, "solver_option_available", lambda: False)
    spec = {"mode": "time", "impl": "mfkern", "N": 20, "n": 12, "d": 2, "hyper": dict(peers.PAPER_HYPER),
            "seed": 0, "data_seed": 0, "repeats": 1, "warmup": 0, "threads": 1, "solver": "auto"}
    result = harness.child_time(spec)
    assert result["status"] == "ok" and "no 'solver' option" in result["note"]
