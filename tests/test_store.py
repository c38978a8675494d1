"""Model directories: round trip, the manifest, tampering, pickles and atomic writes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import sklearn

import digitrec
from digitrec.errors import ModelFileError
from digitrec.persistence import model_store as store
from digitrec.persistence.atomic import atomic_write_bytes
from digitrec.persistence.model_store import ModelFile


def sample_model(scale: int = 1) -> ModelFile:
    return ModelFile(
        kind="knn",
        params={"n_neighbors": 3 * scale, "weights": "distance"},
        arrays={
            "X": (np.arange(24, dtype=np.uint8).reshape(4, 6) * scale).astype(np.uint8),
            "y": np.array([0, 1, 1, 2], dtype=np.int64) * scale,
            "weights": np.linspace(0.0, 1.0, 5) * scale,
        },
        state={"n_samples_fit": 4 * scale},
        info={"dataset": {"name": "made-up", "n_train": 4}},
    )


def assert_same_model(loaded: ModelFile, saved: ModelFile) -> None:
    assert loaded.kind == saved.kind
    assert loaded.params == saved.params
    assert loaded.state == saved.state
    assert loaded.info["dataset"] == saved.info["dataset"]
    assert loaded.arrays.keys() == saved.arrays.keys()
    for name, array in saved.arrays.items():
        assert loaded.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded.arrays[name], array)


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "model.json").read_text())


def entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def sign(directory: Path) -> None:
    """Sign model.json again, as anyone editing a model could: what the signature does not
    stop, the checks behind it must."""
    digest = hashlib.sha256((directory / store.MANIFEST).read_bytes()).hexdigest()
    (directory / store.SIGNATURE).write_text(digest + "\n")


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / "model.json").write_text(json.dumps(manifest))
    sign(directory)


@pytest.fixture
def saved(tmp_path) -> Path:
    return store.save(tmp_path / "model", sample_model())


# --- round trip and manifest ----------------------------------------------------------------


def test_save_then_load_gives_back_the_same_model(tmp_path):
    model = sample_model()
    directory = store.save(tmp_path / "nested" / "model", model)
    assert directory == tmp_path / "nested" / "model"
    assert_same_model(store.load(directory), model)


def test_load_with_mmap_gives_read_only_arrays_with_the_same_values(saved):
    loaded = store.load(saved, mmap=True)
    for name, array in sample_model().arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], array)
        assert not loaded.arrays[name].flags.writeable


def test_manifest_describes_kind_params_versions_and_hashed_arrays(saved):
    manifest = manifest_of(saved)
    assert manifest["format"] == "digitrec-model"
    assert manifest["kind"] == "knn"
    assert manifest["params"] == {"n_neighbors": 3, "weights": "distance"}
    assert manifest["state"] == {"n_samples_fit": 4}
    assert manifest["versions"] == {
        "digitrec": digitrec.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }
    assert manifest["dataset"] == {"name": "made-up", "n_train": 4}
    assert set(manifest["arrays"]) == {"X", "y", "weights"}
    for name, array in sample_model().arrays.items():
        entry = manifest["arrays"][name]
        assert entry["file"] == f"{name}.npy"
        assert entry["sha256"] == hashlib.sha256((saved / entry["file"]).read_bytes()).hexdigest()
        assert entry["shape"] == list(array.shape)
        assert np.dtype(entry["dtype"]) == array.dtype
    assert entries(saved) == ["X.npy", "model.json", "model.sha256", "weights.npy", "y.npy"]
    signature = (saved / "model.sha256").read_text().strip()
    assert signature == hashlib.sha256((saved / "model.json").read_bytes()).hexdigest()


# --- tampering and foreign files ------------------------------------------------------------


def test_a_changed_byte_in_an_array_file_is_refused_naming_the_file(saved):
    path = saved / "weights.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the last byte of the payload: still a loadable .npy, but different
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"weights\.npy does not match its sha256"):
        store.load(saved)


class _CreatesFile:
    """Unpickling this object creates ``path``: proof that a pickle was run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({str(self.path)!r}, 'w').close()",)


def _write_pickled_object_array(path: Path, marker: Path) -> None:
    array = np.empty(1, dtype=object)
    array[0] = _CreatesFile(marker)
    np.save(path, array, allow_pickle=True)


def test_the_pickled_array_payload_runs_when_loaded_with_pickles_allowed(tmp_path):
    # Control: proves the payload below is live, so its refusal means something.
    marker = tmp_path / "pwned"
    _write_pickled_object_array(tmp_path / "evil.npy", marker)
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()


def test_an_array_file_replaced_by_a_pickle_is_refused_without_unpickling(saved, tmp_path):
    marker = tmp_path / "pwned"
    _write_pickled_object_array(saved / "y.npy", marker)
    with pytest.raises(ModelFileError, match=r"y\.npy"):
        store.load(saved)
    assert not marker.exists()


def test_a_pickle_with_a_matching_manifest_hash_is_still_refused(saved, tmp_path):
    # An attacker who rewrites model.json too gets past the hash, not past allow_pickle=False.
    marker = tmp_path / "pwned"
    _write_pickled_object_array(saved / "y.npy", marker)
    manifest = manifest_of(saved)
    manifest["arrays"]["y"]["sha256"] = hashlib.sha256((saved / "y.npy").read_bytes()).hexdigest()
    write_manifest(saved, manifest)
    with pytest.raises(ModelFileError, match=r"y\.npy (is not a plain numeric array|shape or)"):
        store.load(saved)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n\xff\xfe garbage", b"{ not json", b"", b"\xff" * 10],
    ids=["binary", "broken-json", "empty", "not-utf8"],
)
def test_garbage_model_json_is_refused(saved, content):
    (saved / "model.json").write_bytes(content)
    sign(saved)
    with pytest.raises(ModelFileError, match="not valid JSON"):
        store.load(saved)


