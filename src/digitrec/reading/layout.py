"""Pages of numbers: lines of ink first, then numbers (fields) by the gaps between marks.

:func:`find_layout` is everything the page reader does before the model:

1. the ink (:func:`~digitrec.reading.ink.find_ink`), and the page's slant, the angle whose
   row profile of the ink is sharpest;
2. lines: the digit-sized marks grouped by how much they overlap in (deskewed) height,
   so lines of different heights and a slight slope stay apart, and a mark spanning two
   lines (digits of one line touching the next) is cut between them along the path of
   least ink, and so is a digit reaching up into the lower half of the line above (a
   comma or point of that line hanging onto it); a piece so parted that is too small for
   a digit of its line is a mark of it; no box ever holds the marks of two lines (a '1'
   written above a '7'). The digit height comes from the single digits when most marks
   are digits of two lines joined, or else from the heights of such marks (one digit
   height plus whole line pitches); a line none of whose digits stands alone is found in
   the rows of the marks spanning it that are inked as lines are; a comma is never
   digit-sized (it is narrow), and one dipping below the cut between close lines stays
   with the line whose digits it sits beside;
3. in each line, minus signs, points and commas told from their shape and place
   (:mod:`digitrec.reading.marks`), the rest grouped into the marks of digits by the
   one-line segmenter (:func:`~digitrec.reading.segment.digit_marks`), geometry's cuts
   giving the digits until the page reader chooses by reading (:mod:`digitrec.reading.page`);
4. fields: the line's digits and marks, left to right, broken where the gap between two
   is wide for the line's digit height (wider beside a mark; narrower before a minus);
5. for tables, columns: a field bridging two fields of other lines split where they part,
   then fields of different lines whose deskewed x-extents overlap.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from digitrec.reading import marks
from digitrec.reading.ink import NO_INK, Box, Ink, checked_grey, find_ink
from digitrec.reading.marks import LineFrame
from digitrec.reading.segment import Mark, digit_marks, to_original

# More marks than this is not a page of numbers (a photo of a printed page, a texture).
_MAX_MARKS = 600
# Slants tried, in degrees (a page photographed or written slightly askew).
_SLANTS = np.arange(-8.0, 8.01, 0.25)
# A mark at least this share of the typical mark height is digit-sized and can found a
# line; one more than _SPANNING times it may be digits of two lines touching. A mark
# shorter than _SURELY_DIGIT of it must also be at least _NARROWEST of it wide, and wider
# than _COMMA_PENS pen widths: a comma can be two thirds of a digit tall, but it is narrow
# ('1's are taller), and a thick pen's comma no wider than its pen allows.
_DIGIT_SIZED = 0.5
_SURELY_DIGIT = 0.7
_NARROWEST = 0.4
_COMMA_PENS = 2.0
_SPANNING = 1.45
# Digits of two lines joined are at least this many times as tall as one (lines whose
# digits touch are a digit's height apart; fonts whose short digits are half as tall as
# the rest stay under it).
_TWO_LINES = 1.9
# A mark spanning lines holds a line of its own where this many digit heights of its rows,
# outside the lines found, are inked as within them (what joins touching lines is a stroke
# or two, a few rows long; lines written apart do not join).
_LINE_BETWEEN = 0.6
# Marks joining digits of touching lines are the digit height plus whole line pitches tall,
# a pitch between these shares of the digit height (lines that touch; a thick pen makes
# marks taller by its width, not the pitch), to within _FIT of the common height. A smaller
# digit height than the marks' common one, at least _SMALLEST_SPANNED of it, is taken when
# it explains at least two and a _CLEARLY share more of the marks.
_PITCH = (0.75, 1.3)
_FIT = 0.08
_SMALLEST_SPANNED = 0.3
_CLEARLY = 0.2
# At least this many marks spanning lines, fitted by one pitch, measure the line pitch.
_SPANS_FOR_PITCH = 2
# A single digit beside digits of two lines joined is at least this share as wide.
_SINGLE_WIDTH = 0.6
# ... and its top or bottom within this share of its height of theirs.
_LEVEL = 0.15
# ... and such marks at least this share as many as the common ones.
_SINGLES = 0.25
# A comma hangs up to this share of its line's digit height below the baseline; a mark
# below the cut between two lines may belong to the one above (see _hangs_from).
_HANGING = 0.4
# No point, comma or minus of a line has its middle in this top share of the line's rows
# (a minus is lower: see marks._MID); a point or comma there whose middle is under _ON_IT
# digits below the line above's baseline hangs from it (tuning pages: 6 points and commas of
# the line above, from 0.09 above its baseline to 0.03 below; 9 pieces of digits of the line
# below, 0.12-0.28 below it).
_TOP_ROWS = 0.2
_ON_IT = 0.08
# A digit whose top is this share of a digit above its line's top reaches out of it.
_REACH = 0.25
# A digit-sized mark reaching this share of its line's digit height above the line's top
# (more than one line's digits differ in height), into the lower half of the line above,
# holds a point or comma of that line: where commas sit.
_HUNG = 0.15
# Two marks are on one line when their heights overlap by this share of the smaller.
_SAME_LINE = 0.5
# A cut between touching lines bends up to this share of the digit height from straight.
_CUT_REACH = 0.15
_PULL = 0.3
# A cut crossing a digit's ink for more than this many stroke widths went through more
# than the one stroke where two digits touch: where they part is a guess.
_CLEAN_CUT = 2.0
# A gap wider than this share of the line's digit height starts a new field: between two
# digits, beside a point, comma or minus, and before a minus (tuning pages: gaps inside
# numbers up to 0.57 between digits and 0.69 before a point; numbers 0.54 apart or more).
_FIELD_GAP = 0.62
_MARK_GAP = 0.75
_SIGN_GAP = 0.3
# A field is split where at least this many (and half the) other lines of a table part
# two fields it overlaps both of (see split_at_columns), at a gap at least _COLUMN_GAP of its line's
# digit height wide (the gaps between a number's digits are mostly narrower).
_COLUMN_SUPPORT = 2
_COLUMN_GAP = 0.3
# Marks after which a number goes on (before a point or comma too).
_INSIDE = (marks.MINUS, marks.POINT, marks.COMMA)
# A small mark overlapping other marks in x by more than this share of its width belongs
# to them (a loose bar of a '5', the dot of a broken stroke), not beside them.
_ISOLATED = 0.5


@dataclass
class Item:
    """One thing in a line: a digit's mask and box, or a mark (see :mod:`marks`)."""

    kind: str  # "digit" or one of marks.MINUS, POINT, COMMA, UNKNOWN
    box: Box  # working scale
    mask: np.ndarray | None = None  # the digit's mask within its box
    deskewed: tuple[float, float] = (0.0, 0.0)  # a mark's top and bottom, page levelled
    # A digit cut out of ink it shared with a digit of the line above or below, where
    # the cut is a guess.
    joined: bool = False
    # A point or comma whose shape is between the two, or one cut from a digit of the
    # next line it touched (part of its tail may have gone with that digit).
    unsure: bool = False
    # A digit reaching up where the line above's points and commas hang: one of them may
    # be joined to it.
    reaches_up: bool = False


