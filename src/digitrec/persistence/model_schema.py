"""What each kind of model may hold: checked on the manifest before any array is read.

A model directory's signature says its files are the ones written, not that digitrec wrote
them: anyone can edit ``model.json`` and sign it again. So every kind declares its arrays
here: their names, dtypes, and shapes in terms of a few named sizes (``n`` references,
``c`` classes, ``h``x``w`` input pixels...). :func:`check_manifest` binds those sizes from
the manifest, refuses any that disagree or exceed the kind's caps, and checks the input
description and the parameters that depend on them, all from the manifest alone, so a file
that declares 58 TiB or a 100000x100000 input is refused without allocating anything.
:func:`check_arrays` then checks the values (finite numbers, labels in range, sorted
classes) once read, before any estimator is built from them.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitrec.errors import ModelFileError

# Largest input image side a model may take (MNIST is 28, UCI 8); the readers resize every
# image to it, so it bounds the work and memory of each prediction.
MAX_SIDE = 256
MAX_VALUE = 65535
MAX_CLASSES = 1000

# Caps on the free sizes; any kind's own sizes are bound to these or to the input shape.
CAPS = {
    "n": 10_000_000,  # reference images
    "c": MAX_CLASSES,
    "r": MAX_CLASSES,  # rows of a linear model's coefficients: one per class, or one
    "k": 4096,  # principal components
    "s": 100_000,  # scattering coefficients
    "m": 4096,  # scattering components kept
    "t": 100_000,  # trees
    "N": 200_000_000,  # tree nodes, all trees together
    "v": 10_000_000,  # support vectors
    "p": MAX_CLASSES * (MAX_CLASSES - 1) // 2,  # class pairs
    "q": MAX_CLASSES * (MAX_CLASSES - 1) // 2,  # probability calibration: 0 or p
    "any": 64_000_000,  # one dimension of a network weight
    "o": 20_000_000,  # bytes of an ONNX network (digitrec.nets.onnx_network.MAX_BYTES)
}


@dataclass(frozen=True)
class ArraySpec:
    """One array a kind may save: allowed dtype kinds and its shape in named sizes."""

    kinds: str  # numpy dtype kinds: "u", "i", "f", "b", "U"
    shape: tuple[str | int, ...] | None  # None: any shape of up to 4 dimensions ("any" each)
    required: bool = True
    labels_of: str | None = None  # integer values are indices into the named size


INDEX = "iu"
INT_OR_LABEL = "iuU"

_FLATTEN_KNN = {
    "knn__X": ArraySpec("uif", ("n", "d")),
    "knn__y": ArraySpec(INDEX, ("n",), labels_of="c"),
    "knn__classes": ArraySpec(INT_OR_LABEL, ("c",)),
}
_LINEAR = {
    "scale__scale": ArraySpec("f", ("d",)),
    "scale__var": ArraySpec("f", ("d",)),
    "scale__mean": ArraySpec("f", ("d",), required=False),
    "svc__coef": ArraySpec("f", ("r", "d")),
    "svc__intercept": ArraySpec("f", ("r",)),
    "svc__classes": ArraySpec(INT_OR_LABEL, ("c",)),
}
_NODE_FIELDS = {
    "left_child": "i",
    "right_child": "i",
    "feature": "i",
    "threshold": "f",
    "impurity": "f",
    "n_node_samples": "i",
    "weighted_n_node_samples": "f",
    "missing_go_to_left": "u",
}
_FOREST = {
    **{f"forest__node_{name}": ArraySpec(kind, ("N",)) for name, kind in _NODE_FIELDS.items()},
    "forest__values": ArraySpec("f", ("N", 1, "c")),
    "forest__node_counts": ArraySpec(INDEX, ("t",)),
    "forest__max_depths": ArraySpec(INDEX, ("t",)),
    "forest__classes": ArraySpec(INT_OR_LABEL, ("c",)),
}
_SVC = {
    "svc__classes": ArraySpec(INT_OR_LABEL, ("c",)),
    "svc__class_weight": ArraySpec("f", ("c",)),
    "svc__support": ArraySpec(INDEX, ("v",)),
    "svc__support_vectors": ArraySpec("f", ("v", "d")),
    "svc__n_support": ArraySpec(INDEX, ("c",)),
    "svc__dual_coef": ArraySpec("f", ("c-1", "v")),
    "svc__intercept": ArraySpec("f", ("p",)),
    "svc__prob_a": ArraySpec("f", ("q",)),
    "svc__prob_b": ArraySpec("f", ("q",)),
    "svc__n_iter": ArraySpec(INDEX, ("p",)),
}
_IDM = {
    "images": ArraySpec("u", ("n", "h", "w")),
    "labels": ArraySpec(INDEX, ("n",), labels_of="c"),
    "classes": ArraySpec(INT_OR_LABEL, ("c",)),
    "pca_mean": ArraySpec("f", ("d",), required=False),
    "pca_components": ArraySpec("f", ("k", "d"), required=False),
    # The first stage's search vectors: PCA projections, or pixels without PCA.
    "stage1_refs": ArraySpec("f", ("n", "k|d"), required=False),
}
_HYBRID = {
    **_IDM,
    "scattering_mean": ArraySpec("f", ("s",)),
    "scattering_scale": ArraySpec("f", ("s",)),
    "scattering_components": ArraySpec("f", ("m", "s"), required=False),
    "scattering_refs": ArraySpec("f", ("n", "m|s")),
    # The network asked for a second opinion (network_weight > 0), as ONNX bytes.
    "network_onnx": ArraySpec("u", ("o",), required=False),
}

# None: the kind's array names come from its network (checked when the network is built);
# here each is a float array of bounded size.
SCHEMAS: dict[str, dict[str, ArraySpec] | None] = {
    "knn": _FLATTEN_KNN,
    "linear-svc": _LINEAR,
    "random-forest": _FOREST,
    "svc-rbf": _SVC,
    "cnn": None,
    "cnn-robust": None,
    # The softmin temperature of its probabilities (models saved before it have none).
    "knn-idm": _IDM | {"calibration_temperature": ArraySpec("f", (1,), required=False)},
    "knn-idm-hknn": _HYBRID,
}
_NETWORK_ARRAY = ArraySpec("f", None)
MAX_NETWORK_VALUES = 50_000_000

# Parameters that count references and that no model can take more of than it holds (the
# IDM's n_candidates and the hyperplanes' hyperplane_k stop at the references there are).
COUNTS_OF_REFERENCES = ("n_neighbors",)


def check_manifest(manifest: dict[str, Any], where: str) -> dict[str, int]:
    """Check a structurally valid manifest against its kind; returns the bound sizes."""
    kind = manifest["kind"]
    if kind not in SCHEMAS:
        raise ModelFileError(f"{where}: unknown model kind {kind!r}")
    sizes = _input_sizes(manifest.get("input"), where)
    entries = manifest["arrays"]
    schema = SCHEMAS[kind]
    if schema is None:
        _check_network(entries, where)
        return sizes
    unknown = sorted(set(entries) - set(schema))
    if unknown:
        raise ModelFileError(f"{where}: a {kind} model has no array {unknown[0]!r}")
    for name, spec in schema.items():
        if name not in entries:
            if spec.required:
                raise ModelFileError(f"{where}: a {kind} model needs the array {name!r}")
            continue
        _bind(name, spec, entries[name], sizes, where)
    _check_params(manifest.get("params", {}), sizes, where)
    return sizes


def _input_sizes(described: Any, where: str) -> dict[str, int]:
    """``h``, ``w`` and ``d`` from the manifest's input description, checked."""
    if not isinstance(described, dict):
        raise ModelFileError(f"{where}: model.json lacks the input description")
    shape, top = described.get("shape"), described.get("max_value")
    if not (
        isinstance(shape, list)
        and len(shape) == 2
        and all(_is_int(s) and 1 <= s <= MAX_SIDE for s in shape)
    ):
        raise ModelFileError(
            f"{where}: input shape {shape!r} is not two sides of 1..{MAX_SIDE} pixels"
        )
    if not (
        isinstance(top, numbers.Real)
        and not isinstance(top, bool)
        and math.isfinite(top)
        and 0 < top <= MAX_VALUE
    ):
        raise ModelFileError(f"{where}: input max_value {top!r} is not in (0, {MAX_VALUE}]")
    return {"h": shape[0], "w": shape[1], "d": shape[0] * shape[1]}


