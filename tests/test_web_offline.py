"""The page as an installable app that works offline, and /docs without a network, in Debian's
Chromium through Playwright.

Screenshots go to ``$DIGITREC_SCREENSHOTS`` if set, else to a pytest temporary directory.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import serving
from PIL import Image

from digitrec import models
from digitrec.apps.web import offline
from digitrec.data.images import load_image
from digitrec.reading.recognize import find_digits
from digitrec.testing import synthetic

PHONE = {"width": 390, "height": 844}
SMALL_PHONE = {"width": 360, "height": 740}
ONE = [[(0.52, 0.12), (0.50, 0.88)]]
SEVEN = [[(0.40, 0.15), (0.62, 0.15), (0.47, 0.88)]]


@pytest.fixture(scope="module")
def model_dir(mnist, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("offline")
    model = models.train("knn", mnist.subset(10_000, 10, seed=0), {"n_neighbors": 3})
    return models.save(model, root / "model")


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory) -> Iterator[str]:
    with serving(model_dir, tmp_path_factory.mktemp("home")) as (url, _):
        yield url


class App:
    """A browser context on the app that records console errors and uncaught exceptions."""

    def __init__(self, browser, url: str, viewport: dict) -> None:
        self.url = url
        self.context = browser.new_context(viewport=viewport)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def visit_online(self) -> None:
        """Open the page and wait until its service worker controls it, its copies made."""
        self.page.goto(self.url)
        self.page.wait_for_selector("#model-info:has-text('Model: knn')")
        self.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        self.page.wait_for_function("navigator.serviceWorker.controller !== null")

    def close(self) -> None:
        self.context.close()

    def draw(self, strokes: list[list[tuple[float, float]]]) -> None:
        """Draw with the mouse; points are fractions of the pad's width and height."""
        box = self.page.locator("#pad").bounding_box()
        mouse = self.page.mouse

        def at(point):
            return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

        for stroke in strokes:
            mouse.move(*at(stroke[0]))
            mouse.down()
            for start, end in zip(stroke, stroke[1:], strict=False):
                for t in np.linspace(0, 1, 8)[1:]:
                    mouse.move(*at(np.add(start, t * np.subtract(end, start))))
            mouse.up()

    def answer(self) -> tuple[str, str, str]:
        """The number read, who read it (server or device) and the sentence that says so."""
        self.page.wait_for_selector("#answered-by:not([hidden])")
        by = self.page.locator("#answered-by")
        return self.page.inner_text("#number"), by.get_attribute("data-source"), by.inner_text()

    def no_horizontal_overflow(self) -> bool:
        return self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.fixture
def app(browser, server) -> Iterator[App]:
    view = App(browser, server, PHONE)
    yield view
    view.close()


# --- install criteria ------------------------------------------------------------------------


def test_manifest_icons_and_service_worker_meet_the_install_criteria(app, server):
    manifest_response = httpx.get(f"{server}/manifest.webmanifest")
    assert manifest_response.headers["content-type"].startswith("application/manifest+json")
    manifest = manifest_response.json()
    assert manifest["name"] and manifest["short_name"] == "digitrec"
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    sizes = set()
    for icon in manifest["icons"]:
        image = Image.open(io.BytesIO(httpx.get(server + icon["src"]).content))
        assert image.format == "PNG"
        assert f"{image.width}x{image.height}" == icon["sizes"]
        sizes.add(icon["sizes"])
    assert {"192x192", "512x512"} <= sizes
    app.visit_online()
    page = app.page
    assert page.evaluate("document.querySelector('link[rel=manifest]').href").endswith(
        "/manifest.webmanifest"
    )
    assert page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)") == f"{server}/"
    cached = page.evaluate(
        "caches.open(" + json.dumps(offline.cache_name()) + ")"
        ".then(c => c.keys()).then(keys => keys.map(r => new URL(r.url).pathname))"
    )
    for path in ("/", "/static/app.js", "/static/ondevice.js", "/model.onnx", "/model.json"):
        assert path in cached
    assert any(p.endswith(".wasm") for p in cached)
    assert app.errors == []


# --- the app with no network -----------------------------------------------------------------


def test_after_one_visit_a_drawing_is_read_on_device_with_no_server(
    browser, model_dir, tmp_path, screenshots
):
    with serving(model_dir, tmp_path / "home") as (url, process):
        view = App(browser, url, PHONE)
        try:
            view.visit_online()
            view.draw(SEVEN)
            number, source, sentence = view.answer()
            assert (number, source) == ("7", "server")
            assert "Read by the server (knn)" in sentence
            # Killed, not stopped: uvicorn would wait for the browser's open connections.
            process.kill()
            process.wait(timeout=30)
            view.context.set_offline(True)
            view.page.reload()
            view.page.wait_for_selector("#model-info:has-text('On this device: cnn-robust')")
            view.page.screenshot(path=screenshots / "offline-empty-390x844.png", full_page=True)
            view.draw(ONE)
            number, source, sentence = view.answer()
            assert (number, source) == ("1", "device")
            assert "on this device" in sentence and "cnn-robust" in sentence
            assert view.page.locator(".digit .bars li").count() == 10
            assert view.page.locator(".digit .correct").count() == 0  # needs the server
            view.page.click("#clear")
            view.draw(SEVEN)
            view.page.wait_for_function("document.getElementById('number').textContent === '7'")
            assert view.no_horizontal_overflow()
            view.page.screenshot(path=screenshots / "offline-read-390x844.png", full_page=True)
            assert view.errors == []
        finally:
            view.close()


