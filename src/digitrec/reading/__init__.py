"""From an image to a reading: ink, digits, MNIST tiles, the model's answer, pictures of it.

- :mod:`~digitrec.reading.ink`: finding the ink (polarity, threshold, components).
- :mod:`~digitrec.reading.segment`: the ink -> one box and one tile per digit.
- :mod:`~digitrec.reading.framing`: the one place a digit becomes a 28x28 MNIST tile.
- :mod:`~digitrec.reading.recognize`: the one recognition call, images -> readings.
- :mod:`~digitrec.reading.annotate`: a reading drawn onto its image.
"""

from digitrec._lazy import exports

__getattr__, __dir__, __all__ = exports(
    "digitrec.reading",
    {
        "find_ink": "ink",
        "NO_INK": "ink",
        "Segmentation": "segment",
        "segment": "segment",
        "TILE": "framing",
        "to_mnist_tile": "framing",
        "frame_like_mnist": "framing",
        "centre_by_mass": "framing",
        "DigitReading": "recognize",
        "Reading": "recognize",
        "read_image": "recognize",
        "read_images": "recognize",
        "find_digits": "recognize",
        "tiles_to_model_input": "recognize",
        "write_annotations": "annotate",
    },
)
