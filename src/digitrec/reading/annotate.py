"""Pictures of what was read: the image with a box and label per digit, and the tiles seen."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from digitrec.persistence.atomic import atomic_write_bytes
from digitrec.reading.recognize import Reading


def boxed_image(image: np.ndarray, reading: Reading) -> np.ndarray:
    """A colour copy of ``image`` with each digit's box and answer drawn on it."""
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    thickness = max(1, round(max(image.shape) / 300))
    scale = max(0.4, max(image.shape) / 800)
    for digit in reading.digits:
        x, y, w, h = digit.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), (40, 90, 230), thickness)
        label = f"{digit.digit} {digit.probability:.0%}"
        cv2.putText(
            canvas,
            label,
            (x, max(12, y - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (40, 90, 230),
            thickness,
            cv2.LINE_AA,
        )
    return canvas


def tile_strip(reading: Reading, zoom: int = 4) -> np.ndarray:
    """The 28x28 tiles the model saw, side by side, enlarged."""
    if not reading.digits:
        return np.zeros((28 * zoom, 28 * zoom), dtype=np.uint8)
    strip = np.concatenate([np.pad(d.tile, 2, constant_values=80) for d in reading.digits], axis=1)
    return cv2.resize(strip, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_NEAREST)


def write_annotations(directory: Path, source: Path, image: np.ndarray, reading: Reading) -> None:
    """``NAME.boxes.png`` and ``NAME.tiles.png`` for one input image."""
    for suffix, picture in (("boxes", boxed_image(image, reading)), ("tiles", tile_strip(reading))):
        ok, encoded = cv2.imencode(".png", picture)
        if ok:
            atomic_write_bytes(
                Path(directory) / f"{Path(source).stem}.{suffix}.png", encoded.tobytes()
            )
