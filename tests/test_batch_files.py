"""Which files a batch reads and how it names them: names that are not UTF-8, links that
loop, files found twice, and file types the loader refuses all end as exactly one row each."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("pyarrow")

from digitrec import models  # noqa: E402
from digitrec.apps import batch  # noqa: E402
from digitrec.data.folders import files_matching, files_under  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(mnist, tmp_path_factory) -> Path:
    small = mnist.subset(500, 10, seed=0)
    root = tmp_path_factory.mktemp("batch-files")
    return models.save(models.train("knn", small, {"n_neighbors": 1}), root / "model")


@pytest.fixture(scope="module")
def digit_png(mnist, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("png") / "d.png"
    Image.fromarray(mnist.X_test[0]).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def digit_jpeg(mnist, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("jpeg") / "d.jpg"
    Image.fromarray(mnist.X_test[0]).save(path, quality=95)
    return path.read_bytes()


def _names(paths: list[Path], root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in paths]


# --- names that are not UTF-8 -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_name_that_is_not_utf8_gets_a_printable_path_and_its_exact_bytes(
    model_dir, digit_png, tmp_path, suffix
):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9-\xff.png"  # Latin-1 and a byte no encoding has
    with open(raw, "wb") as handle:
        handle.write(digit_png)
    (folder / "plain.png").write_bytes(digit_png)
    out = tmp_path / f"out{suffix}"
    summary = batch.predict_batch(model_dir, folder, out, scheduler="none", progress=False)
    rows = batch.read_output(out)
    assert summary.images == 2 and summary.errors == 0
    odd, plain = rows
    assert odd["path"] == str(folder) + "/caf\\xe9-\\xff.png"
    assert base64.b64decode(odd["path_bytes"]) == raw
    assert odd["text"] == plain["text"] == "7"
    assert plain["path"] == str(folder / "plain.png") and plain["path_bytes"] is None


def test_an_unreadable_file_with_such_a_name_has_a_printable_error(model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/bad\xff.png", "wb") as handle:
        handle.write(b"not an image")
    out = tmp_path / "out.csv"
    batch.predict_batch(model_dir, folder, out, scheduler="none", progress=False)
    (row,) = batch.read_output(out)
    assert "bad\\xff.png" in row["error"] and row["text"] is None


# --- links and files found twice ---------------------------------------------------------


@pytest.fixture
def linked_tree(tmp_path, digit_png) -> Path:
    """a/1.png, a/b/2.png, a link back up (a loop), a link to a sibling folder, a link to
    a file already listed, a hard link, and hidden entries."""
    root = tmp_path / "tree"
    (root / "a" / "b").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "a" / "1.png").write_bytes(digit_png)
    (root / "a" / "b" / "2.png").write_bytes(digit_png)
    (root / "other" / "3.png").write_bytes(digit_png)
    (root / "a" / "b" / "loop").symlink_to(root / "a")
    (root / "a" / "elsewhere").symlink_to(root / "other")
    (root / "a" / "same.png").symlink_to(root / "a" / "1.png")
    os.link(root / "a" / "b" / "2.png", root / "a" / "hard.png")
    (root / "a" / ".hidden.png").write_bytes(digit_png)
    (root / "a" / ".cache").mkdir()
    (root / "a" / ".cache" / "4.png").write_bytes(digit_png)
    return root


def test_a_folder_is_listed_without_entering_linked_folders_each_file_once(linked_tree):
    found = files_under(linked_tree / "a")
    assert _names(found, linked_tree) == ["a/1.png", "a/b/2.png"]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("a/**/*.png", ["a/1.png", "a/b/2.png"]),
        ("a/**", ["a/1.png", "a/b/2.png"]),
        ("a/*.png", ["a/1.png", "a/hard.png"]),  # same.png is 1.png under another name
        ("a/.*.png", ["a/.hidden.png"]),
        ("**/3.png", ["other/3.png"]),
        # A link the pattern spells out is followed, as `ls a/b/loop/` would; only the
        # folders a wildcard reaches are never entered through links.
        ("a/b/loop/*.png", ["a/b/loop/1.png", "a/b/loop/hard.png"]),
    ],
)
def test_a_glob_never_enters_linked_folders_and_lists_each_file_once(
    linked_tree, monkeypatch, pattern, expected
):
    monkeypatch.chdir(linked_tree)
    found = files_matching(pattern)
    assert [str(p) for p in found] == expected
    absolute = files_matching(str(linked_tree / pattern))
    assert _names(absolute, linked_tree) == expected


def test_a_quoted_recursive_glob_over_a_link_loop_ends_with_one_row_per_file(
    model_dir, linked_tree, tmp_path
):
    out = tmp_path / "out.csv"
    pattern = str(linked_tree / "**" / "*.png")
    batch.predict_batch(model_dir, pattern, out, scheduler="none", progress=False)
    rows = batch.read_output(out)
    assert _names([Path(r["path"]) for r in rows], linked_tree) == [
        "a/1.png",
        "a/b/2.png",
        "other/3.png",
    ]


# --- file types ---------------------------------------------------------------------------


def test_every_image_file_of_a_folder_gets_a_row_jpeg_by_any_name(
    model_dir, digit_png, digit_jpeg, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    for suffix in (".jfif", ".jpe", ".jif", ".JPG"):
        (folder / f"photo{suffix}").write_bytes(digit_jpeg)
    (folder / "a.png").write_bytes(digit_png)
    (folder / "old.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (folder / "scan.bmp").write_bytes(b"BM" + b"\0" * 60)
    (folder / "notes.txt").write_text("not an image: no row")
    out = tmp_path / "out.csv"
    batch.predict_batch(model_dir, folder, out, scheduler="none", progress=False)
    rows = {Path(r["path"]).name: r for r in batch.read_output(out)}
    assert sorted(rows) == sorted(
        ["photo.jfif", "photo.jpe", "photo.jif", "photo.JPG", "a.png", "old.gif", "scan.bmp"]
    )
    for name in ("photo.jfif", "photo.jpe", "photo.jif", "photo.JPG", "a.png"):
        assert rows[name]["error"] is None and rows[name]["text"] == "7", rows[name]
    assert "GIF images are not supported" in rows["old.gif"]["error"]
    assert rows["scan.bmp"]["error"]


def test_a_glob_gives_every_file_it_matches_a_row(model_dir, digit_png, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_bytes(digit_png)
    (folder / "notes.txt").write_text("named by the glob: a row with its error")
    out = tmp_path / "out.csv"
    batch.predict_batch(model_dir, str(folder / "*"), out, scheduler="none", progress=False)
    rows = {Path(r["path"]).name: r for r in batch.read_output(out)}
    assert sorted(rows) == ["a.png", "notes.txt"]
    assert rows["a.png"]["error"] is None and rows["notes.txt"]["error"]
