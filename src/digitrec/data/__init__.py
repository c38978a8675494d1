"""Data in: named datasets (MNIST, UCI digits, folder datasets) and the one safe image loader.

- :mod:`~digitrec.data.datasets`: ``load(name)`` and the :class:`Dataset` it returns.
- :mod:`~digitrec.data.pen_digits`: the UNIPEN pen digits shipped with digitrec, the
  writer split, and the tiles the default model trains on.
- :mod:`~digitrec.data.images`: :func:`load_image`, bytes or a path -> uint8 greyscale,
  with size limits.
- :mod:`~digitrec.data.folders`: the one reader of ``PATH/<digit>/*`` folder datasets.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.data",
    {
        "Dataset": "datasets",
        "load": "datasets",
        "load_mnist": "datasets",
        "load_mnist_unipen": "datasets",
        "PenDigits": "pen_digits",
        "training_tiles": "pen_digits",
        "load_uci_digits": "datasets",
        "load_folder": "datasets",
        "load_image": "images",
        "labelled_image_files": "folders",
        "READABLE_SUFFIXES": "folders",
    },
)
