"""Portable, atomic checkpoints of a fitted MeanFieldRegressor (or MeanFieldClassifier).

A checkpoint is an ``.npz`` file (a zip of ``.npy`` arrays) readable with ``numpy.load(path,
allow_pickle=False)``: nothing in it is pickled, so loading never executes code. It holds

- ``format`` ("mfkern.MeanFieldRegressor", or the ``_checkpoint_format`` of another estimator class such as
  "mfkern.MeanFieldClassifier") and ``format_version`` (an integer, :data:`FORMAT_VERSION`),
- ``params``: the constructor parameters as JSON text (``callbacks`` are code and are stored as null; a
  ``random_state`` that is not an int or None is stored as null, the seed actually used is in ``seed``),
- ``particles``, ``n_steps_done``, ``seed`` (uint64): with these a warm-started run continues the exact
  trajectory, since the noise of step t is keyed by (seed, t),
- ``dual_coef``, ``coef``, ``n_features_in``, ``y_one_d`` and ``feature_names_in`` (when fitted on named columns),
- ``history.<key>`` for every key of ``history_``,
- entries particular to an estimator class (its ``_checkpoint_arrays()``; e.g. the classifier's ``classes``).

Writes are atomic: the file is written to a temporary file in the same directory, flushed and fsync'ed,
then renamed over `path` with ``os.replace``, so a crash while saving leaves either the old checkpoint or
the new one, never a half-written file. The path is used exactly as given (no ".npz" is appended).
"""
from __future__ import annotations

import json
import numbers
import os
import secrets
import struct
import zipfile
import zlib

import numpy as np

__all__ = ["CheckpointError", "FORMAT_NAME", "FORMAT_VERSION", "save", "load"]