@dataclass
class LineLayout:
    """One text line: its own ink (for the digits' stroke cores), its items left to right,
    and its fields as lists of item indices.

    ``marks`` are the marks of its digits with geometry's cuts
    (:func:`~digitrec.reading.segment.digit_marks`), whose pieces the digit items are
    until :meth:`with_digits` gives others; ``crossed`` is where a cut between this line
    and the next crossed ink; ``specks`` are the boxes of small marks of it taken for
    noise (neither digits nor marks that numbers carry)."""

    ink: Ink
    items: list[Item]
    fields: list[list[int]]
    frame: LineFrame
    marks: list[Mark] = field(default_factory=list)
    crossed: np.ndarray | None = None
    specks: list[Box] = field(default_factory=list)

    def digit(self, mask: np.ndarray, box: Box) -> Item:
        """A digit of this line: ``mask`` within ``box`` (working scale)."""
        joined = False
        if self.crossed is not None:
            x, y, w, h = box
            cut = int(np.count_nonzero(self.crossed[y : y + h, x : x + w][mask]))
            joined = cut > _CLEAN_CUT * self.ink.stroke
        return Item("digit", box, mask, joined=joined)

    def with_digits(self, pieces: list[tuple[np.ndarray, Box]]) -> tuple[LineLayout, list[Item]]:
        """This line with ``pieces`` (masks and boxes, working scale) as its digits, its
        other marks kept and its fields found again; and the new digits, in order."""
        digits = [self.digit(mask, box) for mask, box in pieces]
        items = [item for item in self.items if item.kind != "digit"] + digits
        items.sort(key=lambda item: item.box[0] + item.box[2] / 2)
        return replace(self, items=items, fields=_fields(items, self.frame)), digits


@dataclass
class Layout:
    """Every line found on a page, top to bottom; ``diagnosis`` says why there is none."""

    lines: list[LineLayout] = field(default_factory=list)
    scale: float = 1.0
    slant: float = 0.0  # tangent of the page's slant
    diagnosis: str | None = None

    def deskewed_x(self, box: Box) -> tuple[float, float]:
        """The x-extent of a working-scale box, turned back by the page's slant."""
        x, y, w, h = box
        shift = (y + h / 2) * self.slant
        return x + shift, x + w + shift


def find_layout(image: np.ndarray) -> Layout:
    """Lines, fields and items of a page (uint8 greyscale, any size)."""
    ink = find_ink(checked_grey(image))
    if ink is None:
        return Layout(diagnosis=NO_INK)
    if len(ink.ids) > _MAX_MARKS:
        return Layout(diagnosis=f"found {len(ink.ids)} separate marks; expected numbers")
    slant = _slant(ink)
    marks_of = _Marks(ink, slant)
    groups = _lines(marks_of)
    lines = []
    for members, pixels, frame in groups:
        line = _line_layout(ink, marks_of, members, pixels, frame, single=len(groups) == 1)
        if isinstance(line, str):
            return Layout(diagnosis=line)
        if line.items:
            lines.append(line)
    if not lines:
        return Layout(diagnosis="no digits found")
    for above, line in zip(lines, lines[1:], strict=False):
        _mark_reaching_up(line, above.frame, slant)
    _mark_overlapping_sizes(lines)
    return Layout(lines, ink.scale, slant)


