"""Reliability of mfkern beyond single calls: memory leaks, crash-safe checkpoints, bad files, concurrency and
numerical edge cases.

- Leaks: hundreds of fit/predict/save/load cycles (and of every core call, error paths included) keep the
  resident set size flat; the probe is first shown to see a deliberate leak of the same size.
- Crash safety: processes killed with SIGKILL at random moments while saving checkpoints in a loop, and at
  every stage of a save (temporary file created, 25/50/99 % written, before fsync, before rename, after
  rename) never leave a file at the checkpoint path that fails to load or loads something else than a
  complete checkpoint; the previous checkpoint stays loadable, leftover temporary files never break
  anything.
- Bad files: every truncation and every single-byte corruption of a checkpoint either raises CheckpointError
  naming the file or loads the identical estimator; wrong versions, foreign and crafted files raise a clear
  error naming the file; loading never unpickles anything.
- Concurrency: Python threads training different estimators at once give bitwise the sequential results;
  core calls release the GIL and the core's lock survives exceptions.
- Numerical edge cases (duplicated samples, constant and zero targets, n = 1, N = 1, d = 1, tiny and huge
  lam, saturated features): each works, checked against closed forms, or raises a clear error.

MFKERN_FUZZ_EXAMPLES (see tests/test_fuzz.py) also scales the number of kills and leak cycles here.
"""
from __future__ import annotations

import ctypes
import functools
import gc
import io
import json
import math
import os
import pathlib
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
from scipy.special import erf

import mfkern.checkpoint as checkpoint
from mfkern import core
from mfkern.checkpoint import CheckpointError
from mfkern.estimator import DivergenceError, MeanFieldRegressor

try:
    import resource
except ImportError:  # pragma: no cover - not POSIX
    resource = None

_HEAVY = os.environ.get("MFKERN_FUZZ_EXAMPLES")
HEAVY = int(_HEAVY) if _HEAVY and _HEAVY.isdigit() else 0
# Under AddressSanitizer (scripts/sanitize.sh) freed memory is held in a quarantine: RSS says nothing there.
SANITIZED = bool(os.environ.get("MFKERN_SANITIZED"))
HAS_PROC = os.path.exists("/proc/self/statm")
POSIX_FORK = hasattr(os, "fork") and hasattr(signal, "SIGKILL")

# The paper's hyper-parameters and raw inputs, explicitly: the references below are written for them.
SMALL = dict(n_particles=30, n_steps=6, log_every=3, n_threads=1,
             lam=0.004, lam_a=0.25, lam_w=0.25, eta=0.2, input_scale=1.0)


def product_task(rng, n, d):
    """The paper's target f(x) = x1 * x2 with x ~ N(0, I_d)."""
    X = rng.standard_normal((n, d))
    return X, X[:, 0] * X[:, 1]


def numpy_features(W, X, activation="tanh"):
    """h(x_j; w_k) in numpy."""
    Z = X @ W[:, :-1].T + W[:, -1]
    return np.tanh(Z) if activation == "tanh" else erf(Z)


def same_estimator(a, b):
    """Whether two fitted estimators hold bitwise the same state."""
    if a.get_params() != b.get_params():
        return False
    for name in ("particles_", "dual_coef_", "coef_"):
        x, y = getattr(a, name), getattr(b, name)
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            return False
    if (a.n_steps_done_, a.seed_, a.n_features_in_) != (b.n_steps_done_, b.seed_, b.n_features_in_):
        return False
    if list(a.history_) != list(b.history_):
        return False
    return all(np.array_equal(a.history_[k], b.history_[k], equal_nan=True) for k in a.history_)


# ===================================================================================================== leaks
def rss_bytes():
    """Resident set size of this process now (/proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_free_memory():
    """Collect garbage and return the C heap's free pages to the system (glibc malloc_trim), so that RSS
    counts live memory only: otherwise a leak could hide in free memory left resident by earlier tests."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def fix_mmap_threshold():
    """Pin glibc's mmap threshold at its default (128 KiB). Earlier tests that freed large arrays raise it
    dynamically (up to 32 MiB), after which array-sized blocks come from the heap and can reuse resident
    free pages: a leak would then not show in RSS. Pinned, such blocks are fresh mappings every time."""
    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def rss_growth(cycle, warmup, repeats):
    """RSS after `repeats` more cycles minus RSS after `warmup` cycles (allocator and caches settled)."""
    fix_mmap_threshold()
    for _ in range(warmup):
        cycle()
    release_free_memory()
    before = rss_bytes()
    for _ in range(repeats):
        cycle()
    release_free_memory()
    return rss_bytes() - before


_skip_leak_probe = pytest.mark.skipif(not HAS_PROC or SANITIZED,
                                      reason="needs /proc/self/statm; RSS is meaningless under ASan's quarantine")


def leak_probe(test):
    """Run an RSS test in a fresh interpreter. In a process that earlier tests have used, freed but still
    resident memory can absorb new allocations (observed here: 19 MB of new arrays, RSS unchanged), which
    would make a leak invisible; a fresh process has no such slack."""
    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        if os.environ.get("MFKERN_LEAK_CHILD") == "1":
            return test(*args, **kwargs)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", f"{__file__}::{test.__name__}", "-q", "-p", "no:cacheprovider"],
            env={**os.environ, "MFKERN_LEAK_CHILD": "1"}, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return _skip_leak_probe(wrapper)
