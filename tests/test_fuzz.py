"""Mutated images through the loader and the JSON API: every outcome is a decoded image or a
one-line ImageError, and over HTTP a 200 or a JSON 4xx; never another exception.

Deterministic (seeded) and a few hundred inputs by default; ``DIGITREC_FUZZ=10000`` runs
that many instead.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitrec import models
from digitrec.apps.web.app import create_app
from digitrec.data.images import load_image
from digitrec.errors import ImageError

COUNT = int(os.environ.get("DIGITREC_FUZZ", "300"))


def _encode(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def _seeds() -> list[bytes]:
    """Small valid images of every kind the loader handles, to mutate."""
    rng = np.random.default_rng(0)
    grey = np.full((40, 56), 255, np.uint8)
    grey[8:32, 20:26] = 0
    rgb = np.stack([grey, grey, rng.integers(0, 256, grey.shape, dtype=np.uint8)], axis=-1)
    rgba = np.dstack([rgb, np.where(grey < 128, 255, 0).astype(np.uint8)])
    exif = Image.Exif()
    exif[0x0112] = 6
    palette = Image.fromarray(grey).convert("P")
    palette.info["transparency"] = 0
    return [
        _encode(Image.fromarray(grey), "PNG"),
        _encode(Image.fromarray(rgba), "PNG"),
        _encode(palette, "PNG"),
        _encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        _encode(Image.fromarray(rgb), "PNG", optimize=True),
        _encode(Image.fromarray(rgb), "JPEG", quality=80),
        _encode(Image.fromarray(rgb), "JPEG", progressive=True, exif=exif),
        _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG"),
        _encode(Image.fromarray(rgb), "WEBP", quality=70),
        _encode(Image.fromarray(rgba), "WEBP", lossless=True),
    ]


SEEDS = _seeds()


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flipped bytes, a cut, inserted noise, a repeated slice, or a header field
    (a width, a height, a length) overwritten with an arbitrary 16- or 32-bit number."""
    out = bytearray(data)
    kind = int(rng.integers(5))
    position = int(rng.integers(len(out)))
    if kind == 0:
        for at in rng.integers(0, len(out), size=int(rng.integers(1, 9))):
            out[at] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del out[position:]
    elif kind == 2:
        out[position:position] = rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
    elif kind == 3:
        end = min(len(out), position + int(rng.integers(1, 256)))
        out[end:end] = out[position:end] * int(rng.integers(1, 40))
    else:
        at = int(rng.integers(min(len(out), 64)))
        size = 2 if rng.random() < 0.5 else 4
        value = int(rng.integers(0, 1 << (8 * size)))
        out[at : at + size] = value.to_bytes(size, "big")
    return bytes(out)


def fuzzed(count: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [mutate(SEEDS[i % len(SEEDS)], rng) for i in range(count)]


def test_the_seeds_are_valid_images():
    for data in SEEDS:
        assert load_image(data).ndim == 2


def test_mutated_images_decode_or_raise_an_image_error():
    outcomes = {"decoded": 0, "refused": 0}
    for i, data in enumerate(fuzzed(COUNT, seed=1)):
        try:
            image = load_image(data, name=f"fuzz-{i}")
        except ImageError as exc:
            message = str(exc)
            assert message.startswith(f"fuzz-{i}: ") and "\n" not in message
            outcomes["refused"] += 1
        else:
            assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0
            outcomes["decoded"] += 1
    # The mutations reach both sides: some images survive them, many do not.
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0


@pytest.fixture(scope="module")
def client(mnist, tmp_path_factory):
    model = models.train("knn", mnist.subset(1000, 10, seed=0), {"n_neighbors": 1})
    app = create_app(model=model, home=tmp_path_factory.mktemp("home"))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_mutated_images_through_the_api_give_200_or_a_json_4xx(client):
    statuses: set[int] = set()
    for i, data in enumerate(fuzzed(max(COUNT // 3, 20), seed=2)):
        if i % 2:
            response = client.post("/api/predict", files={"file": (f"fuzz-{i}", data)})
        else:
            url = "data:image/png;base64," + base64.b64encode(data).decode()
            response = client.post("/api/predict", json={"image": url})
        assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
        assert isinstance(response.json(), dict)
        statuses.add(response.status_code)
    assert 200 in statuses and statuses - {200}
