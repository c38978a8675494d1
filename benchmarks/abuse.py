"""Attacks on a live `digitrec serve`, and what each one costs the server.

The server runs as `digitrec serve` on 127.0.0.1 (loopback only) with the default model and a
fresh data directory, as in serve_load.py. Each attack is a bounded number of requests or
connections, and every wait has a deadline, so the script ends by itself. Prints one table:

- codes: the HTTP status of every answer (or "reset" / "closed" when the server dropped the
  connection, which is the goal for slowloris)
- cpu-s: the server's CPU seconds for the worst request, counted until the server is idle
  again (so work that goes on after the client has gone is included)
- peak RSS, and the peak above the idle server and above the RSS at the attack's start
  (the allocator keeps some freed memory, so later attacks start higher)
- health: whether /api/health answered within 1 s throughout the attack
- canvas p99: a well-behaved client drawing digits all the while (slow clients and the
  concurrent bombs; the other attacks run alone so their CPU can be counted)
- non-JSON: answers whose body is not JSON

    python benchmarks/abuse.py [--model DIR] [--attacks scan_bomb,rgba_40mp,...]

Goals: no request over 2 CPU-s or 300 MB above idle; the 8 concurrent bombs leave peak RSS
under 1.5 GB and canvas p99 under 200 ms; 0 non-JSON answers; 0 5xx except a deliberate 503.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image
from serve_load import canvas_payloads, ensure_model, start_server
from tqdm import tqdm

# Attacks during which a well-behaved client draws; the others measure the server's CPU
# per request, which needs it otherwise idle.
WITH_CANVAS = {"no_attack", "slowloris_x50", "slow_body_x50", "bombs_x8"}
IDLE_CPU_RATE = 0.05  # CPU-s per s below which the server counts as idle
GOALS = {"cpu_s": 2.0, "rss_above_mb": 300.0, "bombs_rss_mb": 1500.0, "canvas_p99_ms": 200.0}


# --- the hostile inputs --------------------------------------------------------------------


def jpeg_scans(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of every scan (SOS header and its entropy-coded data) in a JPEG."""
    scans = []
    pos = 2
    while pos + 4 <= len(data):
        marker = data[pos + 1]
        length = struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        if marker == 0xD9:
            break
        end = pos + 2 + length
        if marker == 0xDA:
            # Entropy-coded data runs to the next marker other than a stuffed 00 or a restart.
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
            scans.append((pos, end))
        pos = end
    return scans


