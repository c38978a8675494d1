"""Handwriting image -> MNIST-format 28x28 tiles, made the way MNIST was made.

``segment`` finds the digits in a photo or a drawing: it decides which way round the ink is,
thresholds against an estimated background (so shadows and uneven light do not turn into
ink), drops specks, joins the broken strokes of one digit, splits digits that touch, and
orders them left to right. Each digit is then cropped without its strokes' blurred halo,
its stroke width brought to MNIST's, scaled so its longer side is 20 pixels with
anti-aliasing, and placed in a 28x28 field by its centre of mass, white ink on black.

``to_mnist_tile`` is the one-digit path: a tile that already is MNIST-format comes back as
it is; anything else has all its ink made into one tile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from digitrec.errors import ImageError

TILE = 28
BOX = 20
# Digits are normalised at four times the final size, then area-averaged down to 20 px:
# the averaging gives MNIST's anti-aliased edges.
_CANON = 4 * BOX
# MNIST's median stroke width at 28x28 (2 * area / perimeter of pixels > 127), measured on
# the training set: 2.39 px (10th-90th percentile 1.76-3.45).
STROKE_WIDTH = 2.4

NO_INK = "no ink found"
# Analysis happens on a copy whose longer side is within these bounds: big photos are
# shrunk for speed, tiny images (28x28 tiles, 8x8 digits) enlarged so morphology has room.
_WORK_MAX = 1200
_WORK_MIN = 160
# In images longer than _PEN_FROM, strokes wider than _PEN working pixels are shrunk to it
# (see _working_copy); the pen is first measured on a copy _PROBE_SIZE long. Smaller
# images are cheap already, and blank ones with shadows are read more reliably unshrunk.
_PEN = 12.0
_PEN_FROM = 800
_PROBE_SIZE = 400
# Ink must be at least this much darker than its local background (a fraction of it).
_MIN_CONTRAST = 0.15
# Contrast is measured against at least this share of the brightest background: paper in
# deep shadow keeps 40% of its light, and a darker "background" is not paper (it is a lit
# patch of a blank page the polarity test took for ink), where noise would pass for ink.
_DARKEST_PAPER = 0.25
_MAX_DIGITS = 64
# Measured on synthetic photos and drawings: inked images stray at least twice as far to
# the ink's side (usually 3-100x); blank pages 0.7-1.1x.
_POLARITY_MARGIN = 1.5
# A mark wider than _WIDE times its height may be touching digits.
_WIDE = 1.1
# A mark wider than _SURELY_SEVERAL times its height is several digits, however it is cut.
_SURELY_SEVERAL = 1.8
# A mark at most _PIECE times as tall as another whose box reaches into the other's by at
# least _PIECE_INSIDE of its own area is a loose piece of that digit (a '7''s bar).
_PIECE = 0.75
_PIECE_INSIDE = 0.05
# Ink edges are sharper than this (see _edge_sharpness); shadows and light are softer.
_MIN_SHARPNESS = 0.85

Box = tuple[int, int, int, int]
TileTransform = Callable[[np.ndarray], np.ndarray]


@dataclass
class Segmentation:
    """The digits found in one image, left to right.

    ``tiles`` is ``(n, 28, 28)`` uint8, white ink on black like MNIST; ``boxes`` are
    ``(x, y, w, h)`` in the original image's pixel coordinates; ``diagnosis`` says why
    there are no tiles (for example "no ink found"), else None.
    """

    tiles: np.ndarray
    boxes: list[Box] = field(default_factory=list)
    diagnosis: str | None = None


@dataclass
class _Ink:
    """Ink found at working scale, as connected components."""

    labels: np.ndarray  # int32 component label per pixel, 0 for background
    stats: np.ndarray  # cv2 stats rows (x, y, w, h, area) of the kept components
    ids: np.ndarray  # label value of each kept component
    scale: float  # original pixels per working pixel
    stroke: float  # typical stroke width in working pixels
    core: np.ndarray  # bool per pixel: ink proper, not a blurred stroke's halo


def segment(image: np.ndarray, *, transform: TileTransform | None = None) -> Segmentation:
    """Find the handwritten digits in ``image`` (uint8 greyscale) as MNIST-format tiles.

    ``transform``, if given, is applied to the ``(n, 28, 28)`` tiles at the end (for
    example a deskewing transformer's ``transform`` method).

    Examples
    --------
    >>> import numpy as np
    >>> from digitrec.preprocess import segment
    >>> page = np.full((100, 200), 255, np.uint8)
    >>> page[20:80, 50:58] = 0; page[20:80, 120:128] = 0   # two '1's
    >>> result = segment(page)
    >>> result.tiles.shape, result.boxes
    ((2, 28, 28), [(49, 19, 10, 62), (119, 19, 10, 62)])
    """
    ink = _find_ink(_checked(image))
    if ink is None:
        return _empty(NO_INK)
    groups = _group_components(ink)
    if len(groups) > _MAX_DIGITS:
        return _empty(f"found {len(groups)} separate marks; expected a few handwritten digits")
    pieces = [piece for group in groups for piece in _split_touching(ink, group, groups)]
    pieces.sort(key=lambda piece: piece[1][0] + piece[1][2] / 2)
    # Where digits are and how they split is decided on the whole marks; the tiles are made
    # of the strokes' cores.
    tiles = np.stack([_tile_from_mask(mask, _crop(ink.core, box)) for mask, box in pieces])
    if transform is not None:
        tiles = _apply(transform, tiles)
    boxes = [_to_original(box, ink.scale, image.shape) for _, box in pieces]
    return Segmentation(tiles, boxes, None)


def to_mnist_tile(image: np.ndarray, *, transform: TileTransform | None = None) -> np.ndarray:
    """One digit as a ``(28, 28)`` uint8 MNIST-format tile.

    An image that already is a 28x28 MNIST-style tile (white on black, or black on white)
    is only re-centred by its centre of mass, which leaves MNIST's own tiles unchanged.
    Anything else is segmented and all its ink taken as one digit. Raises ``ImageError``
    when there is no ink.
    """
    grey = _checked(image)
    tile = _as_mnist_tile(grey)
    if tile is None:
        ink = _find_ink(grey)
        if ink is None:
            raise ImageError(NO_INK)
        everything = np.isin(ink.labels, ink.ids)
        box = _bounding_box(everything)
        tile = _tile_from_mask(_crop(everything, box), _crop(ink.core, box))
    if transform is not None:
        tile = _apply(transform, tile[None])[0]
    return tile


def _checked(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 greyscale (h, w) array, got {image.dtype} {image.shape}"
        )
    return image


def _empty(diagnosis: str) -> Segmentation:
    return Segmentation(np.zeros((0, TILE, TILE), np.uint8), [], diagnosis)


def _apply(transform: TileTransform, tiles: np.ndarray) -> np.ndarray:
    out = np.asarray(transform(tiles))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8).reshape(tiles.shape)


# --- finding the ink ---------------------------------------------------------------------


def _find_ink(image: np.ndarray) -> _Ink | None:
    if image.size == 0:
        return None
    work, scale = _working_copy(image)
    look = _first_look(work)
    if look is None:
        return None
    smooth, stroke = look
    # A background window a few strokes wide fills every stroke yet follows shadows and
    # light closely; one a quarter of the image wide is the guess before we know the pen.
    window = _odd(int(np.clip(5 * stroke, 7, max(work.shape) // 4)))
    second = _threshold(smooth, window)
    if second is None:
        return None
    mask, contrast = second
    return _components(mask, contrast, scale, _stroke_width(mask))


def _first_look(work: np.ndarray) -> tuple[np.ndarray, float] | None:
    """The smoothed image and a first estimate of its pen width in pixels, from a
    threshold against a background window a quarter of the image wide; None without ink."""
    smooth = cv2.GaussianBlur(work.astype(np.float32), (0, 0), 1.0)
    first = _threshold(smooth, _odd(max(work.shape) // 4))
    if first is None:
        return None
    return smooth, _stroke_width(first[0])


def _working_copy(image: np.ndarray) -> tuple[np.ndarray, float]:
    """The image to analyse, dark ink on light, and its original pixels per working pixel.

    Tiny images are enlarged to ``_WORK_MIN``. Big ones are shrunk to ``_WORK_MAX``, and
    further when their strokes are much wider than ``_PEN``: a phone photo of a few digits
    often has strokes 20-30 px wide, the tiles need only a few pixels per stroke, and every
    later step costs per pixel. One resize, as area averaging at small factors is slow.
    """
    h, w = image.shape
    longer = max(h, w)
    if longer < _WORK_MIN:
        factor = _WORK_MIN / longer
        size = _scaled_size(h, w, factor)
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return (image if _ink_is_dark(image) else 255 - image), longer / max(image.shape)
    probe = _shrink(image, _PROBE_SIZE)
    if not _ink_is_dark(probe):
        image, probe = 255 - image, 255 - probe
    factor = min(_WORK_MAX / longer, _pen_factor(probe, longer))
    if factor >= 1.0:
        return image, 1.0
    size = _scaled_size(h, w, factor)
    work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return work, longer / max(work.shape)


def _pen_factor(probe: np.ndarray, longer: int) -> float:
    """The factor that shrinks an image ``longer`` pixels long so its strokes are about
    ``_PEN`` pixels wide, or 1.0.

    Only images longer than ``_PEN_FROM`` are worth it. The pen is measured on ``probe``,
    a copy ``_PROBE_SIZE`` long; a pen too thin to see there, or one already about
    ``_PEN`` wide, leaves the scale alone.
    """
    if longer <= _PEN_FROM:
        return 1.0
    look = _first_look(probe)
    if look is None:
        return 1.0
    stroke = look[1] * longer / max(probe.shape)
    factor = max(_PEN / stroke, _WORK_MIN / longer)
    return factor if factor < 0.8 else 1.0


def _ink_is_dark(work: np.ndarray) -> bool:
    """Dark ink on light or light ink on dark, from which side of the background the
    outliers lie.

    The median over a window a quarter of the image wide is the local background (ink
    covers less than half of any such window), and it follows shadows and uneven light.
    The ink is on the side where pixels stray further from it. A deep shadow's edge strays
    to both sides as far as a few thin strokes do; then a window an eighth of the image
    wide, which follows the shadow more closely, decides. On an image with little or no
    ink both sides stray alike (noise, shadow edges) at both sizes; then the ink is taken
    to be the opposite of the overall brightness, as paper is light and slates are dark.
    """
    small = _shrink(work, 200)
    for fraction in (4, 8):
        background = cv2.medianBlur(small, _odd(max(small.shape) // fraction))
        deviation = small.astype(np.float32) - background.astype(np.float32)
        darker = float(np.clip(-deviation, 0, None).sum())
        lighter = float(np.clip(deviation, 0, None).sum())
        if darker > _POLARITY_MARGIN * lighter:
            return True
        if lighter > _POLARITY_MARGIN * darker:
            return False
    return float(np.median(small)) >= 128


def _shrink(image: np.ndarray, longest: int) -> np.ndarray:
    h, w = image.shape
    if max(h, w) <= longest:
        return image
    factor = longest / max(h, w)
    size = _scaled_size(h, w, factor)
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _threshold(smooth: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Ink mask (uint8 0/1) and the contrast map it came from.

    The background is estimated by a closing (max then min filter over ``window``), which
    fills in dark strokes narrower than the window and keeps the edges of shadows where
    they are. The image is first extended by repeating its border pixels: a closing that
    cannot see past the border takes a shadow darkening towards it for a dark valley and
    fills it in, so the shadow's edge would become ink. Contrast is relative,
    ``(background - pixel) / background``, so ink in a shadow is as dark as ink in the
    light (a background darker than ``_DARKEST_PAPER`` of the brightest counts as that).
    The threshold is Otsu's, never below ``_MIN_CONTRAST``, with hysteresis: faint pixels
    count when they touch clearly dark ones, which keeps thin, light pen strokes whole.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (window, window))
    pad = window // 2 + 1
    grey = np.clip(np.rint(smooth), 0, 255).astype(np.uint8)  # uint8 morphology is ~4x faster
    padded = cv2.copyMakeBorder(grey, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[pad:-pad, pad:-pad]
    background = closed.astype(np.float32)
    floor = max(8.0, _DARKEST_PAPER * _brightest_background(closed))
    contrast = (background - smooth) / np.maximum(background, floor)
    if float(contrast.max()) < _MIN_CONTRAST:
        return None
    levels = np.clip(contrast * 255, 0, 255).astype(np.uint8)
    otsu, _ = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    strong_level = max(otsu / 255.0, _MIN_CONTRAST)
    strong = contrast >= strong_level
    weak = (contrast >= strong_level / 2).astype(np.uint8)
    count, labels = cv2.connectedComponents(weak, connectivity=8)
    keep = np.zeros(count, bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    mask = keep[labels].astype(np.uint8)
    return (mask, contrast) if mask.any() else None


def _brightest_background(closed: np.ndarray) -> int:
    """The 95th percentile of the uint8 background, from a histogram of every 4th pixel
    each way (a sort of the pixels took ~0.7 ms a call on a 1200-pixel image)."""
    counts = np.bincount(closed[::4, ::4].ravel(), minlength=256).cumsum()
    return int(np.searchsorted(counts, 0.95 * counts[-1]))


def _edge_sharpness(
    labels: np.ndarray, contrast: np.ndarray, count: int, stroke: float
) -> np.ndarray:
    """Per component: how much of its contrast is gone just outside its edge.

    A pen stroke falls to bare paper within a fraction of its width even in a blurred
    photo (about 1.0); the thresholded part of a shadow or a light band fades slowly, so
    just outside it the contrast is still nearly as high as inside (well under 1.0).
    """
    distance = int(np.clip(round(stroke / 2), 2, 8))
    ink = (labels > 0).astype(np.uint8)
    near = cv2.dilate(ink, _disc(distance - 1))
    owner = cv2.dilate(labels.astype(np.float32), _disc(distance)).astype(np.int64)
    ring = (owner > 0) & (near == 0)
    flat = labels.ravel()
    values = contrast.ravel()
    inside = np.bincount(flat, weights=values, minlength=count)
    inside /= np.maximum(np.bincount(flat, minlength=count), 1)
    around = np.bincount(owner[ring], weights=contrast[ring], minlength=count)
    around /= np.maximum(np.bincount(owner[ring], minlength=count), 1)
    return 1.0 - np.clip(around, 0, None) / np.maximum(inside, 1e-6)


def _stroke_width(mask: np.ndarray) -> float:
    """Typical pen width in pixels: 2 * area / perimeter, over the whole mask.

    For a stroke of width w and length L the area is w*L and the outline about 2*L long.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(contour, True) for contour in contours)
    return max(1.0, 2.0 * float(mask.sum()) / max(perimeter, 1.0))


