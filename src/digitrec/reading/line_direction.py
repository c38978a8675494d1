"""The direction of a line of handwritten digits, and the image turned so the line is level.

People write numbers on a slant (a note held at an angle, a photo taken askew) by up to
about 20 degrees. Cutting such a line into digits column by column goes wrong: a digit's
neighbour reaches under or over it, and stacked pieces of one digit drift apart sideways.
So :func:`digitrec.recognize.find_digits` first finds the digits as they are, estimates
the line's direction from where they sit (:func:`line_angle`), and when the line is
slanted, finds them again in the image turned level (:func:`level`), mapping the boxes
back to the original image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]

# Below this slant a turn changes nothing that matters and costs a second segmentation.
MIN_ANGLE = 4.0
# Beyond this the marks are more likely a column of digits, or a few scattered ones.
MAX_ANGLE = 35.0


def line_angle(boxes: Sequence[Box]) -> float | None:
    """The slant in degrees of the line through the boxes' centres (positive: climbing to
    the right, y pointing down), or None when there are fewer than two boxes, when they do
    not lie side by side, or when the slant is steeper than ``MAX_ANGLE``.

    The slope is the median of the slopes between every pair of centres (Theil-Sen), so
    one digit written high or low does not tilt the line.
    """
    if len(boxes) < 2:
        return None
    centres = np.array([(x + w / 2, y + h / 2) for x, y, w, h in boxes], np.float64)
    slopes = []
    for i in range(len(centres)):
        for j in range(i + 1, len(centres)):
            dx, dy = centres[j] - centres[i]
            if abs(dx) > 1e-9:
                slopes.append(dy / dx)
    if not slopes:
        return None
    angle = float(np.degrees(np.arctan(-np.median(slopes))))
    return angle if abs(angle) <= MAX_ANGLE else None


def level(image: np.ndarray, angle: float) -> tuple[np.ndarray, Callable[[Box], Box]]:
    """``image`` turned by ``angle`` degrees so that a line slanted by ``angle`` becomes
    level, on a canvas large enough to hold all of it (corners filled by repeating the
    edge, so no dark or light wedge appears), and the function that maps a box in the
    turned image back to the original image's coordinates."""
    h, w = image.shape[:2]
    # A line climbing to the right (positive angle) is turned clockwise on screen, which is
    # cv2's negative angle.
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = int(np.ceil(w * cos + h * sin)), int(np.ceil(w * sin + h * cos))
    matrix[:, 2] += (new_w - w) / 2, (new_h - h) / 2
    turned = cv2.warpAffine(
        image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    inverse = cv2.invertAffineTransform(matrix)

    def back(box: Box) -> Box:
        x, y, bw, bh = box
        corners = np.array([[x, y, 1], [x + bw, y, 1], [x, y + bh, 1], [x + bw, y + bh, 1]], float)
        points = corners @ inverse.T
        x0, y0 = np.clip(np.floor(points.min(axis=0)), 0, [w, h]).astype(int)
        x1, y1 = np.clip(np.ceil(points.max(axis=0)), 0, [w, h]).astype(int)
        return int(x0), int(y0), int(x1 - x0), int(y1 - y0)

    return turned, back
