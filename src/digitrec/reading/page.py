"""Reading a page of numbers: the layout (:mod:`digitrec.reading.layout`), the model on
every digit, and a verdict per number on whether a person should check it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from digitrec.models import Model
from digitrec.reading import cuts, marks
from digitrec.reading.candidates import Candidates, read_candidates
from digitrec.reading.framing import TILE
from digitrec.reading.ink import Box
from digitrec.reading.layout import (
    Item,
    Layout,
    LineLayout,
    columns,
    find_layout,
    original_box,
    split_at_columns,
)
from digitrec.reading.recognize import (
    DigitReading,
    Field,
    Reading,
    candidate_reader,
    chosen_digits,
    read_images,
)

LAYOUTS = ("auto", "number", "lines", "table")
# The shortest digit of a number is at least this share of the tallest's height.
_SAME_HEIGHT = 0.7
# A digit's box wider than this times its height may hold two digits (a '0' or a '7' with
# a long bar is rarely so wide).
_WIDE = 1.2
# A digit further than this (in temperatures of the model's softmin) from every training
# digit of its class is unlike any digit the model knows: a letter, a smudge, a merged
# pair. The 99.9th percentile of the 1,218 digits read on the font generator's tuning
# photos, numbers and drawings (seeds 9001-9003) is 13.5; written words ("hello",
# "total", ...) in the 18 fonts read 44 of 144 times with a digit further than that.
_UNLIKE_ANY_DIGIT = 13.5
# A digit wider than this times the page's typical digit width (and not much narrower than
# tall) may be two digits joined: handwriting keeps one width for its digits.
_WIDER_THAN_OTHERS = 1.5
_SQUARE = 0.9
# A number whose confidence (the product of its digits') is below this is flagged for
# review: the confidence at 95% coverage of the tuning photos, numbers and drawings
# (benchmarks/pages.py --tuning prints the trade-off). The default model's network makes
# its probabilities sharper, the more since it is trained on other writers' digits too:
# that confidence is now 0.993. At 0.99, 0.936 of the tuning single numbers are left
# unflagged with 2 of 13 wrong answers without a flag (at 0.95: 0.953 and 2 of 13), and on
# 100 tuning pages 11 wrong numbers carry no flag (at 0.95: 18).
MIN_CONFIDENCE = 0.99
# A gap between two digits of a number wider than this share of their height, with no mark
# in it, is where people leave room for a point or comma that was not found (tuning pages:
# numbers read whole have gaps up to 0.57 of the height; 12 of the 14 whose point or comma
# was lost have more).
_LOST_MARK_GAP = 0.58
# A point or comma overlapping a digit in x by more than this share of its width is under
# it (tuning pages: 313 of the 316 points and commas found overlap none; the other 3 are
# the broken feet of digits, overlapping by 0.38-0.5).
_UNDER = 0.25
# A speck taken for noise this many digit heights or nearer beside a number may be a mark
# of it that was not told (a minus, point or comma as small as a speck).
_BESIDE = 0.75
# Two numbers of a line closer than this share of their digits' height may be one whose
# point or comma was lost, which split it in two (tuning pages: 17 of 20 such splits are
# closer; 6 of 525 pairs of neighbours read right are too).
_CLOSE_FIELDS = 1.0


def read_page(
    model: Model,
    image: np.ndarray,
    *,
    layout: str = "auto",
    min_confidence: float = MIN_CONFIDENCE,
    explain: bool = False,
    model_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Reading:
    """Read ``image`` (uint8 greyscale) as a page of numbers.

    ``layout`` is ``number`` (every digit as one number, as :func:`read_image`), ``lines``
    (lines of fields), ``table`` (lines of fields aligned into columns) or ``auto`` (lines;
    one number reads as one number). ``explain`` and ``model_context`` are as in
    :func:`~digitrec.reading.recognize.read_images`.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if layout == "number" or image.shape == (TILE, TILE):
        # A 28x28 image is one MNIST-style digit (a canvas, a dataset tile), framed as is.
        (reading,) = read_images(model, [image], explain=explain, model_context=model_context)
        return reading
    found = find_layout(image)
    if found.diagnosis:
        return Reading(diagnosis=found.diagnosis)
    read, read_digits = _read_lines(model, found, image.shape, explain, model_context)
    if layout == "table":
        read = split_at_columns(read)
    lines = [
        _line_fields(read, line, image.shape, min_confidence, read_digits)
        for line in read.lines
    ]
    _flag_wide_digits([f for line in lines for f in line])
    if layout == "table":
        for line, line_columns in zip(lines, columns(read), strict=True):
            for f, column in zip(line, line_columns, strict=True):
                f.column = column
    digits = [d for line in lines for f in line for d in f.digits]
    return Reading(digits, lines=lines)


