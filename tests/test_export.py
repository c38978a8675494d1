"""ONNX export: the exported network answers as the Python model does, through onnxruntime;
kinds that cannot be exported say why in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_digitrec

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

from digitrec import models  # noqa: E402
from digitrec.errors import ParameterError  # noqa: E402
from digitrec.nets import export  # noqa: E402


@pytest.fixture(scope="module")
def small_mnist(mnist):
    return mnist.subset(3000, 500, seed=0)


@pytest.fixture(scope="module")
def cnn_dir(small_mnist, tmp_path_factory):
    """A cnn trained for two epochs on 3,000 MNIST images, saved as a model directory."""
    params = {"epochs": 2, "n_threads": 1, "seed": 3}
    model = models.train("cnn", small_mnist, params)
    model.info["metrics"] = {"accuracy": float(model.estimator.score(
        small_mnist.X_test, small_mnist.y_test))}  # fmt: skip
    return models.save(model, tmp_path_factory.mktemp("export") / "cnn")


def run_onnx(path, tiles: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(
        [export.OUTPUT_NAME], {export.INPUT_NAME: tiles[:, None].astype(np.float32)}
    )
    return probabilities


def test_exported_cnn_gives_the_python_models_answers(cnn_dir, small_mnist, tmp_path):
    result = run_digitrec("export", cnn_dir, "--format", "onnx", "-o", tmp_path / "cnn.onnx")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    model = models.load(cnn_dir)
    X = small_mnist.X_test
    expected = model.predict_proba(X)
    got = run_onnx(tmp_path / "cnn.onnx", X)
    assert got.shape == expected.shape == (len(X), 10)
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    # Far above chance, so the equality above is not two models agreeing on noise.
    assert (model.classes[got.argmax(1)] == small_mnist.y_test).mean() > 0.8


def test_the_description_names_the_file_it_describes(cnn_dir, tmp_path):
    out, about = tmp_path / "m.onnx", tmp_path / "m.json"
    result = run_digitrec("export", cnn_dir, "-o", out, "--describe", about)
    assert result.returncode == 0, result.stderr
    described = json.loads(about.read_text())
    assert described["kind"] == "cnn" and described["classes"] == list(range(10))
    assert described["bytes"] == out.stat().st_size
    assert described["mnist_test_accuracy"] == models.load(cnn_dir).info["metrics"]["accuracy"]


def test_exported_file_names_its_classes_and_input(cnn_dir, tmp_path):
    path = export.export_onnx(models.load(cnn_dir), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["digitrec.classes"]) == list(range(10))
    assert meta["digitrec.kind"] == "cnn"
    assert "0..255" in meta["digitrec.input"]
    assert [i.name for i in proto.graph.input] == [export.INPUT_NAME]
    assert path.stat().st_size < 1_000_000


def test_a_batch_of_one_and_of_many_give_the_same_answers(cnn_dir, small_mnist, tmp_path):
    path = export.export_onnx(models.load(cnn_dir), tmp_path / "m.onnx")
    X = small_mnist.X_test[:5]
    together = run_onnx(path, X)
    apart = np.concatenate([run_onnx(path, X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(together, apart, atol=1e-6)


def test_a_neighbour_model_is_refused_with_the_reason(mnist, tmp_path):
    knn = models.save(models.train("knn", mnist.subset(500, 10, seed=0)), tmp_path / "knn")
    result = run_digitrec("export", knn, "-o", tmp_path / "knn.onnx")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: a knn model cannot be exported to ONNX")
    assert "nearest-neighbour" in lines[0] and "cnn" in lines[0]
    assert not (tmp_path / "knn.onnx").exists()


def test_every_kind_is_either_exportable_or_has_a_reason():
    assert set(models.REGISTRY) == set(export.EXPORTABLE) | set(export.NOT_EXPORTABLE)


def test_an_unknown_format_is_refused(cnn_dir, tmp_path):
    with pytest.raises(ParameterError, match="unknown export format 'tflite'"):
        export.check_exportable(models.load(cnn_dir), "tflite")
