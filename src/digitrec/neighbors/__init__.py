"""Nearest-neighbour models and the exact search engine beneath them.

- :mod:`~digitrec.neighbors.search`: the exact k-nearest-neighbour engine.
- :mod:`~digitrec.neighbors.knn`: :class:`KNNClassifier`, a scikit-learn estimator.
- :mod:`~digitrec.neighbors.idm`: :class:`IDMClassifier`, re-ranking by image distortion.
- :mod:`~digitrec.neighbors.hyperplane`: local tangent hyperplanes.
- :mod:`~digitrec.neighbors.hybrid`: :class:`HybridClassifier` (``knn-idm-hknn``).
- :mod:`~digitrec.neighbors.personal`: :class:`PersonalModel`, a model plus the user's samples.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.neighbors",
    {
        "NeighborIndex": "search",
        "METRICS": "search",
        "KNNClassifier": "knn",
        "vote": "knn",
        "IDMClassifier": "idm",
        "LocalHyperplanes": "hyperplane",
        "HybridClassifier": "hybrid",
        "Neighbor": "personal",
        "PersonalModel": "personal",
        "learns_from_samples": "personal",
    },
)
