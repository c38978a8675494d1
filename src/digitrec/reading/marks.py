"""The marks numbers carry besides digits, told from their shape and place in the line.

A minus is a short flat bar at mid-height that no other mark overlaps in x; a point is a
small round mark near the baseline; a comma is a taller one there (it often reaches
below the baseline). Anything else small is an unknown mark, reported, never dropped.
Measured on generated pages (:mod:`digitrec.testing.pages`, tuning seeds).
"""

from __future__ import annotations

from dataclasses import dataclass

MINUS = "-"
POINT = "."
COMMA = ","
UNKNOWN = "?"

# A mark at most this share of the line's digit height, both ways, is small.
_SMALL = 0.4
# ... and at most this share wide (a minus can be as wide as a digit).
_WIDEST = 0.75
# A minus is at least this many times as wide as tall, and its middle lies between these
# shares of the digit height below the line's top.
_FLAT = 1.6
_MID = (0.25, 0.8)
# A point or comma's middle lies below this share of the digit height from the top.
_LOW = 0.6
# A comma is at least this share of the digit height tall, or this much taller than
# wide (its tail); a point is smaller and round. Measured on the tuning pages' marks
# read in place (238): points 0.15-0.29 of the digit height tall (5-95%), 0.88-1.19
# times their width; commas 0.29-0.49 tall, 1.29-2.17 times their width, and a few
# round ones taller than any point. These two rules miss 1 of the 238.
_COMMA_HEIGHT = 0.34
_TALL = 1.25
# Within these of either rule's threshold a mark is as much a point as a comma.
_UNSURE_SHAPE = 0.05
_UNSURE_HEIGHT = 0.02


@dataclass(frozen=True)
class LineFrame:
    """Where a line's digits are, in deskewed coordinates: top, baseline, digit height."""

    top: float
    baseline: float

    @property
    def height(self) -> float:
        return max(1.0, self.baseline - self.top)


def is_small(top: float, bottom: float, width: float, frame: LineFrame) -> bool:
    """Too small to be a digit of this line: small both ways, or a narrow mark in the
    lower half of the line (a comma, which can be half as tall as a digit)."""
    digit = frame.height
    height = bottom - top
    if height <= _SMALL * digit and width <= _WIDEST * digit:
        return True
    return top >= frame.top + 0.5 * digit and height <= 0.7 * digit and width <= _SMALL * digit


def classify(top: float, bottom: float, width: float, frame: LineFrame) -> str:
    """``MINUS``, ``POINT``, ``COMMA`` or ``UNKNOWN`` for a small mark whose deskewed top
    and bottom are ``top``, ``bottom``, ``width`` wide, in a line framed by ``frame``."""
    height = max(1.0, bottom - top)
    middle = (top + bottom) / 2 - frame.top
    digit = frame.height
    if width >= _FLAT * height and _MID[0] * digit <= middle <= _MID[1] * digit:
        return MINUS if width >= 0.15 * digit else UNKNOWN
    if width <= _SMALL * digit and middle >= _LOW * digit:
        if height >= _COMMA_HEIGHT * digit or height >= _TALL * width:
            return COMMA
        return POINT
    return UNKNOWN


def point_or_comma_unsure(top: float, bottom: float, width: float, frame: LineFrame) -> bool:
    """Whether a point or comma is near the line between the two (see :func:`classify`):
    a round mark about as tall as the smallest commas, or one about as much taller than
    wide as the roundest commas."""
    height = max(1.0, bottom - top)
    digit = frame.height
    if height < _COMMA_HEIGHT * digit and abs(height / max(1.0, width) - _TALL) < _UNSURE_SHAPE:
        return True
    return height < _TALL * width and abs(height / digit - _COMMA_HEIGHT) < _UNSURE_HEIGHT


def describe(mark: str) -> str:
    """The mark's name, for a diagnosis."""
    return {MINUS: "minus", POINT: "point", COMMA: "comma"}.get(mark, "unknown mark")