def _components(mask: np.ndarray, contrast: np.ndarray, scale: float, stroke: float) -> _Ink | None:
    """Connected components of the ink, without specks and without soft-edged shadows."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]
    ids = np.arange(1, count)
    big = stats[:, cv2.CC_STAT_AREA] >= max(4.0, 1.5 * stroke * stroke)
    big &= _edge_sharpness(labels, contrast, count, stroke)[1:] >= _MIN_SHARPNESS
    if not big.any():
        return None
    # A speck is small in area, or small in extent next to the typical height of the
    # substantial marks (those with a quarter of the largest one's ink or more).
    area = stats[:, cv2.CC_STAT_AREA]
    substantial = big & (area >= 0.25 * area[big].max())
    typical_height = float(np.median(stats[substantial, cv2.CC_STAT_HEIGHT]))
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = big & (extent >= 0.25 * typical_height)
    core = _stroke_cores(labels, contrast, stroke)
    return _Ink(labels, stats[keep], ids[keep], scale, stroke, core)


def _stroke_cores(labels: np.ndarray, contrast: np.ndarray, stroke: float) -> np.ndarray:
    """Where the marks are ink proper rather than a blurred stroke's halo (bool).

    The threshold is low so faint strokes stay whole, and in a blurred image it takes in
    each stroke's halo too: tiles made from that have strokes far wider than MNIST's, more
    than the stroke normalisation can thin, and small loops filled in. A stroke ends where
    its contrast falls below half of its own peak (the highest contrast within half a
    stroke width), as the width of a blurred line is measured at half its height.
    """
    radius = max(1, int(round(stroke / 2)))
    peak = cv2.dilate(contrast, _disc(radius))
    core = contrast >= 0.5 * peak
    # A mark with no pixel at half its peak (a faint one next to a dark one) is all core
    # rather than vanish.
    cored = np.bincount(labels[core], minlength=int(labels.max()) + 1) > 0
    return core | ~cored[labels]


# --- from components to digits -----------------------------------------------------------


def _group_components(ink: _Ink) -> list[list[int]]:
    """Join the components of one digit: pieces stacked above one another (a '5' whose bar
    came loose, a '4' written as '=' and a stroke) belong together."""
    boxes = [tuple(int(v) for v in row[:4]) for row in ink.stats]
    parent = list(range(len(boxes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = True
    while merged:
        merged = False
        spans = {}
        for i in range(len(boxes)):
            spans.setdefault(root(i), []).append(boxes[i])
        roots = list(spans)
        union = {r: _union_box(spans[r]) for r in roots}
        for a_index, a in enumerate(roots):
            for b in roots[a_index + 1 :]:
                if root(a) != root(b) and _same_digit(union[a], union[b]):
                    parent[root(b)] = root(a)
                    merged = True
    groups: dict[int, list[int]] = {}
    for i in range(len(boxes)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _same_digit(a: Box, b: Box) -> bool:
    """Stacked pieces (mostly overlapping in x, close in y), or a small piece reaching into
    a bigger one's box."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    overlap_x = min(ax + aw, bx + bw) - max(ax, bx)
    overlap_y = min(ay + ah, by + bh) - max(ay, by)
    if overlap_x >= 0.5 * min(aw, bw) and -overlap_y <= 0.6 * max(ah, bh):
        return True
    small = min((aw * ah, a), (bw * bh, b))[1]
    big = b if small is a else a
    return (
        overlap_x > 0
        and overlap_y > 0
        and small[3] <= _PIECE * big[3]
        and overlap_x * overlap_y >= _PIECE_INSIDE * small[2] * small[3]
    )


