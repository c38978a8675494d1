"""Test and benchmark data: deterministic handwriting images, never used by the product.

- :mod:`~digitrec.testing.synthetic`: phone-photo-like and canvas-like images of digits and
  numbers rendered from handwriting fonts and UCI digits, for a seed.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.testing",
    {
        "photo": "synthetic",
        "photos": "synthetic",
        "drawing": "synthetic",
        "drawings": "synthetic",
        "pain_point": "synthetic",
    },
)
