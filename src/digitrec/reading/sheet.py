"""A sheet of paper photographed lying on a darker surface: the surface is not ink.

A phone photo of a note, a receipt or a sticky label often shows the table around it. The
ink finder compares each pixel with the paper around it, and a dark table next to a white
sheet looks like a vast stroke of ink, or (when the table covers most of the photo) like
dark paper with the sheet as a light mark on it. :func:`without_surroundings` finds such a
sheet and paints the surroundings with the sheet's own light, smoothly continued past its
edge, so that what remains to be found is the ink on the sheet.

A sheet is the largest light region of the photo (Otsu's threshold on a small copy), holes
filled, when it looks like paper rather than a light mark on a dark drawing: it covers a
good part of the photo but not all of it, is nearly as full as the rectangle around it
(a page in perspective, or cut off by the photo's edge, still is), is mostly light with
some dark writing inside, and has a sharp edge. The last tells a sheet from the lit part
of a page half in shadow: the shadow of a hand or a phone fades over a few per cent of
the photo, a sheet's edge within a pixel or two.
"""

from __future__ import annotations

import cv2
import numpy as np

# The sheet is looked for on a copy this long: enough for its outline, cheap on any photo.
_LOOK_SIZE = 200
# A sheet covers at least this share of the photo, and leaves at least _MIN_SURROUNDINGS of
# it to the surroundings (less is a dark border or a photo's vignette, left to the ink finder).
_MIN_SHEET = 0.2
_MIN_SURROUNDINGS = 0.03
# A sheet fills this much of its smallest enclosing rectangle (a quadrilateral in
# perspective fills over 0.9 of it; an ellipse 0.79): a drawn light digit is rarely as full.
_MIN_RECTANGULARITY = 0.85
# Writing covers little of a sheet: at least this share of it is light. A light digit drawn
# on a dark canvas, its loops filled in, has far more dark inside.
_MIN_LIGHT_INSIDE = 0.9
# The surroundings must be clearly darker than the sheet (a share of the sheet's light).
_MIN_DARKER = 0.2
# At a sheet's edge the light falls by at least this share within two pixels of the copy
# (a soft shadow's edge, spread over a few per cent of the photo, by a quarter of that),
# along at least _MIN_SHARP_EDGE of the edge.
_SHARP_STEP = 0.3
_MIN_SHARP_EDGE = 0.75
# The sheet's own pixels this close to its edge (a share of the copy's longer side) are
# painted over too: the edge is blurred, and half-lit paper there would pass for ink.
_EDGE = 0.015


def sheet_mask(small: np.ndarray) -> np.ndarray | None:
    """The sheet in ``small`` (uint8 greyscale, dark ink on light paper) as a bool mask,
    holes filled; None if the photo shows no sheet on a darker surface."""
    _, light = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(light, connectivity=4)
    if count < 2:
        return None
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    region = (labels == largest).astype(np.uint8)
    contours, _ = cv2.findContours(region, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    outline = max(contours, key=cv2.contourArea)
    filled = np.zeros_like(region)
    cv2.drawContours(filled, [outline], -1, 1, thickness=cv2.FILLED)
    sheet = filled.astype(bool)
    share = float(sheet.mean())
    if not _MIN_SHEET <= share <= 1.0 - _MIN_SURROUNDINGS:
        return None
    (_, _), (width, height), _ = cv2.minAreaRect(outline)
    if float(sheet.sum()) < _MIN_RECTANGULARITY * max(width * height, 1.0):
        return None
    light_inside = float(region[sheet].mean())
    if not _MIN_LIGHT_INSIDE <= light_inside < 1.0:
        return None
    paper = float(np.median(small[region.astype(bool)]))
    surroundings = float(np.median(small[~sheet]))
    if surroundings > (1.0 - _MIN_DARKER) * paper:
        return None
    if _sharp_share(small, outline) < _MIN_SHARP_EDGE:
        return None
    return sheet


def _sharp_share(small: np.ndarray, outline: np.ndarray) -> float:
    """The share of the sheet's edge where the light falls by ``_SHARP_STEP`` of itself
    within two pixels: all of a sheet's edge, little of a shadow's. The photo's own
    border, where the sheet may be cut off, is not part of the edge."""
    h, w = small.shape
    x, y = outline[:, 0, 0], outline[:, 0, 1]
    inside = (x > 0) & (x < w - 1) & (y > 0) & (y < h - 1)
    if not inside.any():
        return 0.0
    x, y = x[inside], y[inside]
    window = np.ones((5, 5), np.uint8)
    brightest = cv2.dilate(small, window).astype(np.float32)[y, x]
    darkest = cv2.erode(small, window).astype(np.float32)[y, x]
    step = (brightest - darkest) / np.maximum(brightest, 1.0)
    return float(np.mean(step >= _SHARP_STEP))


def without_surroundings(image: np.ndarray) -> np.ndarray:
    """``image`` (uint8 greyscale, dark ink on light paper) with the surface around a
    photographed sheet painted in the sheet's light; ``image`` itself if there is no
    sheet (see :func:`sheet_mask`)."""
    h, w = image.shape
    factor = min(1.0, _LOOK_SIZE / max(h, w))
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if factor < 1 else image
    sheet = sheet_mask(small)
    if sheet is None:
        return image
    edge = max(1, round(_EDGE * max(small.shape)))
    inner = cv2.erode(sheet.astype(np.uint8), np.ones((2 * edge + 1, 2 * edge + 1), np.uint8))
    fill = _continued(small.astype(np.float32), inner.astype(bool))
    outside = (inner == 0).astype(np.float32)
    if factor < 1:
        fill = cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)
        outside = cv2.resize(outside, (w, h), interpolation=cv2.INTER_LINEAR)
    painted = image.astype(np.float32) * (1.0 - outside) + fill * outside
    return np.clip(np.rint(painted), 0, 255).astype(np.uint8)


def _continued(small: np.ndarray, sheet: np.ndarray) -> np.ndarray:
    """The sheet's light continued smoothly over the whole copy: a weighted blur of the
    sheet's pixels, wider where the sheet is far away."""
    weight = sheet.astype(np.float32)
    values = small * weight
    out = np.full_like(small, float(np.median(small[sheet])))
    longer = max(small.shape)
    # The widest blur first, each narrower one overwriting where it has enough support.
    for sigma in (0.3 * longer, 0.08 * longer, 0.02 * longer):
        support = cv2.GaussianBlur(weight, (0, 0), sigma)
        blurred = cv2.GaussianBlur(values, (0, 0), sigma)
        known = support > 0.05
        out[known] = blurred[known] / support[known]
    return out
