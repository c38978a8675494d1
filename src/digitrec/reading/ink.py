"""Finding the ink in a photo or a drawing.

:func:`find_ink` paints over the table around a photographed sheet
(:mod:`digitrec.reading.sheet`), decides which way round the ink is, thresholds against an
estimated background (so shadows and uneven light do not turn into ink), takes out the
lines of ruled paper (:mod:`digitrec.reading.rules`), drops specks and soft-edged shadows,
and returns the marks as connected components at a working scale, with each
stroke's core (ink proper, not a blurred stroke's halo). The small mask helpers at the end
are shared by :mod:`digitrec.reading.segment` and :mod:`digitrec.reading.framing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from digitrec.reading.rules import printed_lines
from digitrec.reading.sheet import without_surroundings

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
# Marks whose median height is under this share of the probe's longer side are small
# writing on a big page, which the probe may blur into blots (see _pen_factor). The digits
# of a photographed number are 13-26% of it; those of the generated tables 2-20%.
_SMALL_MARKS = 0.12
# Marks holding more holes than this each are several digits each: no digit has more
# than two ('8'). On the probe, 1-megapixel photos of numbers (benchmarks/serve_load.py)
# have 0-1 a mark; the two tuning pages whose columns are each one mark of touching lines
# 4.7 and 8.7; the other tuning pages whose pen the probe overstates up to 2.5 (their
# marks are small, and probed twice already).
_HOLEY = 2
# Ink must be at least this much darker than its local background (a fraction of it).
_MIN_CONTRAST = 0.15
# Contrast is measured against at least this share of the brightest background: paper in
# deep shadow keeps 40% of its light, and a darker "background" is not paper (it is a lit
# patch of a blank page the polarity test took for ink), where noise would pass for ink.
_DARKEST_PAPER = 0.25
# Measured on synthetic photos and drawings: inked images stray at least twice as far to
# the ink's side (usually 3-100x); blank pages 0.7-1.1x.
_POLARITY_MARGIN = 1.5
# Canvas drawings have 0.5-3% of their pixels in between ink and paper (the edges of the
# strokes), phone photos 1-70% (median 54%), a page with a shadow's edge 10-15%.
_TWO_TONED = 0.06
# A mark with at least this times the stroke width squared of ink may be a point.
_POINT_AREA = 0.35
# Ink edges are sharper than this (see _edge_sharpness); shadows and light are softer.
_MIN_SHARPNESS = 0.85

Box = tuple[int, int, int, int]


@dataclass
class Ink:
    """Ink found at working scale, as connected components."""

    labels: np.ndarray  # int32 component label per pixel, 0 for background
    stats: np.ndarray  # cv2 stats rows (x, y, w, h, area) of the kept components
    ids: np.ndarray  # label value of each kept component
    scale: float  # original pixels per working pixel
    stroke: float  # typical stroke width in working pixels
    core: np.ndarray  # bool per pixel: ink proper, not a blurred stroke's halo
    # Sharp marks too small beside the others to be digits (a decimal point, a comma's
    # dot): cv2 stats rows and label values, for the layout reader; the digit reader
    # ignores them as specks.
    small_stats: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.int32))
    small_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))


def checked_grey(image: np.ndarray) -> np.ndarray:
    """``image`` as an array, if it is uint8 greyscale ``(h, w)``; else ValueError."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(
            f"expected a uint8 greyscale (h, w) array, got {image.dtype} {image.shape}"
        )
    return image


