"""Model directories: a JSON manifest, one ``.npy`` file per array, and a signature.

``model.json`` lists every array with its sha256, shape and dtype; ``model.sha256`` holds
the sha256 of ``model.json``, so one digest covers the manifest and, through it, every
array. Loading checks, in this order and before reading any array data: that every entry
is a regular file (symlinks and devices are refused without being opened for reading),
the signature, the manifest's structure and nesting, each array's declared size against a
cap, and each ``.npy`` header against the manifest and the file's size. Only then are the
arrays read, with no pickles (``.npy`` headers are parsed here; numpy's reader is never
asked to unpickle), and hashed as they are read.

The digest says the files are the ones digitrec wrote; it is not a secret, so what a kind
of model may hold is checked again by the caller (``check`` of :func:`load`,
:mod:`digitrec.persistence.model_schema`).

Replacing a model keeps a complete model at its path at every instant: the new directory
is written and fsynced beside the old one, and the two are exchanged in one
``renameat2(RENAME_EXCHANGE)`` where the system has it. Elsewhere the old model is moved
aside and the new one moved in; if the process dies between those two renames, the next
save (or :func:`recover`) puts things right, and loading names the model left aside.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import math
import mmap
import os
import re
import secrets
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.errors import ModelFileError
from digitrec.persistence.atomic import cannot_write, fsync_directory, make_dirs

FORMAT = "digitrec-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
SIGNATURE = "model.sha256"
MAX_MANIFEST_BYTES = 1 << 20
# A manifest is a few levels deep (arrays -> name -> shape); 32 leaves room for any state a
# kind saves while keeping every walk over it far from Python's recursion limit.
MAX_NESTING = 32
# No kind digitrec trains comes near these: the default model is 0.3 GB on disk.
MAX_ARRAY_BYTES = 8 << 30
MAX_MODEL_BYTES = 16 << 30
MAX_ARRAYS = 256
MAX_DIMENSIONS = 8
# The dtypes digitrec writes: little-endian numbers and short Unicode class labels.
_NUMERIC_DTYPES = frozenset(
    {"|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f4", "<f8"}
)
_MAX_LABEL_CHARS = 64
_NPY_MAGIC = b"\x93NUMPY"
_MAX_NPY_HEADER = 4096

# Called with the name of each step of a replacement as it is reached ("staged",
# "exchanged", "old-aside", "new-in"). Tests set it, in a process of their own, to stop
# that process at a step and kill it there; nothing a user passes can reach it.
on_step: Callable[[str], None] | None = None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    import sklearn

    from digitrec import __version__

    return {"digitrec": __version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__}


@dataclass
class ModelFile:
    """What a model directory holds, before it becomes a live estimator."""

    kind: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray]
    state: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # dataset, metrics, versions


# --- saving ------------------------------------------------------------------------------------


def save(directory: Path, model: ModelFile) -> Path:
    """Write ``model`` as a directory, replacing any previous one only once complete."""
    directory = Path(directory)
    check_destination(directory)
    recover(directory)
    staging = directory.parent / _hidden_name(directory, "stage")
    try:
        os.mkdir(staging, 0o755)
    except OSError as exc:
        raise cannot_write(directory, exc) from None
    try:
        entries = {}
        for name, array in model.arrays.items():
            if not name.isidentifier():
                raise ValueError(f"array name {name!r} is not a plain identifier")
            array = np.ascontiguousarray(array)
            if array.dtype.hasobject:
                raise ValueError(
                    f"array {name!r} holds Python objects; only numeric arrays are saved"
                )
            data = _npy_bytes(array)
            _write_synced(staging / f"{name}.npy", data)
            entries[name] = {
                "file": f"{name}.npy",
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(array.shape),
                "dtype": array.dtype.str,
            }
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "kind": model.kind,
            "params": model.params,
            "state": model.state,
            "versions": versions(),
            **model.info,
            "arrays": entries,
        }
        text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False).encode()
        _write_synced(staging / MANIFEST, text)
        _write_synced(staging / SIGNATURE, (hashlib.sha256(text).hexdigest() + "\n").encode())
        fsync_directory(staging)
        _step("staged")
        _swap_into_place(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def check_destination(directory: Path) -> None:
    """Refuse, before any work, a model path that cannot be written or holds something else."""
    directory = Path(directory)
    make_dirs(directory.parent)
    if not os.access(directory.parent, os.W_OK | os.X_OK):
        raise ModelFileError(f"cannot write {directory}: {directory.parent} is not writable")
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise ModelFileError(f"{directory} exists and is not a directory; not overwriting it")
    if directory.is_dir() and not _is_model_or_empty(directory):
        raise ModelFileError(f"{directory} exists and is not a digitrec model; not overwriting it")


def _is_model_or_empty(directory: Path) -> bool:
    return (directory / MANIFEST).exists() or not any(directory.iterdir())


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _step(name: str) -> None:
    if on_step is not None:
        on_step(name)


def _hidden_name(directory: Path, role: str) -> str:
    return f".{directory.name}.{role}-{secrets.token_hex(4)}"


def _leftovers(directory: Path) -> dict[str, list[Path]]:
    """Hidden directories an interrupted save of ``directory`` left beside it, by role."""
    pattern = re.compile(rf"\.{re.escape(directory.name)}\.(stage|old)-[0-9a-f]{{8}}")
    found: dict[str, list[Path]] = {"stage": [], "old": []}
    try:
        names = os.listdir(directory.parent)
    except FileNotFoundError:
        return found
    for name in sorted(names):
        match = pattern.fullmatch(name)
        if match and (directory.parent / name).is_dir():
            found[match.group(1)].append(directory.parent / name)
    return found


def recover(directory: Path) -> list[Path]:
    """Clear what an interrupted save of ``directory`` left; returns the paths removed.

    If the model path is empty because a save died between moving the old model aside
    and moving the new one in, the old model goes back first. Saves of one model are not
    meant to run at once: this treats every staging directory it finds as abandoned.
    """
    directory = Path(directory)
    found = _leftovers(directory)
    if not os.path.lexists(directory) and found["old"]:
        os.replace(found["old"].pop(), directory)
        fsync_directory(directory.parent)
    removed = found["stage"] + found["old"]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _swap_into_place(staging: Path, directory: Path) -> None:
    if not os.path.lexists(directory):
        os.replace(staging, directory)
        fsync_directory(directory.parent)
        _step("new-in")
        return
    if _exchange(staging, directory):
        # staging now holds the old model.
        fsync_directory(directory.parent)
        _step("exchanged")
        shutil.rmtree(staging, ignore_errors=True)
        return
    # Two renames cannot be one atomic step: if the second fails, put the old model back.
    old = directory.parent / _hidden_name(directory, "old")
    os.replace(directory, old)
    _step("old-aside")
    try:
        os.replace(staging, directory)
    except BaseException:
        os.replace(old, directory)
        raise
    fsync_directory(directory.parent)
    _step("new-in")
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2``); False where that is not possible."""
    if not exchange_supported():
        return False
    result = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # file system without it
        return False
    raise OSError(code, os.strerror(code), str(b))


