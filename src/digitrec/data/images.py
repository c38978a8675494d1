"""The one safe image loader: every entry point (CLI, web, batch) reads images through here.

``load_image`` accepts PNG, JPEG and WebP by content, refuses anything else by name, checks
the file size before reading and the pixel count from the header before decoding, applies
EXIF orientation, composites transparency onto the background the strokes need, and
returns uint8 greyscale. Every failure is an ``ImageError`` whose message is one line
naming the file.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitrec.errors import ImageError

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000

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
    name
        What to call the image in error messages; defaults to the path, or "image" for bytes.

    Examples
    --------
    >>> from digitrec.data.images import load_image
    >>> load_image(b"GIF89a", name="x.gif")
    Traceback (most recent call last):
    ...
    digitrec.errors.ImageError: x.gif: GIF images are not supported (use PNG, JPEG or WebP)
    """
    if isinstance(source, bytes | bytearray | memoryview):
        label = name or "image"
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageError(f"{label}: {_size_text(len(data), max_bytes)}")
    else:
        label = name or str(source)
        data = _read_limited(Path(source), label, max_bytes)
    return _decode(data, label, max_pixels)


def _read_limited(path: Path, label: str, max_bytes: int) -> bytes:
    try:
        size = os.stat(path).st_size
        if not path.is_file():
            raise ImageError(f"{label}: not a file")
        if size > max_bytes:
            raise ImageError(f"{label}: {_size_text(size, max_bytes)}")
        with open(path, "rb") as handle:
            # Read one byte past the limit: the file may have grown since stat.
            data = handle.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError(f"{label}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{label}: {_size_text(len(data), max_bytes)}")
    return data


def check_image(
    path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> None:
    """Refuse, without decoding pixels, a file that :func:`load_image` would refuse at
    once: missing, unreadable, empty, too large, or not PNG, JPEG or WebP. Cheap enough to
    check every image before anything slow (loading a model) starts."""
    _checked_header(_read_limited(Path(path), str(path), max_bytes), str(path), max_pixels)


def _size_text(size: int, limit: int) -> str:
    return f"file is {size / 1e6:.1f} MB, over the {limit / 1e6:.1f} MB limit"


def _checked_header(data: bytes, label: str, max_pixels: int) -> tuple[Image.Image, str]:
    """The opened (not decoded) image and its format name, once format and size pass."""
    if not data:
        raise ImageError(f"{label}: file is empty")
    im = _open_header(data, label, max_pixels)
    fmt = _ACCEPTED.get(im.format or "")
    if fmt is None:
        raise ImageError(f"{label}: {im.format} images are not supported ({_ADVICE})")
    width, height = im.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{label}: {fmt} header declares an empty image")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: image is {width}x{height} pixels ({width * height / 1e6:.1f} megapixels), "
            f"over the {max_pixels / 1e6:.1f} megapixel limit"
        )
    return im, fmt


def _decode(data: bytes, label: str, max_pixels: int) -> np.ndarray:
    im, fmt = _checked_header(data, label, max_pixels)
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        return _to_grey(im)
    # Pillow's decoders raise many unrelated types on malformed input (OSError, ValueError,
    # SyntaxError, EOFError, struct.error, zlib.error, ...): all mean "this file is broken".
    except Exception as exc:
        raise ImageError(f"{label}: cannot decode {fmt} image ({_one_line(exc)})") from None


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
        raise ImageError(
            f"{label}: image header declares over {over:.0f} megapixels, "
            f"over the {max_pixels / 1e6:.1f} megapixel limit"
        ) from None
    except UnidentifiedImageError:
        for offset, magic, fmt in _SIGNATURES:
            if data[offset : offset + len(magic)].lower() == magic.lower():
                raise ImageError(f"{label}: {fmt} images are not supported ({_ADVICE})") from None
        raise ImageError(f"{label}: not a recognised image ({_ADVICE})") from None
    except Exception as exc:
        raise ImageError(f"{label}: unreadable image header ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _to_grey(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale PNG: Pillow's convert("L") clips instead of scaling.
        wide = np.asarray(im.convert("I"), dtype=np.float64)
        return np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
    if im.mode == "F":
        return np.clip(np.rint(np.asarray(im, dtype=np.float64)), 0, 255).astype(np.uint8)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return np.ascontiguousarray(np.asarray(im.convert("L"), dtype=np.uint8))
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    # ITU-R 601 luma, the same weights as Pillow's convert("L").
    luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    background = _background_behind(luma, alpha)
    grey = luma * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _background_behind(luma: np.ndarray, alpha: np.ndarray) -> float:
    """The grey to show through transparent pixels so the strokes stay visible.

    If most of the image is transparent, the opaque pixels are the strokes: put dark strokes
    on white and light strokes on black. If most is opaque, the opaque pixels are a page of
    their own: extend its background (its median grey) into the transparent parts.
    """
    opaque = alpha > 0.5
    if not opaque.any():
        return 255.0
    median = float(np.median(luma[opaque]))
    if opaque.mean() >= 0.5:
        return median
    return 255.0 if median < _MID_GREY else 0.0