def _mark_overlapping_sizes(lines: list[LineLayout]) -> None:
    """Mark as unsure the commas of a page no taller (for their line's digits) than its
    tallest point, and the points at least as tall as its shortest comma: one hand writes
    its points smaller than its commas, so where their sizes meet, which is which is a
    guess (tuning pages: 3 of 311 points and commas, on one page, where one was wrong)."""
    sized = [
        (item, (item.deskewed[1] - item.deskewed[0]) / line.frame.height)
        for line in lines
        for item in line.items
        if item.kind in (marks.POINT, marks.COMMA)
    ]
    points = [height for item, height in sized if item.kind == marks.POINT]
    commas = [height for item, height in sized if item.kind == marks.COMMA]
    if not points or not commas:
        return
    for item, height in sized:
        if (item.kind == marks.COMMA and height <= max(points)) or (
            item.kind == marks.POINT and height >= min(commas)
        ):
            item.unsure = True


def _mark_reaching_up(line: LineLayout, above: LineFrame, slant: float) -> None:
    """Mark the digits of ``line`` that reach well above its top into the rows where the
    line above's commas hang (a comma joined to a digit below it is read as part of it)."""
    digit = line.frame.height
    hanging = above.baseline + _HANGING * above.height
    for item in line.items:
        x, y, w, _ = item.box
        top = y - (x + w / 2) * slant
        if item.kind == "digit" and top < min(line.frame.top - _REACH * digit, hanging):
            item.reaches_up = True


class _Marks:
    """Every mark's deskewed top and bottom and its box, kept marks first, then small."""

    def __init__(self, ink: Ink, slant: float) -> None:
        self.ids = np.concatenate([ink.ids, ink.small_ids]).astype(np.int64)
        self.stats = np.concatenate([ink.stats, ink.small_stats]).astype(np.int64)
        self.small = np.r_[np.zeros(len(ink.ids), bool), np.ones(len(ink.small_ids), bool)]
        ys, xs = np.nonzero(ink.labels)
        labels = ink.labels[ys, xs]
        deskewed = ys - xs * slant
        count = int(ink.labels.max()) + 1
        top = np.full(count, np.inf)
        bottom = np.full(count, -np.inf)
        np.minimum.at(top, labels, deskewed)
        np.maximum.at(bottom, labels, deskewed)
        self.top = top[self.ids]
        self.bottom = bottom[self.ids] + 1
        self.slant = slant
        self.labels = ink.labels
        self.stroke = ink.stroke

    def row_ink(self, index: int) -> tuple[int, np.ndarray]:
        """The first deskewed row of a mark and its count of ink pixels in every row."""
        x, y, w, h = (int(v) for v in self.stats[index, :4])
        ys, xs = np.nonzero(self.labels[y : y + h, x : x + w] == self.ids[index])
        rows = np.rint(y + ys - (x + xs) * self.slant).astype(np.int64)
        return int(rows.min()), np.bincount(rows - rows.min())

    @property
    def height(self) -> np.ndarray:
        return self.bottom - self.top