def _read_lines(
    model: Model,
    found: Layout,
    shape: tuple[int, ...],
    explain: bool,
    model_context: Callable[[], contextlib.AbstractContextManager],
) -> tuple[Layout, dict[int, DigitReading]]:
    """The layout with every line's digits cut and read as a single number's are
    (:mod:`digitrec.reading.cuts`): every line's candidate digits read in two model calls
    at most, and each line's cuts chosen by that reading; and the digits' readings, keyed
    by the id of their items."""
    candidates = [_line_candidates(found, line, shape) for line in found.lines]
    read, explained = candidate_reader(model, explain, model_context)
    read_candidates(read, candidates)
    lines, read_digits = [], {}
    for line, found_line in zip(found.lines, candidates, strict=True):
        chosen = found_line.chosen()
        lattice = found_line.lattice
        order = lattice.read()
        pieces = [order[position] for position in chosen]
        line, digit_items = line.with_digits([(lattice.masks[i], lattice.boxes[i]) for i in pieces])
        readings = chosen_digits(found_line, chosen, model.classes, explained)
        read_digits.update(zip(map(id, digit_items), readings, strict=True))
        lines.append(line)
    return Layout(lines, found.scale, found.slant), read_digits


def _line_candidates(found: Layout, line: LineLayout, shape: tuple[int, ...]) -> Candidates:
    """The candidate digits of one line (:func:`digitrec.reading.cuts.lattice` of its
    digits' marks), boxes in the original image's coordinates."""
    if not line.marks:
        return Candidates(cuts.Lattice(nodes=1), np.zeros((0, TILE, TILE), np.uint8), [])
    lattice = cuts.lattice(line.ink, line.marks)
    boxes = [original_box(found, lattice.boxes[i], shape) for i in lattice.read()]
    return Candidates(lattice, cuts.tiles(line.ink, lattice), boxes)


def _line_fields(
    found: Layout,
    line: LineLayout,
    shape: tuple[int, ...],
    min_confidence: float,
    read: dict[int, DigitReading],
) -> list[Field]:
    """The fields of one line, given its digits' readings (keyed by item)."""
    fields = []
    for members in line.fields:
        items = [line.items[i] for i in members]
        digits = [read[id(item)] for item in items if item.kind == "digit"]
        fields.append(_field(items, digits, found, shape, min_confidence, read))
    for index, (before, after) in enumerate(zip(fields, fields[1:], strict=False)):
        if before.digits and after.digits and _gap(before.digits, after.digits) < _CLOSE_FIELDS:
            _flag(before, "close to the next number: one number whose point or comma was lost?")
            _flag(after, "close to the previous number: one number whose point or comma was lost?")
        last = line.items[line.fields[index][-1]].kind
        first = line.items[line.fields[index + 1][0]].kind
        if last in (marks.MINUS, marks.POINT, marks.COMMA) or first in (marks.POINT, marks.COMMA):
            # Numbers end in a digit and go on after their marks: a mark where two part
            # was taken from one of them, or one number was split at it.
            _flag(before, "a mark at its end: one number with the next?")
            _flag(after, "a mark where it meets the previous number: one number with it?")
    if fields:
        spans = [[line.items[i].box for i in members] for members in line.fields]
        for speck in line.specks:
            apart = [_apart(speck, boxes) for boxes in spans]
            nearest = int(np.argmin(apart))
            if apart[nearest] <= _BESIDE * line.frame.height:
                _flag(fields[nearest], "a speck beside it taken for noise: a mark missed?")
    return fields


def _apart(box: Box, boxes: list[Box]) -> float:
    """The horizontal gap from ``box`` to the extent of ``boxes`` (0 if they overlap)."""
    x, _, w, _ = box
    start = min(b[0] for b in boxes)
    end = max(b[0] + b[2] for b in boxes)
    return float(max(0, start - (x + w), x - end))


def _flag_wide_digits(fields: list[Field]) -> None:
    """Flag the numbers holding a digit much wider than the page's typical digit (a pair
    the segmenter left joined reads as one digit, often a confident one)."""
    boxes = [d.box for f in fields for d in f.digits]
    # '1's are narrow for any hand: the typical width comes from the others.
    widths = [w for _, _, w, h in boxes if w >= 0.4 * h]
    if len(widths) < 3:
        return
    typical = float(np.median(widths))
    for f in fields:
        if any(
            w > _WIDER_THAN_OTHERS * typical and w >= _SQUARE * h
            for _, _, w, h in (d.box for d in f.digits)
        ):
            _flag(f, "a digit much wider than the others: digit count unsure")


