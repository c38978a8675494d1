"""Neural networks (PyTorch, the ``cnn`` extra; torch is imported when a name is used).

- :mod:`~digitrec.nets.cnn`: :class:`CNNClassifier`.
- :mod:`~digitrec.nets.robust`: :class:`RobustCNNClassifier`, trained on distorted copies too.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.nets",
    {
        "CNNClassifier": "cnn",
        "RobustCNNClassifier": "robust",
    },
)
