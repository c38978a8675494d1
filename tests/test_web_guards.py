"""The server's guards against abusive clients: bodies, JSON nesting, slow clients, the work
pool's lanes, and JSON for every error."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from fastapi import HTTPException
from fastapi.testclient import TestClient
from PIL import Image

from digitrec import models
from digitrec.apps.web import guards
from digitrec.apps.web.app import create_app, png_data_url
from digitrec.apps.web.guards import RequestGuard, WorkPool, json_depth


@pytest.fixture(scope="module")
def knn(mnist) -> models.Model:
    return models.train("knn", mnist.subset(1000, 10, seed=0), {"n_neighbors": 1})


@pytest.fixture
def app(knn, tmp_path):
    return create_app(model=knn, home=tmp_path, max_image_bytes=200_000)


# --- JSON nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('{"image": "data:image/png;base64,AAAA"}', 1),
        ("[" * 40 + "]" * 40, 40),
        ('{"a": [[[1]], {"b": [2]}]}', 4),
        ('{"s": "' + "[" * 50 + '"}', 1),  # brackets inside a string
        ('["\\"' + "[" * 50 + '"]', 1),  # after an escaped quote, still inside the string
        ('["\\\\"' + ", [" * 40 + "]" * 41, 41),  # an escaped backslash ends the string
    ],
)
def test_json_depth_counts_nesting_outside_strings(text, depth):
    assert json_depth(text.encode()) == depth


@pytest.mark.parametrize("path", ["/api/predict", "/api/samples"])
def test_json_nested_a_thousand_deep_is_422_json(app, path):
    body = '{"label": 1, "image": ' + "[" * 1000 + "]" * 1000 + "}"
    with TestClient(app) as client:
        response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "nested more than 32 levels" in response.json()["detail"]


# --- errors are always JSON -----------------------------------------------------------------


def test_an_unforeseen_exception_is_a_json_500(app, monkeypatch):
    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(app.state.service, "predict", broken)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/api/predict", json={"image": "AAAA"})
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error (RecursionError); the server log has details"
    }


# --- request bodies: read, bounded, drained --------------------------------------------------


def _call(guard: RequestGuard, headers: dict[bytes, bytes], messages: list[dict]):
    """Run ``guard`` on one request; the messages it sent, how many body parts it read, and
    whether the wrapped app ran."""
    sent: list[dict] = []
    pending = list(messages)
    reached = []

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # a client that stops sending

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        reached.append((await receive())["body"])

    guard.app = app
    scope = {"type": "http", "headers": list(headers.items())}
    asyncio.run(guard(scope, receive, send))
    return sent, len(messages) - len(pending), reached


def _status_and_body(sent: list[dict]) -> tuple[int, dict, dict[bytes, bytes]]:
    return sent[0]["status"], json.loads(sent[1]["body"]), dict(sent[0]["headers"])


def test_an_over_limit_body_is_read_to_its_end_before_the_json_413():
    guard = RequestGuard(None, max_bytes=10)
    parts = [{"type": "http.request", "body": b"x" * 8, "more_body": True} for _ in range(5)]
    parts[-1]["more_body"] = False
    sent, read, reached = _call(guard, {b"content-length": b"40"}, parts)
    status, body, headers = _status_and_body(sent)
    assert (status, read, reached) == (413, 5, [])
    assert "over the 0.0 MB limit" in body["detail"]
    assert headers[b"connection"] == b"close"


def test_a_body_declared_beyond_the_drain_limit_is_refused_unread():
    guard = RequestGuard(None, max_bytes=10)
    declared = str(guards.DRAIN_LIMIT + 1).encode()
    sent, read, _ = _call(guard, {b"content-length": declared}, [])
    assert _status_and_body(sent)[0] == 413 and read == 0


def test_a_body_that_stops_arriving_is_a_json_408(monkeypatch):
    monkeypatch.setattr(guards, "BODY_IDLE_TIMEOUT", 0.05)
    guard = RequestGuard(None, max_bytes=1000)
    part = {"type": "http.request", "body": b"{", "more_body": True}
    sent, _, reached = _call(guard, {b"content-length": b"100"}, [part])
    status, body, headers = _status_and_body(sent)
    assert (status, body, reached) == (408, {"detail": "request body arrived too slowly"}, [])
    assert headers[b"connection"] == b"close"


def test_a_body_within_the_limit_reaches_the_app_whole():
    guard = RequestGuard(None, max_bytes=10)
    parts = [
        {"type": "http.request", "body": b"12345", "more_body": True},
        {"type": "http.request", "body": b"678", "more_body": False},
    ]
    assert _call(guard, {}, parts)[2] == [b"12345678"]


# --- slow headers ---------------------------------------------------------------------------


def test_a_client_sending_its_headers_a_byte_at_a_time_is_cut_off(app, monkeypatch):
    monkeypatch.setattr(guards, "HEADER_TIMEOUT", 0.5)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=guards.HeaderDeadline)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.settimeout(0.1)
            received = None
            for byte in b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 1000:
                try:
                    slow.send(bytes([byte]))
                    received = slow.recv(100)
                except TimeoutError:
                    continue
                except OSError:
                    received = b""
                break
            assert received == b""  # closed by the server, no answer
        with socket.create_connection(("127.0.0.1", port)) as prompt:
            prompt.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert prompt.recv(100).startswith(b"HTTP/1.1 200")
    finally:
        server.should_exit = True
        thread.join()


# --- the work pool --------------------------------------------------------------------------


class _Listening:
    """Stands in for a Request: the client is there until ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = False

    async def is_disconnected(self) -> bool:
        return self.gone


