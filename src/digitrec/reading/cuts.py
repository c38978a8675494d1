"""Cutting a line of handwritten marks into digits by how well the model reads the pieces.

Geometry alone cuts touching digits badly: two cursive digits written together are often
no wider than one round digit, and a cut through the middle of a '0' looks much like a cut
between a '1' and a '0'. A person reads the pieces to decide. So do we: every mark gets a
few candidate cuts (the cuts geometry would make, see :mod:`digitrec.reading.segment`,
and paths from top to bottom through the least ink near each valley of the ink's
vertical profile, see :func:`_seams`); every piece
between two cuts of one mark, and every pair of neighbouring marks taken as one digit, is
a candidate digit. The candidates form a lattice whose nodes are the cuts, left to right;
the model reads every candidate once, and :func:`choose` takes the path through the
lattice (a reading of the whole line) with the highest score: the sum over its pieces of
the log probability of the piece's digit and log priors on its width and height relative
to the line's and on the ink its cut crosses.

Every mark has a bounded number of cuts (``_MAX_SEAMS``) and a line a bounded number of
candidates besides geometry's (``MAX_PIECES``), so no image costs unbounded time; and
:mod:`digitrec.reading.candidates` reads a mark's other candidates only when geometry's
pieces of it read badly (:func:`to_explore`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from digitrec.reading.framing import TILE, tile_from_mask
from digitrec.reading.ink import Box, Ink, bounding_box, crop
from digitrec.reading.segment import Mark, least_cost_path

# Candidate cuts per mark besides geometry's, and candidate digits per line besides
# geometry's pieces and neighbouring marks taken together: a line of 64 marks still reads
# in bounded time.
_MAX_SEAMS = 8
MAX_PIECES = 48
# Marks narrower than this share of the line's height are one digit (or a '1' and its
# neighbour, too narrow to cut well); wider ones get candidate cuts.
_CUT_FROM = 0.45
# Candidate cuts keep this share of the line's height from the mark's edges and from
# each other (and at least 1.5 strokes from the edges: a '1' is a stroke wide).
_CUT_MARGIN = 0.1
_CUT_APART = 0.2
# No digit is wider than this share of the line's height: pieces wider are not read,
# unless the piece is a whole mark.
_MAX_PIECE_WIDTH = 1.6
# Neighbouring marks are tried as one digit (a '5' whose bar came loose sideways) when
# together they are at most this wide and this far apart, in line heights.
_MERGE_WIDTH = 1.0
_MERGE_GAP = 0.2
# A cut moving one column between rows costs this much more than one going straight, so
# cuts through blank space go straight rather than weave.
_DIAGONAL = 0.1

# The score of a piece (see ``piece_scores``). First chosen on the first 200 numbers of
# UNIPEN's tuning writers (benchmarks/real_world.py --unipen-part tuning --seed 9000) by a
# random search of 300 settings, every candidate read. The distance terms were then chosen
# on writers the model had not seen: two models each trained without five of the tuning
# writers, reading 200-300 numbers of those five (700 numbers, every candidate read). A
# digit costs by how much further than a typical digit (8 temperatures) it lies from the
# digits the model knows, and more the further it lies: a merged pair ('35' read as one
# '0') lies much further than either of its digits, where a plain distance cost made two
# digits cost more than one merged pair. With these terms a digit's own weight is a cost
# (piece_with_distance), where the model gives distances. Exact 0.788 -> 0.819 over the
# three sets (each set gained 2.3-4 points; a broad plateau of settings gained 2.5-3).
# Real writers' single digits are often wide (a tenth of UNIPEN's tuning digits are wider
# than 1.2 times their height, '0', '2' and '5' most), so width alone cannot tell a wide
# digit from two touching ones; but a wide digit reads like a digit the model knows, where
# two touching digits read as one lie far from every digit it knows: wide_far costs a
# piece by its width beyond wide_from times its distance beyond typical_distance. On the
# two writer folds of benchmarks/writer_folds.py (400 numbers, every candidate read),
# exact 0.835 -> 0.8425 and 30 -> 26 numbers with the wrong count; weights 0.5-2 all gained.
SCORE_WEIGHTS = {
    "piece": 0.5,  # added per digit: more or fewer digits ...
    "piece_with_distance": -1.0,  # ... or this, where the model gives distances
    "wide_from": 1.0,  # widths beyond this many line heights cost ...
    "wide": 4.0,  # ... this much per squared line height
    "widest": 1.8,  # no piece wider than this many line heights is one digit
    "short_below": 0.6,  # heights below this many line heights cost ...
    "short": 20.0,  # ... this much per squared line height
    "cut": 1.0,  # per stroke the cut before the piece crosses (crossed_ink)
    "geometry": 0.25,  # for a piece that geometry alone would cut
    "blank": 1.0,  # for a sliver with too little ink to be a digit, read as nothing
    "typical_distance": 8.0,  # distance (temperatures) to the nearest digit the model knows
    "distance": 0.5,  # per temperature beyond the typical distance ...
    "distance_squared": 0.005,  # ... and per squared temperature of the whole distance
    "wide_far": 1.0,  # per line height beyond wide_from times temperature beyond typical
}
# Geometry's pieces of a mark are read first; the mark's other candidates only when one of
# them is wider than this many line heights, or read with a probability below this, or
# lies further than this (in temperatures) from every digit the model knows. On the same
# numbers these read 0.70 exactly (every candidate read: 0.71) with 9.5 tiles a number
# instead of 18.5 (geometry's alone: 3.6); on the font generator's numbers (seed 9002)
# 3.2 tiles instead of 3.1, and as many exactly as geometry alone (0.98; every candidate
# read: 0.965).
EXPLORE = {"width": 1.5, "probability": 0.9, "distance": 10.0}


@dataclass
class Lattice:
    """Candidate digits of one line (working scale), and where each starts and ends.

    Nodes are cuts numbered left to right: 0 is the left edge of the first mark, ``nodes
    - 1`` the right edge of the last. Piece ``i`` runs from node ``starts[i]`` to node
    ``ends[i]``, with its mask and box; ``blank[i]`` marks a sliver with too little ink
    to be a digit, read as nothing. ``width``/``height`` are in line heights; ``crossed``
    is the ink (in strokes, see :func:`crossed_ink`) that the cut at the piece's start
    crosses (0 at a mark's edge); ``geometric`` marks the pieces that geometry alone cuts
    (:class:`~digitrec.reading.segment.Mark`); ``marks`` are the first and last mark each
    piece takes ink from.
    """

    nodes: int
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    masks: list[np.ndarray | None] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    blank: list[bool] = field(default_factory=list)
    width: list[float] = field(default_factory=list)
    height: list[float] = field(default_factory=list)
    crossed: list[float] = field(default_factory=list)
    geometric: list[bool] = field(default_factory=list)
    marks: list[tuple[int, int]] = field(default_factory=list)

    def add(
        self,
        start: int,
        end: int,
        mask: np.ndarray | None,
        box: Box,
        line_height: float,
        crossed: float,
        geometric: bool,
        marks: tuple[int, int],
        *,
        blank: bool = False,
    ) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.masks.append(mask)
        self.boxes.append(box)
        self.blank.append(blank)
        self.width.append(box[2] / line_height)
        self.height.append(box[3] / line_height)
        self.crossed.append(crossed)
        self.geometric.append(geometric)
        self.marks.append(marks)

    def __len__(self) -> int:
        return len(self.starts)

    def read(self) -> list[int]:
        """The pieces with ink to read, in order."""
        return [i for i, blank in enumerate(self.blank) if not blank]


def lattice(ink: Ink, marks: list[Mark]) -> Lattice:
    """The candidate digits of ``marks`` (left to right, from
    :func:`~digitrec.reading.segment.digit_marks` on ``ink``)."""
    line_height = _line_height(marks)
    bounds = [_bounds(mark, line_height, False) for mark in marks]
    # The widest marks get candidate cuts first, while the budget lasts.
    budget = MAX_PIECES
    for index in sorted(range(len(marks)), key=lambda i: -marks[i].box[2]):
        if marks[index].box[2] < _CUT_FROM * line_height:
            break
        more = _bounds(marks[index], line_height, True)
        extra = _pairs(len(more[0])) - _pairs(len(bounds[index][0]))
        if extra <= budget:
            bounds[index] = more
            budget -= extra
    found = Lattice(nodes=1)
    starts = []
    for index, mark in enumerate(marks):
        start = found.nodes - 1
        starts.append(start)
        found.nodes += len(bounds[index][0]) - 1
        _add_pieces(found, mark, index, start, *bounds[index], line_height)
    for index in range(len(marks) - 1):
        merged = _merged(marks[index], marks[index + 1], line_height)
        if merged is not None:
            end = starts[index + 2] if index + 2 < len(marks) else found.nodes - 1
            found.add(starts[index], end, *merged, line_height, 0.0, False, (index, index + 1))
    return found


def tiles(ink: Ink, found: Lattice) -> np.ndarray:
    """The MNIST tiles of the pieces with ink (:meth:`Lattice.read`), in order."""
    pieces = found.read()
    if not pieces:
        return np.zeros((0, TILE, TILE), np.uint8)
    return np.stack(
        [tile_from_mask(found.masks[i], crop(ink.core, found.boxes[i])) for i in pieces]
    )


def piece_scores(
    found: Lattice,
    best_probability: np.ndarray,
    distance: np.ndarray | None,
    weights: dict[str, float] | None = None,
) -> np.ndarray:
    """Every piece's score (-inf for pieces not read): the log of the probability of its
    digit, less a cost of its distance to the nearest digit the model knows (both from
    :meth:`~digitrec.models.Model.proba_and_distance`, one per piece in :meth:`Lattice.read`
    order, NaN where not read), plus the log priors of its shape and its cut."""
    w = SCORE_WEIGHTS if weights is None else weights
    per_digit = w["piece"] if distance is None else w["piece_with_distance"]
    width = np.asarray(found.width)
    height = np.asarray(found.height)
    crossed = np.asarray(found.crossed)
    score = (
        per_digit
        - w["wide"] * np.clip(width - w["wide_from"], 0, None) ** 2
        - w["short"] * np.clip(w["short_below"] - height, 0, None) ** 2
        - w["cut"] * crossed
        + w["geometry"] * np.asarray(found.geometric, np.float64)
    )
    # No one digit is that wide, unless geometry could find no cut in it.
    score[(width > w["widest"]) & ~np.asarray(found.geometric)] = -np.inf
    blank = np.asarray(found.blank)
    score[blank] = -w["blank"] - w["cut"] * crossed[blank]
    read = np.asarray(found.read(), np.int64)
    fit = np.log(np.clip(np.nan_to_num(best_probability, nan=0.0), 1e-6, 1.0))
    if distance is not None:
        beyond = np.clip(distance - w["typical_distance"], 0, None)
        fit = fit - w["distance"] * beyond - w["distance_squared"] * distance**2
        wide = np.clip(width[read] - w["wide_from"], 0, None)
        fit = fit - w["wide_far"] * wide * beyond
    fit = np.where(np.isnan(best_probability), -np.inf, fit)
    score[read] += fit
    return score


def to_explore(
    found: Lattice, best_probability: np.ndarray, distance: np.ndarray | None
) -> np.ndarray:
    """Which marks to try other cuts of, given how the model read geometry's pieces (NaN
    elsewhere, as for :func:`piece_scores`): those with a piece wide for one digit, or
    read unsurely, or far from every digit the model knows."""
    count = 1 + max((last for _, last in found.marks), default=-1)
    explore = np.zeros(count, bool)
    read = found.read()
    for position, piece in enumerate(read):
        if not found.geometric[piece] or np.isnan(best_probability[position]):
            continue
        unsure = best_probability[position] < EXPLORE["probability"]
        far = distance is not None and distance[position] > EXPLORE["distance"]
        if found.width[piece] > EXPLORE["width"] or unsure or far:
            first, last = found.marks[piece]
            explore[first : last + 1] = True
    return explore


def choose(found: Lattice, scores: np.ndarray) -> list[int]:
    """The pieces (left to right, blanks left out) of the path from the first node to the
    last with the highest sum of ``scores``."""
    best = np.full(found.nodes, -np.inf)
    best[0] = 0.0
    came_by = np.full(found.nodes, -1)
    # Every piece runs forward, so visiting pieces by their start visits nodes in order.
    for i in sorted(range(len(found)), key=lambda i: found.starts[i]):
        start, end = found.starts[i], found.ends[i]
        if best[start] + scores[i] > best[end]:
            best[end] = best[start] + scores[i]
            came_by[end] = i
    path = []
    node = found.nodes - 1
    while node > 0 and came_by[node] >= 0:
        path.append(int(came_by[node]))
        node = found.starts[came_by[node]]
    return [i for i in reversed(path) if not found.blank[i]]


def _line_height(marks: list[Mark]) -> float:
    """The typical height of the line's digits: the median height of the marks at least
    0.4 times as tall as the tallest (loose specks and bars aside)."""
    heights = np.array([mark.box[3] for mark in marks], np.float64)
    return float(np.median(heights[heights >= 0.4 * heights.max()]))


def _pairs(bounds: int) -> int:
    """The most pieces between ``bounds`` cuts (a mark's edges among them)."""
    return bounds * (bounds - 1) // 2


def _seam_count(width: int, line_height: float) -> int:
    return int(min(_MAX_SEAMS, 1 + round(3 * width / line_height)))


def _bounds(
    mark: Mark, line_height: float, cut: bool
) -> tuple[list[np.ndarray], list[float], set[int]]:
    """The cuts of ``mark`` left to right (its edges first and last), the ink each crosses
    in strokes (:func:`crossed_ink`), and which of them geometry made (indices)."""
    h, w = mark.mask.shape
    solid = cv2.dilate(mark.mask.astype(np.uint8), np.ones((1, 3), np.uint8))
    rows = np.arange(h)
    inner = list(mark.bounds[1:-1])
    geometric_count = len(inner)
    if cut:
        margin = int(max(1.5 * mark.stroke, _CUT_MARGIN * line_height))
        apart = max(2, int(_CUT_APART * line_height))
        for seam in _seams(solid, margin, w - 1 - margin, _seam_count(w, line_height), apart):
            if not any(_same_cut(mark, seam, other) for other in inner):
                inner.append(seam)
    order = sorted(range(len(inner)), key=lambda i: float(inner[i].mean()))
    bounds = [mark.bounds[0], *(inner[i] for i in order), mark.bounds[-1]]
    geometric = {0, len(bounds) - 1} | {
        1 + position for position, i in enumerate(order) if i < geometric_count
    }
    crossed = [0.0]
    for seam in bounds[1:-1]:
        inside = np.clip(seam, 0, w - 1)
        crossed.append(crossed_ink(solid[rows, inside].astype(bool), mark.stroke))
    crossed.append(0.0)
    return bounds, crossed, geometric


def crossed_ink(along: np.ndarray, stroke: float) -> float:
    """The ink a cut crosses, in strokes, from which of its pixels (top to bottom) are ink:
    every stretch of ink counts its length in stroke widths, but at most one stroke.

    Where two digits touch, the cut often runs down through their joint for several
    stroke widths (a '6' leaning on the stem of a '9'); it still parts one joint, where a
    cut through a '0' parts two strokes. Counted by length, the joint cost so much that
    the two digits lost to one wide misreading of both.
    """
    starts = np.flatnonzero(along & ~np.r_[False, along[:-1]])
    ends = np.flatnonzero(along & ~np.r_[along[1:], False])
    lengths = (ends - starts + 1) / max(stroke, 1.0)
    return float(np.minimum(lengths, 1.0).sum())


def _add_pieces(
    found: Lattice,
    mark: Mark,
    index: int,
    start: int,
    bounds: list[np.ndarray],
    crossed: list[float],
    geometric: set[int],
    line_height: float,
) -> None:
    """Every piece of ``mark`` between two of its ``bounds`` that could be one digit."""
    x, y, w, h = mark.box
    columns = np.arange(w)[None, :]
    last = len(bounds) - 1
    for i in range(last):
        for j in range(i + 1, last + 1):
            whole = i == 0 and j == last
            left, right = bounds[i], bounds[j]
            if not whole and float((right - left).mean()) > _MAX_PIECE_WIDTH * line_height:
                continue
            part = mark.mask & (columns >= left[:, None]) & (columns < right[:, None])
            # Geometry's pieces are the cuts next to each other that it made.
            between = [k for k in range(i + 1, j) if k in geometric]
            is_geometric = i in geometric and j in geometric and not between
            if part.sum() < 2 * mark.stroke * mark.stroke and not whole:
                found.add(start + i, start + j, None, mark.box, line_height, crossed[i],
                          is_geometric, (index, index), blank=True)  # fmt: skip
                continue
            if whole:
                mask, box = mark.mask, mark.box
            else:
                px, py, pw, ph = bounding_box(part)
                mask, box = part[py : py + ph, px : px + pw], (x + px, y + py, pw, ph)
            found.add(start + i, start + j, mask, box, line_height, crossed[i], is_geometric,
                      (index, index))  # fmt: skip


def _merged(a: Mark, b: Mark, line_height: float) -> tuple[np.ndarray, Box] | None:
    """Marks ``a`` and ``b`` as one digit's mask and box, if they are close and narrow
    enough together to be one."""
    ax, ay, aw, ah = a.box
    bx, by, bw, bh = b.box
    x0, y0 = min(ax, bx), min(ay, by)
    x1, y1 = max(ax + aw, bx + bw), max(ay + ah, by + bh)
    gap = max(ax, bx) - min(ax + aw, bx + bw)
    if x1 - x0 > _MERGE_WIDTH * line_height or gap > _MERGE_GAP * line_height:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[ay - y0 : ay - y0 + ah, ax - x0 : ax - x0 + aw] |= a.mask
    mask[by - y0 : by - y0 + bh, bx - x0 : bx - x0 + bw] |= b.mask
    return mask, (x0, y0, x1 - x0, y1 - y0)


def _seams(solid: np.ndarray, lo: int, hi: int, count: int, apart: int) -> list[np.ndarray]:
    """Up to ``count`` cuts from top to bottom of ``solid`` through little ink, between
    columns ``lo`` and ``hi``, each near its own valley of the vertical ink profile (the
    emptiest columns first, at least ``apart`` columns from each other).

    Each cut is the path through the least ink within half ``apart`` of its valley that
    moves at most one column a row, so it can pass between digits whose parts overlap in
    the columns (a '0' under the hook of a '2').
    """
    if hi < lo:
        return []
    profile = solid.sum(axis=0).astype(np.float64)
    smooth = np.convolve(profile, np.ones(3) / 3, mode="same")
    inner = np.arange(lo, hi + 1)
    left = smooth[np.maximum(inner - 1, 0)]
    right = smooth[np.minimum(inner + 1, len(smooth) - 1)]
    valleys = inner[(smooth[inner] <= left) & (smooth[inner] <= right)]
    anchors: list[int] = []
    for column in valleys[np.argsort(smooth[valleys], kind="stable")]:
        if len(anchors) == count:
            break
        if all(abs(int(column) - other) >= apart for other in anchors):
            anchors.append(int(column))
    half = max(1, apart // 2)
    return [_seam(solid, max(lo, a - half), min(hi, a + half)) for a in sorted(anchors)]


def _seam(solid: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """The top-to-bottom path through the least ink between columns ``lo`` and ``hi``,
    moving at most one column a row (each such move costing ``_DIAGONAL`` more)."""
    return least_cost_path(solid[:, lo : hi + 1].astype(np.float64), _DIAGONAL) + lo


def _same_cut(mark: Mark, a: np.ndarray, b: np.ndarray) -> bool:
    """Whether cuts ``a`` and ``b`` part ``mark``'s ink alike (but for a stroke's worth)."""
    columns = np.arange(mark.mask.shape[1])[None, :]
    left_a = mark.mask & (columns < a[:, None])
    left_b = mark.mask & (columns < b[:, None])
    return int((left_a ^ left_b).sum()) < mark.stroke * mark.stroke
