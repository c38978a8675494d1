"""Features: scikit-learn transformers of digit images, perturbed copies, scattering.

- :mod:`~digitrec.features.transformers`: deskewing and blurring transformers.
- :mod:`~digitrec.features.augment`: shifted/rotated reference copies and the distortions
  robust training uses.
- :mod:`~digitrec.features.styles`: MNIST zeros slashed and ones flagged, styles MNIST lacks.
- :mod:`~digitrec.features.scattering`: the wavelet scattering transform.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.features",
    {
        "Deskew": "transformers",
        "GaussianBlur": "transformers",
        "as_images": "transformers",
        "image_moments": "transformers",
        "augment": "augment",
        "augmentation_transforms": "augment",
        "distort": "augment",
        "styled_copies": "styles",
        "ScatteringFeatures": "scattering",
        "scattering_coefficients": "scattering",
    },
)
