"""The safe loader: formats, limits, EXIF orientation, alpha and broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec.data import images
from digitrec.data.images import load_image
from digitrec.errors import ImageError


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 255, 64).astype(np.uint8), (48, 1))


def _seven(height: int = 60, width: int = 40) -> np.ndarray:
    """A dark '7' on white: a top bar and a diagonal, so every rotation looks different."""
    grey = np.full((height, width), 255, np.uint8)
    grey[5:12, 5:35] = 0
    rows = np.arange(12, 55)
    cols = (35 - (rows - 12) * 0.5).astype(int)
    for offset in range(-3, 4):
        grey[rows, cols + offset] = 0
    return grey


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG of a few hundred bytes whose header claims ``width`` x ``height`` pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("PNG", 0), ("JPEG", 6), ("WEBP", 6)], ids=["png", "jpeg", "webp"]
)
def test_accepted_formats_decode_to_uint8_greyscale(fmt, tolerance):
    grey = _gradient()
    out = load_image(_encode(Image.fromarray(grey).convert("RGB"), fmt, quality=95))
    assert out.dtype == np.uint8
    assert out.shape == grey.shape
    assert np.abs(out.astype(int) - grey).mean() <= tolerance


def test_path_and_bytes_give_the_same_pixels(tmp_path: Path):
    data = _encode(Image.fromarray(_gradient()), "PNG")
    path = tmp_path / "g.png"
    path.write_bytes(data)
    assert np.array_equal(load_image(path), load_image(data))
    assert np.array_equal(load_image(str(path)), load_image(data))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "ICO", "PPM"])
def test_other_formats_are_refused_by_name(fmt, tmp_path: Path):
    path = tmp_path / f"digit.{fmt.lower()}"
    path.write_bytes(_encode(Image.fromarray(_gradient()), fmt))
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert message == f"{path}: {fmt} images are not supported (use PNG, JPEG or WebP)"


def test_format_is_judged_by_content_not_by_name(tmp_path: Path):
    path = tmp_path / "really-a-gif.png"
    path.write_bytes(_encode(Image.fromarray(_gradient()), "GIF"))
    with pytest.raises(ImageError, match="GIF images are not supported"):
        load_image(path)
    renamed = tmp_path / "really-a-png.gif"
    renamed.write_bytes(_encode(Image.fromarray(_gradient()), "PNG"))
    assert load_image(renamed).shape == (48, 64)


def test_heic_is_named_even_though_pillow_cannot_read_it():
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageError, match=r"^photo\.heic: HEIC images are not supported"):
        load_image(data, name="photo.heic")


def test_text_is_not_an_image():
    with pytest.raises(ImageError, match=r"^notes\.txt: not a recognised image"):
        load_image(b"hello, these are my digits", name="notes.txt")


def test_exif_orientation_is_applied():
    upright = _seven()
    # Stored turned a quarter to the left; Orientation 6 says "turn 90 degrees clockwise".
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1)))
    exif = stored.getexif()
    exif[0x0112] = 6
    out = load_image(_encode(stored, "JPEG", quality=95, exif=exif))
    assert out.shape == upright.shape
    assert np.abs(out.astype(int) - upright).mean() < 8
    # The top bar of the 7 is at the top: the upper rows are the darkest.
    assert out[5:12].mean() < 120 < out[40:55].mean()


def test_dark_strokes_on_transparent_land_on_white():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[10:30, 18:22] = (0, 0, 0, 255)
    rgba[10:30, 22] = (0, 0, 0, 128)  # an anti-aliased edge
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0] == 255
    assert out[20, 20] == 0
    assert 120 <= out[20, 22] <= 135


def test_light_strokes_on_transparent_land_on_black():
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 255  # invisible white under alpha 0, as canvases often leave it
    rgba[10:30, 18:22, 3] = 255
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0] == 0
    assert out[20, 20] == 255


def test_opaque_page_with_transparent_border_keeps_its_paper_colour():
    rgba = np.zeros((60, 60, 4), np.uint8)
    rgba[5:55, 5:55] = (230, 230, 230, 255)
    rgba[20:40, 28:32] = (0, 0, 0, 255)
    out = load_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert out[0, 0] == 230
    assert out[30, 30] == 0


def test_greyscale_with_alpha_and_palette_transparency():
    la = np.zeros((20, 20, 2), np.uint8)
    la[5:15, 8:12] = (0, 255)
    assert load_image(_encode(Image.fromarray(la, "LA"), "PNG"))[0, 0] == 255
    palette = Image.new("P", (20, 20), 0)
    palette.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    palette.paste(1, (8, 5, 12, 15))
    out = load_image(_encode(palette, "PNG", transparency=0))
    assert out[0, 0] == 255 and out[10, 10] == 0


def test_sixteen_bit_png_is_scaled_not_clipped():
    wide = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369).astype(np.uint16)
    out = load_image(_encode(Image.fromarray(wide), "PNG"))
    assert out[0, 0] == 0 and out[3, 3] == 255
    assert np.all(np.diff(out.ravel().astype(int)) > 0)


def test_decompression_bomb_is_refused_from_its_header(monkeypatch):
    data = _png_declaring(100_000, 100_000)
    assert len(data) < 1024

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match=r"^bomb\.png: image header declares over \d+ megapixel"):
        load_image(data, name="bomb.png")


def test_image_over_our_pixel_limit_is_refused_before_decoding(monkeypatch):
    # Under Pillow's own bomb limit: only our check stands in the way.
    data = _png_declaring(8_000, 8_000)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match=r"8000x8000 pixels \(64\.0 megapixels\), over the 40\.0"):
        load_image(data, name="big.png")


def test_pixel_limit_is_a_parameter():
    data = _encode(Image.fromarray(_gradient()), "PNG")
    with pytest.raises(ImageError, match="64x48 pixels"):
        load_image(data, max_pixels=64 * 48 - 1)
    assert load_image(data, max_pixels=64 * 48).shape == (48, 64)


def test_huge_file_is_refused_before_it_is_read(tmp_path: Path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(50_000_000)  # sparse: no 50 MB written to disk

    def no_opening(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(images, "open", no_opening, raising=False)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert str(info.value) == f"{path}: file is 50.0 MB, over the 20.0 MB limit"


def test_byte_limit_applies_to_uploads_too():
    with pytest.raises(ImageError, match=r"^upload: file is 0\.0 MB, over the 0\.0 MB limit"):
        load_image(b"x" * 101, max_bytes=100, name="upload")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_file_is_an_image_error(fmt, tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    data = _encode(Image.fromarray(noise), fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message


def test_corrupt_png_data_is_an_image_error():
    data = bytearray(_encode(Image.fromarray(_gradient()), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8 : idat + 40] = b"\xff" * 32
    with pytest.raises(ImageError, match=r"^x\.png: cannot decode PNG image"):
        load_image(bytes(data), name="x.png")


def test_missing_empty_and_directory_paths(tmp_path: Path):
    with pytest.raises(ImageError, match=r"nope\.png: no such file$"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: file is empty$"):
        load_image(empty)
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
