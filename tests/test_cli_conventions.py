"""What users expect of any command-line tool: --version, `python -m`, environment variables,
quick start-up, progress they can turn off, and one `error:` line for each mistake."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import __version__, config, progress
from digitrec.data import datasets
from digitrec.evaluation.metrics import evaluate
from digitrec.evaluation.recorded import record, recorded

run = run_digitrec


def assert_one_error_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in env or env[k] is not None}
    environment.update({k: v for k, v in env.items() if v is not None})
    return subprocess.run(
        [sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True
    )


def digit_png(path: Path) -> Path:
    pixels = np.full((90, 70), 255, np.uint8)
    pixels[15:75, 30:40] = 0
    Image.fromarray(pixels).save(path)
    return path


# --- conventions ---------------------------------------------------------------------------


def test_version_option():
    done = run("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"digitrec {__version__}"


def test_python_dash_m_is_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "digitrec", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"digitrec {__version__}"


def test_shell_completion_is_offered():
    done = run("--help")
    assert "--install-completion" in done.stdout
    assert "--show-completion" in done.stdout


def test_cli_start_up_imports_no_heavy_library():
    # What `digitrec --help` loads: the CLI module, the error types and the image errors.
    done = python(
        "import sys, digitrec.apps.cli, digitrec.errors\n"
        "heavy = ('sklearn', 'numba', 'torch', 'cv2', 'matplotlib', 'scipy', 'kymatio')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert done.stdout.strip() == "[]"


def test_data_directory_follows_xdg_cache_home_when_digitrec_home_is_unset(tmp_path):
    done = python(
        "from digitrec import config; print(config.home())",
        DIGITREC_HOME=None,
        XDG_CACHE_HOME=str(tmp_path),
    )
    assert Path(done.stdout.strip()) == tmp_path / "digitrec"


def test_digitrec_home_wins_over_xdg_cache_home(tmp_path):
    done = python(
        "from digitrec import config; print(config.home())",
        DIGITREC_HOME=str(tmp_path / "mine"),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
    )
    assert Path(done.stdout.strip()) == tmp_path / "mine"


def test_serve_reads_its_model_from_digitrec_model(tmp_path):
    env = {**os.environ, "DIGITREC_MODEL": str(tmp_path / "no-model-here")}
    done = run("serve", env=env)
    assert_one_error_line(done, "no-model-here")


def test_serve_reads_its_port_from_digitrec_port(tmp_path):
    # Port 0 is outside --port's range: refused as a usage error naming the variable.
    env = {**os.environ, "DIGITREC_PORT": "0", "DIGITREC_HOST": "127.0.0.1"}
    done = run("serve", env=env)
    assert done.returncode == 2
    assert "DIGITREC_PORT" in done.stderr or "--port" in done.stderr


def test_usage_errors_exit_2_as_documented():
    done = run("predict", "--no-such-option")
    assert done.returncode == 2
    assert "No such option" in done.stderr
    assert "Traceback" not in done.stderr


def test_model_directories_get_the_users_umask(tmp_path):
    from digitrec import models

    uci = datasets.load("uci-digits").subset(100, 50)
    model = models.train("knn", uci)
    old = os.umask(0o022)
    try:
        models.save(model, tmp_path / "m")
    finally:
        os.umask(old)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o755


# --- mistakes: one error line, exit status 1 ------------------------------------------------


def test_train_size_smaller_than_the_classes(tmp_path):
    done = run("train", "knn", "-d", "uci-digits", "--train-size", 5, "-o", tmp_path / "m")
    assert_one_error_line(done, "5", "10 classes")
    assert not (tmp_path / "m").exists()


def test_a_subset_smaller_than_the_classes_is_a_dataset_error():
    from digitrec.errors import DatasetError

    with pytest.raises(DatasetError, match="at least 10"):
        datasets.load("uci-digits").subset(None, 3)


@pytest.mark.parametrize(
    "command",
    [
        ["data", "show", "uci-digits", "-o"],
        ["show", "-o"],
        ["report", "-o"],
    ],
)
def test_a_folder_given_where_a_file_is_written(tmp_path, command):
    folder = tmp_path / "out"
    folder.mkdir()
    done = run(*command, folder)
    assert_one_error_line(done, str(folder), "is a folder")
    assert list(folder.iterdir()) == []


def test_predict_checks_the_images_before_loading_any_model(tmp_path):
    # There is no default model in this DIGITREC_HOME: were the model loaded first, the
    # error would be about the model, not the image.
    done = run("predict", tmp_path / "nowhere.png")
    assert_one_error_line(done, "nowhere.png", "no such file")
    assert done.stdout == ""


def test_predict_refuses_a_file_of_another_type_before_loading_the_model(tmp_path):
    (tmp_path / "scan.gif").write_bytes(b"GIF89a" + bytes(40))
    done = run("predict", tmp_path / "scan.gif")
    assert_one_error_line(done, "GIF")


def test_predict_never_falls_back_to_the_default_model_for_a_mistyped_folder(tmp_path):
    photo = digit_png(tmp_path / "photo.png")
    done = run("predict", tmp_path / "modle", photo)
    assert_one_error_line(done, "modle", "no such model folder")
    assert done.stdout == ""


def test_predict_model_option_that_does_not_exist(tmp_path):
    photo = digit_png(tmp_path / "photo.png")
    done = run("predict", "-m", tmp_path / "modle", photo)
    assert_one_error_line(done, "modle")
    assert done.stdout == ""


# --- evaluate once ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uci_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uci") / "model"
    done = run("train", "knn", "-d", "uci-digits", "-o", out)
    assert done.returncode == 0, done.stderr
    return out


def test_predict_with_the_model_option(uci_model, tmp_path):
    photo = digit_png(tmp_path / "photo.png")
    done = run("predict", "--json", "-m", uci_model, photo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["path"] == str(photo)


def test_evaluate_reports_the_predictions_recorded_at_training(uci_model):
    done = run("evaluate", uci_model, "--json")
    fresh = run("evaluate", uci_model, "--json", "--test-size", 360)  # 360: the whole split
    assert done.returncode == 0 and fresh.returncode == 0, done.stderr + fresh.stderr
    recorded_result, computed = json.loads(done.stdout), json.loads(fresh.stdout)
    assert recorded_result["accuracy"] == computed["accuracy"]
    assert recorded_result["confusion"] == computed["confusion"]
    text = run("evaluate", uci_model)
    assert "recorded when it was trained" in text.stdout


def test_recorded_predictions_are_used_only_for_the_same_test_images():
    from digitrec import models

    uci = datasets.load("uci-digits")
    model = models.train("knn", uci)
    result = evaluate(model, uci.X_test, uci.y_test)
    record(model, uci, result)
    again = recorded(model, uci)
    assert again is not None
    np.testing.assert_array_equal(again.y_pred, result.y_pred)
    assert recorded(model, uci.subset(None, 100)) is None


# --- progress ------------------------------------------------------------------------------


def test_progress_is_off_unless_switched_on():
    stream = io.StringIO()
    with progress.bar(total=3, desc="work", file=stream, delay=0) as bar:
        bar.update(3)
    assert stream.getvalue() == ""


def test_progress_off_a_terminal_is_plain_lines():
    stream = io.StringIO()
    with progress.shown(), progress.bar(total=3, desc="work", file=stream, delay=0) as bar:
        bar.update(3)
    text = stream.getvalue()
    assert "\r" not in text
    assert text.splitlines()[-1].startswith("work: 100%")


def test_quiet_train_prints_no_progress(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DIGITREC_QUIET"}
    done = run("-q", "train", "knn", "-d", "uci-digits", "-o", tmp_path / "m", env=env)
    assert done.returncode == 0
    assert done.stderr == ""


@pytest.mark.slow
def test_compile_kernels_command():
    done = run("compile-kernels")
    assert done.returncode == 0, done.stderr
    assert "kernels ready in" in done.stdout


def test_default_kind_is_named_once():
    from digitrec import models

    assert models.DEFAULT_KIND == config.DEFAULT_KIND