def _union_box(boxes: list[Box]) -> Box:
    x0 = min(x for x, _, _, _ in boxes)
    y0 = min(y for _, y, _, _ in boxes)
    x1 = max(x + w for x, _, w, _ in boxes)
    y1 = max(y + h for _, y, _, h in boxes)
    return x0, y0, x1 - x0, y1 - y0


def _split_touching(
    ink: _Ink, group: list[int], groups: list[list[int]]
) -> list[tuple[np.ndarray, Box]]:
    """The group's mask and box, cut into several digits where it is too wide for one.

    How wide one digit is comes from the other digits in the image when there are some,
    else from the group's height. Cuts go at the emptiest column of the vertical
    projection profile near where equal-width digits would meet, then bend around the
    overlapping parts of neighbouring digits (see ``_seam``).
    """
    box = _union_box([tuple(int(v) for v in ink.stats[i, :4]) for i in group])
    x, y, w, h = box
    window = ink.labels[y : y + h, x : x + w]
    mask = np.isin(window, ink.ids[group])
    digit_width = _typical_width(ink, groups, h)
    count = int(round(w / digit_width)) if w > _WIDE * h else 1
    if count < 2:
        return [(mask, box)]
    profile = mask.sum(axis=0).astype(np.float64)
    step = w / count
    cuts = [0]
    for i in range(1, count):
        lo, hi = _cut_range(i, step, cuts[-1], w)
        if hi <= lo:
            continue
        columns = np.arange(lo, hi + 1)
        # Prefer the emptiest column; among equals, the one nearest the expected cut.
        cost = profile[columns] + np.abs(columns - i * step) / (10 * step)
        cuts.append(int(columns[np.argmin(cost)]))
    cuts.append(w)
    # A slanted or round single digit can be wide too (an italic '0', a '7' with a bar);
    # split only where every cut crosses the ink once, as where two digits touch. A cut
    # through a round digit meets it twice, above and below.
    # Beyond _SURELY_SEVERAL heights no single digit is that wide: cut along seams anyway.
    crossed = max((_runs(mask[:, c]) for c in cuts[1:-1]), default=0) > 1
    if crossed and w <= _SURELY_SEVERAL * h:
        return [(mask, box)]
    pieces = _cut(mask, box, [np.full(h, c) for c in cuts], ink.stroke)
    if pieces is None:
        return [(mask, box)]
    if len(pieces) < 2:
        return pieces or [(mask, box)]
    # Digits that touch often overlap in the columns too (a '0' under the hook of a '2'),
    # and a straight cut gives one a part of the other: cut along the path through the
    # least ink instead. Widening every stroke by a pixel each side keeps that path from
    # slipping between the diagonal pixels of a stroke.
    solid = cv2.dilate(mask.astype(np.uint8), np.ones((1, 3), np.uint8))
    seams = [np.zeros(h, np.int64)]
    for i in range(1, len(cuts) - 1):
        lo, hi = _cut_range(i, step, int(seams[-1].max()), w)
        lo = min(lo, w - 1)
        seams.append(_seam(solid, lo, max(lo, hi), i * step, step))
    seams.append(np.full(h, w, np.int64))
    bent = _cut(mask, box, seams, ink.stroke)
    return bent if bent is not None and len(bent) == len(pieces) else pieces