def scan_bomb(side: int = 6300, extra: int = 3000) -> bytes:
    """A white progressive JPEG of ``side`` x ``side`` with ``extra`` copies of its luma AC
    refinement scan: each copy is a pass over every 8x8 block for the decoder, for a few
    dozen bytes of file."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), "white").save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()

    def luma_refinement(span: tuple[int, int]) -> bool:
        header = data[span[0] + 4 :]  # component count, (id, tables) each, Ss, Se, Ah/Al
        ns = header[0]
        return ns == 1 and header[1] == 1 and header[2 + 2 * ns] > 0 and header[3 + 2 * ns] >> 4
    start, end = next(span for span in jpeg_scans(data) if luma_refinement(span))
    eoi = data.rindex(b"\xff\xd9")
    return data[:eoi] + data[start:end] * extra + data[eoi:]


def white_rgba_png(side: int = 6324) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (side, side), (255, 255, 255, 255)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def inked_rgb_png(side: int = 6324) -> bytes:
    """The costliest PNG the loader accepts: 40 megapixels of RGB, a digit-like bar on it."""
    page = np.full((side, side, 3), 255, np.uint8)
    page[side // 4 : 3 * side // 4, side // 2 : side // 2 + side // 40] = 0
    buffer = io.BytesIO()
    Image.fromarray(page).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def strip_png(width: int = 1, height: int = 39_999_999) -> bytes:
    """A greyscale PNG ``width`` x ``height`` (white), compressed as it streams."""
    packer = zlib.compressobj(9)
    row = b"\x00" + b"\xff" * width
    rows = b"".join(packer.compress(row * 100_000) for _ in range(height // 100_000))
    rows += packer.compress(row * (height % 100_000)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", rows)
        + _png_chunk(b"IEND", b"")
    )


# --- watching the server -------------------------------------------------------------------


@dataclass
class Outcome:
    codes: list[str] = field(default_factory=list)
    non_json: int = 0
    worst_cpu_s: float = 0.0
    canvas_ms: list[float] = field(default_factory=list)
    health_ok: bool = True
    peak_rss: float = 0.0
    start_rss: float = 0.0
    note: str = ""

    def record(self, response: httpx.Response) -> None:
        self.codes.append(str(response.status_code))
        try:
            json.loads(response.content)
        except ValueError:
            self.non_json += 1


class Watcher:
    """Samples the server's RSS every 20 ms and its /api/health every 250 ms."""

    def __init__(self, process: psutil.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.peak_rss = 0.0
        self.health_ok = True
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss), threading.Thread(target=self._health)]

    def __enter__(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _rss(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_rss = max(self.peak_rss, self.process.memory_info().rss / 1e6)

    def _health(self) -> None:
        with httpx.Client(base_url=self.url, timeout=1.0) as http:
            while not self._stop.wait(0.25):
                try:
                    ok = http.get("/api/health").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health_ok &= ok


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def settle(process: psutil.Process, limit: float = 120.0) -> None:
    """Wait (at most ``limit`` s) until the server uses under IDLE_CPU_RATE for 0.5 s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(process)
        time.sleep(0.5)
        if cpu_seconds(process) - before < IDLE_CPU_RATE * 0.5:
            return


def canvas_client(url: str, payloads: list[dict], stop: threading.Event, out: Outcome) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        i = 0
        while not stop.is_set():
            start = time.perf_counter()
            try:
                response = http.post("/api/predict", **payloads[i % len(payloads)])
                out.canvas_ms.append(1000 * (time.perf_counter() - start))
                if response.status_code != 200:
                    out.note = f"canvas got {response.status_code}"
            except httpx.HTTPError as exc:
                out.note = f"canvas {type(exc).__name__}"
            i += 1


# --- the attacks ---------------------------------------------------------------------------


def post(out: Outcome, http: httpx.Client, path: str, **request: object) -> None:
    """Send one request and record its status, or how the connection failed."""
    try:
        out.record(http.post(path, **request))
    except httpx.TimeoutException:
        out.codes.append("timeout")
    except httpx.HTTPError as exc:
        out.codes.append("reset" if "reset" in str(exc).lower() else type(exc).__name__)


def post_each(data: bytes, name: str, times: int) -> Callable[[str, psutil.Process], Outcome]:
    """``times`` uploads of ``data`` one after another, each timed in server CPU-s."""

    def attack(url: str, process: psutil.Process) -> Outcome:
        out = Outcome()
        with httpx.Client(base_url=url, timeout=60) as http:
            for _ in range(times):
                settle(process)
                before = cpu_seconds(process)
                post(out, http, "/api/predict", files={"file": (name, data)})
                settle(process)
                out.worst_cpu_s = max(out.worst_cpu_s, cpu_seconds(process) - before)
        return out

    return attack


def deep_json(url: str, process: psutil.Process) -> Outcome:
    out = Outcome()
    nested = "[" * 1000 + "]" * 1000
    bodies = {
        "/api/predict": '{"image": ' + nested + "}",
        "/api/samples": '{"label": 1, "image": ' + nested + "}",
    }
    with httpx.Client(base_url=url, timeout=30) as http:
        for path, body in bodies.items():
            before = cpu_seconds(process)
            headers = {"content-type": "application/json"}
            post(out, http, path, content=body.encode(), headers=headers)
            out.worst_cpu_s = max(out.worst_cpu_s, cpu_seconds(process) - before)
    return out


def oversized(url: str, process: psutil.Process) -> Outcome:
    """A 40 MB body with its Content-Length, and one sent chunked without it."""
    out = Outcome()
    body = b"x" * 40_000_000

    def chunks() -> object:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=url, timeout=30) as http:
        for content in (body, chunks()):
            before = cpu_seconds(process)
            post(out, http, "/api/predict", content=content, headers=headers)
            out.worst_cpu_s = max(out.worst_cpu_s, cpu_seconds(process) - before)
    return out


def _slow_sockets(url: str, count: int, head: bytes, trickle: bytes, limit: float) -> Outcome:
    """``count`` connections that send ``head`` at once, then ``trickle`` a byte per
    second; each ends when the server answers or closes it, or at ``limit`` seconds."""
    out = Outcome()
    host, port = url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        s = socket.create_connection((host, int(port)))
        s.setblocking(False)
        s.sendall(head)
        sockets.append(s)
    answers: dict[socket.socket, bytes] = {s: b"" for s in sockets}
    held: dict[socket.socket, float] = {}
    start = time.monotonic()
    position = 0
    while len(held) < count and time.monotonic() - start < limit:
        for s in sockets:
            if s in held:
                continue
            try:
                chunk = s.recv(65536)
                if not chunk:
                    held[s] = time.monotonic() - start
                answers[s] += chunk
            except BlockingIOError:
                if position < len(trickle):
                    try:
                        s.send(trickle[position : position + 1])
                    except OSError:
                        held[s] = time.monotonic() - start
            except OSError:
                held[s] = time.monotonic() - start
        position += 1
        time.sleep(1.0)
    for s in sockets:
        reply = answers[s]
        if reply.startswith(b"HTTP/1.1 "):
            out.codes.append(reply[9:12].decode())
            try:
                json.loads(reply.split(b"\r\n\r\n", 1)[1])
            except (ValueError, IndexError):
                out.non_json += 1
        else:
            out.codes.append("closed" if s in held else "still open")
        s.close()
    out.note = f"held at most {max(held.values(), default=limit):.0f} s"
    return out


def slowloris(url: str, process: psutil.Process) -> Outcome:
    trickle = b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\nX-Padding: " + b"a" * 200
    return _slow_sockets(url, 50, b"", trickle, limit=40)


def slow_bodies(url: str, process: psutil.Process) -> Outcome:
    head = (
        b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    return _slow_sockets(url, 50, head, b'{"image": "' + b"A" * 200, limit=60)


def no_attack(url: str, process: psutil.Process) -> Outcome:
    """20 s of the well-behaved client alone: the canvas p99 the others compare with."""
    time.sleep(20)
    return Outcome()


def concurrent_bombs(bombs: list[tuple[str, bytes]]) -> Callable[[str, psutil.Process], Outcome]:
    def attack(url: str, process: psutil.Process) -> Outcome:
        out = Outcome()
        lock = threading.Lock()

        def one(bomb: tuple[str, bytes]) -> None:
            answer = Outcome()
            with httpx.Client(base_url=url, timeout=120) as http:
                post(answer, http, "/api/predict", files={"file": bomb})
            with lock:
                out.codes += answer.codes
                out.non_json += answer.non_json

        settle(process)
        before = cpu_seconds(process)
        with ThreadPoolExecutor(len(bombs)) as pool:
            list(pool.map(one, bombs))
        settle(process)
        out.worst_cpu_s = (cpu_seconds(process) - before) / len(bombs)
        out.note = "cpu-s: the mean over the bombs, the canvas requests' CPU included"
        return out

    return attack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--attacks", default="", help="comma-separated subset (default all)")
    parser.add_argument("--repeat", type=int, default=3, help="uploads per single-file attack")
    args = parser.parse_args()

    print("building the hostile files...", flush=True)
    bomb_jpeg = scan_bomb()
    rgba = white_rgba_png()
    strip = strip_png()
    # What the bounded loader still accepts at its limits: 32 scans, 40 megapixels of RGB.
    scans_32 = scan_bomb(extra=22)
    rgb = inked_rgb_png()
    repeat = args.repeat
    attacks: dict[str, Callable[[str, psutil.Process], Outcome]] = {
        "no_attack": no_attack,
        "scan_bomb": post_each(bomb_jpeg, "bomb.jpg", repeat),
        "rgba_40mp": post_each(rgba, "white.png", repeat),
        "strip_1x40m": post_each(strip, "strip.png", repeat),
        "jpeg_32_scans": post_each(scans_32, "scans.jpg", repeat),
        "rgb_40mp": post_each(rgb, "rgb.png", repeat),
        "deep_json": deep_json,
        "slowloris_x50": slowloris,
        "slow_body_x50": slow_bodies,
        "oversized_body": oversized,
        "bombs_x8": concurrent_bombs(
            [("bomb.jpg", bomb_jpeg), ("white.png", rgba), ("scans.jpg", scans_32)] * 2
            + [("rgb.png", rgb)] * 2
        ),
    }
    chosen = [a for a in args.attacks.split(",") if a] or list(attacks)
    sizes = {
        "scan_bomb": len(bomb_jpeg),
        "rgba_40mp": len(rgba),
        "strip_1x40m": len(strip),
        "jpeg_32_scans": len(scans_32),
        "rgb_40mp": len(rgb),
    }
    print(", ".join(f"{name} {size / 1e3:.0f} KB" for name, size in sizes.items()))

    canvas = canvas_payloads(20)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="digitrec-abuse-") as scratch:
        model_dir = ensure_model(args.model, Path(scratch))
        server, url = start_server(model_dir, Path(scratch) / "home")
        process = psutil.Process(server.pid)
        try:
            # Warm-up: the first request compiles the search kernels (minutes without a cache).
            with httpx.Client(base_url=url, timeout=600) as http:
                for i in range(20):
                    http.post("/api/predict", **canvas[i])
            settle(process)
            idle = process.memory_info().rss / 1e6
            for name in tqdm(chosen, desc="attacks"):
                stop = threading.Event()
                behaved = Outcome()
                drawer = threading.Thread(target=canvas_client, args=(url, canvas, stop, behaved))
                start_rss = process.memory_info().rss / 1e6
                with Watcher(process, url) as watch:
                    if name in WITH_CANVAS:
                        drawer.start()
                    out = attacks[name](url, process)
                    stop.set()
                    if name in WITH_CANVAS:
                        drawer.join()
                out.peak_rss = watch.peak_rss
                out.start_rss = start_rss
                out.health_ok = watch.health_ok
                out.canvas_ms = behaved.canvas_ms
                out.note = "; ".join(n for n in (out.note, behaved.note) if n)
                rows[name] = out
                settle(process)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()

    print(f"idle server RSS {idle:.0f} MB; {psutil.cpu_count()} cores")
    header = (
        f"{'attack':<15} {'codes':<34} {'cpu-s':>6} {'peak MB':>8} {'+idle MB':>8} {'+start':>6} "
        f"{'health':>6} {'canvas p99':>10} {'non-JSON':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, out in rows.items():
        counts: dict[str, int] = {}
        for code in out.codes:
            counts[code] = counts.get(code, 0) + 1
        codes = " ".join(f"{c}x{n}" for c, n in sorted(counts.items()))
        p99 = f"{np.percentile(out.canvas_ms, 99):.0f} ms" if out.canvas_ms else "-"
        print(
            f"{name:<15} {codes:<34} {out.worst_cpu_s:>6.2f} {out.peak_rss:>8.0f} "
            f"{out.peak_rss - idle:>8.0f} {out.peak_rss - out.start_rss:>6.0f} "
            f"{'ok' if out.health_ok else 'SLOW':>6} {p99:>10} "
            f"{out.non_json:>8}"
        )
        if out.note:
            print(f"    {out.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
