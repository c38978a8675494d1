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
from digitrec.reading.segment import segment
from digitrec.testing import synthetic


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


# --- bounded decoding: work, memory and shape are checked before any pixel is decoded -------


def _progressive_jpeg(extra_scans: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive JPEG whose last scan is repeated ``extra_scans`` more times, as a scan
    bomb does (each repeat is another pass of the decoder over the image)."""
    data = _encode(
        Image.fromarray(_gradient()).convert("RGB").resize(size), "JPEG", progressive=True
    )
    last = data.rindex(b"\xff\xda")
    end = data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * extra_scans + data[end:]


@pytest.mark.parametrize(("mode", "scans"), [("RGB", 10), ("L", 6), ("CMYK", 18)])
def test_what_pillow_writes_is_within_the_scan_limit(mode, scans):
    data = _encode(Image.fromarray(_gradient()).convert(mode), "JPEG", progressive=True)
    assert images.jpeg_scans(data) == scans <= images.MAX_JPEG_SCANS
    assert load_image(data).shape == (48, 64)


def test_a_jpeg_with_more_scans_than_cameras_write_is_refused_before_decoding(monkeypatch):
    data = _progressive_jpeg(extra_scans=images.MAX_JPEG_SCANS)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match=r"^bomb\.jpg: JPEG has 42 scans .* 32 scan limit$"):
        load_image(data, name="bomb.jpg")


def test_a_large_jpeg_is_decoded_at_reduced_size_but_never_below_the_draft_side():
    side = 2 * images.DRAFT_SIDE
    data = _encode(Image.new("RGB", (side, 100), "white"), "JPEG")
    assert load_image(data).shape == (50, images.DRAFT_SIDE)
    just_under = _encode(Image.new("RGB", (side - 8, 100), "white"), "JPEG")
    assert load_image(just_under).shape == (100, side - 8)


def test_a_one_megapixel_photo_reads_exactly_as_pillow_decodes_it():
    rng = np.random.default_rng(5)
    im = Image.open(io.BytesIO(synthetic.photo("2024", rng)))
    scale = (1_000_000 / (im.width * im.height)) ** 0.5
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    data = _encode(im, "JPEG", quality=88)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    assert np.array_equal(load_image(data), expected)


def test_a_photo_decoded_at_half_size_is_segmented_the_same():
    rng = np.random.default_rng(6)
    im = Image.open(io.BytesIO(synthetic.photo("385", rng, shadow=0.0)))
    big = im.resize((2 * images.DRAFT_SIDE, round(2 * images.DRAFT_SIDE * im.height / im.width)))
    data = _encode(big, "JPEG", quality=90)
    full = segment(np.asarray(Image.open(io.BytesIO(data)).convert("L")))
    drafted = load_image(data)
    assert drafted.shape[1] == images.DRAFT_SIDE
    half = segment(drafted)
    assert full.diagnosis is None and len(half.tiles) == len(full.tiles) == 3
    # The reader's working copy is at most 1,200 pixels long either way: what differs is
    # the rounding of two resizes, a few percent of a box and about a grey level of a tile.
    for box, half_box in zip(full.boxes, half.boxes, strict=True):
        assert np.abs(np.subtract(box, np.multiply(half_box, 2))).max() <= 0.03 * max(box[2:])
    assert np.abs(full.tiles.astype(int) - half.tiles).mean() < 3


def test_images_whose_decoding_would_take_too_much_memory_are_refused(monkeypatch):
    rgba = _encode(Image.new("RGBA", (100, 50), (0, 0, 0, 255)), "PNG")
    rgb = _encode(Image.new("RGB", (100, 50)), "PNG")
    # RGBA costs its 4 bands and 4 bytes of float luma a pixel; RGB its 3 bands.
    assert load_image(rgba, max_decoded_bytes=100 * 50 * 8).shape == (50, 100)
    assert load_image(rgb, max_decoded_bytes=100 * 50 * 3).shape == (50, 100)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match=r"100x50 RGBA image takes 0 MB, over the 0 MB"):
        load_image(rgba, max_decoded_bytes=100 * 50 * 8 - 1)
    with pytest.raises(ImageError, match=r"100x50 RGB image"):
        load_image(rgb, max_decoded_bytes=100 * 50 * 3 - 1)


def test_a_white_rgba_png_just_under_40_megapixels_is_refused_before_decoding(monkeypatch):
    header = struct.pack(">IIBBBBB", 6324, 6324, 8, 6, 0, 0, 0)  # colour type 6: RGBA
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match=r"6324x6324 RGBA image takes 320 MB, over the 128 MB"):
        load_image(data)


@pytest.mark.parametrize(("width", "height"), [(1, 39_999_999), (39_999_999, 1), (20_100, 100)])
def test_strips_far_longer_than_wide_are_refused_before_decoding(monkeypatch, width, height):
    data = _png_declaring(width, height)

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(ImageError, match="over the shape limit"):
        load_image(data)


def test_small_strips_are_read_whatever_their_shape():
    strip = _encode(Image.new("L", (images.ANY_SHAPE_SIDE, 1), 255), "PNG")
    assert load_image(strip).shape == (1, images.ANY_SHAPE_SIDE)


def _grey_as_before(im: Image.Image) -> np.ndarray:
    """The alpha compositing of the loader before it worked in strips, kept as the reference."""
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255.0
    luma = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    opaque = alpha > 0.5
    background = 255.0
    if opaque.any():
        median = float(np.median(luma[opaque]))
        background = median if opaque.mean() >= 0.5 else (255.0 if median < 128 else 0.0)
    return np.clip(np.rint(luma * alpha + background * (1.0 - alpha)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(6))
def test_alpha_compositing_in_strips_gives_the_same_pixels(monkeypatch, seed):
    monkeypatch.setattr(images, "_STRIP_PIXELS", 97)  # many strips, one not full
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (41, 23, 4), dtype=np.uint8)
    # From mostly transparent (strokes) to mostly opaque (a page), odd and even counts.
    pixels[..., 3] = np.where(rng.random((41, 23)) < seed / 5, 255, pixels[..., 3] // 3)
    im = Image.fromarray(pixels)
    assert np.array_equal(load_image(_encode(im, "PNG")), _grey_as_before(im))