def _cut_range(i: int, step: float, previous: int, w: int) -> tuple[int, int]:
    """The first and last column the ``i``-th cut may take: within 0.3 of a digit's width
    of where equal-width digits would meet, right of the ``previous`` cut."""
    return max(previous + 1, int(i * step - 0.3 * step)), min(w - 1, int(i * step + 0.3 * step))


def _cut(
    mask: np.ndarray, box: Box, bounds: list[np.ndarray], stroke: float
) -> list[tuple[np.ndarray, Box]] | None:
    """The pieces of ``mask`` between consecutive cuts (each cut a column per row), with
    their boxes; pieces with too little ink are dropped. None if a piece is flat: the end
    of a bar (a '7' or '4' crossed wide), not a digit."""
    x, y, w, h = box
    columns = np.arange(w)[None, :]
    pieces = []
    for left, right in zip(bounds[:-1], bounds[1:], strict=True):
        part = mask & (columns >= left[:, None]) & (columns < right[:, None])
        if part.sum() < 2 * stroke * stroke:
            continue
        px, py, pw, ph = _bounding_box(part)
        if ph < 0.5 * h:
            return None
        pieces.append((part[py : py + ph, px : px + pw], (x + px, y + py, pw, ph)))
    return pieces


def _seam(ink: np.ndarray, lo: int, hi: int, expected: float, step: float) -> np.ndarray:
    """The column of a top-to-bottom cut in every row, between columns ``lo`` and ``hi``.

    The cut crosses as little ink as it can, moving at most one column a row, so it can
    pass between digits whose parts overlap in the columns (a '0' touching the hook of a
    '2'), where a straight cut would give one digit part of the other. Among equal cuts
    it keeps near ``expected``, where equal-width digits would meet.
    """
    columns = np.arange(lo, hi + 1)
    # The pull towards ``expected`` summed over all rows is what a whole column's was.
    pull = np.abs(columns - expected) / (10 * step * ink.shape[0])
    cost = ink[:, lo : hi + 1] + pull
    total = cost[0].copy()
    came_from = np.zeros(cost.shape, np.int64)
    index = np.arange(len(columns))
    for row in range(1, len(cost)):
        options = np.stack([np.r_[np.inf, total[:-1]], total, np.r_[total[1:], np.inf]])
        move = options.argmin(axis=0)
        total = options[move, index] + cost[row]
        came_from[row] = index + move - 1
    seam = np.empty(len(cost), np.int64)
    seam[-1] = int(total.argmin())
    for row in range(len(cost) - 1, 0, -1):
        seam[row - 1] = came_from[row, seam[row]]
    return seam + lo