def _bind(name: str, spec: ArraySpec, entry: dict, sizes: dict[str, int], where: str) -> None:
    dtype = np.dtype(entry["dtype"])
    if dtype.kind not in spec.kinds:
        raise ModelFileError(
            f"{where}: array {name!r} has dtype {dtype}, not of kinds {spec.kinds}"
        )
    shape = entry["shape"]
    if len(shape) != len(spec.shape):
        raise ModelFileError(
            f"{where}: array {name!r} has {len(shape)} dimensions, expected {len(spec.shape)}"
        )
    for size, symbol in zip(shape, spec.shape, strict=True):
        if isinstance(symbol, int):
            expected = symbol
        elif symbol == "c-1":
            expected = sizes.get("c", size + 1) - 1
        elif symbol == "m|s":  # the scattering components kept, or all of them
            expected = sizes.get("m", sizes.get("s", size))
        elif symbol == "k|d":  # the principal components kept, or every pixel
            expected = sizes.get("k", sizes.get("d", size))
        else:
            expected = sizes.setdefault(symbol, size)
            cap = CAPS.get(symbol)
            if cap is not None and size > cap:
                raise ModelFileError(
                    f"{where}: array {name!r} has {size} {symbol!r}; at most {cap}"
                )
        if size != expected:
            raise ModelFileError(
                f"{where}: array {name!r} has shape {shape}, inconsistent with the others"
            )
    if "c" in sizes and sizes["c"] < 2:
        raise ModelFileError(f"{where}: a model needs at least two classes")
    if "p" in sizes and sizes["p"] != sizes.get("c", 0) * (sizes.get("c", 0) - 1) // 2:
        raise ModelFileError(f"{where}: {name!r} does not have one entry per pair of classes")
    if sizes.get("q") not in (None, 0, sizes.get("p")):
        raise ModelFileError(f"{where}: probability calibration has neither 0 nor one per pair")