def _slant(ink: Ink) -> float:
    """The tangent of the slant at which the rows of ink are sharpest (the sum of the
    squared row counts is largest when the lines are level)."""
    ys, xs = np.nonzero(np.isin(ink.labels, ink.ids))
    if len(ys) > 40_000:
        keep = slice(None, None, len(ys) // 40_000 + 1)
        ys, xs = ys[keep], xs[keep]
    best, best_score = 0.0, -1.0
    for tangent in np.tan(np.deg2rad(_SLANTS)):
        rows = np.rint(ys - xs * tangent).astype(np.int64)
        counts = np.bincount(rows - rows.min()).astype(np.float64)
        score = float(counts @ counts)
        if score > best_score:
            best, best_score = float(tangent), score
    return best


def _lines(found: _Marks) -> list[tuple[list[int], dict[int, np.ndarray], LineFrame]]:
    """Marks grouped into lines, top to bottom: each line's mark indices; for marks cut
    between lines (digits of two lines touching), the line's share of them as a (top,
    bottom) deskewed band; and where the line's digits are."""
    height = found.height
    kept = ~found.small
    if not kept.any():
        return [(list(range(len(height))), {}, LineFrame(0.0, 1.0))]
    width = found.stats[:, 2]
    typical = _typical_height(height[kept], width[kept], found.top[kept])
    digit_sized = (
        kept
        & (height >= _DIGIT_SIZED * typical)
        & (height <= _SPANNING * typical)
        & (
            (height >= _SURELY_DIGIT * typical)
            | ((width >= _NARROWEST * typical) & (width > _COMMA_PENS * found.stroke))
        )
    )
    bands: list[_Band] = []
    for index in sorted(np.flatnonzero(digit_sized), key=lambda i: -height[i]):
        best = _best_band(bands, float(found.top[index]), float(found.bottom[index]))
        if best is None:
            bands.append(_Band(found, [int(index)]))
        else:
            best.add(int(index))
    spanning = [int(i) for i in np.flatnonzero(kept & (height > _SPANNING * typical))]
    centres = sorted(band.middle for band in bands)
    pitch = float(np.median(np.diff(centres))) if len(centres) > 1 else 1.2 * typical
    pitch = float(np.clip(pitch, typical, 2.5 * typical))
    if len(spanning) >= _SPANS_FOR_PITCH:
        # Bands found only every few lines (most digits joined to the next line's) are
        # further apart than one pitch; the spanning marks' heights, each the digit height
        # plus whole pitches, measure the pitch itself.
        explained, fitted = _explained(height[spanning], typical, _FIT * typical)
        if explained >= _SPANS_FOR_PITCH and fitted < pitch:
            pitch = fitted
    for index in sorted(spanning, key=lambda i: height[i]):
        # Lines whose digits all touch the lines above or below found no band of their
        # own: the mark's height says how many lines it spans.
        count = 1 + int(round((height[index] - typical) / pitch))
        edges = np.linspace(found.top[index], found.bottom[index], count + 1)
        for top, bottom in zip(edges[:-1], edges[1:], strict=True):
            if _best_band(bands, float(top), float(bottom)) is None:
                bands.append(_Band(found, [], (float(top), float(bottom))))
    for index in spanning:
        # Two lines far apart for lines that touch may have a third between them whose
        # digits all touch theirs: rows where the mark is as inked as within lines.
        for top, bottom in _lines_between(found, index, [band.frame for band in bands], typical):
            bands.append(_Band(found, [], (top, bottom)))
    if not bands:
        return [(list(range(len(height))), {}, LineFrame(0.0, 1.0))]
    bands.sort(key=lambda band: band.middle)
    frames = [band.frame for band in bands]
    # Between two lines, the cut lies halfway from one's baseline to the next one's top.
    cuts = [(frames[i].baseline + frames[i + 1].top) / 2 for i in range(len(frames) - 1)]
    spans: list[dict[int, np.ndarray]] = [{} for _ in bands]
    edges = [-np.inf, *cuts, np.inf]
    for line in range(1, len(bands)):
        for index in _hanging_onto(found, bands[line], frames[line - 1], cuts[line - 1]):
            # A point or comma of the line above joined to a digit of this one: parted
            # like digits of two lines touching.
            bands[line].members.remove(index)
            spans[line - 1][index] = np.array([edges[line - 1], edges[line]])
            spans[line][index] = np.array([edges[line], edges[line + 1]])
    placed = []
    for index in np.flatnonzero(~digit_sized):
        middle = (found.top[index] + found.bottom[index]) / 2
        crossed = [i for i, cut in enumerate(cuts) if found.top[index] < cut < found.bottom[index]]
        if height[index] > _SPANNING * typical and crossed:
            edges = [-np.inf, *cuts, np.inf]
            for line in range(crossed[0], crossed[-1] + 2):
                spans[line][int(index)] = np.array([edges[line], edges[line + 1]])
            continue
        placed.append((int(index), int(np.searchsorted(cuts, middle))))
    beside = [[*band.sized, *spans[i]] for i, band in enumerate(bands)]
    for index, line in placed:
        pair = slice(line - 1, line + 1)
        if line > 0 and _hangs_from(found, frames[pair], beside[pair], index):
            line -= 1
        bands[line].members.append(index)
    return [(band.members, spans[i], band.frame) for i, band in enumerate(bands)]


def _lines_between(
    found: _Marks, index: int, frames: list[LineFrame], digit: float
) -> list[tuple[float, float]]:
    """The extents of lines that a mark spanning several lines holds outside every line
    found so far: runs of its rows, at least _LINE_BETWEEN digit heights long, with at least
    half the ink per row it has within those lines (where lines touch, their digits join
    through a stroke or two, much less)."""
    first, counts = found.row_ink(index)
    rows = first + np.arange(len(counts))
    inside = np.zeros(len(counts), bool)
    for frame in frames:
        inside |= (rows >= frame.top) & (rows < frame.baseline)
    if not inside.any():
        return []
    inked = ~inside & (counts >= 0.5 * counts[inside].mean())
    runs = []
    edges = np.flatnonzero(np.diff(np.r_[0, inked.astype(np.int8), 0]))
    for start, end in zip(edges[::2], edges[1::2], strict=True):
        if end - start >= _LINE_BETWEEN * digit:
            runs.append((float(rows[start]), float(rows[end - 1] + 1)))
    return runs


def _hanging_onto(found: _Marks, band: _Band, above: LineFrame, cut: float) -> list[int]:
    """The digit-sized marks of ``band`` that reach above the cut from the line above,
    well out of their own line's rows, yet no higher than the lower half of the line
    above: where that line's points and commas sit, not its digits."""
    frame = band.frame
    return [
        index
        for index in band.sized
        if above.top + 0.5 * above.height
        <= found.top[index]
        < min(cut, frame.top - _HUNG * frame.height)
    ]


def _hangs_from(
    found: _Marks, frames: list[LineFrame], beside: list[list[int]], index: int
) -> bool:
    """Whether a mark below the cut between two lines (their ``frames`` and the marks
    ``beside`` which each has its digits) is a comma or point of the line above: within
    that line's rows down to a comma's tail, and either a point or comma on its baseline
    in the top rows of its own line, where none of that line's marks sits, or beside the
    digits of the line above and not beside those of its own (lines written close, a
    comma dips into the next)."""
    above, here = frames
    top, bottom = float(found.top[index]), float(found.bottom[index])
    middle = (top + bottom) / 2
    if middle > above.baseline + _HANGING * above.height:
        return False
    on_it = middle < above.baseline + _ON_IT * above.height
    if on_it and middle < here.top + _TOP_ROWS * here.height:
        width = float(found.stats[index, 2])
        return marks.classify(top, bottom, width, above) in (marks.POINT, marks.COMMA)
    margin = 0.5 * above.height
    return _apart(found, beside[0], index) < _apart(found, beside[1], index) - margin


def _apart(found: _Marks, others: list[int], index: int) -> float:
    """The horizontal gap from a mark to the nearest of ``others`` (inf if none)."""
    if not others:
        return np.inf
    x, w = float(found.stats[index, 0]), float(found.stats[index, 2])
    lefts = found.stats[others, 0].astype(float)
    rights = lefts + found.stats[others, 2]
    return float(np.maximum(0.0, np.maximum(lefts - (x + w), x - rights)).min())


class _Band:
    """A line as it is being found: its digit-sized marks, or (for a line found only in
    marks spanning several lines) a guessed extent."""

    def __init__(self, found: _Marks, members: list[int], extent=None) -> None:
        self.found = found
        self.members = members
        self.extent = extent
        self.sized = list(members)

    def add(self, index: int) -> None:
        self.members.append(index)
        self.sized.append(index)

    @property
    def frame(self) -> LineFrame:
        """Top and baseline: the medians of the digit-sized marks' tops and bottoms, so
        one tall or low digit does not widen the line."""
        if not self.sized:
            return LineFrame(*self.extent)
        return LineFrame(
            float(np.median(self.found.top[self.sized])),
            float(np.median(self.found.bottom[self.sized])),
        )

    @property
    def middle(self) -> float:
        frame = self.frame
        return (frame.top + frame.baseline) / 2


def _best_band(bands: list[_Band], top: float, bottom: float) -> _Band | None:
    """The band a mark from ``top`` to ``bottom`` overlaps most, if by enough."""
    best, best_share = None, _SAME_LINE
    for band in bands:
        frame = band.frame
        overlap = min(frame.baseline, bottom) - max(frame.top, top)
        share = overlap / max(1.0, min(frame.height, bottom - top))
        if share >= best_share:
            best, best_share = band, share
    return best


def _typical_height(heights: np.ndarray, widths: np.ndarray, tops: np.ndarray) -> float:
    """The height of one line's digits: the height most marks share (within 15%), unless
    those are digits of two lines joined (lines written touching): then the shorter marks
    beside them, as wide as they are, level with their tops or their bottoms, and about
    half as tall. Not the median, as on a page whose lines touch many marks are digits of
    two or three lines joined."""
    common = _common(heights)
    shared = np.abs(heights - common) <= 0.15 * common
    if not shared.any():
        return _height_of_spans(heights, tops, common)
    width = float(np.median(widths[shared]))
    # Commas and points are narrow, and a '1' alone does not make a line height.
    single = (
        (heights >= 0.4 * common)
        & (heights <= common / _TWO_LINES)
        & (widths >= _SINGLE_WIDTH * width)
    )
    bottoms = tops + heights
    level = np.zeros(len(heights), bool)
    for i in np.flatnonzero(single):
        overlapping = shared & (tops < bottoms[i]) & (bottoms > tops[i])
        near = _LEVEL * heights[i]
        # Old-style figures ('0' short, '6' tall, '4' hanging) are neither.
        level[i] = bool(
            np.any(overlapping & (np.abs(tops - tops[i]) <= near))
            or np.any(overlapping & (np.abs(bottoms - bottoms[i]) <= near))
        )
    # A short digit or two of some fonts ('0') are level with the others' tops too.
    if np.count_nonzero(level) >= max(2, _SINGLES * np.count_nonzero(shared)):
        return _common(heights[level])
    return _height_of_spans(heights, tops, common)


def _height_of_spans(heights: np.ndarray, tops: np.ndarray, typical: float) -> float:
    """The digit height that, with one line pitch, best explains the heights of marks
    joining the digits of several lines (each the digit height plus a whole number of
    pitches): ``typical`` unless a smaller height explains clearly more of the marks at
    least about ``typical`` tall, and every line it supposes has a mark starting or ending
    in it (where every digit touches another line, the height most marks share is that of
    two lines or three; half a line's height would explain those too, but half its lines
    would hold no mark's top or bottom)."""
    tall = heights >= _SURELY_DIGIT * typical
    if not np.any(heights > _SPANNING * typical):
        return typical
    heights, tops = heights[tall], tops[tall]
    # One tolerance for all: how much marks' heights vary (a pen's width, a tall digit)
    # does not shrink with the digit height supposed.
    tolerance = _FIT * typical
    # The common height's own marks are those within 15% of it (see _common).
    common = _explained(heights, typical, tolerance, alone=0.15 * typical)[0]
    needed = common + max(2.0, _CLEARLY * len(heights))
    best, best_count = typical, needed - 1
    for height in np.arange(_SMALLEST_SPANNED * typical, typical, 0.5):
        count, pitch = _explained(heights, float(height), tolerance)
        # Equal counts: the larger height (a half of it explains the same marks).
        if count >= max(needed, best_count) and _lines_all_held(
            tops, tops + heights, float(height), pitch, tolerance
        ):
            best, best_count = float(height), count
    return best


def _explained(
    heights: np.ndarray, digit: float, tolerance: float, alone: float | None = None
) -> tuple[int, float]:
    """The most of ``heights`` that one pitch between _PITCH digit heights explains as
    ``digit`` plus a whole number of pitches (within ``tolerance``; marks of one line
    within ``alone``, if given), and that pitch (the closest fitting)."""
    pitches = np.arange(_PITCH[0] * digit, _PITCH[1] * digit, 0.25)
    steps = np.maximum(0.0, np.rint((heights[None, :] - digit) / pitches[:, None]))
    residual = np.abs(heights[None, :] - digit - steps * pitches[:, None])
    within = residual <= tolerance
    if alone is not None:
        within |= np.abs(heights - digit)[None, :] <= alone
    counts = within.sum(axis=1)
    # Of the pitches explaining the most, the one fitting them closest.
    misfit = np.where(within, residual, 0.0).sum(axis=1) + np.where(
        counts < counts.max(), np.inf, 0
    )
    return int(counts.max()), float(pitches[int(misfit.argmin())])


def _lines_all_held(
    tops: np.ndarray, bottoms: np.ndarray, digit: float, pitch: float, tolerance: float
) -> bool:
    """Whether every line of ``digit`` height and ``pitch`` from the topmost mark down to
    the lowest holds the top or the bottom of some mark."""
    first = tops.min()
    count = 1 + int(round((bottoms.max() - first - digit) / pitch))
    held = np.zeros(count, bool)
    for offsets in (tops - first, bottoms - first - digit):
        line = np.rint(offsets / pitch)
        near = (np.abs(offsets - line * pitch) <= tolerance) & (line >= 0) & (line < count)
        held[line[near].astype(np.int64)] = True
    return bool(held.all())


def _common(heights: np.ndarray) -> float:
    """The height most of ``heights`` share, within 15%."""
    support = [int(np.count_nonzero(np.abs(heights - h) <= 0.15 * h)) for h in heights]
    best = max(support)
    shared = [h for h, n in zip(heights, support, strict=True) if n == best]
    # Among equally common heights (a '-4': one bar, one digit), digits are the tallest.
    return float(max(shared) if best == 1 else np.median(shared))


def _line_layout(
    ink: Ink,
    found: _Marks,
    members: list[int],
    pieces_of: dict[int, np.ndarray],
    frame: LineFrame,
    *,
    single: bool,
) -> LineLayout | str:
    """One line's items and fields; a diagnosis if its marks are too many for digits."""
    mark_items, digit_indices, specks = [], [], []
    for index in members:
        kind = _mark_kind(found, index, members, frame)
        x, y, w, h = (int(v) for v in found.stats[index, :4])
        if kind == marks.UNKNOWN and found.small[index]:
            # Specks too small to be digits were never read as anything; an unknown one is
            # noise more often than writing, yet it may be a mark the rules cannot tell.
            specks.append((x, y, w, h))
            continue
        if kind is None:
            # Marks small beside the page's largest (digits of touching lines joined) may
            # be digits of their line all the same.
            top, bottom = float(found.top[index]), float(found.bottom[index])
            if not found.small[index] or not marks.is_small(top, bottom, w, frame):
                digit_indices.append(index)
            continue
        deskewed = (float(found.top[index]), float(found.bottom[index]))
        unsure = kind in (marks.POINT, marks.COMMA) and marks.point_or_comma_unsure(
            *deskewed, w, frame
        )
        mark_items.append(Item(kind, (x, y, w, h), deskewed=deskewed, unsure=unsure))
    line_ink, crossed = _line_ink(ink, found, digit_indices, pieces_of, frame.height, single=single)
    items = list(mark_items)
    kept: list[Mark] = []
    if line_ink is not None:
        found_marks = digit_marks(line_ink)
        if isinstance(found_marks, str):
            return found_marks
        for mark in found_marks:
            x, y, w, h = mark.box
            cut = np.count_nonzero(crossed[y : y + h, x : x + w][mark.mask])
            top = y - (x + w / 2) * found.slant
            kind = _cut_off_mark(top, top + h, w, frame) if cut else None
            if kind is None:
                kept.append(mark)
            elif np.count_nonzero(mark.mask) >= ink.stroke**2 / 2:
                # A point or comma touching a digit of the next line, parted from it (or
                # the end of a digit's stroke that reached into this line: unknown); a
                # sliver smaller than a dot of the pen is no mark at all.
                items.append(Item(kind, mark.box, deskewed=(top, top + h), unsure=True))
    line = LineLayout(line_ink or ink, items, [], frame, kept, crossed, specks)
    return line.with_digits([piece for mark in kept for piece in mark.pieces()])[0]


def _cut_off_mark(top: float, bottom: float, width: int, frame: LineFrame) -> str | None:
    """The mark a piece parted from ink it shared with another line is (its deskewed
    rows and its width), when it is too small to be a digit of this line; None otherwise."""
    if not marks.is_small(top, bottom, width, frame):
        return None
    return marks.classify(top, bottom, width, frame)


def _mark_kind(found: _Marks, index: int, members: list[int], frame: LineFrame) -> str | None:
    """The mark a line member is (see :mod:`marks`), or None when it is part of a digit."""
    x, _, w, h = (int(v) for v in found.stats[index, :4])
    top, bottom = float(found.top[index]), float(found.bottom[index])
    if not marks.is_small(top, bottom, w, frame):
        return None
    overlap = 0
    for other in members:
        if other == index or found.small[other]:
            continue
        ox, _, ow, _ = (int(v) for v in found.stats[other, :4])
        overlap = max(overlap, min(x + w, ox + ow) - max(x, ox))
    if overlap > _ISOLATED * w:
        return None
    return marks.classify(top, bottom, w, frame)


def _line_ink(
    ink: Ink,
    found: _Marks,
    indices: list[int],
    pieces_of: dict[int, np.ndarray],
    digit: float,
    *,
    single: bool,
) -> tuple[Ink | None, np.ndarray]:
    """The ink of one line's digit marks, labelled afresh (on a one-line page the page's
    own components, so a single number is segmented exactly as before); and where a cut
    between this line and the next crossed ink (the pixels each side of it)."""
    spanning = [i for i in pieces_of if not found.small[i]]
    crossed = np.zeros(ink.labels.shape, bool)
    if not indices and not spanning:
        return None, crossed
    if single and not spanning:
        keep = np.isin(ink.ids, found.ids[indices])
        line = Ink(ink.labels, ink.stats[keep], ink.ids[keep], ink.scale, ink.stroke, ink.core)
        return line, crossed
    mask = np.isin(ink.labels, found.ids[indices])
    for index in spanning:
        x, y, w, h = (int(v) for v in found.stats[index, :4])
        mark = ink.labels[y : y + h, x : x + w] == found.ids[index]
        # Each cut's row in the mark's box, column by column, where the page's slant puts it.
        level = np.arange(w) * found.slant + x * found.slant - y
        low, high = (_cut_rows(mark, level + cut, digit) for cut in pieces_of[index])
        rows = np.arange(h)[:, None]
        mask[y : y + h, x : x + w] |= mark & (rows >= low) & (rows < high)
        for cut in (low, high):
            if not np.isfinite(cut).all():
                continue
            for side in (cut - 1, cut):
                inside = np.flatnonzero((side >= 0) & (side < h))
                hit = inside[mark[side[inside], inside]]
                crossed[y + side[hit], x + hit] = True
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        mask.astype(np.uint8), connectivity=8
    )
    if count < 2:
        return None, crossed
    return Ink(labels, stats[1:], np.arange(1, count), ink.scale, ink.stroke, ink.core), crossed