@pytest.mark.parametrize(
    "manifest",
    [{"name": "some other tool"}, [1, 2, 3], "digitrec-model", {"format": "onnx"}],
    ids=["other-dict", "list", "string", "other-format"],
)
def test_foreign_json_is_refused(saved, manifest):
    write_manifest(saved, manifest)
    with pytest.raises(ModelFileError, match="not a digitrec model manifest"):
        store.load(saved)


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_other_format_versions_are_refused(saved, version):
    manifest = manifest_of(saved)
    manifest["format_version"] = version
    write_manifest(saved, manifest)
    with pytest.raises(ModelFileError, match="format version"):
        store.load(saved)


def test_missing_manifest_and_missing_directory_are_refused(saved, tmp_path):
    with pytest.raises(ModelFileError, match="no model at"):
        store.load(tmp_path / "never-saved")
    (saved / "model.json").unlink()
    with pytest.raises(ModelFileError, match="model.json is missing"):
        store.load(saved)


def test_a_missing_array_file_is_refused(saved):
    (saved / "X.npy").unlink()
    with pytest.raises(ModelFileError, match=r"X\.npy is missing"):
        store.load(saved)


@pytest.mark.parametrize("file", ["../X.npy", "/etc/passwd", "y.npy"])
def test_array_entries_cannot_point_at_other_files(saved, file):
    manifest = manifest_of(saved)
    manifest["arrays"]["X"]["file"] = file
    write_manifest(saved, manifest)
    with pytest.raises(ModelFileError, match="malformed"):
        store.load(saved)


def test_an_array_whose_shape_differs_from_the_manifest_is_refused(saved):
    manifest = manifest_of(saved)
    manifest["arrays"]["X"]["shape"] = [6, 4]
    write_manifest(saved, manifest)
    with pytest.raises(ModelFileError, match="shape or dtype"):
        store.load(saved)


# --- what save refuses, and atomic writes -----------------------------------------------------


def test_save_refuses_object_arrays_and_odd_names_leaving_nothing(tmp_path):
    objects = sample_model()
    objects.arrays["bad"] = np.array([{"a": 1}], dtype=object)
    with pytest.raises(ValueError, match="Python objects"):
        store.save(tmp_path / "model", objects)
    odd = sample_model()
    odd.arrays["../escape"] = np.zeros(2)
    with pytest.raises(ValueError, match="plain identifier"):
        store.save(tmp_path / "model", odd)
    assert entries(tmp_path) == []


def test_saving_over_a_model_replaces_it_and_leaves_no_stray_directories(saved, tmp_path):
    newer = sample_model(scale=2)
    store.save(saved, newer)
    assert_same_model(store.load(saved), newer)
    assert entries(tmp_path) == ["model"]


def test_a_failure_while_writing_arrays_keeps_the_previous_model(saved, tmp_path, monkeypatch):
    real_save = np.save
    calls = []

    def failing_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # fail in the middle: after one array file is written
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        store.save(saved, sample_model(scale=2))
    monkeypatch.undo()
    assert len(calls) == 2
    assert_same_model(store.load(saved), sample_model())
    assert entries(tmp_path) == ["model"]


@pytest.mark.parametrize("failing_move", [1, 2], ids=["old-model-aside", "new-model-in"])
def test_a_failed_rename_while_replacing_a_model_keeps_the_previous_one(
    saved, tmp_path, monkeypatch, failing_move
):
    # Replacing a model takes two renames (old aside, new in); whichever fails, the old
    # model must still be where it was, with no hidden leftovers beside it.
    real_replace = os.replace
    calls = []

    def flaky_replace(src, dst):
        calls.append((src, dst))
        if len(calls) == failing_move:
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(store, "exchange_supported", lambda: False)
    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(saved, sample_model(scale=2))
    monkeypatch.undo()
    assert_same_model(store.load(saved), sample_model())
    assert entries(tmp_path) == ["model"]


def test_a_failure_while_writing_a_first_model_leaves_no_directory(tmp_path, monkeypatch):
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path / "model", sample_model())
    monkeypatch.undo()
    assert entries(tmp_path) == []


def test_save_refuses_to_overwrite_a_directory_that_is_not_a_model(tmp_path):
    precious = tmp_path / "photos"
    precious.mkdir()
    (precious / "holiday.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(ModelFileError, match="not a digitrec model; not overwriting"):
        store.save(precious, sample_model())
    assert entries(precious) == ["holiday.jpg"]
    assert (precious / "holiday.jpg").read_bytes() == b"not really a jpeg"
    assert entries(tmp_path) == ["photos"]


def test_save_into_an_existing_empty_directory_is_allowed(tmp_path):
    (tmp_path / "model").mkdir()
    store.save(tmp_path / "model", sample_model())
    assert_same_model(store.load(tmp_path / "model"), sample_model())


def test_atomic_write_bytes_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old contents")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"new contents")
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert entries(tmp_path) == ["data.bin"]  # the temporary file is gone too
