"""A digit network exported to ONNX, run by onnxruntime: no PyTorch needed to use it.

digitrec ships one such network, the ``cnn-robust`` model that the web app also runs on the
phone when it is offline (:func:`shipped`, made by ``make on-device-model``). The default
model, ``knn-idm-hknn``, asks it for a second opinion (see :mod:`digitrec.neighbors.hybrid`):
the network learned the shape of each digit from every training image (MNIST, the UNIPEN
tuning writers' digits, slashed and flagged copies) and distorted copies, the neighbour
model compares with single references, and the two err on different digits.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources

import numpy as np

from digitrec.errors import ModelFileError

__all__ = ["OnnxNetwork", "shipped", "SHIPPED_DIRECTORY"]

SHIPPED_DIRECTORY = resources.files("digitrec.nets") / "ondevice"
SIDE = 28
N_CLASSES = 10
# Bigger than any digit network digitrec makes (the shipped one is 0.44 MB), small enough
# that a model file cannot make a reader allocate much for it.
MAX_BYTES = 20_000_000


class OnnxNetwork:
    """An ONNX network taking MNIST-format tiles ``(n, 1, 28, 28)`` of float pixel values
    0..255 (white ink on black) and returning the probabilities of the digits 0-9,
    ``(n, 10)``: what ``digitrec export --format onnx`` writes.

    Refuses (:class:`~digitrec.errors.ModelFileError`) bytes that are not such a network.
    It runs on one thread: a server reads one request's digits at a time, and the sums
    come out the same on every machine.
    """

    def __init__(self, data: bytes) -> None:
        import onnxruntime

        if len(data) > MAX_BYTES:
            raise ModelFileError(f"network is {len(data)} bytes, more than {MAX_BYTES}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only: its warnings are not the user's
        try:
            self._session = onnxruntime.InferenceSession(
                data, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelFileError(f"network is not a readable ONNX model: {exc}") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or list(inputs[0].shape)[1:] != [1, SIDE, SIDE]
            or list(outputs[0].shape)[1:] != [N_CLASSES]
        ):
            raise ModelFileError(
                "network does not take (n, 1, 28, 28) tiles to (n, 10) digit probabilities"
            )
        self._input = inputs[0].name
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()

    def __reduce__(self):
        # A session cannot be copied; a copy (an estimator's deepcopy, a Dask worker's
        # model) builds its own from the same bytes.
        return (OnnxNetwork, (self.data,))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """The probabilities of 0-9, ``(n, 10)``, of MNIST-format tiles ``(n, 28, 28)``."""
        tiles = np.asarray(images, np.float32).reshape(-1, 1, SIDE, SIDE)
        if len(tiles) == 0:
            return np.zeros((0, N_CLASSES))
        proba = self._session.run(None, {self._input: tiles})[0].astype(np.float64)
        if proba.shape != (len(tiles), N_CLASSES) or not np.isfinite(proba).all():
            raise ModelFileError("network answered with something other than probabilities")
        return proba


def shipped() -> OnnxNetwork:
    """The network digitrec ships, checked against the sha256 its description records."""
    data = (SHIPPED_DIRECTORY / "model.onnx").read_bytes()
    described = json.loads((SHIPPED_DIRECTORY / "model.json").read_text())
    network = OnnxNetwork(data)
    if network.sha256 != described["sha256"]:
        raise ModelFileError("the shipped network does not match its description's sha256")
    return network