def _cut_rows(mark: np.ndarray, straight: np.ndarray, digit: float) -> np.ndarray:
    """The row of a cut through ``mark`` (digits of two lines touching) in every column:
    the path crossing the least ink within a third of a digit of the ``straight`` cut,
    moving at most a row a column, so it passes between a digit's tail and the digit
    below it rather than through either. Unbounded cuts (``straight`` infinite) stay so."""
    if not np.isfinite(straight).all():
        return straight
    h, w = mark.shape
    reach = max(1, int(round(_CUT_REACH * digit)))
    offsets = np.arange(-reach, reach + 1)
    rows = np.rint(straight).astype(np.int64)[None, :] + offsets[:, None]
    inside = (rows >= 0) & (rows < h)
    ink = np.where(inside, mark[np.clip(rows, 0, h - 1), np.arange(w)[None, :]], 0)
    # Among equal paths, the one nearest the straight cut; summed over all columns the
    # pull is less than one pixel of ink.
    cost = ink + _PULL * np.abs(offsets)[:, None] / reach
    total = cost[:, 0].copy()
    came_from = np.zeros(cost.shape, np.int64)
    index = np.arange(len(offsets))
    for column in range(1, w):
        options = np.stack([np.r_[np.inf, total[:-1]], total, np.r_[total[1:], np.inf]])
        move = options.argmin(axis=0)
        total = options[move, index] + cost[:, column]
        came_from[:, column] = index + move - 1
    path = np.empty(w, np.int64)
    path[-1] = int(total.argmin())
    for column in range(w - 1, 0, -1):
        path[column - 1] = came_from[path[column], column]
    return rows[path, np.arange(w)]