def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
    function.argtypes += [ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2()


def exchange_supported() -> bool:
    """Whether this system can swap two directories atomically (glibc's ``renameat2``)."""
    return _renameat2 is not None


# --- loading -----------------------------------------------------------------------------------


class _ModelDirectory:
    """An open model directory: every entry is opened relative to it, never through a link."""

    def __init__(self, directory: Path):
        self.path = directory
        try:
            self.fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise ModelFileError(_missing_model_message(directory)) from None
        except NotADirectoryError:
            raise ModelFileError(f"{directory} is not a model directory") from None
        except OSError as exc:
            raise ModelFileError(f"cannot open {directory}: {exc.strerror}") from None

    def close(self) -> None:
        os.close(self.fd)

    def open_regular(self, name: str, missing: str) -> tuple[int, int]:
        """``(fd, size)`` of the regular file ``name``; links, devices, FIFOs are refused
        from their ``lstat`` alone, so they are never opened."""
        try:
            info = os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            raise ModelFileError(f"{self.path}: {missing}") from None
        if not stat.S_ISREG(info.st_mode):
            what = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "not a regular file"
            raise ModelFileError(f"{self.path}: {name} is {what}; refused")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self.fd)
        except OSError as exc:
            raise ModelFileError(f"{self.path}: cannot open {name}: {exc.strerror}") from None
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            os.close(fd)
            raise ModelFileError(f"{self.path}: {name} changed while being opened")
        return fd, opened.st_size

    def read_small(self, name: str, limit: int, missing: str) -> bytes:
        fd, size = self.open_regular(name, missing)
        with os.fdopen(fd, "rb") as handle:
            if size > limit:
                raise ModelFileError(f"{self.path}: {name} is too large ({size} bytes)")
            return handle.read(limit + 1)