LEAK_REPEATS = max(60, HEAVY // 4)


@leak_probe
def test_the_rss_probe_sees_a_deliberate_leak_of_one_gram_per_cycle():
    # The bound used below (a quarter of one n x n Gram per cycle) must be visible to the probe.
    kept = []
    gram_bytes = 8 * 200 * 200
    growth = rss_growth(lambda: kept.append(np.ones(gram_bytes // 8)), warmup=5, repeats=LEAK_REPEATS)
    assert growth > 0.5 * LEAK_REPEATS * gram_bytes, f"probe saw {growth} bytes"


@leak_probe
def test_fit_predict_save_load_cycles_keep_rss_flat(tmp_path):
    rng = np.random.default_rng(0)
    X, y = product_task(rng, 200, 3)
    X_val, y_val = product_task(rng, 50, 3)
    path = tmp_path / "cycle.npz"

    def cycle():
        est = MeanFieldRegressor(n_particles=60, n_steps=4, log_every=2, label_noise=0.1, random_state=1,
                                 n_threads=1).fit(X, y, X_val=X_val, y_val=y_val, target_direction=[1, 0, 0])
        est.predict(X)
        est.kernel(X_val)
        est.transform(X_val)
        est.score(X, y)
        est.save(path)
        loaded = MeanFieldRegressor.load(path)
        loaded.set_params(warm_start=True, n_steps=1).fit(X, y)
        loaded.predict(X_val)

    growth = rss_growth(cycle, warmup=8, repeats=LEAK_REPEATS)
    # Each cycle allocates several 200 x 200 Grams (320 kB); leaking a quarter of one per cycle would show.
    bound = max(4 * 2**20, LEAK_REPEATS * 8 * 200 * 200 // 4)
    assert growth < bound, \
        f"RSS grew by {growth / 2**20:.1f} MiB over {LEAK_REPEATS} cycles (bound {bound / 2**20:.1f} MiB)"


@leak_probe
def test_every_core_call_keeps_rss_flat():
    rng = np.random.default_rng(1)
    n, N, d = 300, 200, 4
    X, W = rng.standard_normal((n, d)), rng.standard_normal((N, d + 1))
    Y, E = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)) * 0.1
    B = rng.standard_normal((n, n))
    K = B @ B.T / n
    hyper = dict(lam=0.1, lam_a=0.5, lam_w=1.0)

    def cycle():
        core.features(W, X)
        core.gram(W, X)
        core.gram(W, X, X[:50], "erf", block_size=7)
        A = core.second_layer(K, Y, 0.5)
        core.objective(W, X, Y, **hyper, solver="dense")
        core.objective(W, X, Y, **hyper, solver="woodbury", precision="float32")
        core.drift(W, X, Y, **hyper, label_noise=E, cache_bytes=0)
        core.drift(W, X, Y, **hyper, activation="erf", solver="woodbury")
        core.langevin_step(W, X, Y, eta=0.1, **hyper, seed=1, step=2, label_noise_level=0.3, return_dual=True)
        core.drift_given_dual(W, X, A, **hyper, B=A)
        core.langevin_step_given_dual(W, X, A, eta=0.1, **hyper, seed=1, step=2)
        core.network_output(W, core.output_weights(W, X, A), X)
        core.particle_noise(1, 2, N, d + 1)
        core.label_noise(1, 2, n, 2, 0.5)
        core.kernel_alignment(K, Y)
        core.kernel_alignment_features(W, X, Y)
        core.degrees_of_freedom(K, 0.5)
        core.parameter_alignment(W, np.ones(d))

    growth = rss_growth(cycle, warmup=5, repeats=LEAK_REPEATS)
    bound = max(4 * 2**20, LEAK_REPEATS * 8 * n * n // 4)
    assert growth < bound, f"RSS grew by {growth / 2**20:.1f} MiB over {LEAK_REPEATS} cycles"


@leak_probe
def test_error_paths_keep_rss_flat(tmp_path):
    # Exceptions thrown from inside the C++ core after its allocations (a failed Cholesky after the Gram),
    # validation errors, refused absurd sizes, divergence rollbacks and corrupt files must free everything.
    rng = np.random.default_rng(2)
    n, N = 400, 50
    X, W, Y = rng.standard_normal((n, 3)), rng.standard_normal((N, 4)), rng.standard_normal(n)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04" + bytes(1000))
    Xs, ys = product_task(rng, 30, 3)

    def cycle():
        with pytest.raises(core.NotPositiveDefiniteError):
            # N < n: K has rank N, and a ridge of 4e-22 is lost against ||K||: the Cholesky breaks down.
            core.drift(W, X, Y, lam=1e-12, lam_a=1e-12, lam_w=1.0, solver="dense")
        with pytest.raises(core.NotPositiveDefiniteError):
            core.second_layer(-np.eye(n), Y, 0.5)
        with pytest.raises(ValueError):
            core.gram(W, np.full((n, 3), np.nan))
        with pytest.raises(MemoryError):
            core.gram(W[:2], np.zeros((10**6, 3)))
        with pytest.raises(DivergenceError):
            MeanFieldRegressor(**{**SMALL, "n_particles": 5, "lam": 1e-12, "lam_a": 1e-12}, solver="dense").fit(Xs, ys)
        with pytest.raises(CheckpointError):
            MeanFieldRegressor.load(bad)

    growth = rss_growth(cycle, warmup=5, repeats=LEAK_REPEATS)
    bound = max(4 * 2**20, LEAK_REPEATS * 8 * n * n // 4)
    assert growth < bound, f"RSS grew by {growth / 2**20:.1f} MiB over {LEAK_REPEATS} error cycles"


# ============================================================================================ crash safety
needs_fork = pytest.mark.skipif(not POSIX_FORK, reason="needs fork and SIGKILL")


def marked_estimator(n_particles=5000):
    """A fitted estimator whose checkpoint is about 200 kB, and its state with a marker k stamped in."""
    rng = np.random.default_rng(3)
    X, y = product_task(rng, 40, 3)
    est = MeanFieldRegressor(n_particles=n_particles, n_steps=0, random_state=7, n_threads=1).fit(X, y)
    return est


def stamp(est, k):
    """Write the marker k into the estimator's state (particles, coefficients, step count)."""
    est.particles_[0, 0] = float(k)
    est.coef_[0] = float(k)
    est.n_steps_done_ = int(k)
    est.history_["step"][-1] = int(k)


def check_marked(loaded, reference, path):
    """`loaded` is a complete checkpoint of `reference` with some marker k stamped in; returns k."""
    k = loaded.n_steps_done_
    assert loaded.particles_[0, 0] == k and loaded.coef_[0] == k, f"{path}: torn state (marker {k})"
    expected = reference.particles_.copy()
    expected[0, 0] = k
    np.testing.assert_array_equal(loaded.particles_, expected, err_msg=str(path))
    np.testing.assert_array_equal(loaded.dual_coef_, reference.dual_coef_, err_msg=str(path))
    assert loaded.get_params() == reference.get_params()
    return k


def fork_saver(est, path, start, stage=None, expected_size=None):
    """Fork a child that saves `est` to `path` with markers start+1, start+2, ... and reports each completed
    save on a pipe. With `stage`, the child kills itself with SIGKILL at that stage of its first save."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            os.close(read_end)
            if stage is not None:
                arm_self_kill(stage, expected_size)
            k = start
            while True:
                k += 1
                stamp(est, k)
                est.save(path)
                os.write(write_end, f"{k}\n".encode())
        finally:
            os._exit(3)
    os.close(write_end)
    return pid, read_end


def reap(pid, read_end):
    """Wait for a killed child; returns its last reported marker (None if none) and how it ended."""
    _, status = os.waitpid(pid, 0)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    lines = b"".join(chunks).decode().split()
    return (int(lines[-1]) if lines else None), status


def _sigkill_self():
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # the signal is delivered at once; never continue


class _KillingFile:
    """A file wrapper that dies (SIGKILL) once `limit` bytes have been written, after writing up to it."""

    def __init__(self, handle, limit):
        self._handle, self._limit, self._written = handle, limit, 0

    def write(self, data):
        room = self._limit - self._written
        if len(data) >= room:
            self._handle.write(bytes(data[:max(room, 0)]))
            self._handle.flush()
            _sigkill_self()
        self._written += len(data)
        return self._handle.write(data)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


def arm_self_kill(stage, expected_size):
    """In the child: make the first save die at `stage` (patches only the child's modules)."""
    real_fdopen = os.fdopen
    if stage == "created":
        checkpoint.os.fdopen = lambda fd, *a, **k: (_sigkill_self(), real_fdopen(fd, *a, **k))[1]
    elif stage.startswith("written-"):
        fraction = int(stage.split("-")[1]) / 100
        checkpoint.os.fdopen = lambda fd, *a, **k: _KillingFile(real_fdopen(fd, *a, **k),
                                                                int(fraction * expected_size))
    elif stage == "before-fsync":
        checkpoint.os.fsync = lambda fd: _sigkill_self()
    elif stage == "before-rename":
        checkpoint.os.replace = lambda src, dst: _sigkill_self()
    elif stage == "after-rename":
        checkpoint.fsync_directory = lambda directory: _sigkill_self()
    else:  # pragma: no cover - a typo in the test
        raise ValueError(stage)


def check_directory_after_kill(directory, path, reference):
    """The checkpoint at `path` loads as a complete marked state; every leftover temporary file either
    raises CheckpointError naming it or is itself a complete state. Returns (marker, leftover count)."""
    k = check_marked(MeanFieldRegressor.load(path), reference, path)
    leftovers = [p for p in directory.iterdir() if p != path]
    for temp in leftovers:
        assert temp.name.startswith(f".{path.name}.") and temp.name.endswith(".tmp"), f"stray file {temp}"
        try:
            check_marked(MeanFieldRegressor.load(temp), reference, temp)
        except CheckpointError as exc:
            assert temp.name in str(exc), exc
    return k, len(leftovers)


KILLS = max(24, HEAVY // 10)


@needs_fork
def test_sigkill_at_random_moments_while_saving_never_leaves_a_corrupt_checkpoint(tmp_path):
    rng = np.random.default_rng(11)
    est = marked_estimator()
    reference = MeanFieldRegressor.load(_save_copy(est, tmp_path / "reference.npz"))
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "checkpoint.npz"
    stamp(est, 0)
    est.save(path)  # the previous checkpoint
    k_file, interrupted = 0, 0
    for _ in range(KILLS):
        pid, read_end = fork_saver(est, path, start=k_file)
        time.sleep(rng.uniform(0.0, 0.03))  # a few saves' worth: the kill lands anywhere in the loop
        os.kill(pid, signal.SIGKILL)
        last, status = reap(pid, read_end)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        k, leftovers = check_directory_after_kill(directory, path, reference)
        # The file holds the last reported save or the one completed after it, never an older one.
        expected = k_file if last is None else last
        assert k in (expected, expected + 1), f"checkpoint marker {k}, last completed save {last}"
        interrupted += leftovers > 0
        for temp in directory.iterdir():  # a real program would ignore (or sweep) them: clear for the next kill
            if temp != path:
                temp.unlink()
        k_file = k
    print(f"{KILLS} kills, {interrupted} inside a write (temporary file left behind)")
    # After all that, saving and loading works as usual.
    stamp(est, k_file + 1)
    est.save(path)
    assert MeanFieldRegressor.load(path).n_steps_done_ == k_file + 1


def _save_copy(est, path):
    est.save(path)
    return path


STAGES = ["created", "written-1", "written-25", "written-50", "written-99", "before-fsync", "before-rename",
          "after-rename"]


@needs_fork
@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_at_each_stage_of_a_save_keeps_the_previous_checkpoint(tmp_path, stage):
    est = marked_estimator()
    reference = MeanFieldRegressor.load(_save_copy(est, tmp_path / "reference.npz"))
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "checkpoint.npz"
    stamp(est, 0)
    est.save(path)
    size = path.stat().st_size
    pid, read_end = fork_saver(est, path, start=0, stage=stage, expected_size=size)
    last, status = reap(pid, read_end)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child ended with status {status}"
    assert last is None  # it died inside its first save
    k, leftovers = check_directory_after_kill(directory, path, reference)
    assert k == (1 if stage == "after-rename" else 0)  # the old checkpoint until the rename, then the new one
    assert leftovers == (0 if stage == "after-rename" else 1)
    # A later save in a fresh process state is not disturbed by the leftover.
    stamp(est, 5)
    est.save(path)
    assert MeanFieldRegressor.load(path).n_steps_done_ == 5


# ================================================================================================ bad files
@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A fitted estimator (with history and feature names) and the bytes of its checkpoint."""
    rng = np.random.default_rng(5)
    X, y = product_task(rng, 12, 2)
    est = MeanFieldRegressor(n_particles=4, n_steps=2, log_every=1, random_state=3, n_threads=1).fit(X, y)
    path = tmp_path_factory.mktemp("small") / "small.npz"
    est.save(path)
    return est, path.read_bytes(), X


def test_every_truncation_raises_checkpoint_error_naming_the_file(small_checkpoint, tmp_path):
    est, data, _ = small_checkpoint
    path = tmp_path / "truncated.npz"
    lengths = range(len(data)) if HEAVY or len(data) <= 20000 else range(0, len(data), 7)
    for length in lengths:
        path.write_bytes(data[:length])
        with pytest.raises(CheckpointError, match="truncated.npz"):
            MeanFieldRegressor.load(path)


def test_every_single_byte_corruption_is_detected_or_harmless(small_checkpoint, tmp_path):
    est, data, X = small_checkpoint
    path = tmp_path / "corrupt.npz"
    harmless, failures = 0, []
    for position in range(len(data)):
        for flip in ((0xFF, 0x01) if HEAVY else (0xFF,)):
            corrupted = bytearray(data)
            corrupted[position] ^= flip
            path.write_bytes(bytes(corrupted))
            try:
                loaded = MeanFieldRegressor.load(path)
            except CheckpointError as exc:
                if "corrupt.npz" not in str(exc):
                    failures.append((position, flip, f"CheckpointError not naming the file: {exc}"))
                continue
            except Exception as exc:  # collected, so that one run reports every kind of failure
                failures.append((position, flip, f"{type(exc).__name__}: {exc}"))
                continue
            # Loaded: only bytes that carry no data (zip timestamps, version-made-by, ...) may change.
            if not same_estimator(loaded, est) or not np.array_equal(loaded.predict(X), est.predict(X)):
                failures.append((position, flip, "loaded a different estimator"))
            harmless += 1
    print(f"{len(data)} bytes flipped: {harmless} harmless (metadata), {len(failures)} failures, the rest rejected")
    kinds = {}
    for position, flip, what in failures:
        kinds.setdefault(what.split(":")[0], []).append(f"byte {position} ^ {flip:#x}: {what}")
    assert not failures, "\n".join(f"{len(v)} x {k}, e.g. {v[0]}" for k, v in kinds.items())


def _rewrite(source, target, **changes):
    """Copy the npz at `source` to `target` with entries replaced (value None: removed)."""
    with np.load(source, allow_pickle=False) as npz:
        contents = {name: npz[name] for name in npz.files}
    for name, value in changes.items():
        if value is None:
            contents.pop(name, None)
        else:
            contents[name] = value
    np.savez(target, **contents)


@pytest.mark.parametrize("version", [np.array(0), np.array(2), np.array(-1), np.array(2**40), np.array("1"),
                                     np.array(1.0), np.array([1]), np.array(True)])
def test_wrong_format_versions_raise_naming_the_file(small_checkpoint, tmp_path, version):
    _, data, _ = small_checkpoint
    source = tmp_path / "ok.npz"
    source.write_bytes(data)
    target = tmp_path / "versioned.npz"
    _rewrite(source, target, format_version=version)
    if version.dtype.kind in "iu" and version.shape == () and int(version) == checkpoint.FORMAT_VERSION:
        pytest.skip("the current version")
    with pytest.raises(CheckpointError, match="versioned.npz.*(format version|format_version)"):
        MeanFieldRegressor.load(target)


@pytest.mark.parametrize("case", ["empty", "random-bytes", "text", "npy", "zip-no-members", "zip-garbage-member",
                                  "zip-directory-member", "npz-huge-declared-shape", "npz-wrong-dtypes",
                                  "npz-particles-3d", "npz-negative-steps", "directory"])
def test_crafted_files_raise_a_clear_error_naming_the_file(small_checkpoint, tmp_path, case):
    _, data, _ = small_checkpoint
    source = tmp_path / "ok.npz"
    source.write_bytes(data)
    path = tmp_path / f"crafted-{case}.npz"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "random-bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "text":
        path.write_text("format_version = 1\n")
    elif case == "npy":
        with open(path, "wb") as f:
            np.save(f, np.ones(3))
    elif case == "zip-no-members":
        zipfile.ZipFile(path, "w").close()
    elif case == "zip-garbage-member":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("particles.npy", b"\x93NUMPY garbage")
    elif case == "zip-directory-member":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("particles.npy/", b"")
    elif case == "npz-huge-declared-shape":
        # A 200-byte member whose header declares a (10**12, 4) float64 array (32 TB): the loader must not
        # try to allocate it, and must name the file.
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                      "shape": (10**12, 4)})
        with np.load(source, allow_pickle=False) as npz:
            contents = {name: npz[name] for name in npz.files if name != "particles"}
        np.savez(path, **contents)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("particles.npy", header.getvalue() + bytes(64))
    elif case == "npz-wrong-dtypes":
        _rewrite(source, path, particles=np.ones((4, 3), dtype=np.float32), seed=np.array(-1))
    elif case == "npz-particles-3d":
        _rewrite(source, path, particles=np.ones((4, 3, 1)))
    elif case == "npz-negative-steps":
        _rewrite(source, path, n_steps_done=np.array(-5))
    elif case == "directory":
        path.mkdir()
    with _memory_ceiling():
        try:
            loaded = MeanFieldRegressor.load(path)
        except (CheckpointError, IsADirectoryError) as exc:
            assert path.name in str(exc), f"the error does not name the file: {exc}"
            return
        except Exception as exc:
            raise AssertionError(f"{case}: undocumented {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"{case}: loaded {loaded!r} with n_steps_done_={loaded.n_steps_done_}")


class _Trap:
    """A pickle payload that, if ever unpickled, creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_loading_never_unpickles_anything(small_checkpoint, tmp_path, monkeypatch):
    _, data, X = small_checkpoint
    marker = tmp_path / "executed"
    source = tmp_path / "ok.npz"
    source.write_bytes(data)
    trapped = []
    # Object arrays (pickled inside the npy) in place of every entry in turn, a pickled top-level file, and a
    # pickle stream stored raw as a member.
    with np.load(source, allow_pickle=False) as npz:
        names = list(npz.files)
    for name in names:
        target = tmp_path / f"trap-{name}.npz"
        _rewrite(source, target, **{name: np.array([_Trap(marker)], dtype=object)})
        trapped.append(target)
    raw = tmp_path / "trap.pkl"
    raw.write_bytes(pickle.dumps(_Trap(marker)))
    trapped.append(raw)
    npy = tmp_path / "trap.npy"
    np.save(npy, np.array([_Trap(marker)], dtype=object), allow_pickle=True)
    trapped.append(npy)
    member = tmp_path / "trap-member.npz"
    with zipfile.ZipFile(member, "w") as zf:
        zf.writestr("params.npy", pickle.dumps(_Trap(marker)))
    trapped.append(member)
    # Besides the marker, any use of the unpickler during a load is an error.
    for module, attribute in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, attribute, _refuse_unpickling)
    for path in trapped:
        with pytest.raises(CheckpointError, match=path.name):
            MeanFieldRegressor.load(path)
    assert not marker.exists()
    # A genuine checkpoint loads without the unpickler.
    MeanFieldRegressor.load(source).predict(X)


def _refuse_unpickling(*args, **kwargs):
    raise AssertionError("the checkpoint loader called the unpickler")


def test_code_in_parameters_is_stored_as_text_never_run(small_checkpoint, tmp_path):
    _, data, X = small_checkpoint
    marker = tmp_path / "executed"
    source = tmp_path / "ok.npz"
    source.write_bytes(data)
    with np.load(source, allow_pickle=False) as npz:
        params = json.loads(str(npz["params"]))
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    params.update(callbacks=payload, activation=payload, random_state=payload)
    target = tmp_path / "code.npz"
    _rewrite(source, target, params=np.array(json.dumps(params)))
    try:
        loaded = MeanFieldRegressor.load(target)
    except CheckpointError as exc:
        assert "code.npz" in str(exc)
    else:
        with pytest.raises((TypeError, ValueError)):
            loaded.set_params(warm_start=True, n_steps=1).fit(X, np.zeros(len(X)))
    assert not marker.exists()


# ============================================================================================ concurrency
def _thread_specs(rng):
    """Four different training problems and parameter sets."""
    specs = []
    for i, extra in enumerate([dict(label_noise=0.3), dict(activation="erf", n_threads=2),
                               dict(solver="woodbury", block_size=17), dict(precision="float32", lam=0.01)]):
        X, y = product_task(rng, 40 + 10 * i, 3)
        if i == 1:
            y = np.column_stack([y, X[:, 2]])
        params = dict(n_particles=80, n_steps=12, log_every=4, random_state=100 + i, n_threads=1)
        params.update(extra)
        specs.append((params, X, y))
    return specs


def _history_without_time(est):
    return {k: v for k, v in est.history_.items() if k != "wall_time"}


def test_threads_training_different_estimators_match_sequential_runs():
    rng = np.random.default_rng(21)
    specs = _thread_specs(rng)
    sequential = [MeanFieldRegressor(**params).fit(X, y) for params, X, y in specs]
    for _ in range(2):
        results, errors = [None] * len(specs), []

        def train(index):
            try:
                params, X, y = specs[index]
                est = MeanFieldRegressor(**params).fit(X, y)
                est.predict(X)  # inference interleaved with the other threads' training
                results[index] = est
            except BaseException as exc:  # surfaced in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=train, args=(i,)) for i in range(len(specs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a training thread hung"
        assert not errors, errors
        for got, want in zip(results, sequential):
            np.testing.assert_array_equal(got.particles_, want.particles_)
            np.testing.assert_array_equal(got.dual_coef_, want.dual_coef_)
            np.testing.assert_array_equal(got.coef_, want.coef_)
            got_h, want_h = _history_without_time(got), _history_without_time(want)
            for key in want_h:
                np.testing.assert_array_equal(got_h[key], want_h[key], err_msg=key)


def test_threads_saving_loading_and_predicting_at_once(tmp_path):
    rng = np.random.default_rng(22)
    specs = _thread_specs(rng)[:3]
    fitted = [MeanFieldRegressor(**params).fit(X, y) for params, X, y in specs]
    expected = [est.predict(X) for est, (_, X, _) in zip(fitted, specs)]
    errors = []

    def work(index):
        try:
            est, (_, X, _) = fitted[index], specs[index]
            for round_ in range(5):
                path = tmp_path / f"est{index}-{round_}.npz"
                est.save(path)
                loaded = MeanFieldRegressor.load(path)
                np.testing.assert_array_equal(loaded.predict(X), expected[index])
                np.testing.assert_array_equal(loaded.kernel(X), est.kernel(X))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_the_core_lock_survives_exceptions_in_other_threads():
    # Threads that fail inside the core (Cholesky breakdown after the Gram, a refused size) alternate with
    # threads that compute: every call returns, and every result is the sequential one.
    rng = np.random.default_rng(23)
    X, W, Y = rng.standard_normal((150, 3)), rng.standard_normal((60, 4)), rng.standard_normal(150)
    want = core.drift(W, X, Y, lam=0.1, lam_a=0.5, lam_w=1.0)
    errors, done = [], []

    def failing():
        try:
            for _ in range(10):
                with pytest.raises(core.NotPositiveDefiniteError):
                    core.drift(W, X, Y, lam=1e-12, lam_a=1e-12, lam_w=1.0, solver="dense")
                with pytest.raises(MemoryError):
                    core.gram(W, np.zeros((10**6, 3)))
            done.append("failing")
        except BaseException as exc:
            errors.append(exc)

    def computing():
        try:
            for _ in range(10):
                np.testing.assert_array_equal(core.drift(W, X, Y, lam=0.1, lam_a=0.5, lam_w=1.0), want)
            done.append("computing")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (failing, computing, failing, computing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread is stuck (lock not released after an exception?)"
    assert not errors, errors
    assert sorted(done) == ["computing", "computing", "failing", "failing"]


def test_core_calls_release_the_gil():
    # While one thread is inside a long core call, another Python thread must keep running. The main thread
    # records when it runs; some of those moments must fall well inside the worker's call (if the GIL were
    # held, none could: the main thread would be blocked from the call's start to its end).
    rng = np.random.default_rng(24)
    X, W = rng.standard_normal((1500, 10)), rng.standard_normal((3000, 11))
    window = {}
    entered = threading.Event()

    def worker():
        entered.set()
        window["start"] = time.perf_counter()
        core.gram(W, X, n_threads=1)
        core.gram(W, X, n_threads=1)
        window["end"] = time.perf_counter()

    thread = threading.Thread(target=worker)
    thread.start()
    entered.wait()
    moments = []
    while thread.is_alive():
        moments.append(time.perf_counter())
        sum(range(1000))  # Python work: needs the GIL
    thread.join()
    start, end = window["start"], window["end"]
    margin = 0.1 * (end - start)
    inside = [t for t in moments if start + margin < t < end - margin]
    assert inside, "no Python thread ran while the core was computing: the GIL is held"


# ===================================================================================== numerical edge cases
def krr_prediction(est, X):
    """K(X, X) A with numpy features: what predict(X) must be on the training inputs."""
    H = numpy_features(est.particles_, X, est.activation)
    K = H @ H.T / est.particles_.shape[0]
    return K @ est.dual_coef_, K


def test_duplicated_samples_give_identical_predictions_and_the_closed_form():
    # Five copies of one point: K = c 1 1^T is singular; the ridge makes it solvable, with
    # prediction = n c / (n c + ridge) * mean(y) at every copy.
    X = np.tile([[0.3, -1.2]], (5, 1))
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    est = MeanFieldRegressor(**SMALL, random_state=0).fit(X, y)
    pred = est.predict(X)
    assert np.all(pred == pred[0])
    h = numpy_features(est.particles_, X[:1], est.activation)[0]
    c = float(h @ h) / est.particles_.shape[0]
    ridge = len(y) * est.lam * est.lam_a
    assert pred[0] == pytest.approx(len(y) * c / (len(y) * c + ridge) * y.mean(), rel=1e-10)


@pytest.mark.parametrize("value", [0.0, 3.0])
def test_constant_targets_work(value):
    rng = np.random.default_rng(30)
    X = rng.standard_normal((20, 3))
    y = np.full(20, value)
    est = MeanFieldRegressor(**SMALL, random_state=1).fit(X, y)
    want, _ = krr_prediction(est, X)
    np.testing.assert_allclose(est.predict(X), want, rtol=1e-10, atol=1e-14)
    assert np.isfinite(est.score(X, y))
    if value == 0.0:
        # Zero targets: A = 0, the network is 0, and the drift is the prior term alone (an OU process).
        assert not np.any(est.dual_coef_) and not np.any(est.predict(X))
        assert all(math.isnan(v) for v in est.history_["kernel_alignment"])  # documented: undefined
        W = rng.standard_normal((7, 4))
        np.testing.assert_allclose(core.drift(W, X, y, lam=0.1, lam_a=0.5, lam_w=2.0), 0.1 * 2.0 * W, rtol=1e-15)


def test_one_sample_one_particle_one_feature_has_the_closed_form_drift():
    # n = N = d = 1: K = h^2, A = y / (h^2 + ridge), a = h A and grad = -lam lam_a a A h'(z) (x, 1) + lam lam_w w.
    x, y, w = np.array([[0.7]]), np.array([1.3]), np.array([[0.4, -0.2]])
    lam, lam_a, lam_w = 0.1, 0.5, 2.0
    z = 0.7 * 0.4 - 0.2
    h, hp = math.tanh(z), 1 - math.tanh(z) ** 2
    A = 1.3 / (h * h + lam * lam_a)
    want = -lam * lam_a * (h * A) * A * hp * np.array([0.7, 1.0]) + lam * lam_w * w[0]
    grad, dual, U = core.drift(w, x, y, lam=lam, lam_a=lam_a, lam_w=lam_w, return_dual=True)
    np.testing.assert_allclose(grad[0], want, rtol=1e-14)
    assert dual[0] == pytest.approx(A, rel=1e-14)
    assert U == pytest.approx(lam * lam_a / 2 * 1.3 * A, rel=1e-14)
    for solver in ("dense", "woodbury"):
        np.testing.assert_allclose(core.drift(w, x, y, lam=lam, lam_a=lam_a, lam_w=lam_w, solver=solver)[0], want,
                                   rtol=1e-12)


@pytest.mark.parametrize("n, N, d", [(1, 30, 3), (20, 1, 3), (20, 30, 1), (1, 1, 1)])
def test_tiny_dimensions_fit_and_predict_kernel_ridge(n, N, d):
    rng = np.random.default_rng(31)
    X = rng.standard_normal((n, d))
    y = rng.standard_normal(n)
    est = MeanFieldRegressor(**{**SMALL, "n_particles": N}, random_state=2).fit(X, y)
    want, K = krr_prediction(est, X)
    np.testing.assert_allclose(est.predict(X), want, rtol=1e-9, atol=1e-14)
    # A solves (K + ridge I) A = y.
    ridge = n * est.lam * est.lam_a
    np.testing.assert_allclose(K @ est.dual_coef_ + ridge * est.dual_coef_, y, rtol=1e-9, atol=1e-12)
    if n == 1:
        assert est.predict(X)[0] == pytest.approx(K[0, 0] / (K[0, 0] + ridge) * y[0], rel=1e-10)


@pytest.mark.parametrize("n_particles, solver", [(30, "auto"), (5, "dense"), (5, "woodbury")])
@pytest.mark.parametrize("lam", [1e-8, 1e-12, 1e-30, 1e-300])
def test_very_small_lam_works_or_raises_a_clear_error(lam, n_particles, solver):
    # ridge = n lam lam_a from 3e-15 down to an underflow to 0. With N < n the Gram is singular, so the dense
    # Cholesky must fail once the ridge is lost in rounding; the error must say what to change (lam).
    rng = np.random.default_rng(32)
    X, y = product_task(rng, 30, 3)
    est = MeanFieldRegressor(**{**SMALL, "n_particles": n_particles, "lam": lam, "lam_a": lam, "solver": solver},
                             random_state=3)
    try:
        est.fit(X, y)
    except DivergenceError as exc:
        assert "lam" in str(exc) and "positive definite" in str(exc), str(exc)
        return
    except ValueError as exc:
        assert re.search(r"\blam(_a)?\b", str(exc)), f"the error does not name lam or lam_a: {exc}"
        return
    want, K = krr_prediction(est, X)
    pred = est.predict(X)
    assert np.isfinite(pred).all()
    # A tiny ridge makes A large and K A a cancellation: the tolerance follows |K| |A|.
    atol = 64 * n_particles * np.finfo(float).eps * (np.abs(K) @ np.abs(est.dual_coef_)).max()
    np.testing.assert_allclose(pred, want, rtol=1e-9, atol=atol)


def test_very_large_lam_shrinks_the_network_to_zero():
    # ridge = n lam lam_a >> ||K||: A ~ y / ridge, so the network ~ K y / ridge, tiny; the noise of each step is
    # large (sqrt(2 eta lam)), the features saturate, everything stays finite.
    rng = np.random.default_rng(33)
    X, y = product_task(rng, 30, 3)
    est = MeanFieldRegressor(**{**SMALL, "lam": 1e6, "lam_a": 1.0}, random_state=4).fit(X, y)
    assert np.isfinite(est.particles_).all()
    ridge = 30 * 1e6
    want, K = krr_prediction(est, X)
    np.testing.assert_allclose(est.predict(X), want, rtol=1e-9, atol=1e-20)
    np.testing.assert_allclose(est.dual_coef_, y / ridge, rtol=np.abs(K).max() * 30 / ridge * 2)


@pytest.mark.parametrize("scale", [1e8, 1e150])
def test_saturated_features_work(scale):
    # Inputs so large that every feature is +-1: K is a sign-pattern Gram (rank-deficient); the ridge keeps
    # the second layer well defined and the drift vanishes apart from the prior term.
    rng = np.random.default_rng(34)
    X, y = product_task(rng, 25, 3)
    est = MeanFieldRegressor(**SMALL, random_state=5).fit(X * scale, y)
    H = numpy_features(est.particles_, X * scale, est.activation)
    assert np.all(np.abs(H) == 1.0)
    want, _ = krr_prediction(est, X * scale)
    np.testing.assert_allclose(est.predict(X * scale), want, rtol=1e-9, atol=1e-13)
    assert np.isfinite(est.history_["G"]).all()


@pytest.mark.parametrize("eta", [1e-12, 1e3])
def test_extreme_step_sizes_work_or_diverge_cleanly(eta):
    rng = np.random.default_rng(35)
    X, y = product_task(rng, 25, 3)
    est = MeanFieldRegressor(**{**SMALL, "eta": eta}, random_state=6)
    try:
        est.fit(X, y)
    except DivergenceError as exc:
        assert "eta" in str(exc)
        assert exc.n_steps_done is None or np.isfinite(est.predict(X)).all()
        return
    want, _ = krr_prediction(est, X)
    np.testing.assert_allclose(est.predict(X), want, rtol=1e-9, atol=1e-13)
    if eta == 1e-12:  # barely moves: the particles are the initial ones up to eta * (drift + noise)
        W0 = np.random.default_rng(est.seed_).standard_normal(est.particles_.shape) / math.sqrt(est.lam_w)
        np.testing.assert_allclose(est.particles_, W0, atol=1e-4)


# ------------------------------------------------------------------------------------------------ helpers
class _memory_ceiling:
    """Cap the address space at its current size + 4 GiB (a safety net for crafted files; see test_fuzz)."""

    def __enter__(self):
        self.saved = None
        if resource is None or not HAS_PROC:
            return self
        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        ceiling = size + 4 * 2**30
        if hard != resource.RLIM_INFINITY:
            ceiling = min(ceiling, hard)
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, hard))
        self.saved = (soft, hard)
        return self

    def __exit__(self, *exc):
        if self.saved is not None:
            resource.setrlimit(resource.RLIMIT_AS, self.saved)
        return False
