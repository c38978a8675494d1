"""Ruled and squared paper: its printed lines are not ink.

Numbers are often written in a notebook, on lined or squared paper. Its lines are as dark
as faint ink, so the ink finder keeps them, and a digit that sits on one or is crossed by
one joins it: a 9 crossed through its loop, a 6 standing on a line read as a 2.
:func:`printed_lines` finds such lines in an ink mask, to be taken out of it.

A printed line is straight and runs across the whole photo, from near one edge to near the
opposite one (a slight tilt allowed); no written stroke does that, except a 1 drawn the
whole height of its canvas, which is kept because nothing else would be left.
"""

from __future__ import annotations

import cv2
import numpy as np

# A printed line reaches within this share of the photo's extent from both of its edges.
_EDGE_TO_EDGE = 0.04
# Lines are looked for only beside a mark at least this share of the photo wide or tall,
# among the pixels at least this much darker than their background (paper's noise stays
# under it; printed lines are 0.1-0.3 darker than the paper).
_WORTH_A_LOOK = 0.5
_FAINT = 0.06
# At least this share of the lines' length lies beside the marks, not inside them, and at
# most this share is thicker than a printed line (where pen strokes cross it).
_SHOWN = 0.5
_MAX_CROSSED = 0.3
# Pen strokes crossing a line lose the line's own width; lines are measured in a band
# this many pixels to each side of their centre line, at most.
_MAX_HALF_WIDTH = 4


def printed_lines(mask: np.ndarray, contrast: np.ndarray) -> np.ndarray | None:
    """Where the printed lines of ruled or squared paper lie in ``mask`` (uint8 0/1 ink,
    thresholded from ``contrast``), as a bool mask to take out of the ink; None when there
    are none, or when nothing but such lines would be left.

    A printed line is often fainter than the ink threshold along most of its length and
    kept only where it touches a digit, so the lines are looked for where the contrast
    passes ``_FAINT``; only marks at least half as wide or as tall as the photo, or
    running off it, make the look worth it. Where a pen stroke crosses a line, ink on
    both sides of the line bridges it: those pixels stay ink."""
    h, w = mask.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, width, height = (stats[1:, i] for i in range(4))
    wide = (width >= _WORTH_A_LOOK * w) | (height >= _WORTH_A_LOOK * h)
    edge = (x == 0) | (y == 0) | (x + width == w) | (y + height == h)
    if not (wide | edge).any():
        return None
    faint = (contrast >= _FAINT).astype(np.uint8)
    shorter = (1 - 2 * _EDGE_TO_EDGE) * min(h, w)
    segments = cv2.HoughLinesP(
        faint,
        rho=1,
        theta=np.pi / 720,
        threshold=int(shorter / 2),
        minLineLength=int(shorter),
        maxLineGap=max(2, int(shorter / 50)),
    )
    if segments is None:
        return None
    centre_lines = np.zeros_like(mask)
    for x1, y1, x2, y2 in segments.reshape(-1, 4):
        if _edge_to_edge(x1, y1, x2, y2, w, h):
            cv2.line(centre_lines, (int(x1), int(y1)), (int(x2), int(y2)), 1, 1)
    if not centre_lines.any():
        return None
    # A printed line shows beside the marks along most of its length (a long straight
    # stroke of a big digit does not); its width is measured there, where the marks'
    # strokes do not widen it.
    reach = np.ones((2 * _MAX_HALF_WIDTH + 1,) * 2, np.uint8)
    near = cv2.dilate(centre_lines, reach)
    # A printed line is thin: it vanishes when the ink is worn away by _MAX_HALF_WIDTH,
    # but for the strokes that cross it. A long straight pen stroke is thicker.
    thick = cv2.dilate(cv2.erode(mask, reach), reach)
    if (centre_lines & thick).sum() > _MAX_CROSSED * centre_lines.sum():
        return None
    marks = mask & (1 - near)
    away = faint & (1 - cv2.dilate(marks, np.ones((2 * _MAX_HALF_WIDTH + 3,) * 2, np.uint8)))
    shown = cv2.dilate(away & near, reach)
    if (centre_lines & shown).sum() < _SHOWN * centre_lines.sum():
        return None
    half = _half_width(away & mask, centre_lines)
    band = cv2.dilate(centre_lines, np.ones((2 * half + 1, 2 * half + 1), np.uint8))
    left = mask & (1 - band)
    across = 2 * half + 3
    bridged = cv2.morphologyEx(left, cv2.MORPH_CLOSE, np.ones((across, 1), np.uint8)) | (
        cv2.morphologyEx(left, cv2.MORPH_CLOSE, np.ones((1, across), np.uint8))
    )
    lines = (band > 0) & (bridged == 0)
    return lines if (mask.astype(bool) & ~lines).any() else None


def _edge_to_edge(x1: int, y1: int, x2: int, y2: int, w: int, h: int) -> bool:
    """Whether a segment runs from near one edge of a ``w`` x ``h`` photo to near the
    opposite one."""
    near_x, near_y = _EDGE_TO_EDGE * w, _EDGE_TO_EDGE * h
    left, right = min(x1, x2), max(x1, x2)
    top, bottom = min(y1, y2), max(y1, y2)
    across = left <= near_x and right >= w - 1 - near_x
    down = top <= near_y and bottom >= h - 1 - near_y
    return across or down


def _half_width(ink: np.ndarray, centre_lines: np.ndarray) -> int:
    """Half the printed lines' width: the smallest band about their centre lines (which
    may run along one side of a line) that holds all but a few of the ink's pixels
    within ``_MAX_HALF_WIDTH`` of them."""
    within = []
    for half in range(_MAX_HALF_WIDTH + 1):
        band = cv2.dilate(centre_lines, np.ones((2 * half + 1, 2 * half + 1), np.uint8))
        within.append(int((ink & band).sum()))
    for half, count in enumerate(within):
        if count >= 0.98 * within[-1]:
            return half
    return _MAX_HALF_WIDTH
