"""Deterministic, realistic test images of handwritten digits, made by code from a seed.

Digits are rendered with handwriting fonts from Debian's font packages (``FONT_PACKAGES``),
one glyph at a time with a little jitter, then turned into phone-photo-like JPEGs, canvas
drawings (PNG, white or transparent), larger renderings of scikit-learn's 8x8 UCI digits,
and the "pain point" images that break naive pipelines (``PAIN_POINTS``).

``python -m digitrec.synthetic OUTDIR`` writes a sample set and a ``labels.tsv``.
"""

from __future__ import annotations

import argparse
import functools
import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitrec.errors import DatasetError

# (Debian package, font file). Outline and hatched fonts (fonts-femkeklaver,
# fonts-cabinsketch) are left out: their hollow glyphs look like no pen stroke.
FONT_FILES: tuple[tuple[str, str], ...] = (
    ("fonts-dkg-handwriting", "dkg.ttf"),
    ("fonts-dkg-handwriting", "dkgBd.ttf"),
    ("fonts-dkg-handwriting", "dkgIt.ttf"),
    ("fonts-breip", "Breip.ttf"),
    ("fonts-bwht", "BecauseWeBuild-Regular.otf"),
    ("fonts-bwht", "BecauseWeConnect-Regular.otf"),
    ("fonts-bwht", "BecauseWeCreate-Regular.otf"),
    ("fonts-bwht", "BecauseWeLearn-Regular.otf"),
    ("fonts-bwht", "BecauseWeMentor-Regular.otf"),
    ("fonts-bwht", "BecauseWeOrganize-Regular.otf"),
    ("fonts-humor-sans", "Humor-Sans.ttf"),
    ("fonts-comic-neue", "ComicNeue-Regular.otf"),
    ("fonts-comic-neue", "ComicNeue-Bold.otf"),
    ("fonts-comic-neue", "ComicNeue-Italic.otf"),
    ("fonts-dancingscript", "DancingScript-Regular.otf"),
    ("fonts-ecolier-court", "Ecolier-court.ttf"),
    ("fonts-klee", "KleeOne-Regular.ttf"),
    ("fonts-kristi", "Kristi.ttf"),
)
FONT_PACKAGES: tuple[str, ...] = tuple(sorted({package for package, _ in FONT_FILES}))
FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
)

PAIN_POINTS: tuple[str, ...] = (
    "exif-rotated-jpeg",
    "transparent-png",
    "white-on-black",
    "shadowed-photo",
    "touching-digits",
    "blank",
)

# EXIF tag 0x0112; value 6 tells viewers to turn the stored pixels 90 degrees clockwise.
_EXIF_ORIENTATION = 0x0112


@dataclass
class Rendering:
    """Text rendered as ink coverage: 1.0 is full ink, 0.0 is background."""

    ink: np.ndarray
    boxes: list[tuple[int, int, int, int]]
    text: str


@functools.cache
def handwriting_fonts() -> tuple[Path, ...]:
    """The installed handwriting font files, in ``FONT_FILES`` order.

    Raises ``DatasetError`` naming the packages to install when none is found.
    """
    wanted = {filename: rank for rank, (_, filename) in enumerate(FONT_FILES)}
    found: dict[str, Path] = {}
    for root in FONT_DIRS:
        if not root.is_dir():
            continue
        for path in root.rglob("*"):
            if path.name in wanted and path.name not in found:
                found[path.name] = path
    if not found:
        raise DatasetError(
            "no handwriting fonts installed; run: apt-get install -y " + " ".join(FONT_PACKAGES)
        )
    return tuple(sorted(found.values(), key=lambda p: wanted[p.name]))