def test_offline_a_photo_is_said_to_need_the_server(app):
    app.visit_online()
    app.context.set_offline(True)
    font = synthetic.handwriting_fonts()[0]
    photo = synthetic.photo("42", np.random.default_rng(1), font=font, shadow=0.0, quality=90)
    app.page.set_input_files(
        "#photo-input", files=[{"name": "n.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    app.page.wait_for_selector("#status.error")
    assert "Photos need the server" in app.page.inner_text("#status")


def test_offline_page_fits_a_small_phone(browser, server):
    view = App(browser, server, SMALL_PHONE)
    try:
        view.visit_online()
        view.context.set_offline(True)
        view.page.reload()
        view.page.wait_for_selector("#model-info:has-text('On this device')")
        view.draw(SEVEN)
        assert view.answer()[1] == "device"
        assert view.no_horizontal_overflow()
        assert view.errors == []
    finally:
        view.close()


def test_several_digits_show_a_strip_and_one_card_at_a_time(app):
    app.visit_online()
    app.draw([[(0.25, 0.15), (0.25, 0.85)], [(0.75, 0.15), (0.75, 0.85)]])
    app.page.wait_for_function("document.getElementById('number').textContent === '11'")
    page = app.page
    assert page.locator(".strip .chip").count() == 2
    assert page.locator(".digit:not([hidden])").count() == 1
    page.locator(".strip .chip").nth(1).click()
    assert page.locator(".digit").nth(1).is_visible()
    assert not page.locator(".digit").nth(0).is_visible()
    assert page.locator(".strip .chip").nth(1).get_attribute("aria-pressed") == "true"
    assert app.no_horizontal_overflow()
    assert app.errors == []


# --- /docs without a network -----------------------------------------------------------------


def test_docs_render_with_the_network_blocked(browser, server):
    context = browser.new_context(viewport=SMALL_PHONE)
    elsewhere = []

    def only_the_app(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_app)
    try:
        page = context.new_page()
        page.goto(f"{server}/docs")
        page.wait_for_selector(".swagger-ui .info .title:has-text('digitrec')")
        page.wait_for_selector(".opblock-summary-path:has-text('/api/predict')")
        assert elsewhere == []
    finally:
        context.close()


def test_redoc_is_not_offered(server):
    assert httpx.get(f"{server}/redoc").status_code == 404


# --- what the server sends for the on-device path --------------------------------------------


def test_webassembly_is_sent_gzipped_or_plain_as_asked(server):
    path = f"{server}/static/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"
    with httpx.Client() as client:
        packed = client.get(path, headers={"Accept-Encoding": "gzip"})
        plain = client.get(path, headers={"Accept-Encoding": "identity"})
    assert packed.headers["content-type"] == "application/wasm"
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.content[:4] == b"\0asm"  # httpx decoded it
    assert int(packed.headers["content-length"]) < 4_000_000
    assert "content-encoding" not in plain.headers
    assert plain.content == packed.content


def test_on_device_model_reads_mnist(server, mnist):
    onnxruntime = pytest.importorskip("onnxruntime")
    model = httpx.get(f"{server}/model.onnx").content
    about = httpx.get(f"{server}/model.json").json()
    assert about["kind"] == "cnn-robust" and about["classes"] == list(range(10))
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    X, y = mnist.X_test[:1000], mnist.y_test[:1000]
    (probabilities,) = session.run(None, {"image": X[:, None].astype(np.float32)})
    assert (probabilities.argmax(1) == y).mean() > 0.98


def test_on_device_framing_matches_the_servers(app):
    """The page's JavaScript finds the same digits in drawings as digitrec.reading.segment and
    frames them the same way, up to a pixel of centring."""
    app.visit_online()
    shifted_differences = []
    for data, label in synthetic.drawings(9001, 24):
        grey = load_image(data)
        expected = find_digits(grey).tiles.astype(np.float64)
        found = app.page.evaluate(
            "([b64, w, h]) => {"
            " const grey = Uint8Array.from(atob(b64), c => c.charCodeAt(0));"
            " return DigitrecOnDevice.segment(grey, w, h).tiles.map(t => Array.from(t)); }",
            [base64.b64encode(grey.tobytes()).decode(), grey.shape[1], grey.shape[0]],
        )
        tiles = np.asarray(found, dtype=np.float64).reshape(-1, 28, 28)
        assert len(tiles) == len(expected) == len(label), label
        for mine, theirs in zip(tiles, expected, strict=True):
            shifted_differences.append(
                min(
                    np.abs(np.roll(mine, (dy, dx), axis=(0, 1)) - theirs).mean()
                    for dy in (-1, 0, 1)
                    for dx in (-1, 0, 1)
                )
            )
    # Grey levels 0..255: a median under 4 is the same picture; the worst ones differ by
    # a loop the server's thickening closed.
    assert np.median(shifted_differences) < 4
    assert max(shifted_differences) < 30


def test_service_worker_names_its_cache_for_the_release_and_model(server):
    script = httpx.get(f"{server}/sw.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert f'const CACHE = "{offline.cache_name()}"' in script.text