def _runs(column: np.ndarray) -> int:
    """Separate stretches of ink in one column of a mask."""
    ink = column.astype(bool)
    return int(ink[0]) + int(np.count_nonzero(ink[1:] & ~ink[:-1]))


def _typical_width(ink: _Ink, groups: list[list[int]], height: int) -> float:
    widths = []
    for group in groups:
        _, _, w, h = _union_box([tuple(int(v) for v in ink.stats[i, :4]) for i in group])
        # Only groups shaped like one digit; narrow '1's would make the estimate too small.
        if 0.4 * h <= w <= 1.1 * h:
            widths.append(w)
    if len(widths) >= 2:
        return max(float(np.median(widths)), 0.4 * height)
    return 0.65 * height


def _bounding_box(mask: np.ndarray) -> Box:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def _crop(mask: np.ndarray, box: Box) -> np.ndarray:
    x, y, w, h = box
    return mask[y : y + h, x : x + w]


def _to_original(box: Box, scale: float, shape: tuple[int, ...]) -> Box:
    x, y, w, h = box
    x0 = max(0, int(np.floor(x * scale)))
    y0 = max(0, int(np.floor(y * scale)))
    x1 = min(shape[1], int(np.ceil((x + w) * scale)))
    y1 = min(shape[0], int(np.ceil((y + h) * scale)))
    return x0, y0, x1 - x0, y1 - y0