FORMAT_NAME = "mfkern.MeanFieldRegressor"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file is not a readable mfkern checkpoint (truncated, corrupt, foreign, or another format version)."""


def _json_param(name, value):
    """A constructor parameter as a JSON value (callbacks and random generators are not data: null)."""
    if name == "callbacks":
        return None
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if name == "random_state":
        return None  # a RandomState/Generator: the seed it gave is saved as `seed`
    raise TypeError(f"parameter {name}={value!r} cannot be stored in a checkpoint (not a number, str, bool or None)")


def save(estimator, path):
    """Write a fitted MFLD estimator to `path` atomically (see the module docstring for the format).

    Parameters
    ----------
    estimator : MeanFieldRegressor or MeanFieldClassifier
        A fitted estimator.
    path : str or os.PathLike
        Destination file; replaced atomically if it exists.
    """
    from sklearn.utils.validation import check_is_fitted

    from . import __version__

    check_is_fitted(estimator, ("particles_", "coef_"))
    params = {name: _json_param(name, value) for name, value in estimator.get_params(deep=False).items()}
    arrays = {
        "format": np.array(getattr(type(estimator), "_checkpoint_format", FORMAT_NAME)),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "mfkern_version": np.array(__version__),
        "params": np.array(json.dumps(params, sort_keys=True, allow_nan=False)),
        "particles": np.asarray(estimator.particles_, dtype=np.float64),
        "n_steps_done": np.array(estimator.n_steps_done_, dtype=np.int64),
        "seed": np.array(estimator.seed_, dtype=np.uint64),
        "dual_coef": np.asarray(estimator.dual_coef_, dtype=np.float64),
        "coef": np.asarray(estimator.coef_, dtype=np.float64),
        "n_features_in": np.array(estimator.n_features_in_, dtype=np.int64),
        "y_one_d": np.array(bool(estimator._y_one_d)),
    }
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        arrays["feature_names_in"] = np.asarray(names, dtype=str)
    for key, values in estimator.history_.items():
        arrays[f"history.{key}"] = np.asarray(values, dtype=np.int64 if key == "step" else np.float64)
    extra = getattr(estimator, "_checkpoint_arrays", None)
    if extra is not None:
        arrays.update(extra())
    write_npz_atomic(path, arrays)


def write_npz_atomic(path, arrays):
    """Write `arrays` (name -> ndarray, no object dtype) as an npz to `path` atomically.

    Temporary file in the same directory (so the rename never crosses file systems), flush + fsync,
    ``os.replace`` onto `path`, then fsync of the directory so the rename itself is durable.
    """
    path = os.fspath(path)
    for name, value in arrays.items():
        if value.dtype.hasobject:
            raise TypeError(f"checkpoint array {name!r} has object dtype; only plain arrays are written")
    directory = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never reuse an existing file; mode 0o666 lets the umask decide, as for any new file.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    if os.name != "posix":  # Windows cannot open directories; its rename is durable enough
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_members(path):
    """Refuse, before numpy allocates anything, an archive whose members are not what :func:`save` writes:
    stored (uncompressed) .npy members whose declared shape and dtype account exactly for their size. A
    crafted header declaring a huge shape would otherwise make numpy try to allocate it."""
    archive_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > archive_size:
                raise CheckpointError(f"{path!r}: member {info.filename!r} is not a stored array of this file "
                                      f"(compressed, or larger than the file): not an mfkern checkpoint")
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header = member.tell()
            if dtype.hasobject:
                raise CheckpointError(f"{path!r}: member {info.filename!r} holds Python objects")
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if header + nbytes != info.file_size:
                raise CheckpointError(f"{path!r}: member {info.filename!r} declares shape {shape} of {dtype} "
                                      f"({nbytes} bytes) but holds {info.file_size - header} bytes")


def _read(path):
    """All arrays of the npz at `path`, every member read (so its CRC is checked) and none unpickled."""
    # Anything the zip and npy readers raise on a damaged file (NotImplementedError for unknown zip
    # versions or flags, RuntimeError for encrypted members, ...) means the same: not a readable checkpoint.
    corrupt = (ValueError, EOFError, OSError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
               RuntimeError, MemoryError, struct.error, UnicodeDecodeError, SyntaxError, TypeError)
    passthrough = (FileNotFoundError, IsADirectoryError, PermissionError)
    try:
        if zipfile.is_zipfile(path):
            _check_members(path)
        data = np.load(path, allow_pickle=False)
    except (CheckpointError, *passthrough):
        raise
    except corrupt as exc:
        raise CheckpointError(f"{path!r} is not a readable mfkern checkpoint (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise CheckpointError(f"{path!r} is not an mfkern checkpoint (a single .npy array, not an npz archive)")
    try:
        with data:
            return {name: data[name] for name in data.files}
    except corrupt as exc:
        raise CheckpointError(f"{path!r} is not a readable mfkern checkpoint (truncated or corrupt?): "
                              f"{type(exc).__name__}: {exc}") from exc


def _scalar(contents, key, path, kind):
    value = contents[key]
    if value.shape != () or value.dtype.kind not in kind:
        raise CheckpointError(f"{path!r}: entry {key!r} must be a scalar of kind {kind!r}, "
                              f"got dtype {value.dtype} shape {value.shape}")
    return value[()]


_REQUIRED = ("format", "format_version", "params", "particles", "n_steps_done", "seed", "dual_coef", "coef",
             "n_features_in", "y_one_d")


def load(path, cls=None):
    """Read a checkpoint written by :func:`save` and return the fitted estimator.

    Parameters
    ----------
    path : str or os.PathLike
    cls : type, optional
        The estimator class (default: :class:`mfkern.estimator.MeanFieldRegressor`); the file must hold its
        format (``cls._checkpoint_format``).

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    CheckpointError
        (a ValueError) naming the file when it is truncated, corrupt, not a checkpoint, or of another
        format version.
    """
    from .estimator import HISTORY_KEYS, MeanFieldRegressor

    cls = MeanFieldRegressor if cls is None else cls
    expected_format = getattr(cls, "_checkpoint_format", FORMAT_NAME)
    history_keys = getattr(cls, "_history_keys", HISTORY_KEYS)
    path = os.fspath(path)
    contents = _read(path)
    missing = [key for key in _REQUIRED if key not in contents]
    if "format" in contents and str(contents["format"][()]) != expected_format:
        found = str(contents["format"][()])
        if found.startswith("mfkern.") and found != "mfkern.":
            raise CheckpointError(f"{path!r} is a {found} checkpoint, not a {expected_format} one: load it with "
                                  f"{found}.load")
        raise CheckpointError(f"{path!r} is not an mfkern checkpoint (format {found!r})")
    if missing:
        raise CheckpointError(f"{path!r} is not an mfkern checkpoint: missing entries {missing}")
    version = int(_scalar(contents, "format_version", path, "iu"))
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version {version}; this mfkern reads version "
                              f"{FORMAT_VERSION} (saved by mfkern {contents.get('mfkern_version', '?')})")
    try:
        params = json.loads(str(contents["params"][()]))
        estimator = cls(**params)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path!r}: invalid parameters: {exc}") from exc

    particles = contents["particles"]
    n_features = int(_scalar(contents, "n_features_in", path, "iu"))
    if particles.dtype != np.float64 or particles.ndim != 2 or particles.shape[1] != n_features + 1 \
            or particles.shape[0] < 1 or not np.isfinite(particles).all():
        raise CheckpointError(f"{path!r}: particles must be a finite float64 array of shape (N, {n_features + 1}), "
                              f"got dtype {particles.dtype} shape {particles.shape}")
    one_d = bool(_scalar(contents, "y_one_d", path, "b"))
    coef, dual = contents["coef"], contents["dual_coef"]
    want_ndim = 1 if one_d else 2
    if coef.ndim != want_ndim or coef.shape[0] != particles.shape[0] or dual.ndim != want_ndim or \
            (not one_d and dual.shape[1] != coef.shape[1]):
        raise CheckpointError(f"{path!r}: coef {coef.shape} and dual_coef {dual.shape} do not match "
                              f"{particles.shape[0]} particles")
    history = {}
    for key in history_keys:
        values = contents.get(f"history.{key}")
        if values is None or values.ndim != 1:
            raise CheckpointError(f"{path!r}: missing or malformed history entry {key!r}")
        history[key] = [int(v) for v in values] if key == "step" else [float(v) for v in values]
    if len({len(v) for v in history.values()}) != 1:
        raise CheckpointError(f"{path!r}: history columns have different lengths")

    estimator.particles_ = particles
    n_steps_done = int(_scalar(contents, "n_steps_done", path, "iu"))
    if n_steps_done < 0:
        raise CheckpointError(f"{path!r}: n_steps_done must be >= 0, got {n_steps_done}")
    estimator.n_steps_done_ = n_steps_done
    estimator.seed_ = int(_scalar(contents, "seed", path, "u"))
    estimator.dual_coef_ = dual
    estimator.coef_ = coef
    estimator.n_features_in_ = n_features
    estimator._y_one_d = one_d
    estimator.history_ = history
    if "feature_names_in" in contents:
        estimator.feature_names_in_ = contents["feature_names_in"].astype(object)
    restore = getattr(estimator, "_from_checkpoint", None)
    if restore is None:
        estimator.n_outputs_ = 1 if one_d else coef.shape[1]
    else:
        try:
            restore(contents)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path!r}: invalid {expected_format} entries: {exc}") from exc
    return estimator