def find_ink(image: np.ndarray) -> Ink | None:
    """The marks in ``image`` (uint8 greyscale, see :func:`checked_grey`); None if there
    is no ink."""
    if image.size == 0:
        return None
    work, scale = _working_copy(without_surroundings(image))
    look = _first_look(work)
    if look is None:
        return None
    smooth, first_mask = look
    stroke = stroke_width(first_mask)
    # A background window a few strokes wide fills every stroke yet follows shadows and
    # light closely; one a quarter of the image wide is the guess before we know the pen.
    window = _odd(int(np.clip(5 * stroke, 7, max(work.shape) // 4)))
    second = _threshold(smooth, window)
    if second is None:
        return None
    mask, contrast = second
    lines = printed_lines(mask, contrast)
    if lines is not None:
        # Taken out of the contrast too, so that the marks they crossed have clean edges.
        mask = np.where(lines, 0, mask).astype(np.uint8)
        contrast = np.where(lines, 0.0, contrast).astype(np.float32)
    return _components(mask, contrast, scale, stroke_width(mask))


def _first_look(work: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The smoothed image and a first ink mask, from a threshold against a background
    window a quarter of the image wide; None without ink."""
    smooth = cv2.GaussianBlur(work.astype(np.float32), (0, 0), 1.0)
    first = _threshold(smooth, _odd(max(work.shape) // 4))
    if first is None:
        return None
    return smooth, first[0]


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
        size = scaled_size(h, w, factor)
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return (image if _ink_is_dark(image) else 255 - image), longer / max(image.shape)
    probe = _shrink(image, _PROBE_SIZE)
    if not _ink_is_dark(probe):
        image, probe = 255 - image, 255 - probe
    factor = min(_WORK_MAX / longer, _pen_factor(image, probe, longer))
    if factor >= 1.0:
        return image, 1.0
    size = scaled_size(h, w, factor)
    work = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return work, longer / max(work.shape)


def _pen_factor(image: np.ndarray, probe: np.ndarray, longer: int) -> float:
    """The factor that shrinks ``image`` (``longer`` pixels long) so its strokes are about
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
    mask = look[1]
    stroke = stroke_width(mask) * longer / max(probe.shape)
    if _PEN / stroke < 0.8 and longer > 2 * _PROBE_SIZE and _may_be_blots(mask):
        # Small writing on a big page (a table of numbers) shows on the probe as blots as
        # thick as the digits are tall, which says nothing about the pen: a probe twice as
        # large shows the strokes, and a narrower pen. Large digits need no second look.
        closer = _shrink(image, 2 * _PROBE_SIZE)
        second = _first_look(closer)
        if second is not None:
            stroke = min(stroke, stroke_width(second[1]) * longer / max(closer.shape))
    factor = max(_PEN / stroke, _WORK_MIN / longer)
    return factor if factor < 0.8 else 1.0


def _may_be_blots(mask: np.ndarray) -> bool:
    """Whether the marks in ``mask`` (specks aside) may be small writing blotted: their
    median height is under ``_SMALL_MARKS`` of its longer side, or they hold more than
    ``_HOLEY`` holes each (the loops of many digits: a table's column of numbers whose
    lines touch is one mark)."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    heights = stats[1:, cv2.CC_STAT_HEIGHT]
    marks = heights[stats[1:, cv2.CC_STAT_AREA] >= 4]
    if marks.size == 0:
        return False
    if float(np.median(marks)) < _SMALL_MARKS * max(mask.shape):
        return True
    # The paper's components (after the background label): the page around the marks,
    # and every hole in them.
    holes = cv2.connectedComponents(1 - mask, connectivity=4)[0] - 2
    return holes > _HOLEY * marks.size


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

    Strokes of a thick pen (a finger, a felt-tip) break the rule the windows rest on:
    inside a digit they cover most of a quarter window, so its median is ink and the paper
    in the digit's loops strays from it as if it were ink. A window half the image wide
    sees the paper around the thickest strokes, but it would take a shadow's edge for ink;
    so it decides first only on a two-toned image (see :func:`_is_two_toned`), where there
    is no shadow: a canvas drawing, a clean scan.
    """
    small = _shrink(work, 200)
    if _is_two_toned(small):
        half = _polarity_vote(small, 2)
        if half is not None:
            return half
    for fraction in (4, 8):
        vote = _polarity_vote(small, fraction)
        if vote is not None:
            return vote
    return float(np.median(small)) >= 128


def _is_two_toned(small: np.ndarray) -> bool:
    """Whether under ``_TWO_TONED`` of the pixels lie between the darkest and lightest
    tones (each the outer 15% of the range between the 1st and 99th percentiles): only
    the edges of the marks do in a drawing, while shadows, uneven light and noise fill a
    photo with in-between tones."""
    darkest, lightest = np.percentile(small, [1, 99])
    spread = max(float(lightest - darkest), 1.0)
    tone = (small.astype(np.float32) - float(darkest)) / spread
    return float(np.count_nonzero((tone > 0.15) & (tone < 0.85))) < _TWO_TONED * small.size


def _polarity_vote(small: np.ndarray, fraction: int) -> bool | None:
    """Whether pixels stray clearly further to the dark side (True) or the light side
    (False) of their median over a window ``1 / fraction`` of the image wide; None when
    neither side clearly wins."""
    background = cv2.medianBlur(small, _odd(max(small.shape) // fraction))
    deviation = small.astype(np.float32) - background.astype(np.float32)
    darker = float(np.clip(-deviation, 0, None).sum())
    lighter = float(np.clip(deviation, 0, None).sum())
    if darker > _POLARITY_MARGIN * lighter:
        return True
    if lighter > _POLARITY_MARGIN * darker:
        return False
    return None


def _shrink(image: np.ndarray, longest: int) -> np.ndarray:
    h, w = image.shape
    if max(h, w) <= longest:
        return image
    factor = longest / max(h, w)
    size = scaled_size(h, w, factor)
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

    "Just outside" is half a stroke width away, but at least 3 pixels: a fine pencil
    stroke, 2 px wide and blurred, still shows a third of its faint contrast 2 px beyond
    its edge (UNIPEN tuning digits in light pencil: 0.90 found and read right with 2 px,
    0.94 with 3; a shadow's edge, fading over tens of pixels, is no sharper at 3 px).
    """
    distance = int(np.clip(round(stroke / 2), 3, 8))
    ink = (labels > 0).astype(np.uint8)
    near = cv2.dilate(ink, disc(distance - 1))
    owner = cv2.dilate(labels.astype(np.float32), disc(distance)).astype(np.int64)
    ring = (owner > 0) & (near == 0)
    flat = labels.ravel()
    values = contrast.ravel()
    inside = np.bincount(flat, weights=values, minlength=count)
    inside /= np.maximum(np.bincount(flat, minlength=count), 1)
    around = np.bincount(owner[ring], weights=contrast[ring], minlength=count)
    around /= np.maximum(np.bincount(owner[ring], minlength=count), 1)
    return 1.0 - np.clip(around, 0, None) / np.maximum(inside, 1e-6)


def stroke_width(mask: np.ndarray) -> float:
    """Typical pen width in pixels: 2 * area / perimeter, over the whole mask.

    For a stroke of width w and length L the area is w*L and the outline about 2*L long.
    """
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    perimeter = sum(cv2.arcLength(contour, True) for contour in contours)
    return max(1.0, 2.0 * float(mask.sum()) / max(perimeter, 1.0))


def _components(mask: np.ndarray, contrast: np.ndarray, scale: float, stroke: float) -> Ink | None:
    """Connected components of the ink, without specks and without soft-edged shadows."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    stats = stats[1:]
    ids = np.arange(1, count)
    big = stats[:, cv2.CC_STAT_AREA] >= max(4.0, 1.5 * stroke * stroke)
    sharp = _edge_sharpness(labels, contrast, count, stroke)[1:] >= _MIN_SHARPNESS
    big &= sharp
    if not big.any():
        return None
    # A speck is small in area, or small in extent next to the typical height of the
    # substantial marks (those with a quarter of the largest one's ink or more).
    area = stats[:, cv2.CC_STAT_AREA]
    substantial = big & (area >= 0.25 * area[big].max())
    typical_height = float(np.median(stats[substantial, cv2.CC_STAT_HEIGHT]))
    extent = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    keep = big & (extent >= 0.25 * typical_height)
    # A point written with a fine pen has less ink than a speck of the area test's size;
    # a pen's dot is about a stroke wide (a disc: 0.79 of the stroke squared), and a small
    # one on a drawing shrunk to fit its canvas keeps well under that.
    small = ~keep & (area >= max(4.0, _POINT_AREA * stroke * stroke)) & (extent >= 0.6 * stroke)
    small &= sharp
    core = _stroke_cores(labels, contrast, stroke)
    return Ink(labels, stats[keep], ids[keep], scale, stroke, core, stats[small], ids[small])


def _stroke_cores(labels: np.ndarray, contrast: np.ndarray, stroke: float) -> np.ndarray:
    """Where the marks are ink proper rather than a blurred stroke's halo (bool).

    The threshold is low so faint strokes stay whole, and in a blurred image it takes in
    each stroke's halo too: tiles made from that have strokes far wider than MNIST's, more
    than the stroke normalisation can thin, and small loops filled in. A stroke ends where
    its contrast falls below half of its own peak (the highest contrast within half a
    stroke width), as the width of a blurred line is measured at half its height.
    """
    radius = max(1, int(round(stroke / 2)))
    peak = cv2.dilate(contrast, disc(radius))
    core = contrast >= 0.5 * peak
    # A mark with no pixel at half its peak (a faint one next to a dark one) is all core
    # rather than vanish.
    cored = np.bincount(labels[core], minlength=int(labels.max()) + 1) > 0
    return core | ~cored[labels]


def bounding_box(mask: np.ndarray) -> Box:
    """``(x, y, w, h)`` of the true pixels of a mask that has some."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def crop(mask: np.ndarray, box: Box) -> np.ndarray:
    """The part of ``mask`` inside ``box`` (a view)."""
    x, y, w, h = box
    return mask[y : y + h, x : x + w]


def disc(radius: int) -> np.ndarray:
    """A round structuring element ``2 * radius + 1`` pixels across."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def scaled_size(h: int, w: int, factor: float) -> tuple[int, int]:
    """``cv2.resize``'s ``(width, height)`` of an ``h`` x ``w`` image scaled by ``factor``."""
    return max(1, round(w * factor)), max(1, round(h * factor))


def _odd(n: int) -> int:
    n = max(3, int(n))
    return n if n % 2 else n + 1