def _fields(items: list[Item], frame: LineFrame) -> list[list[int]]:
    """Item indices grouped into fields where the gap between neighbours is wide."""
    fields: list[list[int]] = []
    right, previous = -np.inf, None
    for index, item in enumerate(items):
        x, _, w, h = item.box
        # Some hands and fonts hang a '4' or '9' below the others ("old-style" figures):
        # the taller neighbour is the measure of the gap.
        digit = max(frame.height, h, previous.box[3] if previous else 0)
        if not fields or x - right > _field_gap(previous, item) * digit:
            fields.append([])
        fields[-1].append(index)
        right, previous = max(right, x + w), item
    return fields


def _field_gap(left: Item | None, right: Item) -> float:
    """The gap, in digit heights, beyond which ``right`` starts a new field after ``left``.

    People leave room around a point, a comma or a minus, so a gap beside one is
    ``_MARK_GAP``; between digits ``_FIELD_GAP``; and a minus after a digit starts a
    number (one never stands inside a number) when it is a little apart.
    """
    if left is None:
        return 0.0
    if left.kind == "digit" and right.kind == marks.MINUS:
        return _SIGN_GAP
    if left.kind == right.kind == "digit":
        return _FIELD_GAP
    return _MARK_GAP


def split_at_columns(layout: Layout) -> Layout:
    """The layout with a field that bridges two fields of other lines (a table's columns)
    split between its items where those lines' numbers part, in a line with fewer fields
    than most lines have, when most other lines part there. People write a table's
    columns apart, yet a line written larger or a column written wider can bring two
    numbers of one line closer than the gap that parts numbers elsewhere; the other lines
    show where the column edge is, whichever way the columns are aligned."""
    extents = [
        [[layout.deskewed_x(line.items[i].box) for i in members] for members in line.fields]
        for line in layout.lines
    ]
    usual = _usual_count([len(line.fields) for line in layout.lines])
    lines = []
    for index, line in enumerate(layout.lines):
        others = [
            [(min(a for a, _ in spans), max(b for _, b in spans)) for spans in other_fields]
            for other, other_fields in enumerate(extents)
            if other != index
        ]
        needed = max(_COLUMN_SUPPORT, (len(others) + 1) // 2)
        while len(line.fields) < usual:
            split = _column_split(line, extents[index], others, needed)
            if split is None:
                break
            field_index, cut = split
            fields, spans = list(line.fields), extents[index]
            fields[field_index : field_index + 1] = [
                fields[field_index][:cut],
                fields[field_index][cut:],
            ]
            extents[index] = [
                *spans[:field_index],
                spans[field_index][:cut],
                spans[field_index][cut:],
                *spans[field_index + 1 :],
            ]
            line = replace(line, fields=fields)
        lines.append(line)
    return Layout(lines, layout.scale, layout.slant, layout.diagnosis)


def _usual_count(counts: list[int]) -> int:
    """The most common of a table's lines' counts of fields; between equally common
    ones, the larger (0 for no lines)."""
    return max(set(counts), key=lambda n: (counts.count(n), n), default=0)


def _column_split(
    line: LineLayout,
    extents: list[list[tuple[float, float]]],
    others: list[list[tuple[float, float]]],
    needed: int,
) -> tuple[int, int] | None:
    """Which field of ``line`` to split and before which of its items (see
    :func:`split_at_columns`): a gap between items at least _COLUMN_GAP digit heights
    wide, not beside a point, comma or minus (those stand inside a number), where at
    least ``needed`` other lines part two fields that the field overlaps both of; the
    most such lines, then the widest gap. None if there is no such gap."""
    best, best_key = None, (needed, 0.0)
    digit = line.frame.height
    for field_index, (members, spans) in enumerate(zip(line.fields, extents, strict=True)):
        start, end = min(a for a, _ in spans), max(b for _, b in spans)
        for cut in range(1, len(spans)):
            before, after = line.items[members[cut - 1]].kind, line.items[members[cut]].kind
            if before in _INSIDE or after in (marks.POINT, marks.COMMA):
                continue
            left_end = max(b for _, b in spans[:cut])
            right_start = min(a for a, _ in spans[cut:])
            gap = right_start - left_end
            if gap < _COLUMN_GAP * digit:
                continue
            support = sum(
                any(
                    start < first[1] < right_start and left_end < second[0] < end
                    for first, second in zip(other_fields, other_fields[1:], strict=False)
                )
                for other_fields in others
            )
            if support >= needed and (support, gap) > best_key:
                best, best_key = (field_index, cut), (support, gap)
    return best


def columns(layout: Layout) -> list[list[int]]:
    """For each line, each field's column: fields of different lines share a column when
    their deskewed x-extents overlap (directly or through other fields)."""
    extents = []
    for line_index, line in enumerate(layout.lines):
        for field_index, members in enumerate(line.fields):
            boxes = [line.items[i].box for i in members]
            spans = [layout.deskewed_x(box) for box in boxes]
            extents.append(
                (min(s[0] for s in spans), max(s[1] for s in spans), line_index, field_index)
            )
    extents.sort()
    column_of: dict[tuple[int, int], int] = {}
    column, right = -1, -np.inf
    for left, end, line_index, field_index in extents:
        if left > right:
            column += 1
        right = max(right, end)
        column_of[line_index, field_index] = column
    return [
        [column_of[line_index, field_index] for field_index in range(len(line.fields))]
        for line_index, line in enumerate(layout.lines)
    ]


def original_box(layout: Layout, box: Box, shape: tuple[int, ...]) -> Box:
    """A working-scale box in the original image's pixel coordinates."""
    return to_original(box, layout.scale, shape)