def _gap(left: list[DigitReading], right: list[DigitReading]) -> float:
    """The gap from ``left``'s last digit to ``right``'s first, in digit heights."""
    height = float(np.median([d.box[3] for d in left + right]))
    end = max(d.box[0] + d.box[2] for d in left)
    return (min(d.box[0] for d in right) - end) / max(1.0, height)


def _flag(f: Field, problem: str) -> None:
    f.needs_review = True
    f.diagnosis = f"{f.diagnosis}; {problem}" if f.diagnosis else problem


def _field(
    items: list[Item],
    digits: list[DigitReading],
    found: Layout,
    shape: tuple[int, ...],
    min_confidence: float,
    read: dict[int, DigitReading],
) -> Field:
    """One number: its text, box, digits, confidence, and what a person should check."""
    text = "".join(
        str(read[id(i)].digit) if i.kind == "digit" else _mark_text(i.kind) for i in items
    )
    problems = _mark_problems([i.kind for i in items])
    heights = [d.box[3] for d in digits]
    if heights and min(heights) < _SAME_HEIGHT * max(heights):
        # The digits of one number are about as tall as each other; letters are not
        # ('h' and 'e'), nor a smudge beside a digit.
        problems.append("marks of different heights, perhaps letters")
    if any(i.unsure for i in items):
        problems.append("a mark between a point and a comma in shape: point or comma unsure")
    if any(_under_a_digit(i, items) for i in items if i.kind in (marks.POINT, marks.COMMA)):
        problems.append("a point or comma under a digit: a broken piece of it?")
    pairs = zip(items, items[1:], strict=False)
    gaps = [_gap([read[id(a)]], [read[id(b)]]) for a, b in pairs if a.kind == b.kind == "digit"]
    if gaps and max(gaps) > _LOST_MARK_GAP:
        problems.append("a wide gap between two digits: a point or comma may be missing")
    if any(i.reaches_up for i in items):
        problems.append("a digit reaching into the line above: a point or comma of it joined?")
    if any(i.joined for i in items):
        problems.append("a digit touching one of the next line: where they part is a guess")
    if any(d.distance is not None and d.distance > _UNLIKE_ANY_DIGIT for d in digits):
        problems.append("a mark unlike any digit: a letter, a smudge or two digits joined?")
    if any(d.box[2] > _WIDE * d.box[3] for d in digits):
        # The segmenter cuts marks this wide into digits only where the cut is clean; one
        # left whole may be two digits joined, or a smudge.
        problems.append("a digit wider than tall: digit count unsure")
    confidence = float(np.prod([d.confidence for d in digits])) if digits else 0.0
    if digits and confidence < min_confidence:
        doubtful = [str(d.digit) for d in digits if d.confidence < min_confidence]
        problems.append(
            f"low confidence {confidence:.2f}"
            + (f" (doubtful: {', '.join(doubtful)})" if doubtful else "")
        )
    x0 = min(i.box[0] for i in items)
    y0 = min(i.box[1] for i in items)
    x1 = max(i.box[0] + i.box[2] for i in items)
    y1 = max(i.box[1] + i.box[3] for i in items)
    box = original_box(found, (x0, y0, x1 - x0, y1 - y0), shape)
    diagnosis = "; ".join(problems) or None
    return Field(text, box, digits, confidence, bool(problems), diagnosis)


def _under_a_digit(mark: Item, items: list[Item]) -> bool:
    """Whether ``mark`` lies under a digit beside it, by more than _UNDER of its width:
    people write points and commas between digits, and the foot of a broken stroke
    looks like one."""
    x, _, w, _ = mark.box
    return any(
        min(x + w, dx + dw) - max(x, dx) > _UNDER * w
        for dx, _, dw, _ in (i.box for i in items if i.kind == "digit")
    )


def _mark_text(kind: str) -> str:
    return "" if kind == marks.UNKNOWN else kind


def _mark_problems(kinds: list[str]) -> list[str]:
    """What is wrong with where the marks of one number are (empty if nothing)."""
    problems = []
    if marks.UNKNOWN in kinds:
        problems.append(f"{kinds.count(marks.UNKNOWN)} unknown mark(s) that are not digits")
    if "digit" not in kinds:
        named = sorted({marks.describe(k) for k in kinds})
        problems.append(f"a {' and '.join(named)} with no digits")
        return problems
    for position, kind in enumerate(kinds):
        if kind == marks.MINUS and position > 0:
            problems.append("a minus in the middle of a number")
        if kind in (marks.POINT, marks.COMMA):
            before = kinds[:position]
            after = kinds[position + 1 :]
            if not before or before[-1] != "digit" or not after or after[0] != "digit":
                problems.append(f"a {marks.describe(kind)} not between two digits")
    return problems
