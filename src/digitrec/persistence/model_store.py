"""Model directories: a JSON manifest plus one ``.npy`` file per array, each hashed.

A saved model can never execute code when loaded: arrays are read with
``allow_pickle=False`` and every file is checked against the sha256 in ``model.json``.
A model directory appears complete or not at all (files: :mod:`digitrec.persistence.atomic`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec.errors import ModelFileError

FORMAT = "digitrec-model"
FORMAT_VERSION = 1
MANIFEST = "model.json"
MAX_MANIFEST_BYTES = 1 << 20


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


def save(directory: Path, model: ModelFile) -> Path:
    """Write ``model`` as a directory, replacing any previous one only once complete."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    # mkdir, not mkdtemp: the model directory gets the user's umask like any other (mkdtemp
    # makes it 0700); the random name keeps concurrent saves apart all the same.
    staging = directory.parent / f".{directory.name}.{secrets.token_hex(8)}"
    staging.mkdir()
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
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            (staging / f"{name}.npy").write_bytes(buffer.getvalue())
            entries[name] = {
                "file": f"{name}.npy",
                "sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
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
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _swap_into_place(staging, directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _swap_into_place(staging: Path, directory: Path) -> None:
    if not directory.exists():
        os.replace(staging, directory)
        return
    if not (directory / MANIFEST).exists() and any(directory.iterdir()):
        raise ModelFileError(f"{directory} exists and is not a digitrec model; not overwriting it")
    # Two renames cannot be one atomic step: if the second fails, put the old model back.
    old = directory.parent / f".{directory.name}.old.{os.getpid()}.{secrets.token_hex(4)}"
    os.replace(directory, old)
    try:
        os.replace(staging, directory)
    except BaseException:
        os.replace(old, directory)
        raise
    shutil.rmtree(old, ignore_errors=True)


def read_manifest(directory: Path) -> dict[str, Any]:
    """The parsed ``model.json`` of a model directory, checked for format."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ModelFileError(f"no model at {directory} (train one with `digitrec train`)")
    if not path.is_file():
        raise ModelFileError(f"{directory} is not a digitrec model: {MANIFEST} is missing")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{path} is too large to be a digitrec manifest")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a digitrec model manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {manifest.get('format_version')}, "
            f"this digitrec reads {FORMAT_VERSION}"
        )
    if not isinstance(manifest.get("arrays"), dict) or not isinstance(manifest.get("kind"), str):
        raise ModelFileError(f"{path} lacks its kind or array list")
    return manifest


def load(directory: Path, mmap: bool = False) -> ModelFile:
    """Read and verify a model directory; any mismatch raises :class:`ModelFileError`."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    arrays = {}
    for name, entry in manifest["arrays"].items():
        file = entry.get("file") if isinstance(entry, dict) else None
        if file != f"{name}.npy" or not name.isidentifier():
            raise ModelFileError(f"{directory}: array entry {name!r} is malformed")
        path = directory / file
        if not path.is_file():
            raise ModelFileError(f"{directory}: {file} is missing")
        if sha256_file(path) != entry.get("sha256"):
            raise ModelFileError(
                f"{directory}: {file} does not match its sha256 (modified or corrupt)"
            )
        try:
            array = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as exc:
            raise ModelFileError(
                f"{directory}: {file} is not a plain numeric array: {exc}"
            ) from exc
        if list(array.shape) != entry.get("shape") or array.dtype.str != entry.get("dtype"):
            raise ModelFileError(f"{directory}: {file} shape or dtype differs from the manifest")
        arrays[name] = array
    info = {
        k: v
        for k, v in manifest.items()
        if k not in {"format", "format_version", "kind", "params", "state", "arrays"}
    }
    return ModelFile(
        manifest["kind"], manifest.get("params", {}), arrays, manifest.get("state", {}), info
    )
