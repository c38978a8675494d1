"""Trained models -> ONNX files that browsers and phones run (onnxruntime, onnxruntime-web).

Only the networks export: ``cnn`` and ``cnn-robust``. The exported graph takes what the web
page and :mod:`digitrec.reading.segment` produce, MNIST-format tiles ``(n, 1, 28, 28)`` of float
pixel values 0..255 (white ink on black), and returns class probabilities ``(n, classes)``:
the scaling, normalisation and softmax of :meth:`CNNClassifier.predict_proba` are inside
the graph, so a runtime needs nothing from digitrec to get the same answers.

The other kinds cannot be exported, each for the reason in :data:`NOT_EXPORTABLE`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np

from digitrec import __version__
from digitrec.errors import ParameterError
from digitrec.models import Model
from digitrec.nets.cnn import IMAGE_SIDE, PIXEL_MEAN, PIXEL_STD, CNNClassifier
from digitrec.persistence.atomic import atomic_write_bytes

EXPORTABLE = ("cnn", "cnn-robust")
FORMATS = ("onnx",)
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
# The oldest opset torch's exporter writes; onnxruntime (web included) runs it since 1.14.
OPSET = 18

_SEARCHES = (
    "decides by searching all {n} of its training images, which it carries ({mb:.0f} MB); "
    "ONNX has no nearest-neighbour search, and a phone should not download {mb:.0f} MB"
)
NOT_EXPORTABLE = {
    "knn": _SEARCHES,
    "knn-idm": _SEARCHES + " (nor run the image distortion model's pixel matching)",
    "knn-idm-hknn": _SEARCHES + " (nor run the image distortion model's pixel matching)",
    "random-forest": "is a scikit-learn forest; digitrec exports its own networks only "
    "(converting scikit-learn models needs skl2onnx, which digitrec does not depend on)",
    "linear-svc": "is a scikit-learn LinearSVC; digitrec exports its own networks only "
    "(converting scikit-learn models needs skl2onnx, which digitrec does not depend on)",
    "svc-rbf": "is a scikit-learn SVC that keeps its support vectors; digitrec exports its "
    "own networks only (converting scikit-learn models needs skl2onnx, which digitrec does "
    "not depend on)",
}

MISSING_ONNX_MESSAGE = "ONNX export needs the export extra: pip install 'digitrec[export]'"


def check_exportable(model: Model, fmt: str = "onnx") -> None:
    """Raise :class:`ParameterError` with a one-line reason if ``model`` cannot be exported."""
    if fmt not in FORMATS:
        raise ParameterError(f"unknown export format {fmt!r}: choose from {', '.join(FORMATS)}")
    if model.kind in EXPORTABLE:
        if tuple(model.input_shape) != (IMAGE_SIDE, IMAGE_SIDE):
            raise ParameterError(f"only 28x28 networks export; this one takes {model.input_shape}")
        return
    reason = NOT_EXPORTABLE.get(model.kind, "is not a network")
    n = int(model.info.get("dataset", {}).get("n_train") or 0)
    megabytes = n * int(np.prod(model.input_shape)) / 1e6
    raise ParameterError(
        f"a {model.kind} model cannot be exported to ONNX: it "
        + reason.format(n=n, mb=megabytes)
        + f"; export one of {', '.join(EXPORTABLE)} instead"
    )


def onnx_bytes(model: Model) -> bytes:
    """The ONNX file of a ``cnn`` or ``cnn-robust`` model, as bytes."""
    check_exportable(model)
    torch = _import_export_tools()
    classifier = model.estimator
    if not isinstance(classifier, CNNClassifier):
        raise ParameterError(f"a {model.kind} model holds no network to export")
    network = _tile_network(torch, classifier.network_)
    example = torch.zeros(1, 1, IMAGE_SIDE, IMAGE_SIDE)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # torch's exporter warns about its own use of deprecated pytree classes; nothing a
        # user of `digitrec export` can act on.
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(
            network,
            (example,),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"tiles": {0: torch.export.Dim("n")}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    return _with_metadata(program.model_proto, model)


def export_onnx(model: Model, path: str | Path) -> Path:
    """Write ``model`` as an ONNX file at ``path`` (atomically); returns the path."""
    path = Path(path)
    atomic_write_bytes(path, onnx_bytes(model))
    return path


def description(model: Model, onnx_path: str | Path) -> dict:
    """What a page needs beside an exported file: the kind and classes of the model, its
    test accuracy, what it was trained on, and the file's size and digest."""
    data = Path(onnx_path).read_bytes()
    return {
        "kind": model.kind,
        "classes": [int(c) for c in model.classes],
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "mnist_test_accuracy": model.info.get("metrics", {}).get("accuracy"),
        "dataset": model.info.get("dataset", {}),
        "params": model.params,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "digitrec_version": __version__,
    }


def _import_export_tools():
    try:
        # torch.onnx.export needs both to translate and write the graph.
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
        import torch
    except ImportError as exc:
        raise ParameterError(MISSING_ONNX_MESSAGE) from exc
    return torch


def _tile_network(torch, network):
    """``network`` wrapped so that it takes 0..255 tiles and answers probabilities (the
    class is built here because torch is only imported when exporting)."""

    class TileNetwork(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, tiles):
            normalised = (tiles / 255.0 - PIXEL_MEAN) / PIXEL_STD
            return torch.softmax(self.network(normalised), dim=1)

    return TileNetwork().eval()


def _with_metadata(proto, model: Model) -> bytes:
    """The ONNX file of ``proto`` with what a runtime needs to read the answers: the
    classes, the input format, and where the model came from."""
    metadata = {
        "digitrec.kind": model.kind,
        "digitrec.version": __version__,
        "digitrec.classes": json.dumps([int(c) for c in model.classes]),
        "digitrec.input": "MNIST-format tiles (n, 1, 28, 28): float 0..255, white ink on black, "
        "longest side of the digit 20 px, centre of mass on pixel (14, 14)",
        "digitrec.test_accuracy": json.dumps(model.info.get("metrics", {}).get("accuracy")),
        "digitrec.dataset": json.dumps(model.info.get("dataset", {})),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "digitrec"
    proto.producer_version = __version__
    return proto.SerializeToString()
