"""A page with a soft shadow across it, for the tests of ink finding and sheet finding."""

from __future__ import annotations

import cv2
import numpy as np


def shadow_off_the_edge(angle: float, offset: float, depth: float = 0.5) -> np.ndarray:
    """A thin '1' on a page with a shadow edge that runs off the image: light times
    ``1 - depth * sigmoid`` across a line at ``angle`` degrees, ``offset`` px from the
    centre (negative: most of the page is in the shadow)."""
    h, w = 240, 320
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    rad = np.deg2rad(angle)
    distance = (xs - w / 2) * np.cos(rad) + (ys - h / 2) * np.sin(rad) - offset
    light = 1 - depth / (1 + np.exp(-distance / 10.0))
    page = np.full((h, w), 230, np.float32)
    cv2.line(page, (160, 60), (150, 130), 40, 3)
    return np.clip(page * light, 0, 255).astype(np.uint8)