# --- one digit to one tile -----------------------------------------------------------------


def _tile_from_mask(mask: np.ndarray, core: np.ndarray) -> np.ndarray:
    """A tight binary digit mask -> MNIST tile: canonical size, MNIST stroke width,
    longer side 20 px anti-aliased, centre of mass at (14, 14). The tile is drawn from the
    mask's ``core`` pixels (see ``_stroke_cores``), or from all of it if it has none."""
    cored = mask & core
    if cored.any():
        mask = _crop(cored, _bounding_box(cored))
    canon = _canonical(mask)
    canon = _normalise_stroke(canon)
    x, y, w, h = _bounding_box(canon)
    canon = canon[y : y + h, x : x + w].astype(np.float32)
    factor = BOX / max(h, w)
    size = _scaled_size(h, w, factor)
    digit = np.clip(cv2.resize(canon, size, interpolation=cv2.INTER_AREA), 0.0, 1.0)
    return centre_by_mass(digit)


def _canonical(mask: np.ndarray) -> np.ndarray:
    """The mask resized so its longer side is ``_CANON``, padded for the stroke change."""
    h, w = mask.shape
    factor = _CANON / max(h, w)
    size = _scaled_size(h, w, factor)
    as_float = mask.astype(np.float32)
    if factor < 1:
        # Any ink in a pixel keeps it: thin strokes of a large digit must not vanish.
        canon = cv2.resize(as_float, size, interpolation=cv2.INTER_AREA) > 1e-3
    else:
        canon = cv2.resize(as_float, size, interpolation=cv2.INTER_LINEAR) >= 0.5
    pad = _CANON // 4
    return np.pad(canon.astype(np.uint8), pad)


