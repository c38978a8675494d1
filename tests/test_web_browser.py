"""The page end to end: `digitrec serve` in a subprocess, driven by Debian's Chromium through
Playwright (never a browser that Playwright downloads).

Screenshots go to ``$DIGITREC_SCREENSHOTS`` if set, else to a pytest temporary directory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from conftest import serving
from PIL import Image

from digitrec import models
from digitrec.testing import pages, synthetic

PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def server(mnist, tmp_path_factory) -> Iterator[str]:
    """`digitrec serve` on a free port with a kNN model of 10,000 MNIST images."""
    root = tmp_path_factory.mktemp("web")
    model = models.train("knn", mnist.subset(10_000, 10, seed=0), {"n_neighbors": 3})
    model_dir = models.save(model, root / "model")
    with serving(model_dir, root / "home") as (url, _):
        yield url


class Page:
    """A browser page on the app that records console errors and uncaught exceptions."""

    def __init__(self, browser, url: str, viewport: dict, touch: bool = False) -> None:
        self.context = browser.new_context(viewport=viewport, has_touch=touch)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.goto(url)
        self.page.wait_for_selector("#model-info:has-text('Model: knn')")

    def close(self) -> None:
        self.context.close()

    def pad_point(self, fx: float, fy: float) -> tuple[float, float]:
        box = self.page.locator("#pad").bounding_box()
        return box["x"] + fx * box["width"], box["y"] + fy * box["height"]

    def draw(self, strokes: list[list[tuple[float, float]]]) -> None:
        """Draw with the mouse; points are fractions of the pad's width and height."""
        mouse = self.page.mouse
        for stroke in strokes:
            mouse.move(*self.pad_point(*stroke[0]))
            mouse.down()
            for start, end in zip(stroke, stroke[1:], strict=False):
                for t in np.linspace(0, 1, 8)[1:]:
                    mouse.move(*self.pad_point(*(np.add(start, t * np.subtract(end, start)))))
            mouse.up()

    def touch_draw(self, stroke: list[tuple[float, float]]) -> None:
        """Draw one stroke with a finger (Chrome DevTools touch events)."""
        cdp = self.context.new_cdp_session(self.page)
        points = []
        for start, end in zip(stroke, stroke[1:], strict=False):
            points += [np.add(start, t * np.subtract(end, start)) for t in np.linspace(0, 1, 8)]
        for i, point in enumerate(points):
            x, y = self.pad_point(*point)
            kind = "touchStart" if i == 0 else "touchMove"
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})

    def number(self) -> str:
        self.page.wait_for_selector("#number:not([hidden])")
        return self.page.inner_text("#number")

    def wait_for_number(self, text: str) -> None:
        self.page.wait_for_function(
            "text => { const n = document.getElementById('number');"
            " return !n.hidden && n.textContent === text; }",
            arg=text,
        )

    def no_horizontal_overflow(self) -> bool:
        return self.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


ONE = [[(0.52, 0.12), (0.50, 0.88)]]
SEVEN = [[(0.40, 0.15), (0.62, 0.15), (0.47, 0.88)]]
ZERO = [[(0.5 + 0.09 * np.sin(a), 0.5 - 0.36 * np.cos(a)) for a in np.linspace(0, 2 * np.pi, 24)]]


@pytest.fixture
def desktop(browser, server) -> Iterator[Page]:
    page = Page(browser, server, DESKTOP)
    yield page
    page.close()


def clear_samples(server: str) -> None:
    for sample in httpx.get(f"{server}/api/samples").json()["samples"]:
        httpx.delete(f"{server}/api/samples/{sample['id']}")


def test_drawing_shows_the_prediction_probabilities_tile_and_neighbours(desktop, server):
    clear_samples(server)
    desktop.draw(ONE)
    assert desktop.number() == "1"
    page = desktop.page
    card = page.locator(".digit")
    assert card.count() == 1
    assert card.locator(".bars li").count() == 10
    assert card.locator(".bars li.best").inner_text().startswith("1")
    assert page.get_attribute(".digit img.tile", "src").startswith("data:image/png;base64,")
    assert card.locator(".neighbors img").count() == 3  # the k=3 that voted
    desktop.draw([[(0.80, 0.20), (0.80, 0.80)]])  # a second 1, to the right
    desktop.wait_for_number("11")
    assert page.locator(".digit").count() == 2
    page.click("#undo")
    desktop.wait_for_number("1")
    page.click("#clear")
    page.wait_for_selector("#number[hidden]", state="attached")
    assert "Draw a digit" in page.inner_text("#status")
    desktop.draw(ZERO)
    desktop.wait_for_number("0")
    assert desktop.errors == []


