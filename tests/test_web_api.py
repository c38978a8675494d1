"""The JSON API through the real HTTP stack (FastAPI's TestClient), and `digitrec serve`."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from conftest import run_digitrec, serving
from fastapi.testclient import TestClient
from PIL import Image

from digitrec import models
from digitrec.apps.web.app import create_app
from digitrec.data.images import load_image
from digitrec.errors import ModelFileError
from digitrec.persistence.sample_db import SampleStore, database_path
from digitrec.reading.page import read_page
from digitrec.reading.recognize import read_image
from digitrec.testing import pages, synthetic

# Small limits, so the tests send kilobytes, not the default megabytes.
MAX_IMAGE_BYTES = 200_000
MAX_BODY_BYTES = MAX_IMAGE_BYTES * 4 // 3 + 64 * 1024
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def knn(mnist) -> models.Model:
    data = mnist.subset(4000, 500, seed=0)
    model = models.train("knn", data, {"n_neighbors": 3})
    model.info["metrics"] = {"accuracy": 0.95, "n": 500}
    return model


@pytest.fixture
def client(knn, tmp_path) -> TestClient:
    app = create_app(
        model=knn, home=tmp_path, max_image_bytes=MAX_IMAGE_BYTES, max_pixels=MAX_PIXELS
    )
    with TestClient(app) as test_client:
        yield test_client


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def seven() -> bytes:
    """A canvas-like drawing of a 7."""
    font = synthetic.handwriting_fonts()[0]
    return synthetic.drawing("7", np.random.default_rng(3), size=200, font=font)


def assert_problem(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str)
    for fragment in fragments:
        assert fragment in body["detail"]


# --- the small endpoints --------------------------------------------------------------------


def test_health(client):
    assert client.get("/api/health").json() == {"status": "ok", "model": "knn", "samples": 0}


def test_model_describes_kind_parameters_accuracy_and_training_size(client):
    info = client.get("/api/model").json()
    assert info["kind"] == "knn"
    assert info["params"]["n_neighbors"] == 3
    assert info["accuracy"] == 0.95
    assert info["training_size"] == 4000
    assert info["dataset"] == "mnist"
    assert info["input_shape"] == [28, 28]
    assert info["classes"] == list(range(10))
    assert info["learns_from_samples"] is True


def test_the_page_and_its_files_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'capture="environment"' in page.text and "<canvas" in page.text
    assert client.get("/static/app.js").status_code == 200
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "touch-action: none" in css.text
    # Nothing from another host: the page works offline.
    assert "http://" not in page.text and "https://" not in page.text


def test_openapi_documents_every_endpoint_and_both_ways_to_send_an_image(client):
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/api/health",
        "/api/model",
        "/api/predict",
        "/api/samples",
        "/api/samples/merge",
        "/api/samples/{sample_id}",
    }
    predict = spec["paths"]["/api/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    assert {"200", "413", "415", "422"} <= set(predict["responses"])
    assert set(spec["paths"]["/api/samples/{sample_id}"]) == {"get", "delete"}


# --- predictions ----------------------------------------------------------------------------


def test_predict_json_from_a_canvas_matches_the_library_reading(client, knn, seven):
    response = client.post("/api/predict", json={"image": data_url(seven)})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = read_image(knn, load_image(seven)).to_json()
    # The same keys and values as `digitrec predict --json` (less its "path") ...
    for key, value in expected.items():
        if key != "digits":
            assert body[key] == value
    assert body["text"] == "7"
    for got, want in zip(body["digits"], expected["digits"], strict=True):
        assert {k: got[k] for k in want} == want
    # ... and what the page shows besides.
    digit = body["digits"][0]
    assert body["image"] == {"width": 200, "height": 200}
    tile = load_image(base64.b64decode(digit["tile"].removeprefix("data:image/png;base64,")))
    assert tile.shape == (28, 28)
    assert len(digit["neighbors"]) == 3
    distances = [n["distance"] for n in digit["neighbors"]]
    assert distances == sorted(distances)
    assert all(n["sample_id"] is None and 0 <= n["label"] <= 9 for n in digit["neighbors"])
    assert {n["label"] for n in digit["neighbors"]} & {7}


def test_the_explanation_is_the_vote_that_gave_the_answer(client, seven):
    digit = client.post("/api/predict", json={"image": data_url(seven)}).json()["digits"][0]
    why = digit["explanation"]
    assert why["method"] == "vote" and why["answer"] == digit["digit"]
    assert why["summary"].startswith(f"{digit['digit']}:") and "pixel" in why["meaning"]
    assert why["distance_name"] == "distance"
    assert [v["distance"] for v in why["voters"]] == [n["distance"] for n in digit["neighbors"]]
    votes = np.zeros(10)
    for voter in why["voters"]:
        votes[voter["label"]] += voter["weight"]
        assert voter["image"].startswith("data:image/png;base64,")
    np.testing.assert_allclose(votes / votes.sum(), digit["probabilities"], atol=1e-4)


def test_predict_bare_base64_is_accepted_too(client, seven):
    response = client.post("/api/predict", json={"image": base64.b64encode(seven).decode()})
    assert response.status_code == 200 and response.json()["text"] == "7"


def test_predict_multipart_photo_gives_a_box_per_digit(client):
    font = synthetic.handwriting_fonts()[0]
    photo = synthetic.photo("3805", np.random.default_rng(1), font=font, shadow=0.0, quality=90)
    response = client.post("/api/predict", files={"file": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    body = response.json()
    width, height = body["image"]["width"], body["image"]["height"]
    assert (height, width) == load_image(photo).shape
    assert len(body["digits"]) == 4
    xs = [d["box"][0] for d in body["digits"]]
    assert xs == sorted(xs)
    for digit in body["digits"]:
        x, y, w, h = digit["box"]
        assert x >= 0 and x + w <= width and y >= 0 and y + h <= height
        assert len(digit["probabilities"]) == 10
        assert abs(sum(digit["probabilities"]) - 1) < 1e-3


def _table_photo(lines: list[list[str]]) -> bytes:
    """A generated photo-like PNG of a table of numbers, dark ink on white."""
    font = synthetic.handwriting_fonts()[0]
    ink = pages.page_ink(lines, True, font, np.random.default_rng(0), "close", 60)
    return png(255 - np.rint(np.pad(ink, 40) * 255).astype(np.uint8))


@pytest.mark.parametrize("how", ["multipart", "json"])
def test_a_table_layout_gives_the_page_lines_and_columns_with_neighbours(client, knn, how):
    image = _table_photo([["77", "17"], ["11", "71"]])
    if how == "multipart":
        response = client.post(
            "/api/predict", files={"file": ("t.png", image, "image/png")}, data={"layout": "table"}
        )
    else:
        response = client.post("/api/predict", json={"image": data_url(image), "layout": "table"})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = read_page(knn, load_image(image), layout="table").to_json()
    assert body["text"] == expected["text"] and body["lines"] == expected["lines"]
    assert [[f["column"] for f in line] for line in body["lines"]] == [[0, 1], [0, 1]]
    # The page's digits still carry what the page shows beside them.
    assert len(body["digits"]) == 8 and all(len(d["neighbors"]) == 3 for d in body["digits"])


def test_without_a_layout_an_image_is_one_number_as_before(client):
    response = client.post("/api/predict", json={"image": data_url(_table_photo([["12"], ["34"]]))})
    assert response.status_code == 200 and response.json()["lines"] == []


@pytest.mark.parametrize("how", ["multipart", "json"])
def test_an_unknown_layout_is_422(client, seven, how):
    if how == "multipart":
        response = client.post(
            "/api/predict", files={"file": ("s.png", seven, "image/png")}, data={"layout": "grid"}
        )
    else:
        response = client.post("/api/predict", json={"image": data_url(seven), "layout": 3})
    assert_problem(response, 422, "layout must be one of auto, number, lines, table")


def test_openapi_documents_the_layout_choice(client):
    body = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]
    for media_type in ("multipart/form-data", "application/json"):
        layout = body["content"][media_type]["schema"]["properties"]["layout"]
        assert layout["enum"] == ["auto", "number", "lines", "table"]
        assert layout["default"] == "number"


def test_a_blank_image_is_read_as_nothing_with_a_reason(client):
    response = client.post(
        "/api/predict", json={"image": data_url(png(np.full((80, 160), 255, np.uint8)))}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["digits"] == [] and body["text"] == "" and body["diagnosis"]


def test_a_correction_changes_the_next_prediction_for_the_same_drawing(client, seven):
    first = client.post("/api/predict", json={"image": data_url(seven)}).json()
    answer = first["digits"][0]["digit"]
    corrected = (answer + 1) % 10
    saved = client.post(
        "/api/samples", json={"image": first["digits"][0]["tile"], "label": corrected}
    )
    assert saved.status_code == 201, saved.text
    second = client.post("/api/predict", json={"image": data_url(seven)}).json()
    assert second["digits"][0]["digit"] == corrected
    nearest = second["digits"][0]["neighbors"][0]
    assert nearest["sample_id"] == saved.json()["id"]
    assert nearest["distance"] == 0 and nearest["label"] == corrected
    # Deleting the sample takes the correction back at once.
    assert client.delete(f"/api/samples/{saved.json()['id']}").status_code == 200
    third = client.post("/api/predict", json={"image": data_url(seven)}).json()
    assert third["digits"][0]["digit"] == answer


def test_an_idm_model_shows_neighbours_and_learns_corrections(mnist, tmp_path, seven):
    idm = models.train("knn-idm", mnist.subset(4000, 10, seed=0), {"n_candidates": 20})
    with TestClient(create_app(model=idm, home=tmp_path)) as client:
        assert client.get("/api/model").json()["learns_from_samples"] is True
        first = client.post("/api/predict", json={"image": data_url(seven)}).json()
        digit = first["digits"][0]
        assert digit["neighbors"] and digit["neighbors"][0]["sample_id"] is None
        corrected = (digit["digit"] + 1) % 10
        saved = client.post("/api/samples", json={"image": digit["tile"], "label": corrected})
        assert saved.status_code == 201, saved.text
        second = client.post("/api/predict", json={"image": data_url(seven)}).json()
        assert second["digits"][0]["digit"] == corrected
        assert second["digits"][0]["neighbors"][0]["sample_id"] == saved.json()["id"]


def test_samples_stored_by_another_process_are_used_at_once(client, tmp_path, seven):
    first = client.post("/api/predict", json={"image": data_url(seven)}).json()
    tile = load_image(base64.b64decode(first["digits"][0]["tile"].split(",", 1)[1]))
    corrected = (first["digits"][0]["digit"] + 3) % 10
    SampleStore(database_path(tmp_path)).add(tile, corrected)  # as `digitrec samples import`
    again = client.post("/api/predict", json={"image": data_url(seven)}).json()
    assert again["digits"][0]["digit"] == corrected


# --- samples --------------------------------------------------------------------------------


def test_samples_can_be_added_listed_fetched_and_deleted(client, mnist):
    tiles = [mnist.X_test[0], mnist.X_test[1]]
    made = [
        client.post("/api/samples", json={"image": data_url(png(t)), "label": label}).json()
        for t, label in zip(tiles, (4, 2), strict=True)
    ]
    assert [m["label"] for m in made] == [4, 2]
    listed = client.get("/api/samples").json()
    assert listed["count"] == 2
    assert [s["id"] for s in listed["samples"]] == [made[1]["id"], made[0]["id"]]  # newest first
    one = client.get(f"/api/samples/{made[0]['id']}").json()
    assert one == made[0]
    tile = load_image(base64.b64decode(one["tile"].split(",", 1)[1]))
    np.testing.assert_array_equal(tile, tiles[0])  # an MNIST tile is stored as it is
    assert client.delete(f"/api/samples/{made[0]['id']}").json() == {"deleted": made[0]["id"]}
    assert_problem(client.get(f"/api/samples/{made[0]['id']}"), 404, "no sample")
    assert_problem(client.delete(f"/api/samples/{made[0]['id']}"), 404, "no sample")
    assert client.get("/api/health").json()["samples"] == 1


def test_a_sample_can_be_any_picture_of_one_digit(client, seven):
    made = client.post("/api/samples", json={"image": data_url(seven), "label": 7})
    assert made.status_code == 201
    tile = load_image(base64.b64decode(made.json()["tile"].split(",", 1)[1]))
    assert tile.shape == (28, 28) and tile[0].max() == 0 and tile.max() > 200


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"image": "AAAA", "label": 10}, "label"),
        ({"image": "AAAA", "label": -1}, "label"),
        ({"image": "AAAA", "label": "3"}, "label"),
        ({"image": "AAAA", "label": True}, "label"),
        ({"label": 3}, "image"),
        ({"image": "not base64 !", "label": 3}, "base64"),
    ],
)
def test_malformed_samples_are_422(client, body, fragment):
    assert_problem(client.post("/api/samples", json=body), 422, fragment)


def test_a_sample_that_is_not_json_is_415(client, seven):
    assert_problem(client.post("/api/samples", files={"file": ("a.png", seven)}), 415, "json")
    response = client.post("/api/samples", content=b"x", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "text/plain")
    gif = data_url(b"GIF89a" + bytes(50), "image/gif")
    assert_problem(client.post("/api/samples", json={"image": gif, "label": 1}), 415, "GIF")


def test_a_blank_sample_is_422(client):
    blank = data_url(png(np.full((50, 50), 255, np.uint8)))
    assert_problem(client.post("/api/samples", json={"image": blank, "label": 1}), 422, "no ink")


def test_sample_ids_must_be_integers(client):
    assert_problem(client.get("/api/samples/abc"), 422, "sample_id")
    assert_problem(client.delete("/api/samples/1.5"), 422, "sample_id")
    huge = 10**30  # past SQLite's 64-bit integers
    assert_problem(client.get(f"/api/samples/{huge}"), 404, "no sample")
    assert_problem(client.delete(f"/api/samples/{huge}"), 404, "no sample")


# --- every refusal: status and a one-string detail ------------------------------------------


def test_413_when_the_declared_body_is_too_large(client):
    response = client.post(
        "/api/predict",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
    )
    assert_problem(response, 413, "MB limit")


def test_413_when_a_chunked_body_grows_too_large(client):
    def chunks():
        for _ in range(MAX_BODY_BYTES // 10_000 + 2):
            yield b"x" * 10_000

    response = client.post(
        "/api/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "MB limit")


def test_413_when_the_image_file_is_over_the_image_limit(client):
    noise = np.random.default_rng(0).integers(0, 256, (500, 500), dtype=np.uint8)
    data = png(noise)
    assert MAX_IMAGE_BYTES < len(data) < MAX_BODY_BYTES - 1000
    response = client.post("/api/predict", files={"file": ("noise.png", data, "image/png")})
    assert_problem(response, 413, "noise.png", "MB limit")


def test_413_when_the_image_has_too_many_pixels(client):
    huge = png(np.full((1000, 1500), 255, np.uint8))  # 1.5 megapixels, a few kB of PNG
    response = client.post("/api/predict", json={"image": data_url(huge)})
    assert_problem(response, 413, "megapixel")


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("anim.gif", b"GIF89a" + bytes(100), "GIF"),
        ("notes.txt", b"just some text, not a picture\n", "not a recognised image"),
        ("scan.tiff", b"II*\x00" + bytes(100), "TIFF"),
    ],
)
def test_415_for_files_that_are_not_png_jpeg_or_webp(client, name, content, fragment):
    response = client.post("/api/predict", files={"file": (name, content, "image/png")})
    assert_problem(response, 415, fragment)


def test_415_for_a_body_that_is_neither_multipart_nor_json(client, seven):
    response = client.post("/api/predict", content=seven, headers={"content-type": "image/png"})
    assert_problem(response, 415, "multipart/form-data")
    response = client.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "text/plain")


def test_415_for_a_data_url_that_is_not_an_image(client):
    text = "data:text/plain;base64," + base64.b64encode(b"hello").decode()
    assert_problem(client.post("/api/predict", json={"image": text}), 415, "text/plain")
    gif = data_url(b"GIF89a" + bytes(50), "image/gif")
    assert_problem(client.post("/api/predict", json={"image": gif}), 415, "GIF")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[1, 2]", '"image" field'),
        (b'{"picture": "abc"}', '"image" field'),
        (b'{"image": 42}', "data URL string"),
        (b'{"image": "data:image/png;base64,@@@@"}', "base64"),
        (b'{"image": "data:image/png,rawdata"}', "base64-encoded"),
        (b'{"image": "data:image/png;base64"}', "comma"),
        (b'{"image": ""}', "empty"),
    ],
)
def test_422_for_malformed_json(client, content, fragment):
    response = client.post(
        "/api/predict", content=content, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, fragment)


def test_422_for_multipart_without_a_file(client):
    assert_problem(
        client.post("/api/predict", data={"other": "x"}, files={"x": ("a.png", b"1")}),
        422,
        '"file" field',
    )
    assert_problem(
        client.post("/api/predict", data={"file": "just text"}), 415, "multipart/form-data"
    )


def test_422_for_a_text_field_named_file(client):
    body = b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nhello\r\n--b--\r\n'
    response = client.post(
        "/api/predict", content=body, headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert_problem(response, 422, "file upload")


def test_422_for_a_broken_multipart_body(client):
    response = client.post(
        "/api/predict",
        content=b"this is not multipart",
        headers={"content-type": "multipart/form-data"},
    )
    assert_problem(response, 422, "multipart")


@pytest.mark.parametrize(
    ("name", "cut"),
    [("truncated.png", 60), ("truncated.jpg", 200), ("empty.png", 0)],
)
def test_422_for_images_that_cannot_be_decoded(client, seven, name, cut):
    data = seven if name.endswith(".png") else synthetic.photo("1", np.random.default_rng(0))
    response = client.post("/api/predict", files={"file": (name, data[:cut], "image/png")})
    assert_problem(response, 422, name)


def test_garbage_never_gives_a_server_error(client):
    rng = np.random.default_rng(0)
    for size in (1, 7, 64, 999, 5000):
        junk = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"):
            response = client.post("/api/predict", files={"file": ("x", prefix + junk)})
            assert response.status_code in (413, 415, 422), (prefix, size, response.text)
            assert isinstance(response.json()["detail"], str)


def _encoded(mode: str, size: tuple[int, int], fmt: str = "PNG", fill=0) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, fill).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "data",
    [
        _encoded("L", (1, 1)),
        _encoded("L", (3000, 1), fill=255),
        _encoded("L", (28, 28)),
        _encoded("L", (28, 28), fill=255),
        _encoded("RGBA", (64, 64)),  # fully transparent
        _encoded("I;16", (40, 40), fill=30000),
        _encoded("P", (50, 50)),
        _encoded("CMYK", (60, 40), "JPEG"),
        _encoded("1", (80, 80), fill=1),
    ],
    ids=[
        "1x1",
        "3000x1",
        "black-tile",
        "white-tile",
        "transparent",
        "16-bit",
        "palette",
        "cmyk-jpeg",
        "1-bit",
    ],
)
def test_odd_but_valid_images_are_read_without_a_server_error(client, data):
    response = client.post("/api/predict", files={"file": ("odd", data)})
    assert response.status_code == 200, response.text
    assert response.json()["digits"] == [] and response.json()["diagnosis"]


# --- other models, and no model -------------------------------------------------------------


def test_a_model_that_is_not_knn_serves_without_neighbours_or_learning(mnist, tmp_path, seven):
    forest = models.train("random-forest", mnist.subset(2000, 10), {"n_estimators": 20})
    with TestClient(create_app(model=forest, home=tmp_path)) as client:
        assert client.get("/api/model").json()["learns_from_samples"] is False
        body = client.post("/api/predict", json={"image": data_url(seven)}).json()
        assert len(body["digits"]) == 1 and body["digits"][0]["neighbors"] == []
        made = client.post("/api/samples", json={"image": body["digits"][0]["tile"], "label": 1})
        assert made.status_code == 201  # stored for later (export, or a kNN model)


def test_create_app_without_a_model_says_so(tmp_path):
    with pytest.raises(ModelFileError, match="train one"):
        create_app(model_dir=tmp_path / "none", home=tmp_path)


def test_serve_without_a_model_says_how_to_train_one(digitrec_home):
    done = run_digitrec("serve", "--port", "1", timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no model at ")
    assert "digitrec train --dataset mnist" in done.stderr and "Traceback" not in done.stderr


def test_serve_answers_over_http(knn, tmp_path, seven):
    model_dir = models.save(knn, tmp_path / "model")
    with serving(model_dir, tmp_path / "home") as (url, _):
        assert httpx.get(f"{url}/api/health").json()["model"] == "knn"
        answer = httpx.post(f"{url}/api/predict", json={"image": data_url(seven)}, timeout=30)
        assert answer.json()["text"] == "7"