def _normalise_stroke(canon: np.ndarray) -> np.ndarray:
    """Thicken or thin the strokes so that, once scaled to 20 px, they are MNIST's width.

    Growing a stroke by ``d`` also grows the digit by ``d``, so solve
    ``(stroke + d) * 20 / (80 + d) = target`` for ``d``.
    """
    stroke = _stroke_width(canon)
    target = STROKE_WIDTH
    change = (_CANON * target - BOX * stroke) / (BOX - target)
    radius = int(round(abs(change) / 2))
    if radius < 1:
        return canon
    if change > 0:
        return _keep_loops_open(canon, cv2.dilate(canon, _disc(radius)))
    # Never thin a stroke below a third of its width: junctions must stay joined.
    radius = min(radius, int(stroke / 3))
    if radius < 1:
        return canon
    thinned = cv2.erode(canon, _disc(radius))
    return thinned if thinned.any() else canon


def _keep_loops_open(canon: np.ndarray, thick: np.ndarray) -> np.ndarray:
    """``thick`` (``canon`` dilated) with every loop that the dilation narrowed below one
    pixel of the final tile given back its original opening: a narrow loop, such as the
    top of a slanted '8', is what tells an 8 from a 0."""
    paper = (1 - canon).astype(np.uint8)
    count, labels = cv2.connectedComponents(paper, connectivity=4)
    outside = labels[0, 0]  # canon is padded, so the outside touches the corner
    # Distance to the nearest ink after thickening; an opening narrower than one tile
    # pixel (_CANON // BOX canonical pixels) is averaged away by the final resize.
    depth = cv2.distanceTransform((1 - thick).astype(np.uint8), cv2.DIST_L2, 3)
    deepest = ndimage.maximum(depth, labels, np.arange(count))
    closed = 2 * deepest < _CANON // BOX
    closed[[0, outside]] = False  # label 0 is the ink itself
    thick[closed[labels]] = 0
    return thick