def test_photo_upload_shows_boxes_around_the_digits(desktop, server, screenshots):
    font = synthetic.handwriting_fonts()[0]
    photo = synthetic.photo("4271", np.random.default_rng(1), font=font, shadow=0.0, quality=90)
    expected = httpx.post(f"{server}/api/predict", files={"file": ("p.jpg", photo)}).json()
    page = desktop.page
    page.set_input_files(
        "#photo-input", files=[{"name": "number.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    desktop.wait_for_number(expected["text"])
    assert expected["text"] == "4271"
    assert page.is_visible("#photo-img")
    boxes = page.locator("#boxes .box")
    assert boxes.count() == 4
    # Each box sits on its digit: compare with the server's boxes in displayed pixels.
    shown = page.locator("#photo-img").bounding_box()
    scale = shown["width"] / expected["image"]["width"]
    for i, digit in enumerate(expected["digits"]):
        box = boxes.nth(i).bounding_box()
        assert abs(box["x"] - (shown["x"] + digit["box"][0] * scale)) < 2
        assert abs(box["width"] - digit["box"][2] * scale) < 2
    page.screenshot(path=screenshots / "photo-1280x800.png", full_page=True)
    assert desktop.errors == []


def test_a_large_photo_is_shrunk_before_upload(desktop, server):
    font = synthetic.handwriting_fonts()[0]
    small = synthetic.photo("2024", np.random.default_rng(0), font=font, shadow=0.0, quality=95)
    large = Image.open(io.BytesIO(small)).resize((2400, 1600), Image.LANCZOS)
    buffer = io.BytesIO()
    large.save(buffer, "JPEG", quality=92)
    sizes = []
    desktop.page.on(
        "request",
        lambda r: sizes.append(len(r.post_data_buffer or b"")) if "/api/predict" in r.url else 0,
    )
    desktop.page.set_input_files(
        "#photo-input",
        files=[{"name": "big.jpg", "mimeType": "image/jpeg", "buffer": buffer.getvalue()}],
    )
    desktop.wait_for_number("2024")
    assert desktop.page.inner_text("#photo-name") == "big.jpg, 2400×1600, sent at 1600×1067"
    assert desktop.page.locator("#boxes .box").count() == 4
    assert sizes and sizes[-1] < len(buffer.getvalue())
    assert desktop.errors == []


def test_a_correction_is_listed_changes_the_answer_and_can_be_deleted(desktop, server):
    clear_samples(server)
    page = desktop.page
    desktop.draw(ONE)
    assert desktop.number() == "1"
    page.select_option(".digit .correct select", "7")
    page.click(".digit .correct button")
    page.wait_for_selector("#sample-list li")
    assert page.locator("#sample-list li").count() == 1
    assert page.inner_text("#sample-list li .label") == "7"
    desktop.wait_for_number("7")
    assert "Saved as a 7" in page.inner_text("#status")
    page.click(".digit .why summary")
    assert page.locator(".neighbors li.from-sample").count() == 1
    page.click("#sample-list li button")
    page.wait_for_selector("#sample-list li", state="detached")
    desktop.wait_for_number("1")
    assert httpx.get(f"{server}/api/samples").json()["count"] == 0
    assert desktop.errors == []


def test_buttons_work_from_the_keyboard(desktop):
    page = desktop.page
    desktop.draw(ONE)
    desktop.number()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "clear":
            break
    else:
        pytest.fail("Tab never reached the Clear button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#number[hidden]", state="attached")
    assert desktop.errors == []


def test_a_finger_draws_without_scrolling_the_page(browser, server):
    phone = Page(browser, server, PHONE, touch=True)
    try:
        before = phone.page.evaluate("window.scrollY")
        phone.touch_draw(ONE[0])
        assert phone.number() == "1"
        assert phone.page.evaluate("window.scrollY") == before
        assert phone.errors == []
    finally:
        phone.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["360x740", "1280x800"])
def test_the_page_fits_phone_and_desktop_widths(browser, server, screenshots, viewport):
    clear_samples(server)
    view = Page(browser, server, viewport)
    try:
        name = f"{viewport['width']}x{viewport['height']}"
        assert view.no_horizontal_overflow()
        view.page.screenshot(path=screenshots / f"empty-{name}.png", full_page=True)
        view.draw(SEVEN)
        view.number()
        view.page.select_option(".digit .correct select", "1")
        view.page.click(".digit .correct button")
        view.page.wait_for_selector("#sample-list li")
        view.page.click(".digit .why summary")
        assert view.no_horizontal_overflow()
        view.page.screenshot(path=screenshots / f"result-{name}.png", full_page=True)
        assert view.errors == []
    finally:
        view.close()
        clear_samples(server)


def table_photo(lines: list[list[str]], seed: int = 0) -> bytes:
    """A generated phone photo of a handwritten table of numbers."""
    rng = np.random.default_rng(seed)
    font = synthetic.handwriting_fonts()[0]
    ink = pages.page_ink(lines, True, font, rng, "spaced", 48)
    return synthetic.photo_of_ink(ink, rng, height=48, shadow=0.0)


def _read_photo_as(page, layout: str, photo: bytes, shown: str) -> None:
    """Choose ``layout`` in the page, upload ``photo`` (JPEG), and wait until ``shown``."""
    page.select_option("#layout", layout)
    page.set_input_files(
        "#photo-input", files=[{"name": "photo.jpg", "mimeType": "image/jpeg", "buffer": photo}]
    )
    page.wait_for_selector(shown)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["360x740", "1280x800"])
def test_a_table_photo_shows_its_grid_and_downloads_it_as_csv(
    browser, server, screenshots, viewport
):
    photo = table_photo([["77", "17"], ["11", "71"]])
    view = Page(browser, server, viewport)
    try:
        page = view.page
        _read_photo_as(page, "table", photo, "#page-view:not([hidden]) table.grid")
        cells = page.locator("table.grid tr").evaluate_all(
            "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
        )
        assert cells == [["77", "17"], ["11", "71"]]
        assert page.locator("table.grid .field.review").count() == 0
        assert view.no_horizontal_overflow()
        name = f"{viewport['width']}x{viewport['height']}"
        page.screenshot(path=screenshots / f"table-{name}.png", full_page=True)
        with page.expect_download() as download:
            page.click("#download-csv")
        assert download.value.suggested_filename == "numbers.csv"
        with open(download.value.path(), encoding="utf-8") as handle:
            assert handle.read() == "77,17\n11,71\n"
        assert view.errors == []
    finally:
        view.close()


def test_a_flagged_number_is_marked_with_its_reason_and_its_comma_kept_in_the_csv(
    desktop, server
):
    photo = table_photo([["1,250", "17"], ["11", "71"]], seed=1)
    expected = httpx.post(
        f"{server}/api/predict", files={"file": ("t.jpg", photo)}, data={"layout": "lines"}
    ).json()
    page = desktop.page
    _read_photo_as(page, "lines", photo, "#page-view:not([hidden]) ol.lines")
    shown = page.locator("ol.lines li").evaluate_all(
        "lines => lines.map(l => [...l.querySelectorAll('.field')].map(f => f.textContent))"
    )
    assert shown == [[f["text"] for f in line] for line in expected["lines"]]
    flagged = [f for line in expected["lines"] for f in line if f["needs_review"]]
    assert page.locator(".field.review").count() == len(flagged)
    assert page.locator("#page-checks li").count() == len(flagged)
    for f in flagged:
        assert f["diagnosis"] in page.inner_text("#page-checks")
    with page.expect_download() as download:
        page.click("#download-csv")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [[f["text"] for f in line] for line in expected["lines"]]
    )
    with open(download.value.path(), encoding="utf-8") as handle:
        assert handle.read() == buffer.getvalue()
    # Another choice reads the same photo again: one number has no lines to show.
    page.select_option("#layout", "number")
    page.wait_for_selector("#page-view[hidden]", state="attached")
    assert desktop.errors == []
