"""Model files that cannot lie or crash: the signature, the kind's schema checked before
anything is read, .npy headers, links and special files, and a replacement that keeps a
loadable model at the path even when the saving process is killed at any step."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from digitrec import models
from digitrec.errors import ModelFileError
from digitrec.persistence import model_store as store


@pytest.fixture(scope="module")
def knn_model(uci) -> models.Model:
    return models.train("knn", uci.subset(200, 20, 0), {"n_neighbors": 3})


@pytest.fixture
def knn_dir(knn_model, tmp_path) -> Path:
    return models.save(knn_model, tmp_path / "knn")


def manifest_of(directory: Path) -> dict:
    return json.loads((directory / "model.json").read_text())


def sign(directory: Path) -> None:
    digest = hashlib.sha256((directory / "model.json").read_bytes()).hexdigest()
    (directory / "model.sha256").write_text(digest + "\n")


def write_signed(directory: Path, manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    (directory / "model.json").write_text(text)
    sign(directory)


def replace_array(directory: Path, name: str, data: bytes, *, update_manifest: dict) -> None:
    """Write ``data`` as array ``name`` and describe it in a re-signed manifest."""
    (directory / f"{name}.npy").write_bytes(data)
    manifest = manifest_of(directory)
    manifest["arrays"][name].update(sha256=hashlib.sha256(data).hexdigest(), **update_manifest)
    write_signed(directory, manifest)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# --- the signature ------------------------------------------------------------------------------


def test_an_edited_manifest_that_is_not_signed_again_is_refused(knn_dir):
    manifest = manifest_of(knn_dir)
    manifest["params"]["n_neighbors"] = 1
    (knn_dir / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelFileError, match="does not match model.sha256"):
        models.load(knn_dir)


def test_a_model_without_its_signature_is_refused(knn_dir):
    (knn_dir / "model.sha256").unlink()
    with pytest.raises(ModelFileError, match="model.sha256 is missing"):
        models.load(knn_dir)


def test_a_saved_model_loads_and_answers_as_before(knn_dir, knn_model, uci):
    loaded = models.load(knn_dir)
    np.testing.assert_array_equal(
        loaded.predict(uci.X_test[:20]), knn_model.predict(uci.X_test[:20])
    )


# --- the manifest, checked before any array is read -----------------------------------------


def test_a_manifest_nested_a_thousand_deep_is_a_model_file_error(knn_dir):
    manifest = manifest_of(knn_dir)
    text = json.dumps(manifest)[:-1] + ', "deep": ' + "[" * 1000 + "]" * 1000 + "}"
    write_signed(knn_dir, text)
    with pytest.raises(ModelFileError, match="nested 1001 levels deep"):
        models.load(knn_dir)


def test_brackets_inside_strings_do_not_count_as_nesting(knn_dir):
    manifest = manifest_of(knn_dir)
    manifest["dataset"]["name"] = "[[[[" * 100 + '\\"{'
    write_signed(knn_dir, manifest)
    assert models.load(knn_dir).info["dataset"]["name"].startswith("[[[[")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_a_manifest_with_non_json_numbers_is_refused(knn_dir, constant):
    text = json.dumps(manifest_of(knn_dir)).replace('"max_value": 16', f'"max_value": {constant}')
    write_signed(knn_dir, text)
    with pytest.raises(ModelFileError, match="not a number JSON allows"):
        models.load(knn_dir)


@pytest.mark.parametrize(
    "shape, message",
    [
        ([0, 0], "input shape"),
        ([100000, 100000], "input shape"),
        ([8], "input shape"),
        (["8", 8], "input shape"),
        ([8, 9], "inconsistent"),  # 72 pixels, but the references have 64
    ],
)
def test_an_unusable_input_shape_is_refused_before_any_array_is_read(
    knn_dir, shape, message, monkeypatch
):
    manifest = manifest_of(knn_dir)
    manifest["input"]["shape"] = shape
    write_signed(knn_dir, manifest)
    monkeypatch.setattr(np, "empty", _must_not_allocate)
    with pytest.raises(ModelFileError, match=message):
        models.load(knn_dir)


def _must_not_allocate(*args, **kwargs):
    raise AssertionError("an array was allocated before the manifest was refused")


@pytest.mark.parametrize("value", [0, -1, None, "255", True, 1e9])
def test_an_input_max_value_that_is_not_positive_and_bounded_is_refused(knn_dir, value):
    manifest = manifest_of(knn_dir)
    manifest["input"]["max_value"] = value
    write_signed(knn_dir, manifest)
    with pytest.raises(ModelFileError, match="max_value"):
        models.load(knn_dir)


def test_n_neighbors_beyond_the_references_is_refused(knn_dir):
    manifest = manifest_of(knn_dir)
    manifest["params"]["n_neighbors"] = 100000
    write_signed(knn_dir, manifest)
    with pytest.raises(ModelFileError, match="n_neighbors=100000 but the model holds 200"):
        models.load(knn_dir)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda a: a["knn__X"].update(shape=[20_000_000, 64]), "has 20000000 'n'"),
        (lambda a: a["knn__X"].update(shape=[2**40, 64]), "would take 70368744177664 bytes"),
        (lambda a: a["knn__X"].update(dtype="|O"), "dtype digitrec does not save"),
        (lambda a: a["knn__X"].update(dtype="<c16"), "dtype digitrec does not save"),
        (lambda a: a["knn__y"].update(dtype="<f8"), "dtype float64"),
        (lambda a: a.update(extra=dict(a["knn__y"], file="extra.npy")), "no array 'extra'"),
        (lambda a: a.pop("knn__classes"), "needs the array 'knn__classes'"),
        (lambda a: a["knn__y"].update(shape=[199]), "inconsistent"),
        (lambda a: a["knn__y"].update(shape=[-1]), "invalid shape"),
        (lambda a: a["knn__y"].update(shape=[1.5]), "invalid shape"),
        (lambda a: a["knn__y"].update(shape=[200] * 9), "invalid shape"),
        (lambda a: a["knn__y"].update(sha256="0" * 63), "malformed"),
    ],
)
def test_array_entries_are_checked_against_the_kind_before_reading(
    knn_dir, edit, message, monkeypatch
):
    manifest = manifest_of(knn_dir)
    edit(manifest["arrays"])
    write_signed(knn_dir, manifest)
    monkeypatch.setattr(np, "empty", _must_not_allocate)
    with pytest.raises(ModelFileError, match=message):
        models.load(knn_dir)


# --- .npy files -----------------------------------------------------------------------------------


def test_a_header_declaring_58_tib_is_refused_without_allocating(knn_dir, monkeypatch):
    # A header and manifest that agree on 2**30 x 2**16 uint8 (64 TiB, "58 TiB" in the
    # issue's units) over a file of a few bytes: caught by the caps, never allocated.
    huge = (2**30, 2**16)
    header = npy(np.zeros((1, 1), np.uint8)).replace(b"(1, 1)", str(huge).encode())
    replace_array(knn_dir, "knn__X", header, update_manifest={"shape": list(huge)})
    monkeypatch.setattr(np, "empty", _must_not_allocate)
    with pytest.raises(ModelFileError, match="refused|at most"):
        models.load(knn_dir)


def test_a_header_larger_than_its_file_is_refused(knn_dir):
    # Same shape in header and manifest, but the data was cut short.
    data = npy(np.zeros((200, 64), np.uint8))[:-100]
    replace_array(knn_dir, "knn__X", data, update_manifest={})
    with pytest.raises(ModelFileError, match="its header declares"):
        models.load(knn_dir)


def test_an_npz_saved_as_npy_is_refused(knn_dir):
    buffer = io.BytesIO()
    np.savez(buffer, X=np.zeros((200, 64), np.uint8))
    replace_array(knn_dir, "knn__X", buffer.getvalue(), update_manifest={})
    with pytest.raises(ModelFileError, match="wrong magic bytes"):
        models.load(knn_dir)


def test_a_header_that_disagrees_with_the_manifest_is_refused(knn_dir):
    replace_array(knn_dir, "knn__y", npy(np.zeros(200, np.int32)), update_manifest={})
    with pytest.raises(ModelFileError, match="shape or dtype differs"):
        models.load(knn_dir)


def test_a_header_that_is_not_a_literal_is_refused(knn_dir):
    data = npy(np.zeros(200, np.int64)).replace(b"'descr'", b"__import__('os')", 1)
    replace_array(knn_dir, "knn__y", data, update_manifest={})
    with pytest.raises(ModelFileError, match="not a plain numeric array"):
        models.load(knn_dir)


# --- values, once read ---------------------------------------------------------------------------


@pytest.mark.parametrize("label", [-1, 10])
def test_labels_out_of_range_are_refused(knn_dir, label):
    y = np.load(knn_dir / "knn__y.npy")
    y[5] = label
    replace_array(knn_dir, "knn__y", npy(y), update_manifest={})
    with pytest.raises(ModelFileError, match=r"labels outside 0\.\.9"):
        models.load(knn_dir)


def test_a_nan_in_a_float_array_is_refused(knn_dir):
    X = np.load(knn_dir / "knn__X.npy").astype(np.float64)
    X[0, 0] = np.nan
    replace_array(knn_dir, "knn__X", npy(X), update_manifest={"dtype": "<f8"})
    with pytest.raises(ModelFileError, match="NaN or infinite"):
        models.load(knn_dir)


def test_unsorted_classes_are_refused(knn_dir):
    classes = np.load(knn_dir / "knn__classes.npy")[::-1].copy()
    replace_array(knn_dir, "knn__classes", npy(classes), update_manifest={})
    with pytest.raises(ModelFileError, match="not sorted and distinct"):
        models.load(knn_dir)


# --- links and special files -------------------------------------------------------------------


def test_a_symlink_to_a_system_file_is_refused(knn_dir):
    (knn_dir / "knn__y.npy").unlink()
    (knn_dir / "knn__y.npy").symlink_to("/etc/passwd")
    with pytest.raises(ModelFileError, match="knn__y.npy is a symbolic link; refused"):
        models.load(knn_dir)


def test_a_symlink_to_a_matching_copy_is_refused(knn_dir, tmp_path):
    copy = tmp_path / "elsewhere.npy"
    copy.write_bytes((knn_dir / "knn__X.npy").read_bytes())
    (knn_dir / "knn__X.npy").unlink()
    (knn_dir / "knn__X.npy").symlink_to(copy)
    with pytest.raises(ModelFileError, match="symbolic link"):
        models.load(knn_dir)


def test_a_symlinked_manifest_is_refused(knn_dir, tmp_path):
    (tmp_path / "model.json").write_bytes((knn_dir / "model.json").read_bytes())
    (knn_dir / "model.json").unlink()
    (knn_dir / "model.json").symlink_to(tmp_path / "model.json")
    with pytest.raises(ModelFileError, match="model.json is a symbolic link"):
        models.load(knn_dir)


def test_a_fifo_is_refused_without_being_opened(knn_dir):
    # Opening a FIFO for reading blocks until a writer comes: refusing it from lstat alone
    # is what keeps this test from hanging.
    (knn_dir / "knn__y.npy").unlink()
    os.mkfifo(knn_dir / "knn__y.npy")
    with pytest.raises(ModelFileError, match="knn__y.npy is not a regular file"):
        models.load(knn_dir)


def test_a_model_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "model").write_text("not a model")
    with pytest.raises(ModelFileError, match="not a model directory"):
        models.load(tmp_path / "model")


# --- replacing a model, killed at every step ---------------------------------------------

_SAVER = textwrap.dedent(
    """
    import os, signal, sys
    from digitrec import models
    from digitrec.data import datasets
    from digitrec.persistence import model_store as store

    target, step, exchange = sys.argv[1], sys.argv[2], sys.argv[3] == "exchange"
    if not exchange:
        store.exchange_supported = lambda: False

    def stop_at(name):
        if name == step:
            os.kill(os.getpid(), signal.SIGSTOP)  # the test kills us here with SIGKILL

    store.on_step = stop_at
    data = datasets.load("uci-digits").subset(100, 10, 1)
    models.save(models.train("knn", data, {"n_neighbors": 1}), target)
    """
)


def _kill_while_saving(target: Path, step: str, exchange: bool) -> None:
    """Run a save of a new model over ``target`` in a child process, stop it at ``step``
    (it stops itself there), then kill it with SIGKILL."""
    child = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(target), step, "exchange" if exchange else "renames"]
    )
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), f"the saver ended before reaching {step!r}"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL


def _hidden(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.parent.iterdir() if p.name.startswith("."))


@pytest.mark.skipif(not store.exchange_supported(), reason="needs renameat2(RENAME_EXCHANGE)")
@pytest.mark.parametrize("step, answer_from", [("staged", "old"), ("exchanged", "new")])
def test_a_save_killed_at_either_side_of_the_exchange_leaves_a_model_at_the_path(
    knn_dir, knn_model, uci, step, answer_from
):
    _kill_while_saving(knn_dir, step, exchange=True)
    loaded = models.load(knn_dir)  # the path loads at once, with no recovery
    expected_train = 200 if answer_from == "old" else 100
    assert loaded.info["dataset"]["n_train"] == expected_train
    assert len(_hidden(knn_dir)) == 1  # the new model staged, or the old one swapped out
    models.save(knn_model, knn_dir)  # the next save clears what the killed one left
    assert _hidden(knn_dir) == []
    assert models.load(knn_dir).info["dataset"]["n_train"] == 200


@pytest.mark.parametrize("step", ["old-aside", "new-in"])
def test_a_save_killed_between_two_renames_is_recovered(knn_dir, knn_model, step):
    # Where the system cannot exchange two directories, a save moves the old model aside
    # and the new one in; killed between the two, the path is empty until recovery.
    _kill_while_saving(knn_dir, step, exchange=False)
    if step == "old-aside":
        with pytest.raises(ModelFileError, match="interrupted save left the previous model"):
            models.load(knn_dir)
    removed = store.recover(knn_dir)
    assert len(removed) == 1
    assert _hidden(knn_dir) == []
    expected_train = 200 if step == "old-aside" else 100
    assert models.load(knn_dir).info["dataset"]["n_train"] == expected_train


def test_a_save_killed_before_its_first_rename_leaves_no_model_and_is_cleared(tmp_path):
    target = tmp_path / "fresh"
    _kill_while_saving(target, "staged", exchange=True)
    assert not target.exists()
    assert len(_hidden(target)) == 1
    assert len(store.recover(target)) == 1
    assert _hidden(target) == []


def test_recover_leaves_other_models_leftovers_alone(tmp_path):
    (tmp_path / ".other.stage-0123abcd").mkdir()
    (tmp_path / ".model.stage-0123abcd.x").mkdir()
    assert store.recover(tmp_path / "model") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".model.stage-0123abcd.x",
        ".other.stage-0123abcd",
    ]


_SMALL = {
    "random-forest": {"n_estimators": 3, "n_jobs": 1},
    "svc-rbf": {},
    "knn-idm": {"n_candidates": 20},
    "cnn": {"epochs": 1},
}


@pytest.mark.parametrize("kind", sorted(_SMALL))
def test_every_kind_passes_its_own_schema_and_answers_the_same_after_loading(
    mnist, kind, tmp_path
):
    if kind == "cnn":
        pytest.importorskip("torch")
    data = mnist.subset(300, 30, seed=0)
    model = models.train(kind, data, _SMALL[kind])
    loaded = models.load(models.save(model, tmp_path / kind))
    np.testing.assert_array_equal(loaded.predict(data.X_test), model.predict(data.X_test))
