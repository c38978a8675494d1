"""`digitrec compare`: several models on one split, each measured in its own child process."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import models
from digitrec.errors import DatasetError, ParameterError
from digitrec.evaluation import compare
from digitrec.evaluation.metrics import evaluate


@pytest.fixture(scope="module")
def rows():
    """knn, a small forest and svc-rbf capped at 300 training images, on UCI digits."""
    reported = []
    found, skipped = compare.compare(
        "uci-digits",
        ["knn", "random-forest", "svc-rbf"],
        params={"random-forest": {"n_estimators": 10}},
        limits={"svc-rbf": 300},
        progress=False,
        on_row=reported.append,
    )
    assert skipped == [] and reported == found
    return {row.model: row for row in found}


def test_one_row_per_model_on_the_same_test_split(rows, uci):
    assert list(rows) == ["knn", "random-forest", "svc-rbf"]
    for row in rows.values():
        assert row.dataset == "uci-digits"
        assert row.n_test == len(uci.y_test)
        assert 0.85 < row.accuracy <= 1.0
        assert row.fit_seconds > 0 and row.fit_cpu_seconds > 0
        assert row.predict_seconds_per_1000 > 0


def test_child_measures_the_same_accuracy_as_training_here(rows, uci):
    expected = evaluate(models.train("knn", uci), uci.X_test, uci.y_test).accuracy
    assert rows["knn"].accuracy == expected


def test_a_training_limit_subsets_that_model_and_says_so(rows, uci):
    assert rows["svc-rbf"].n_train == 300
    assert "300 of 1,437" in rows["svc-rbf"].note
    assert rows["knn"].n_train == len(uci.y_train) and rows["knn"].note == ""


def test_size_is_the_saved_model_on_disk(rows, uci):
    # A kNN model stores its training images: 1,437 x 64 bytes at least.
    assert rows["knn"].size_mb * 1e6 >= uci.X_train.size
    # The svc keeps some of its 300 training images as 64 float64 support-vector values each.
    assert 64 * 8 * 10 < rows["svc-rbf"].size_mb * 1e6 < 64 * 8 * 300 + 100_000
    assert rows["random-forest"].size_mb > 0


def test_peak_memory_is_the_child_high_water_mark(rows):
    for row in rows.values():
        # A fresh interpreter with numpy and scikit-learn is tens of MB at the very least.
        assert 30 < row.base_mb <= row.peak_mb < 4000


def test_rows_serialise_to_json_and_format_as_a_table(rows):
    table = compare.format_table(list(rows.values()))
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["model", "train", "test", "accuracy"]
    assert [line.split()[0] for line in lines[2:]] == ["knn", "random-forest", "svc-rbf"]
    assert "trained on 300 of 1,437" in lines[-1]
    row = json.loads(json.dumps(rows["knn"].to_json()))
    assert row["model"] == "knn" and row["accuracy"] == round(rows["knn"].accuracy, 6)


def test_default_models_leave_out_the_cnn_for_8x8_images():
    chosen, skipped = compare.choose_models(None, (8, 8))
    assert chosen == ["knn", "random-forest", "linear-svc", "svc-rbf"]
    assert skipped == ["cnn left out: it takes 28x28 images, the dataset has 8x8"]


def test_default_models_on_mnist_include_the_cnn_when_torch_is_there():
    pytest.importorskip("torch")
    chosen, skipped = compare.choose_models(None, (28, 28))
    assert chosen == list(compare.DEFAULT_MODELS) and skipped == []


def test_explicit_models_are_checked_before_any_work():
    with pytest.raises(ParameterError, match="cnn: it takes 28x28"):
        compare.choose_models(["knn", "cnn"], (8, 8))
    with pytest.raises(ParameterError, match="unknown model kind 'forest'"):
        compare.choose_models(["forest"], (28, 28))
    with pytest.raises(ParameterError, match="bad parameter for knn"):
        compare.compare("uci-digits", ["knn"], params={"knn": {"bogus": 1}}, progress=False)
    with pytest.raises(DatasetError):
        compare.compare("no-such-data", ["knn"], progress=False)


@pytest.mark.slow
def test_cli_prints_json_rows_and_writes_the_chart(tmp_path):
    done = run_digitrec(
        "compare",
        "-d",
        "uci-digits",
        "--models",
        "knn,linear-svc",
        "--test-size",
        "200",
        "--json",
        "--plots",
        tmp_path / "plots",
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [row["model"] for row in found] == ["knn", "linear-svc"]
    assert {row["n_test"] for row in found} == {200}
    assert set(found[0]) >= {
        "accuracy",
        "fit_seconds",
        "predict_seconds_per_1000",
        "size_mb",
        "peak_mb",
        "note",
    }
    chart = Image.open(tmp_path / "plots" / "compare.png")
    assert chart.width > 800 and np.asarray(chart.convert("L")).std() > 10


def test_cli_text_table_and_one_line_error(tmp_path):
    done = run_digitrec("compare", "-d", "uci-digits", "--models", "knn", "--test-size", "100")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[2].split()[:3] == ["knn", "1437", "100"]
    done = run_digitrec("compare", "-d", "uci-digits", "--models", "cnn")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: cnn: it takes 28x28 images, the dataset has 8x8"
