"""The one safe image loader: every entry point (CLI, web, batch) reads images through here.

``load_image`` accepts PNG, JPEG and WebP by content, refuses anything else by name, checks
the file size before reading and the pixel count from the header before decoding, applies
EXIF orientation, composites transparency onto the background the strokes need, and
returns uint8 greyscale. Every failure is an ``ImageError`` whose message is one line naming
the file; its class says why (``ImageTooLarge``, ``UnsupportedImage``, ``UnreadableImage``)
and carries the HTTP status the web app answers with.

Decoding is bounded in memory and in work before it starts: the header's size, the
memory the decoded pixels would take, the shape (a 1x40,000,000 strip is not a picture of
digits) and, for JPEG, the number of scans (each progressive scan is a pass over every
pixel, so a small file of thousands of scans costs minutes) are all checked first. Large
JPEGs are decoded at a reduced size (libjpeg's DCT scaling), never below ``DRAFT_SIDE``
pixels along the longer side: the reader works on a copy at most 1,200 pixels long, so a
photo that large reads the same.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from digitrec.errors import ImageTooLarge, UnreadableImage, UnsupportedImage

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000
# What the decoded pixels may take in memory, as Pillow holds them (bytes per band times
# bands times pixels, after DCT scaling cuts a JPEG down), plus 4 bytes a pixel for images
# with transparency. A 40-megapixel RGB photo (120 MB) fits; with alpha, 16 megapixels do.
DEFAULT_MAX_DECODED_BYTES = 128_000_000
# Pillow and libjpeg write 1 scan (baseline), 6 (grey), 10 (colour) or 18 (CMYK) progressive
# a multi-picture file repeats them per picture. Each scan is a pass over
# the whole image, so this caps the decoder's work at a few times a normal photo's.
MAX_JPEG_SCANS = 32
# Longer side over shorter side, for images longer than ANY_SHAPE_SIDE (smaller ones are
# cheap whatever their shape). A row of a few dozen digits is under 1:40.
MAX_ASPECT_RATIO = 200
ANY_SHAPE_SIDE = 4096
# JPEGs are decoded at 1/2, 1/4 or 1/8 size while the longer side stays at least this long
# (twice the reader's working size, see digitrec.reading.ink).
DRAFT_SIDE = 2400

# Pillow's format names that we decode. MPO is what Pillow calls the multi-picture JPEGs
# that many phone cameras write: the first picture is an ordinary JPEG.
_ACCEPTED = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
_ADVICE = "use PNG, JPEG or WebP"

# Formats Pillow cannot identify but people upload; named so the refusal says what it saw.
# Also the common formats Pillow knows, so a file whose header is cut short is still named.
_SIGNATURES: tuple[tuple[int, bytes, str], ...] = (
    (0, b"GIF8", "GIF"),
    (0, b"BM", "BMP"),
    (0, b"II*\x00", "TIFF"),
    (0, b"MM\x00*", "TIFF"),
    (4, b"ftypheic", "HEIC"),
    (4, b"ftypheix", "HEIC"),
    (4, b"ftypmif1", "HEIF"),
    (4, b"ftypavif", "AVIF"),
    (0, b"%PDF", "PDF"),
    (0, b"<svg", "SVG"),
    (0, b"<?xml", "SVG"),
)

# Above this luminance the opaque pixels count as light (strokes on a dark background).
_MID_GREY = 128.0


def load_image(
    source: str | Path | bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    name: str | None = None,
) -> np.ndarray:
    """Read an image file or its bytes as uint8 greyscale of shape ``(h, w)``.

    Parameters
    ----------
    source
        A path, or the encoded bytes of an image (an upload).
    max_bytes
        Larger files are refused before they are read.
    max_pixels
        Images whose header declares more pixels are refused before decoding.
    max_decoded_bytes
        Images whose decoded pixels would take more memory are refused before decoding.
    name
        What to call the image in error messages; defaults to the path, or "image" for bytes.

    Examples
    --------
    >>> from digitrec.data.images import load_image
    >>> load_image(b"GIF89a", name="x.gif")
    Traceback (most recent call last):
    ...
    digitrec.errors.UnsupportedImage: x.gif: GIF images are not supported (use PNG, JPEG or WebP)
    """
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "image"
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageTooLarge(f"{label}: {_size_text(len(data), max_bytes)}")
    else:
        label = name or str(source)
        data = _read_limited(Path(source), label, max_bytes)
    return _decode(data, label, max_pixels, max_decoded_bytes)


def declared_pixels(data: bytes) -> int:
    """The pixel count an image's header declares, read without decoding; 0 if the header
    cannot be read (``load_image`` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return im.width * im.height
    except Image.DecompressionBombError:
        return 2 * (Image.MAX_IMAGE_PIXELS or 0)
    except Exception:
        return 0


def _read_limited(path: Path, label: str, max_bytes: int) -> bytes:
    try:
        size = os.stat(path).st_size
        if not path.is_file():
            raise UnreadableImage(f"{label}: not a file")
        if size > max_bytes:
            raise ImageTooLarge(f"{label}: {_size_text(size, max_bytes)}")
        with open(path, "rb") as handle:
            # Read one byte past the limit: the file may have grown since stat.
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise UnreadableImage(f"{label}: no such file") from None
    except OSError as exc:
        raise UnreadableImage(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{label}: {_size_text(len(data), max_bytes)}")
    return data


def check_image(
    path: str | Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> None:
    """Refuse, without decoding pixels, a file that :func:`load_image` would refuse at
    once: missing, unreadable, empty, too large, or not PNG, JPEG or WebP. Cheap enough to
    check every image before anything slow (loading a model) starts."""
    data = _read_limited(Path(path), str(path), max_bytes)
    _checked_header(data, str(path), max_pixels, max_decoded_bytes)


def _size_text(size: int, limit: int) -> str:
    return f"file is {size / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB limit"


def _checked_header(
    data: bytes, label: str, max_pixels: int, max_decoded_bytes: int
) -> tuple[Image.Image, str]:
    """The opened (not decoded) image and its format name, once format, size, shape, JPEG
    scans and the memory decoding takes all pass (large JPEGs set to decode reduced)."""
    if not data:
        raise UnreadableImage(f"{label}: file is empty")
    im = _open_header(data, label, max_pixels)
    fmt = _ACCEPTED.get(im.format or "")
    if fmt is None:
        raise UnsupportedImage(f"{label}: {im.format} images are not supported ({_ADVICE})")
    width, height = im.size
    if width <= 0 or height <= 0:
        raise UnreadableImage(f"{label}: {fmt} header declares an empty image")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{label}: image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"over the {max_pixels / 1e6:.1f} megapixel limit"
        )
    if max(width, height) > max(ANY_SHAPE_SIDE, MAX_ASPECT_RATIO * min(width, height)):
        raise ImageTooLarge(
            f"{label}: image is {width}x{height} pixels, over {ANY_SHAPE_SIDE} long and "
            f"over {MAX_ASPECT_RATIO} times longer than wide; over the shape limit"
        )
    if fmt == "JPEG":
        _check_scans(data, label)
        _draft(im)
    decoded = _decoded_bytes(im)
    if decoded > max_decoded_bytes:
        raise ImageTooLarge(
            f"{label}: decoding this {im.width}x{im.height} {im.mode} image takes "
            f"{decoded / 1e6:.0f} MB, over the {max_decoded_bytes / 1e6:.0f} MB decoding limit"
        )
    return im, fmt


def _decode(data: bytes, label: str, max_pixels: int, max_decoded_bytes: int) -> np.ndarray:
    im, fmt = _checked_header(data, label, max_pixels, max_decoded_bytes)
    try:
        im.load()
        # Orientation is applied to the greyscale result: a quarter of the memory to move.
        orientation = im.getexif().get(_ORIENTATION)
        return _oriented(_to_grey(im), orientation)
    # Pillow's decoders raise many unrelated types on malformed input (OSError, ValueError,
    # SyntaxError, EOFError, struct.error, zlib.error, ...): all mean "this file is broken".
    except Exception as exc:
        raise UnreadableImage(f"{label}: cannot decode {fmt} image ({_one_line(exc)})") from None


_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _oriented(grey: np.ndarray, orientation: object) -> np.ndarray:
    method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    if method is None:
        return grey
    return np.asarray(Image.fromarray(grey).transpose(method), dtype=np.uint8)


def jpeg_scans(data: bytes) -> int:
    """How many scans (SOS markers) the JPEG bytes hold, counting every embedded picture.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker,
    so ``FF DA`` occurs only as a real start-of-scan (or in a thumbnail's own): an upper
    bound of the scans the decoder will run, found without parsing.
    """
    return data.count(b"\xff\xda")


def _check_scans(data: bytes, label: str) -> None:
    scans = jpeg_scans(data)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(
            f"{label}: JPEG has {scans} scans (encoders write at most 18 a picture), "
            f"over the {MAX_JPEG_SCANS} scan limit"
        )


def _draft(im: Image.Image) -> None:
    """Ask libjpeg for the smallest DCT-scaled size whose longer side is at least
    ``DRAFT_SIDE``; smaller JPEGs are decoded as they are."""
    width, height = im.size
    longer = max(width, height)
    if longer < 2 * DRAFT_SIDE:
        return
    im.draft(None, (max(1, width * DRAFT_SIDE // longer), max(1, height * DRAFT_SIDE // longer)))


# Bytes per band of Pillow's modes whose bands are wider than a byte.
_WIDE_BANDS = {"I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _decoded_bytes(im: Image.Image) -> int:
    """The memory decoding takes: bands x bytes per band x pixels, and for images with
    transparency 4 bytes a pixel more (their float luma, see _background_behind)."""
    per_pixel = _WIDE_BANDS.get(im.mode, len(im.getbands()))
    if _has_alpha(im):
        per_pixel = max(per_pixel, 4) + 4
    return im.width * im.height * per_pixel


def _open_header(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Parse the header only; Pillow decodes pixels lazily on ``load``."""
    try:
        with warnings.catch_warnings():
            # We enforce our own pixel limit right after; Pillow's warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # Pillow refuses headers over twice its MAX_IMAGE_PIXELS before we see the size.
        over = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise ImageTooLarge(
            f"{label}: image header declares over {over:.0f} megapixels, "
            f"over the {max_pixels / 1e6:.1f} megapixel limit"
        ) from None
    except UnidentifiedImageError:
        for offset, magic, fmt in _SIGNATURES:
            if data[offset : offset + len(magic)].lower() == magic.lower():
                raise UnsupportedImage(
                    f"{label}: {fmt} images are not supported ({_ADVICE})"
                ) from None
        raise UnsupportedImage(f"{label}: not a recognised image ({_ADVICE})") from None
    except Exception as exc:
        raise UnreadableImage(f"{label}: unreadable image header ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _to_grey(im: Image.Image) -> np.ndarray:
    """uint8 greyscale of the loaded ``im``, which it closes as soon as it has the pixels
    as an array, so that two full copies of a large image are never held at once."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNG: Pillow's convert("L") clips instead of scaling.
        wide = _pixels(im, "I")
        return _rows_to_grey(wide, lambda rows: rows / 257.0)
    if im.mode == "F":
        return _rows_to_grey(_pixels(im, "F"), lambda rows: rows.astype(np.float64))
    if not _has_alpha(im):
        return np.ascontiguousarray(_pixels(im, "L"), dtype=np.uint8)
    rgba = _pixels(im, "RGBA")
    background = _background_behind(rgba)
    return _rows_to_grey(
        rgba, lambda rows: _luma(rows) * _alpha(rows) + background * (1.0 - _alpha(rows))
    )


def _pixels(im: Image.Image, mode: str) -> np.ndarray:
    """``im`` converted to ``mode`` as an array; ``im`` is closed."""
    with im:
        if im.mode == mode:
            return np.asarray(im)
        with im.convert(mode) as converted:
            im.close()
            return np.asarray(converted)


# Float work on big images is done this many pixels at a time, so that it costs a few MB
# beside the decoded image rather than 8-16 bytes for every pixel of it.
_STRIP_PIXELS = 1 << 20


def _strips(image: np.ndarray) -> Iterator[slice]:
    step = max(1, _STRIP_PIXELS // max(1, image.shape[1]))
    for top in range(0, image.shape[0], step):
        yield slice(top, top + step)


def _rows_to_grey(image: np.ndarray, grey_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """uint8 of ``grey_of`` (rounded, clipped to 0-255), computed a strip of rows at a time."""
    out = np.empty(image.shape[:2], np.uint8)
    for rows in _strips(image):
        out[rows] = np.clip(np.rint(grey_of(image[rows])), 0, 255)
    return out


def _alpha(rgba: np.ndarray) -> np.ndarray:
    return rgba[..., 3].astype(np.float32) / 255.0


def _luma(rgba: np.ndarray) -> np.ndarray:
    # ITU-R 601 luma, the same weights as Pillow's convert("L").
    return rgba[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _background_behind(rgba: np.ndarray) -> float:
    """The grey to show through transparent pixels so the strokes stay visible.

    If most of the image is transparent, the opaque pixels are the strokes: put dark strokes
    on white and light strokes on black. If most is opaque, the opaque pixels are a page of
    their own: extend its background (its median grey) into the transparent parts.
    """
    # The opaque pixels' luma, gathered a strip at a time into one float32 buffer (the
    # 4 bytes a pixel that _decoded_bytes charges alpha images for).
    luma = np.empty(rgba.shape[0] * rgba.shape[1], np.float32)
    opaque = 0
    for rows in _strips(rgba):
        strip = _luma(rgba[rows])[_alpha(rgba[rows]) > 0.5]
        luma[opaque : opaque + strip.size] = strip
        opaque += strip.size
    if not opaque:
        return 255.0
    median = float(np.median(luma[:opaque], overwrite_input=True))
    if opaque >= 0.5 * luma.size:
        return median
    return 255.0 if median < _MID_GREY else 0.0