def centre_by_mass(digit: np.ndarray, full_scale: float = 255.0) -> np.ndarray:
    """Place ``digit`` (at most 20x20, ``full_scale`` times its values being grey levels:
    255 for coverage in [0, 1]) in a uint8 28x28 tile with its centre of mass on pixel
    (14, 14), shifting by whole pixels as MNIST did."""
    h, w = digit.shape
    total = float(digit.sum())
    ys, xs = np.arange(h), np.arange(w)
    com_y = float(digit.sum(axis=1) @ ys) / total
    com_x = float(digit.sum(axis=0) @ xs) / total
    top = int(round(TILE / 2 - com_y))
    left = int(round(TILE / 2 - com_x))
    # Paste into a larger field and cut the middle: a lopsided digit loses an edge row
    # rather than being moved off its centre of mass.
    margin = BOX
    field_ = np.zeros((TILE + 2 * margin, TILE + 2 * margin), np.float32)
    field_[margin + top : margin + top + h, margin + left : margin + left + w] = digit
    tile = field_[margin : margin + TILE, margin : margin + TILE]
    return np.clip(np.rint(tile * full_scale), 0, 255).astype(np.uint8)


def _as_mnist_tile(grey: np.ndarray) -> np.ndarray | None:
    """A 28x28 image with a plain border already is a tile: only re-centre it."""
    if grey.shape != (TILE, TILE):
        return None
    border = np.concatenate([grey[0], grey[-1], grey[1:-1, 0], grey[1:-1, -1]])
    if np.median(border) >= 225 and border.min() >= 128:
        grey = 255 - grey
    elif not (np.median(border) <= 30 and border.max() <= 127):
        return None
    if int(grey.max()) < 64:
        return None
    return _recentre(grey)


def _recentre(tile: np.ndarray) -> np.ndarray:
    weights = tile.astype(np.float64)
    total = weights.sum()
    idx = np.arange(TILE)
    dy = int(round(TILE / 2 - float(weights.sum(axis=1) @ idx) / total))
    dx = int(round(TILE / 2 - float(weights.sum(axis=0) @ idx) / total))
    if dy == 0 and dx == 0:
        return tile.copy()
    shifted = np.zeros_like(tile)
    src = tile[max(0, -dy) : TILE - max(0, dy), max(0, -dx) : TILE - max(0, dx)]
    shifted[max(0, dy) : max(0, dy) + src.shape[0], max(0, dx) : max(0, dx) + src.shape[1]] = src
    return shifted


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """``cv2.resize``'s ``(width, height)`` of an ``h`` x ``w`` image scaled by ``factor``."""
    return max(1, round(w * factor)), max(1, round(h * factor))


def _odd(n: int) -> int:
    n = max(3, int(n))
    return n if n % 2 else n + 1