def _missing_model_message(directory: Path) -> str:
    aside = _leftovers(directory)["old"]
    if aside:
        return (
            f"no model at {directory}: an interrupted save left the previous model in "
            f"{aside[-1]}; saving a model there again restores it"
        )
    return f"no model at {directory} (train one with `digitrec train`)"


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed, signature-checked and structurally valid ``model.json`` of a model."""
    opened = _ModelDirectory(Path(directory))
    try:
        return _read_manifest(opened)
    finally:
        opened.close()


def _read_manifest(opened: _ModelDirectory) -> dict[str, Any]:
    where = opened.path
    text = opened.read_small(
        MANIFEST, MAX_MANIFEST_BYTES, f"not a digitrec model: {MANIFEST} is missing"
    )
    signature = opened.read_small(
        SIGNATURE,
        256,
        f"{SIGNATURE} is missing: not saved by this digitrec, or altered; train it again",
    )
    if signature.strip() != hashlib.sha256(text).hexdigest().encode():
        raise ModelFileError(
            f"{where}: {MANIFEST} does not match {SIGNATURE} (modified or corrupt)"
        )
    manifest = parse_manifest(text, where / MANIFEST)
    check_manifest(manifest, where / MANIFEST)
    return manifest


def parse_manifest(text: bytes, where: Path | str) -> Any:
    """JSON of bounded nesting, with no NaN or infinity; ModelFileError otherwise."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{where} is not valid JSON: {exc}") from None
    depth = _nesting(decoded)
    if depth > MAX_NESTING:
        raise ModelFileError(f"{where} is nested {depth} levels deep; at most {MAX_NESTING}")
    try:
        return json.loads(decoded, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, ValueError) as exc:
        raise ModelFileError(f"{where} is not valid JSON: {exc}") from None


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings (without a recursive parse)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def check_manifest(manifest: Any, where: Path | str) -> None:
    """The manifest's own structure: format, kind, and every array entry well formed, each
    array's declared size under the caps. Says nothing about what a kind may hold."""
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{where} is not a digitrec model manifest")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelFileError(
            f"{where} has format version {version}, this digitrec reads {FORMAT_VERSION}"
        )
    arrays = manifest.get("arrays")
    if not isinstance(arrays, dict) or not isinstance(manifest.get("kind"), str):
        raise ModelFileError(f"{where} lacks its kind or array list")
    for key in ("params", "state"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ModelFileError(f"{where}: {key} is not a JSON object")
    if len(arrays) > MAX_ARRAYS:
        raise ModelFileError(f"{where} lists {len(arrays)} arrays; at most {MAX_ARRAYS}")
    total = 0
    for name, entry in arrays.items():
        total += _check_entry(name, entry, where)
    if total > MAX_MODEL_BYTES:
        raise ModelFileError(f"{where}: its arrays would take {total} bytes; refused")


def _check_entry(name: str, entry: Any, where: Path | str) -> int:
    """Check one array entry; returns its declared size in bytes."""
    if not (
        isinstance(entry, dict)
        and name.isidentifier()
        and len(name) <= 100
        and entry.get("file") == f"{name}.npy"
        and isinstance(entry.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"])
    ):
        raise ModelFileError(f"{where}: array entry {name!r} is malformed")
    shape, dtype = entry.get("shape"), entry.get("dtype")
    if not (
        isinstance(shape, list)
        and len(shape) <= MAX_DIMENSIONS
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise ModelFileError(f"{where}: array {name!r} has an invalid shape {shape!r}")
    if not _allowed_dtype(dtype):
        raise ModelFileError(f"{where}: array {name!r} has a dtype digitrec does not save")
    size = math.prod(shape) * np.dtype(dtype).itemsize
    if size > MAX_ARRAY_BYTES:
        raise ModelFileError(f"{where}: array {name!r} would take {size} bytes; refused")
    return size


def _allowed_dtype(dtype: Any) -> bool:
    if not isinstance(dtype, str):
        return False
    if dtype in _NUMERIC_DTYPES:
        return True
    match = re.fullmatch(r"<U([1-9][0-9]?)", dtype)
    return match is not None and int(match.group(1)) <= _MAX_LABEL_CHARS


def load(
    directory: Path,
    mmap: bool = False,
    check: Callable[[dict[str, Any]], None] | None = None,
) -> ModelFile:
    """Read and verify a model directory; any mismatch raises :class:`ModelFileError`.

    ``check`` is called with the manifest once its signature and structure are verified
    and before any array is read: what the model's kind allows is checked there.
    """
    directory = Path(directory)
    opened = _ModelDirectory(directory)
    try:
        manifest = _read_manifest(opened)
        if check is not None:
            check(manifest)
        headers = {
            name: _open_array(opened, name, entry) for name, entry in manifest["arrays"].items()
        }
        arrays = {}
        try:
            for name, (fd, offset) in headers.items():
                entry = manifest["arrays"][name]
                arrays[name] = _read_array(opened, fd, offset, entry, mmap)
        finally:
            for fd, _ in headers.values():
                os.close(fd)
    finally:
        opened.close()
    info = {
        k: v
        for k, v in manifest.items()
        if k not in {"format", "format_version", "kind", "params", "state", "arrays"}
    }
    return ModelFile(
        manifest["kind"], manifest.get("params", {}), arrays, manifest.get("state", {}), info
    )


def _open_array(opened: _ModelDirectory, name: str, entry: dict) -> tuple[int, int]:
    """Open ``name``'s file and check its ``.npy`` header against the manifest and the file's
    size; returns ``(fd, offset of the data)``. Nothing of the data is read yet."""
    file = entry["file"]
    fd, size = opened.open_regular(file, f"{file} is missing")
    try:
        header = os.pread(fd, _MAX_NPY_HEADER, 0)
        offset, shape, dtype, fortran = _parse_npy_header(header, f"{opened.path}: {file}")
        if fortran or list(shape) != entry["shape"] or dtype.str != entry["dtype"]:
            raise ModelFileError(f"{opened.path}: {file} shape or dtype differs from the manifest")
        expected = offset + math.prod(shape) * dtype.itemsize
        if size != expected:
            raise ModelFileError(
                f"{opened.path}: {file} holds {size} bytes, its header declares {expected}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd, offset


def _parse_npy_header(header: bytes, where: str) -> tuple[int, tuple, np.dtype, bool]:
    """``(data offset, shape, dtype, fortran_order)`` from the start of a ``.npy`` file,
    parsed with numpy's own literal-only header reader; anything else is refused."""
    import io

    if not header.startswith(_NPY_MAGIC):
        raise ModelFileError(f"{where} is not a plain numeric array (.npy): wrong magic bytes")
    stream = io.BytesIO(header)
    try:
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"version {version}")
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else (np.lib.format.read_array_header_2_0)
        )
        shape, fortran, dtype = reader(stream, max_header_size=_MAX_NPY_HEADER)
    # numpy's header reader raises whatever its tokenizer and literal_eval meet (ValueError,
    # SyntaxError, tokenize.TokenError, MemoryError on absurd literals...): all mean the same.
    except Exception as exc:
        raise ModelFileError(f"{where} is not a plain numeric array: {exc}") from None
    if dtype.hasobject or not _allowed_dtype(dtype.str):
        raise ModelFileError(f"{where} is not a plain numeric array: dtype {dtype}")
    return stream.tell(), shape, dtype, bool(fortran)


def _read_array(
    opened: _ModelDirectory, fd: int, offset: int, entry: dict, use_mmap: bool
) -> np.ndarray:
    """The array, read once and hashed as read; its size was checked against the header."""
    file = entry["file"]
    dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
    size = offset + math.prod(shape) * dtype.itemsize
    if use_mmap and size > 0:
        raw = np.frombuffer(mmap.mmap(fd, size, access=mmap.ACCESS_READ), np.uint8)
    else:
        raw = np.empty(size, np.uint8)
        view = memoryview(raw)
        done = 0
        while done < size:
            got = os.preadv(fd, [view[done:]], done)
            if got == 0:
                raise ModelFileError(f"{opened.path}: {file} is shorter than its header says")
            done += got
    if hashlib.sha256(raw).hexdigest() != entry["sha256"]:
        raise ModelFileError(
            f"{opened.path}: {file} does not match its sha256 (modified or corrupt)"
        )
    return raw[offset:].view(dtype).reshape(shape)
