"""The `digitrec` command, run as a user runs it: the installed entry point in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec.data import datasets

run = run_digitrec


def assert_one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user mistake: exit status non-zero, and exactly one `error:` line, no traceback."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def env(workdir) -> dict:
    # Module-wide, so the trained model below is shared; uci-digits needs no MNIST cache.
    return {**os.environ, "DIGITREC_HOME": str(workdir / "home")}


@pytest.fixture(scope="module")
def trained(workdir, env):
    """One model trained through the CLI, shared by the tests that read it."""
    done = run("train", "knn", "-d", "uci-digits", "-p", "n_neighbors=20", "-o", "model",
               env=env, cwd=workdir)
    return done, workdir / "model"


def test_train_saves_a_model_and_reports_the_tutorials_accuracy(trained):
    done, model = trained
    assert done.returncode == 0, done.stderr
    # The tutorials' split with k=20 scores 0.9694: the CLI reproduces it.
    assert "test accuracy 0.9694 on 360 images" in done.stdout
    assert f"saved {model.name}" in done.stdout
    manifest = json.loads((model / "model.json").read_text())
    assert manifest["kind"] == "knn"
    assert manifest["params"]["n_neighbors"] == 20
    assert manifest["metrics"]["n"] == 360


def test_train_without_output_writes_the_default_model_in_digitrec_home(tmp_path):
    env = {**os.environ, "DIGITREC_HOME": str(tmp_path / "home")}
    done = run("train", "linear-svc", "-d", "uci-digits", "--no-evaluate", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "home" / "models" / "default" / "model.json").is_file()
    assert "test accuracy" not in done.stdout


def test_evaluate_json_has_the_metrics_keys(trained, workdir, env):
    done = run("evaluate", trained[1], "--json", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"accuracy", "n", "per_class", "confusion", "seconds"}
    assert round(result["accuracy"], 4) == 0.9694
    assert result["n"] == 360
    assert set(result["per_class"]) == {str(d) for d in range(10)}
    assert np.array(result["confusion"]).sum() == 360


def test_evaluate_writes_a_confusion_plot(trained, workdir, env):
    done = run("evaluate", trained[1], "--plots", "plots", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "accuracy 0.9694" in done.stdout
    with Image.open(workdir / "plots" / "confusion.png") as image:
        assert image.format == "PNG" and min(image.size) > 100


def test_show_plots_one_test_image_with_its_labels(trained, workdir, env):
    done = run("show", trained[1], "--index", 3, "-o", "x.png", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    actual = datasets.load("uci-digits").y_test[3]
    assert "index 3: predicted" in done.stdout and f"actual {actual}" in done.stdout
    with Image.open(workdir / "x.png") as image:
        assert image.format == "PNG"


def test_data_info_describes_uci_digits(workdir, env):
    done = run("data", "info", "uci-digits", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert "uci-digits: 8x8 images, values 0..16" in done.stdout
    assert "train 1437, test 360" in done.stdout
    as_json = json.loads(run("data", "info", "uci-digits", "--json", env=env, cwd=workdir).stdout)
    assert sum(as_json["train_counts"]) == 1437 and sum(as_json["test_counts"]) == 360


def test_data_show_writes_a_grid_of_images(workdir, env):
    done = run("data", "show", "uci-digits", "-o", "grid.png", "--count", 20,
               env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    with Image.open(workdir / "grid.png") as image:
        assert image.format == "PNG"


def test_models_lists_the_kinds_with_defaults(workdir, env):
    done = run("models", env=env, cwd=workdir)
    assert done.returncode == 0, done.stderr
    kinds = [line.split()[0] for line in done.stdout.splitlines() if not line.startswith(" ")]
    assert {"knn", "linear-svc"} <= set(kinds)
    assert "n_neighbors=3" in done.stdout


def _digit_png(path: Path) -> Path:
    """A dark digit-like stroke on white, big enough to be found by the segmenter."""
    pixels = np.full((90, 70), 255, np.uint8)
    pixels[15:75, 30:40] = 0
    Image.fromarray(pixels).save(path)
    return path


def test_predict_reads_good_images_and_reports_the_bad_one(trained, workdir, env):
    good = _digit_png(workdir / "stroke.png")
    done = run("predict", trained[1], good, "missing.png", "--json", env=env, cwd=workdir)
    # The readable image is answered, the missing one is one error line, and the status
    # says something failed.
    assert_one_error_line(done, "missing.png", "no such file")
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["path"] for a in answers] == [str(good)]
    assert answers[0]["digit"] in range(10)


# --- user mistakes: one line each ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tampered(trained, workdir) -> Path:
    copy = workdir / "tampered"
    shutil.copytree(trained[1], copy)
    path = copy / "knn__X.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    return copy


def test_unknown_dataset(workdir, env):
    done = run("train", "knn", "-d", "emnist", "-o", "m", env=env, cwd=workdir)
    assert_one_error_line(done, "unknown dataset 'emnist'")


def test_unknown_parameter(workdir, env):
    done = run("train", "knn", "-d", "uci-digits", "-p", "k=3", "-o", "m", env=env, cwd=workdir)
    assert_one_error_line(done, "'k'", "allowed:", "n_neighbors")


def test_bad_parameter_value(workdir, env):
    done = run("train", "knn", "-d", "uci-digits", "-p", "n_neighbors=0", "-o", "m",
               env=env, cwd=workdir)
    assert_one_error_line(done, "n_neighbors")
    assert not (workdir / "m").exists()


def test_unknown_model_kind(workdir, env):
    done = run("train", "forest", "-d", "uci-digits", env=env, cwd=workdir)
    assert_one_error_line(done, "unknown model kind 'forest'")


def test_missing_model_directory(workdir, env):
    done = run("evaluate", "no-such-model", env=env, cwd=workdir)
    assert_one_error_line(done, "no model at no-such-model")


def test_tampered_model(tampered, workdir, env):
    done = run("evaluate", tampered, env=env, cwd=workdir)
    assert_one_error_line(done, "knn__X.npy", "sha256")


def test_predict_with_a_missing_image_file(trained, workdir, env):
    done = run("predict", trained[1], "nowhere.png", env=env, cwd=workdir)
    assert_one_error_line(done, "nowhere.png", "no such file")
    assert done.stdout == ""


def test_predict_with_a_file_that_is_not_an_image(trained, workdir, env):
    (workdir / "notes.png").write_text("shopping list: milk, eggs\n")
    done = run("predict", trained[1], "notes.png", env=env, cwd=workdir)
    assert_one_error_line(done, "notes.png")
    assert done.stdout == ""


def test_show_past_the_last_test_image(trained, workdir, env):
    done = run("show", trained[1], "--index", 360, "-o", "y.png", env=env, cwd=workdir)
    assert_one_error_line(done, "--index 360")
    assert not (workdir / "y.png").exists()
