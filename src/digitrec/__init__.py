"""digitrec: handwritten digit recognition, from MNIST to phone photos.

The layers, from input to output (see docs/architecture.md): :mod:`digitrec.data`
(datasets, image loading), :mod:`digitrec.reading` (ink, segmentation, framing, the one
recognition call), :mod:`digitrec.features`, :mod:`digitrec.neighbors` and
:mod:`digitrec.nets` (the estimators), :mod:`digitrec.models` (the registry of model kinds),
:mod:`digitrec.persistence`, :mod:`digitrec.evaluation` and :mod:`digitrec.apps` (CLI, web,
batch).
"""

from digitrec._lazy import exports

__version__ = "0.1.0"

__getattr__, __dir__, _names = exports(
    "digitrec", {"KNNClassifier": "neighbors.knn", "datasets": "data.datasets"}
)
__all__ = [*_names, "__version__"]