def test_a_full_lane_answers_503_with_retry_after_and_frees_its_slot_when_work_ends():
    pool = WorkPool(light_slots=1, heavy_slots=1, light_waiting=0, heavy_waiting=0)
    release = threading.Event()

    async def scenario() -> list[object]:
        first = asyncio.create_task(pool.run(_Listening(), True, lambda _: release.wait(60)))
        await asyncio.sleep(0.05)
        outcomes: list[object] = []
        try:
            await pool.run(_Listening(), True, lambda _: "second")
        except HTTPException as exc:
            outcomes.append((exc.status_code, exc.headers))
        # The light lane is separate: a canvas drawing is not queued behind a large image.
        outcomes.append(await pool.run(_Listening(), False, lambda _: "light"))
        release.set()
        outcomes.append(await first)
        outcomes.append(await pool.run(_Listening(), True, lambda _: "third"))
        return outcomes

    assert asyncio.run(scenario()) == [(503, {"Retry-After": "2"}), "light", True, "third"]


def test_a_client_that_goes_away_stops_waiting_and_its_work_is_told():
    pool = WorkPool()
    told = threading.Event()

    def work(abandoned: threading.Event) -> None:
        if abandoned.wait(60):
            told.set()

    async def scenario() -> int:
        request = _Listening()
        waiting = asyncio.create_task(pool.run(request, False, work))
        await asyncio.sleep(0.05)
        request.gone = True
        with pytest.raises(HTTPException) as refused:
            await waiting
        return refused.value.status_code

    assert asyncio.run(scenario()) == 499
    assert told.wait(60)


@pytest.mark.parametrize("path", ["/api/predict", "/api/samples"])
def test_predictions_and_samples_wait_in_the_same_lanes(app, mnist, path, monkeypatch):
    """A sample upload is decoded in the work pool as a prediction is: while a full lane
    is busy it is refused with a JSON 503 and Retry-After, not decoded beside it."""
    app.state.work = WorkPool(light_slots=1, heavy_slots=1, light_waiting=0, heavy_waiting=0)
    service = app.state.service
    entered, release = threading.Event(), threading.Event()
    load = service.load

    def held(data: bytes, name: str):
        entered.set()
        release.wait(60)
        return load(data, name)

    monkeypatch.setattr(service, "load", held)
    body = {"image": png_data_url(mnist.X_test[0]), "label": int(mnist.y_test[0])}
    with TestClient(app) as client, ThreadPoolExecutor(1) as other:
        first = other.submit(client.post, "/api/predict", json=body)
        assert entered.wait(60)
        refused = client.post(path, json=body)
        release.set()
        assert first.result().status_code == 200
        served = client.post(path, json=body)  # the slot is free again
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "busy" in refused.json()["detail"]
    assert served.status_code == (200 if path == "/api/predict" else 201)


def _white_png(width: int, height: int) -> str:
    """A data URL of a white bilevel PNG: a few KB however many pixels it declares."""
    buffer = io.BytesIO()
    Image.new("1", (width, height), 1).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def test_a_large_sample_image_goes_to_the_heavy_lane_and_one_over_the_limit_is_413(
    app, monkeypatch
):
    lanes: list[bool] = []
    run = app.state.work.run

    async def spied(request, heavy, work):
        lanes.append(heavy)
        return await run(request, heavy, work)

    monkeypatch.setattr(app.state.work, "run", spied)
    with TestClient(app) as client:
        small = client.post("/api/samples", json={"image": _white_png(28, 28), "label": 1})
        large = client.post("/api/samples", json={"image": _white_png(2500, 2000), "label": 1})
        bomb = client.post("/api/samples", json={"image": _white_png(7000, 6000), "label": 1})
    assert lanes == [False, True, True]
    assert small.status_code == 422  # a blank tile holds no digit
    assert large.status_code == 422
    assert bomb.status_code == 413
    assert "pixels" in bomb.json()["detail"]
