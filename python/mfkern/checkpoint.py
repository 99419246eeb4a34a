"""Checkpoint files: a versioned state dict, written and read atomically, with no code in it.

This module is the file format only; it knows no estimator class. An estimator maps its fitted state to a
*state dict* and back (``_checkpoint_state()`` and ``_set_checkpoint_state(state)``, see
:class:`mfkern.estimator.MeanFieldBase`); :func:`save` and :func:`load` connect that protocol to files, and
:func:`write_state` / :func:`read_state` are the format itself.

The file is an ``.npz`` (a zip of stored ``.npy`` members) readable with ``numpy.load(path,
allow_pickle=False)``: nothing in it is pickled, so loading never executes code. It holds an envelope

- ``format``: the estimator's format name (its ``_checkpoint_format``, e.g. "mfkern.MeanFieldRegressor" or
  "mfkern.MeanFieldClassifier"); a file of another format is refused with a message naming the right class;
- ``format_version``: an integer, :data:`FORMAT_VERSION`; ``mfkern_version``: the version that wrote it;
- ``params``: the constructor parameters as JSON text (``callbacks`` are code and are stored as null; a
  ``random_state`` that is not an int or None is stored as null, the seed actually used is in the state),

and the state dict: one member per entry, an entry being an ndarray or a numpy/Python scalar, and nested
dicts flattened with dots (the regressor's ``history`` dict becomes ``history.step``, ``history.U``, ...).
For the regressor the state is ``particles``, ``n_steps_done``, ``seed`` (uint64: with the particles and the
step count a warm-started run continues the exact trajectory, since the noise of step t is keyed by (seed,
t)), ``dual_coef``, ``coef``, ``n_features_in``, ``y_one_d``, ``feature_names_in`` (when fitted on named
columns) and ``history``; other estimators add their own entries (the classifier's ``classes``).

Adding a field: give it a new name in the estimator's ``_checkpoint_state`` and read it with a default in
``_set_checkpoint_state`` (older files lack it; unknown entries are kept and ignored), so the version does not
change. :data:`FORMAT_VERSION` changes only when an existing entry changes meaning; then a function in
:data:`UPGRADES` turns the contents of the previous version into the new one, so old files stay readable.

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

from ._version import __version__

__all__ = ["CheckpointError", "FORMAT_VERSION", "UPGRADES", "save", "load", "write_state", "read_state",
           "write_npz_atomic", "fsync_directory", "scalar"]

FORMAT_VERSION = 2


def _upgrade_1_to_2(contents):
    """Version 1 files predate input scaling and the multinomial classifier: their models saw the inputs
    unscaled (input_scale 1, as parameter and as fitted value) and classified one-vs-rest."""
    contents = dict(contents)
    params = json.loads(str(contents["params"][()]))
    params.setdefault("input_scale", 1.0)
    contents["params"] = np.array(json.dumps(params, sort_keys=True))
    contents.setdefault("input_scale", np.array(1.0))
    contents.setdefault("multinomial", np.array(False))
    return contents


#: version v -> function(contents of a version-v file, a dict name -> ndarray) -> contents of version v + 1.
UPGRADES = {1: _upgrade_1_to_2}

_ENVELOPE = ("format", "format_version", "mfkern_version", "params")


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
        return None  # a RandomState/Generator: the seed it gave is saved in the state
    raise TypeError(f"parameter {name}={value!r} cannot be stored in a checkpoint (not a number, str, bool or None)")


def _flatten(state, prefix=""):
    """The state dict as flat member name -> ndarray (nested dicts joined with dots)."""
    flat = {}
    for name, value in state.items():
        if not isinstance(name, str) or not name or "." in name or "/" in name:
            raise ValueError(f"checkpoint entry names must be non-empty strings without '.' or '/', got {name!r}")
        key = prefix + name
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
            continue
        if isinstance(value, (np.ndarray, np.generic, bool, int, float, str)):
            array = np.asarray(value)
        else:
            raise TypeError(f"checkpoint entry {key!r} must be an ndarray, a scalar, a str or a dict, "
                            f"got {type(value).__name__}")
        if array.dtype.hasobject:
            raise TypeError(f"checkpoint array {key!r} has object dtype; only plain arrays are written")
        flat[key] = array
    return flat


def _unflatten(flat):
    """Inverse of :func:`_flatten`: dotted member names become nested dicts."""
    state = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = state
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise CheckpointError(f"entry {key!r} clashes with entry {part!r}")
            node = child
        if isinstance(node.get(leaf), dict):
            raise CheckpointError(f"entry {key!r} clashes with entries below it")
        node[leaf] = value
    return state


def write_state(path, format_name, params, state):
    """Write a checkpoint atomically: the envelope (format name, versions, `params` as JSON) and `state`.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file; replaced atomically if it exists.
    format_name : str
        The estimator's format name, checked again by :func:`read_state`.
    params : dict
        Constructor parameters (numbers, str, bool, None; callbacks and random generators become null).
    state : dict
        Entry name -> ndarray, numpy or Python scalar, str, or a nested dict of those (see the module
        docstring). Names must not contain dots and must not be one of the envelope's.
    """
    clash = sorted(set(state) & set(_ENVELOPE))
    if clash:
        raise ValueError(f"state entries {clash} are reserved for the checkpoint envelope")
    arrays = {
        "format": np.array(str(format_name)),
        "format_version": np.array(FORMAT_VERSION, dtype=np.int64),
        "mfkern_version": np.array(__version__),
        "params": np.array(json.dumps({name: _json_param(name, value) for name, value in params.items()},
                                      sort_keys=True, allow_nan=False)),
    }
    arrays.update(_flatten(state))
    write_npz_atomic(path, arrays)


def save(estimator, path):
    """Write a fitted MFLD estimator to `path` atomically (see the module docstring for the format).

    Parameters
    ----------
    estimator : MeanFieldRegressor, MeanFieldClassifier or another estimator with the checkpoint protocol
        A fitted estimator: ``_checkpoint_format``, ``get_params`` and ``_checkpoint_state()`` (which raises
        NotFittedError when it is not fitted).
    path : str or os.PathLike
        Destination file; replaced atomically if it exists.
    """
    state = estimator._checkpoint_state()
    write_state(path, type(estimator)._checkpoint_format, estimator.get_params(deep=False), state)


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
    fsync_directory(directory)


def fsync_directory(directory):
    """Make a rename inside `directory` durable (fsync of the directory; a no-op where that is impossible)."""
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


def scalar(state, key, kind):
    """The 0-d entry `key` of a state dict as a numpy scalar of a dtype kind in `kind` (e.g. "iu");
    CheckpointError saying what is wrong otherwise."""
    value = state[key]
    if not isinstance(value, np.ndarray) or value.shape != () or value.dtype.kind not in kind:
        raise CheckpointError(f"entry {key!r} must be a scalar of kind {kind!r}, got "
                              f"{getattr(value, 'dtype', type(value).__name__)} shape {np.shape(value)}")
    return value[()]


def read_state(path, format_name):
    """Read a checkpoint of format `format_name`: its parameters and its state dict.

    Checks the file (every member read and its CRC checked, nothing unpickled), the format name and the
    version (upgrading older versions through :data:`UPGRADES`), and decodes the parameters. The entries of
    the state are not interpreted here: the estimator validates them.

    Returns
    -------
    params : dict
    state : dict
        Entry name -> ndarray (scalars as 0-d arrays), nested dicts for dotted names; the envelope's
        ``mfkern_version`` (the version that wrote the file) is included when present.

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    CheckpointError
        (a ValueError) naming the file when it is truncated, corrupt, not a checkpoint, of another format,
        or of a format version this mfkern cannot read.
    """
    path = os.fspath(path)
    contents = _read(path)
    if "format" in contents and str(contents["format"][()]) != format_name:
        found = str(contents["format"][()])
        if found.startswith("mfkern.") and found != "mfkern.":
            raise CheckpointError(f"{path!r} is a {found} checkpoint, not a {format_name} one: load it with "
                                  f"{found}.load")
        raise CheckpointError(f"{path!r} is not an mfkern checkpoint (format {found!r})")
    missing = [key for key in ("format", "format_version", "params") if key not in contents]
    if missing:
        raise CheckpointError(f"{path!r} is not an mfkern checkpoint: missing entries {missing}")
    try:
        version = int(scalar(contents, "format_version", "iu"))
    except CheckpointError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from None
    while version < FORMAT_VERSION and version in UPGRADES:
        contents = UPGRADES[version](contents)
        version += 1
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path!r} has checkpoint format version {version}; this mfkern reads version "
                              f"{FORMAT_VERSION} (saved by mfkern {contents.get('mfkern_version', '?')})")
    try:
        params = json.loads(str(contents["params"][()]))
        if not isinstance(params, dict):
            raise ValueError(f"expected a JSON object, got {type(params).__name__}")
    except ValueError as exc:
        raise CheckpointError(f"{path!r}: invalid parameters: {exc}") from exc
    flat = {key: value for key, value in contents.items() if key not in ("format", "format_version", "params")}
    try:
        return params, _unflatten(flat)
    except CheckpointError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from None


def load(path, cls):
    """Read a checkpoint written by :func:`save` and return a fitted `cls`.

    Parameters
    ----------
    path : str or os.PathLike
    cls : type
        The estimator class (e.g. :class:`mfkern.MeanFieldRegressor`; usually called as ``cls.load(path)``):
        the file must hold its format (``cls._checkpoint_format``). It is constructed from the saved
        parameters and given the state by ``_set_checkpoint_state``.

    Raises
    ------
    FileNotFoundError
        When `path` does not exist.
    CheckpointError
        (a ValueError) naming the file when it is truncated, corrupt, not a checkpoint, of another
        format version, or when its contents are not a consistent state of `cls`.
    """
    path = os.fspath(path)
    params, state = read_state(path, cls._checkpoint_format)
    try:
        estimator = cls(**params)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path!r}: invalid parameters: {exc}") from exc
    try:
        estimator._set_checkpoint_state(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{path!r}: {exc}") from exc
    return estimator