def render_text(
    text: str,
    font: Path,
    rng: np.random.Generator,
    *,
    height: int = 64,
    gap: float = 0.2,
    pen: int = 0,
    jitter: bool = True,
) -> Rendering:
    """Render ``text`` glyph by glyph, each scaled to ``height`` pixels tall.

    ``gap`` is the space between glyphs as a fraction of ``height`` (negative: they touch).
    ``pen`` thickens strokes by that many pixels on each side, like a broad marker.
    With ``jitter`` each glyph gets its own small rotation, size and baseline change.
    """
    glyphs = [_glyph(ch, font, rng, height, jitter) for ch in text]
    pad = max(4, height // 4) + pen
    offsets = [0.0] * len(glyphs)
    x = float(pad)
    for i, glyph in enumerate(glyphs):
        offsets[i] = x
        x += glyph.shape[1] + gap * height
    width = int(np.ceil(x - gap * height)) + pad
    tallest = max(g.shape[0] for g in glyphs)
    canvas = np.zeros((tallest + 2 * pad + height // 8, max(width, 2 * pad + 1)), np.float32)
    boxes: list[tuple[int, int, int, int]] = []
    for glyph, x0 in zip(glyphs, offsets, strict=True):
        dy = int(rng.integers(-height // 16, height // 16 + 1)) if jitter else 0
        top = pad + (tallest - glyph.shape[0]) // 2 + dy + height // 16
        left = int(round(x0))
        region = canvas[top : top + glyph.shape[0], left : left + glyph.shape[1]]
        np.maximum(region, glyph[: region.shape[0], : region.shape[1]], out=region)
        boxes.append((left, top, region.shape[1], region.shape[0]))
    if pen > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pen + 1, 2 * pen + 1))
        canvas = cv2.dilate(canvas, kernel)
        boxes = [(x - pen, y - pen, w + 2 * pen, h + 2 * pen) for x, y, w, h in boxes]
    return Rendering(canvas, boxes, text)


def _glyph(ch: str, font: Path, rng: np.random.Generator, height: int, jitter: bool) -> np.ndarray:
    """One character as a tight float32 ink crop about ``height`` pixels tall."""
    size = 4 * height
    face = ImageFont.truetype(str(font), size)
    im = Image.new("L", (3 * size, 3 * size), 0)
    ImageDraw.Draw(im).text((size, size), ch, font=face, fill=255)
    ink = np.asarray(im, dtype=np.float32) / 255.0
    if jitter:
        angle = float(rng.uniform(-7, 7))
        centre = (1.5 * size, 1.5 * size)
        ink = cv2.warpAffine(ink, cv2.getRotationMatrix2D(centre, angle, 1.0), ink.shape[::-1])
    rows = np.flatnonzero(ink.max(axis=1) > 0.05)
    cols = np.flatnonzero(ink.max(axis=0) > 0.05)
    if rows.size == 0:
        raise DatasetError(f"font {font.name} has no glyph for {ch!r}")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    target = height * (float(rng.uniform(0.88, 1.08)) if jitter else 1.0)
    scale = target / crop.shape[0]
    shape = (max(1, round(crop.shape[1] * scale)), max(1, round(target)))
    return np.clip(cv2.resize(crop, shape, interpolation=cv2.INTER_AREA), 0.0, 1.0)


def random_number(rng: np.random.Generator, min_digits: int = 1, max_digits: int = 5) -> str:
    count = int(rng.integers(min_digits, max_digits + 1))
    return "".join(str(d) for d in rng.integers(0, 10, size=count))


def photo(
    text: str,
    rng: np.random.Generator,
    *,
    font: Path | None = None,
    shadow: float | None = None,
    gap: float | None = None,
    quality: int | None = None,
) -> bytes:
    """A phone-photo-like JPEG of ``text`` written on paper.

    Paper tint, blue or black ink, uneven light, a soft shadow of depth ``shadow`` (0 none,
    0.6 deep; random if None), a slight rotation and perspective, blur, noise and JPEG
    compression.
    """
    font = font or _pick_font(rng)
    height = int(rng.integers(48, 110))
    if text:
        gap = float(rng.uniform(0.1, 0.35)) if gap is None else gap
        ink = render_text(text, font, rng, height=height, gap=gap).ink
    else:
        ink = np.zeros((height * 2, height * 3), np.float32)
    return photo_of_ink(ink, rng, height=height, shadow=shadow, quality=quality)


def photo_of_ink(
    ink: np.ndarray,
    rng: np.random.Generator,
    *,
    height: int,
    shadow: float | None = None,
    quality: int | None = None,
) -> bytes:
    """A phone-photo-like JPEG of ink coverage ``ink`` (1.0 full ink) written on paper.

    ``height`` is the writing's line height in pixels: the margins around the ink scale
    with it. The paper, pen colour, light, shadow, warp, blur, noise and JPEG quality are
    drawn from ``rng`` as in :func:`photo`, which renders a font's glyphs and calls this.
    """
    rgb = _paper_rgb(ink, rng, height=height, shadow=shadow)
    return _encode(rgb, "JPEG", quality=quality or int(rng.integers(60, 92)))


def _paper_rgb(
    ink: np.ndarray, rng: np.random.Generator, *, height: int, shadow: float | None
) -> np.ndarray:
    margin_y = int(height * rng.uniform(0.6, 1.5))
    margin_x = int(height * rng.uniform(0.6, 1.5))
    ink = np.pad(ink, ((margin_y, margin_y), (margin_x, margin_x)))
    ink = _fit_at_least(ink, 240, 320)
    h, w = ink.shape

    paper = np.array([rng.uniform(215, 250), rng.uniform(210, 248), rng.uniform(195, 240)])
    if rng.random() < 0.5:
        pen = np.array([rng.uniform(15, 45), rng.uniform(15, 45), rng.uniform(20, 55)])
    else:
        pen = np.array([rng.uniform(10, 40), rng.uniform(30, 70), rng.uniform(110, 170)])
    # Paper fibre: faint low-frequency texture.
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3) * 6
    page = paper[None, None, :] * (1 - ink[..., None]) + pen[None, None, :] * ink[..., None]
    page += texture[..., None]

    light = _light_field(rng, h, w, shadow)
    page *= light[..., None]
    page = _warp(page, rng)
    page = cv2.GaussianBlur(page, (0, 0), float(rng.uniform(0.5, 1.2)))
    page += rng.normal(0, float(rng.uniform(2, 6)), page.shape)
    return np.clip(np.rint(page), 0, 255).astype(np.uint8)


def _light_field(rng: np.random.Generator, h: int, w: int, shadow: float | None) -> np.ndarray:
    """Uneven lighting times a soft-edged shadow, as a multiplier per pixel."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    gx, gy = rng.uniform(-0.25, 0.25, size=2)
    light = 1.0 + gx * (xs / w - 0.5) + gy * (ys / h - 0.5)
    depth = float(rng.uniform(0.0, 0.5)) if shadow is None else shadow
    if depth > 0:
        # A shadow edge (a hand or a phone) crossing the page at a random angle.
        angle = rng.uniform(0, 2 * np.pi)
        nx, ny = np.cos(angle), np.sin(angle)
        offset = rng.uniform(-0.2, 0.2) * min(h, w)
        distance = (xs - w / 2) * nx + (ys - h / 2) * ny - offset
        softness = float(rng.uniform(0.02, 0.08)) * min(h, w)
        inside = 1.0 / (1.0 + np.exp(-distance / softness))
        light = light * (1.0 - depth * inside)
    return light.astype(np.float32)


def _warp(page: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A slight rotation and perspective, as from a phone held not quite square."""
    h, w = page.shape[:2]
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    moved = corners + rng.uniform(-0.03, 0.03, size=(4, 2)).astype(np.float32) * [w, h]
    angle = np.deg2rad(rng.uniform(-4, 4))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.float32([w / 2, h / 2])
    moved = ((moved - centre) @ rotation.T + centre).astype(np.float32)
    matrix = cv2.getPerspectiveTransform(corners, moved)
    return cv2.warpPerspective(
        page.astype(np.float32),
        matrix,
        (w, h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _fit_at_least(ink: np.ndarray, min_h: int, min_w: int) -> np.ndarray:
    h, w = ink.shape
    pad_y, pad_x = max(0, min_h - h), max(0, min_w - w)
    return np.pad(ink, ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2)))


def drawing(
    text: str,
    rng: np.random.Generator,
    *,
    background: str = "white",
    font: Path | None = None,
    size: int = 280,
) -> bytes:
    """A canvas-like PNG: a thick pen, placed off-centre, small or large.

    ``background`` is "white" (black strokes), "black" (white strokes), "transparent"
    (black strokes on nothing) or "transparent-light" (white strokes on nothing).
    """
    font = font or _pick_font(rng)
    pen = int(rng.integers(2, 7))
    ink = render_text(text, font, rng, height=80, gap=float(rng.uniform(0.15, 0.4)), pen=pen).ink
    width = max(size, int(size * 0.5 * len(text)))
    fill = float(rng.uniform(0.3, 0.9))
    scale = fill * min(size / ink.shape[0], width / ink.shape[1])
    shape = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    ink = np.clip(cv2.resize(ink, shape, interpolation=cv2.INTER_AREA), 0, 1)
    canvas = np.zeros((size, width), np.float32)
    top = int(rng.integers(0, size - ink.shape[0] + 1))
    left = int(rng.integers(0, width - ink.shape[1] + 1))
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    alpha = np.rint(canvas * 255).astype(np.uint8)
    if background == "white":
        return _encode(255 - alpha, "PNG")
    if background == "black":
        return _encode(alpha, "PNG")
    if background in ("transparent", "transparent-light"):
        colour = 0 if background == "transparent" else 255
        rgba = np.zeros((size, width, 4), np.uint8)
        rgba[..., :3] = colour
        rgba[..., 3] = alpha
        return _encode(rgba, "PNG")
    raise ValueError(f"unknown background {background!r}")


def uci_images(seed: int, count: int, *, size: int = 96) -> list[tuple[np.ndarray, str]]:
    """scikit-learn's 8x8 UCI digits drawn larger: uint8 arrays, half of them inverted."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(digits.images), size=count, replace=False)
    out: list[tuple[np.ndarray, str]] = []
    for index in picks:
        ink = (digits.images[index] / 16.0).astype(np.float32)
        big = np.clip(cv2.resize(ink, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)
        big = np.pad(big, size // 4)
        grey = np.rint(big * 255).astype(np.uint8)
        if rng.random() < 0.5:
            grey = 255 - grey
        out.append((grey, str(digits.target[index])))
    return out


def photos(seed: int, count: int) -> list[tuple[bytes, str]]:
    """``count`` phone-photo-like JPEGs of random numbers, with their labels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        text = random_number(rng)
        out.append((photo(text, rng), text))
    return out


def drawings(seed: int, count: int) -> list[tuple[bytes, str]]:
    """``count`` canvas-like PNGs of single digits and short numbers, with their labels."""
    rng = np.random.default_rng(seed)
    backgrounds = ("white", "transparent", "black", "transparent-light")
    out = []
    for i in range(count):
        text = random_number(rng, 1, 3)
        out.append((drawing(text, rng, background=backgrounds[i % len(backgrounds)]), text))
    return out


def pain_point(name: str, seed: int = 0) -> tuple[bytes, str]:
    """One of the images that break naive pipelines (``PAIN_POINTS``) and its label."""
    rng = np.random.default_rng(seed)
    font = handwriting_fonts()[0]
    if name == "exif-rotated-jpeg":
        text = "47"
        upright = 255 - np.rint(render_text(text, font, rng, height=90).ink * 255).astype(np.uint8)
        # Stored turned a quarter left; Orientation=6 tells the viewer to turn it back.
        im = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
        exif = im.getexif()
        exif[_EXIF_ORIENTATION] = 6
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=90, exif=exif)
        return buffer.getvalue(), text
    if name == "transparent-png":
        return drawing("3", rng, background="transparent", font=font), "3"
    if name == "white-on-black":
        return drawing("59", rng, background="black", font=font), "59"
    if name == "shadowed-photo":
        return photo("314", rng, font=font, shadow=0.55, quality=85), "314"
    if name == "touching-digits":
        ink = render_text("2024", font, rng, height=90, gap=-0.06, pen=2).ink
        return _encode(255 - np.rint(ink * 255).astype(np.uint8), "PNG"), "2024"
    if name == "blank":
        return photo("", rng, font=font, shadow=0.3, quality=85), ""
    raise ValueError(f"unknown pain point {name!r}; choose from {', '.join(PAIN_POINTS)}")


def _pick_font(rng: np.random.Generator) -> Path:
    fonts = handwriting_fonts()
    return fonts[int(rng.integers(0, len(fonts)))]


def _encode(pixels: np.ndarray, fmt: str, *, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options = {"quality": quality} if fmt == "JPEG" else {}
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def write_samples(outdir: Path, seed: int = 0, count: int = 20) -> list[Path]:
    """Write ``count`` photos, drawings and UCI renderings plus every pain point to
    ``outdir``, with ``labels.tsv`` (file, label, kind). Returns the image paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, str]] = []

    def emit(kind: str, index: int, label: str, data: bytes, ext: str) -> None:
        filename = f"{kind}-{index:03d}-{label or 'none'}.{ext}"
        (outdir / filename).write_bytes(data)
        rows.append((filename, label, kind))

    for i, (data, label) in enumerate(photos(seed, count)):
        emit("photo", i, label, data, "jpg")
    for i, (data, label) in enumerate(drawings(seed + 1, count)):
        emit("drawing", i, label, data, "png")
    for i, (grey, label) in enumerate(uci_images(seed + 2, count)):
        emit("uci", i, label, _encode(grey, "PNG"), "png")
    for i, name in enumerate(PAIN_POINTS):
        data, label = pain_point(name, seed)
        emit(name, i, label, data, "jpg" if data[:2] == b"\xff\xd8" else "png")
    lines = ["file\tlabel\tkind"] + ["\t".join(row) for row in rows]
    (outdir / "labels.tsv").write_text("\n".join(lines) + "\n")
    return [outdir / row[0] for row in rows]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m digitrec.synthetic",
        description="Write deterministic synthetic handwriting images and labels.tsv.",
    )
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=20, help="images of each kind")
    args = parser.parse_args(argv)
    try:
        paths = write_samples(args.outdir, args.seed, args.count)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(paths)} images and labels.tsv to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
