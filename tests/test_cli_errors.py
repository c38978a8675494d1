"""Places the CLI cannot write, and counts larger than the data: each is one `error:` line
and exit status 1, through the real `digitrec` command."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image


def assert_error(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-errors")


@pytest.fixture(scope="module")
def env(workdir) -> dict:
    return {**os.environ, "DIGITREC_HOME": str(workdir / "home")}


@pytest.fixture(scope="module")
def with_samples(workdir, env) -> dict:
    """A data directory holding two samples, a 3 and a 7."""
    folder = workdir / "dataset"
    for digit in (3, 7):
        (folder / str(digit)).mkdir(parents=True)
        tile = np.zeros((28, 28), np.uint8)
        tile[6:22, 12:16] = 255
        Image.fromarray(tile).save(folder / str(digit) / "a.png")
    done = run_digitrec("samples", "import", folder, env=env)
    assert done.returncode == 0, done.stderr
    return env


@pytest.fixture(scope="module")
def model(workdir, env) -> Path:
    done = run_digitrec(
        "train", "knn", "-d", "uci-digits", "-o", workdir / "knn", "--no-evaluate", env=env
    )
    assert done.returncode == 0, done.stderr
    return workdir / "knn"


def test_samples_export_into_a_file_is_one_error_line(workdir, env):
    (workdir / "a-file").write_text("in the way")
    assert_error(run_digitrec("samples", "export", workdir / "a-file", env=env), "a-file")


def test_samples_export_where_a_digit_folder_is_a_file_is_one_error_line(workdir, with_samples):
    out = workdir / "export"
    out.mkdir()
    (out / "3").write_text("in the way")
    done = run_digitrec("samples", "export", out, env=with_samples)
    assert_error(done, str(out / "3"), "a file is in the way")


def test_samples_export_where_no_folder_can_be_made_is_one_error_line(with_samples):
    assert_error(run_digitrec("samples", "export", "/proc/digitrec-x", env=with_samples))


@pytest.mark.parametrize("command", [["samples", "list"], ["train", "knn", "-d", "uci-digits"]])
def test_a_data_directory_that_is_a_file_is_one_error_line(workdir, command):
    (workdir / "home-file").write_text("not a folder")
    env = {**os.environ, "DIGITREC_HOME": str(workdir / "home-file")}
    assert_error(run_digitrec(*command, env=env), "home-file", "DIGITREC_HOME")


def test_train_into_a_path_below_a_file_is_refused_before_training(env):
    done = run_digitrec("train", "knn", "-d", "uci-digits", "-o", "/etc/passwd/x", env=env)
    assert_error(done, "/etc/passwd")
    assert "training" not in done.stdout


@pytest.mark.parametrize("kind", ["knn", "knn-idm-hknn"])
def test_train_with_more_neighbours_than_images_is_one_error_line(workdir, env, kind):
    done = run_digitrec(
        "train",
        kind,
        "-d",
        "uci-digits",
        "-p",
        "n_neighbors=100000",
        "-o",
        workdir / kind,
        env=env,
    )
    assert_error(done, "n_neighbors")
    assert not (workdir / kind).exists()


def test_tune_with_more_folds_than_images_is_one_error_line(env):
    done = run_digitrec("tune", "-d", "uci-digits", "--folds", "100000", env=env)
    assert_error(done, "--folds 100000", "rarest digit")


def test_a_report_that_cannot_be_written_is_one_error_line(model, env):
    done = run_digitrec("report", model, "-o", "/proc/x.html", "--test-size", "50", env=env)
    assert_error(done, "cannot write /proc/x.html")


def test_predict_json_never_prints_nan_from_a_model_holding_nan(workdir, model, env):
    # An edited, re-signed model with a NaN in its reference pixels is refused at load,
    # so `predict --json` prints an error line and no output that is not JSON.
    forged = workdir / "nan-model"
    shutil.copytree(model, forged)
    X = np.load(forged / "knn__X.npy").astype(np.float64)
    X[:, 10] = np.nan
    buffer = io.BytesIO()
    np.save(buffer, X)
    (forged / "knn__X.npy").write_bytes(buffer.getvalue())
    manifest = json.loads((forged / "model.json").read_text())
    entry = manifest["arrays"]["knn__X"]
    entry.update(dtype="<f8", sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    (forged / "model.json").write_text(json.dumps(manifest))
    digest = hashlib.sha256((forged / "model.json").read_bytes()).hexdigest()
    (forged / "model.sha256").write_text(digest)
    image = workdir / "digit.png"
    Image.fromarray(np.pad(np.full((16, 4), 255, np.uint8), 6)).save(image)
    done = run_digitrec("predict", forged, image, "--json", env=env)
    assert_error(done, "NaN or infinite")
    assert done.stdout == ""