def _check_network(entries: dict, where: str) -> None:
    total = 0
    for name, entry in entries.items():
        dtype, shape = np.dtype(entry["dtype"]), entry["shape"]
        if dtype.kind != "f" or not 1 <= len(shape) <= 4:
            raise ModelFileError(f"{where}: network weight {name!r} is not a float array")
        total += math.prod(shape)
    if total > MAX_NETWORK_VALUES:
        raise ModelFileError(f"{where}: the network's {total} weights exceed {MAX_NETWORK_VALUES}")


def _check_params(params: dict, sizes: dict[str, int], where: str) -> None:
    n = sizes.get("n")
    for name in COUNTS_OF_REFERENCES:
        value = params.get(name)
        if n is not None and _is_int(value) and value > n:
            raise ModelFileError(f"{where}: {name}={value} but the model holds {n} references")


def check_arrays(kind: str, arrays: dict[str, np.ndarray], sizes: dict[str, int], where: str):
    """Values, once read: every float finite, every label index in range, classes sorted
    and distinct (the order the estimators' answers are looked up in)."""
    schema = SCHEMAS.get(kind) or {}
    for name, array in arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise ModelFileError(f"{where}: array {name!r} holds NaN or infinite values")
        spec = schema.get(name)
        if spec is not None and spec.labels_of is not None and array.size:
            top = sizes[spec.labels_of]
            if array.min() < 0 or array.max() >= top:
                raise ModelFileError(f"{where}: array {name!r} holds labels outside 0..{top - 1}")
        if name.endswith("classes") and not _strictly_increasing(array):
            raise ModelFileError(f"{where}: array {name!r} is not sorted and distinct")


def _strictly_increasing(array: np.ndarray) -> bool:
    return array.ndim != 1 or bool((array[1:] > array[:-1]).all())


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
