"""What keeps the web server healthy under abusive clients.

- :class:`RequestGuard` (ASGI middleware) reads every request body before the app sees it:
  bodies over the limit get a JSON 413 after the rest of the body is read and thrown away (up
  to a bound), so the client is listening when it arrives instead of meeting a reset
  connection; bodies that arrive too slowly get a JSON 408; JSON nested deeper than any of
  our requests gets a JSON 422 before a parser recurses into it.
- :class:`HeaderDeadline` (a uvicorn protocol) closes connections whose request headers do
  not arrive in time, the slowloris attack that uvicorn alone never times out.
- :class:`WorkPool` runs the decoding and reading of uploads on a few threads, in two lanes
  so that a queue of large images never delays a canvas drawing; a full lane answers 503
  with Retry-After, a request that runs too long answers 503, and a client that goes away
  stops waiting (its work, bounded by :func:`digitrec.data.images.load_image`, finishes
  on its thread and frees the slot).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import h11
import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

T = TypeVar("T")

# Our requests nest JSON one level deep; a parser recursing 1,000 levels raises RecursionError.
MAX_JSON_DEPTH = 32
# A client has this long to send its request headers, and then this long between two parts
# of the body; the whole body must arrive at MIN_BODY_RATE bytes/s after BODY_GRACE seconds.
HEADER_TIMEOUT = 10.0
BODY_IDLE_TIMEOUT = 10.0
BODY_GRACE = 15.0
MIN_BODY_RATE = 50_000
# Over-limit bodies up to this size are read and discarded so the client hears the 413;
# beyond it the connection is closed after the 413 is sent.
DRAIN_LIMIT = 100_000_000


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class RequestGuard:
    """Read, bound and check each request body, then replay it to ``app``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _problem(422, "Content-Length is not a number")(scope, receive, send)
            return
        expected = int(declared) if declared is not None else None
        try:
            body = await self._read_body(receive, expected)
        except HTTPException as exc:
            # The client may still be sending: tell it to close rather than reuse the socket.
            response = _problem(exc.status_code, str(exc.detail), {"Connection": "close"})
            await response(scope, receive, send)
            return
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type == b"application/json" and _too_deep(body):
            detail = f"JSON is nested more than {MAX_JSON_DEPTH} levels deep"
            await _problem(422, detail)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive, expected: int | None) -> bytes:
        if expected is not None and expected > DRAIN_LIMIT:
            raise HTTPException(413, self._too_large(expected))
        deadline = time.monotonic() + BODY_GRACE + (expected or self.max_bytes) / MIN_BODY_RATE
        parts: list[bytes] = []
        received = 0
        while True:
            wait = min(BODY_IDLE_TIMEOUT, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except TimeoutError:
                raise HTTPException(408, "request body arrived too slowly") from None
            if message["type"] != "http.request":  # the client went away
                raise HTTPException(400, "client disconnected before sending the body")
            chunk = message.get("body", b"")
            received += len(chunk)
            if received <= self.max_bytes:
                parts.append(chunk)
            elif received > DRAIN_LIMIT:
                raise HTTPException(413, self._too_large(received, more=True))
            if not message.get("more_body", False):
                break
        if received > self.max_bytes:
            raise HTTPException(413, self._too_large(received))
        return b"".join(parts)

    def _too_large(self, size: int, more: bool = False) -> str:
        return (
            f"request body is {'over ' if more else ''}{size / 1e6:.1f} MB, "
            f"over the {self.max_bytes / 1e6:.1f} MB limit"
        )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the whole body once, then waits for the disconnect."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


_OPEN = np.frombuffer(b"[{", np.uint8)
_CLOSE = np.frombuffer(b"]}", np.uint8)
_QUOTE = ord('"')
_BACKSLASH = ord("\\")


def _too_deep(body: bytes) -> bool:
    # Data URLs hold no brackets: the usual body needs no more than counting them.
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return False
    return json_depth(body) > MAX_JSON_DEPTH


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects in the JSON text ``body`` nest (brackets inside
    strings do not count), in one vectorised pass over the bytes instead of a parser's
    recursion; for text that is not JSON, some number."""
    text = np.frombuffer(body, np.uint8)
    quote = text == _QUOTE
    backslash = text == _BACKSLASH
    if backslash.any():
        # A quote preceded by an odd run of backslashes is part of the string.
        index = np.arange(text.size)
        last_plain = np.maximum.accumulate(np.where(backslash, -1, index))
        run = np.zeros(text.size, np.int64)
        run[1:] = index[:-1] - last_plain[:-1]
        quote &= run % 2 == 0
    outside = np.cumsum(quote) % 2 == 0
    step = np.isin(text, _OPEN).astype(np.int32) - np.isin(text, _CLOSE)
    return int(np.cumsum(step * outside).max(initial=0))


class HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers take longer than
    ``HEADER_TIMEOUT`` seconds (uvicorn times out idle keep-alive connections, but a
    client sending a byte at a time is never idle)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if not self.transport.is_closing():
            self._header_deadline = self.loop.call_later(HEADER_TIMEOUT, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class Busy(HTTPException):
    """503 with a Retry-After header."""

    def __init__(self, detail: str, retry_after: int = 2) -> None:
        super().__init__(503, detail, headers={"Retry-After": str(retry_after)})


class _Lane:
    """At most ``slots`` jobs at once and ``waiting`` queued; more are refused."""

    def __init__(self, name: str, slots: int, waiting: int) -> None:
        self.name = name
        self.slots = asyncio.Semaphore(slots)
        self.max_waiting = waiting
        self.waiting = 0

    async def acquire(self, timeout: float) -> None:
        if self.slots.locked() and self.waiting >= self.max_waiting:
            raise Busy(f"the server is busy with other {self.name}; try again shortly")
        self.waiting += 1
        try:
            await asyncio.wait_for(self.slots.acquire(), timeout)
        except TimeoutError:
            raise Busy(f"the server is busy with other {self.name}; try again shortly") from None
        finally:
            self.waiting -= 1


# How much nicer than the rest of the server the heavy lane's threads (and other background
# work) run (Linux sets niceness per thread): a canvas drawing is served first when both
# want a core.
HEAVY_NICENESS = 10


def lower_priority() -> None:
    """Run the calling thread at ``HEAVY_NICENESS`` (a thread pool's initializer)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HEAVY_NICENESS)


class WorkPool:
    """Threads for decoding and reading uploads, in a light and a heavy lane.

    Pillow, OpenCV and numpy release the GIL while they decode and filter, so threads use
    both cores; what needs bounding is how many large images are in memory at once, which
    the heavy lane's slots do. Each lane has its own threads: the heavy lane's run at a
    lower priority, and always the same few, so the memory the allocator keeps after a
    large image is kept once, not once per thread.
    """

    def __init__(
        self,
        *,
        light_slots: int = 4,
        heavy_slots: int = 1,
        light_waiting: int = 32,
        heavy_waiting: int = 4,
        time_limit: float = 120.0,
    ) -> None:
        self.lanes = {
            False: _Lane("requests", light_slots, light_waiting),
            True: _Lane("large images", heavy_slots, heavy_waiting),
        }
        self.time_limit = time_limit
        self._executors = {
            False: ThreadPoolExecutor(light_slots, "digitrec-light"),
            True: ThreadPoolExecutor(heavy_slots, "digitrec-heavy", initializer=lower_priority),
        }

    async def run(
        self,
        request: Request,
        heavy: bool,
        work: Callable[[threading.Event], T],
    ) -> T:
        """``work(abandoned)`` on a pool thread; ``abandoned`` is set when nobody waits
        for the answer any more, so the work can stop at its next step."""
        lane = self.lanes[heavy]
        started = time.monotonic()
        await lane.acquire(self.time_limit)
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        job = self._executors[heavy].submit(work, abandoned)

        def free_slot(_: object) -> None:
            # The slot is freed when the thread finishes, not when we stop waiting for it;
            # after shutdown the loop (and the slots) are gone.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(lane.slots.release)

        job.add_done_callback(free_slot)
        answer = asyncio.wrap_future(job)
        while True:
            done, _ = await asyncio.wait({answer}, timeout=0.25)
            if done:
                return answer.result()
            if time.monotonic() - started > self.time_limit:
                abandoned.set()
                raise Busy(f"reading the image took over {self.time_limit:.0f} s", 10)
            if await request.is_disconnected():
                abandoned.set()
                raise HTTPException(499, "client closed the request")


def answer_json_errors(exc: Exception) -> JSONResponse:
    """The JSON 500 for an exception nothing else handled."""
    return _problem(500, f"internal error ({type(exc).__name__}); the server log has details")
