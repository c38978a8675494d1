"""Load on a live `digitrec serve`: latency and throughput of the two kinds of request the page
sends, a canvas drawing of one digit (JSON data URL, 280x140 PNG, what app.js sends) and a
1-megapixel phone photo (multipart JPEG).

The server runs as `digitrec serve` in its own process on 127.0.0.1 with a fresh data
directory; a few client threads (httpx) send a fixed number of requests each. Prints one table
and exits 0.

    python benchmarks/serve_load.py [--model DIR] [--requests 500] [--photo-requests 200]
                                    [--clients 1,4]

One client shows the service time of a request; several show it under contention for the
two cores.

Without --model it uses the default model, or trains the default kind on full MNIST into a
temporary directory if there is none.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from digitrec import config, models
from digitrec.data import datasets
from digitrec.testing import synthetic

GOALS_MS = {"canvas": 50.0, "photo": 300.0}  # p99 goals on a 2-core machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def canvas_payloads(count: int) -> list[dict]:
    """Single digits drawn as the page sends them: black on white, 280x140 PNG data URLs."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        drawing = np.asarray(Image.open(io.BytesIO(synthetic.drawing(str(i % 10), rng, size=140))))
        page = np.full((140, 280), 255, np.uint8)
        left = int(rng.integers(0, 280 - drawing.shape[1] + 1))
        page[:, left : left + drawing.shape[1]] = drawing
        buffer = io.BytesIO()
        Image.fromarray(page).save(buffer, "PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        out.append({"json": {"image": url}})
    return out


def photo_payloads(count: int) -> list[dict]:
    """Phone-photo-like JPEGs of 3-5 digit numbers, scaled to about one megapixel."""
    rng = np.random.default_rng(1)
    out = []
    for _ in range(count):
        text = synthetic.random_number(rng, 3, 5)
        im = Image.open(io.BytesIO(synthetic.photo(text, rng)))
        scale = (1_000_000 / (im.width * im.height)) ** 0.5
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=88)
        out.append({"files": {"file": ("photo.jpg", buffer.getvalue(), "image/jpeg")}})
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(url: str, payloads: list[dict], requests: int, clients: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(n: int, offset: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            for i in range(n):
                payload = payloads[(offset + i) % len(payloads)]
                start = time.perf_counter()
                try:
                    response = http.post("/api/predict", **payload)
                    ok = response.status_code == 200
                    problem = "" if ok else f"{response.status_code} {response.text[:100]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)

    threads = [threading.Thread(target=client, args=(n, i * 7)) for i, n in enumerate(per_client)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "n": len(latencies),
        "errors": errors,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "max": float(ms.max()),
        "rps": len(latencies) / wall,
    }


def ensure_model(path: Path | None, scratch: Path) -> Path:
    chosen = path or config.default_model_dir()
    if (chosen / "model.json").is_file():
        return chosen
    print(f"no model at {chosen}: training {models.DEFAULT_KIND} on full MNIST", file=sys.stderr)
    model = models.train(models.DEFAULT_KIND, datasets.load("mnist"))
    return models.save(model, scratch / "default")


def start_server(model_dir: Path, home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    digitrec = Path(sys.executable).with_name("digitrec")
    process = subprocess.Popen(
        [str(digitrec), "serve", "--model", str(model_dir), "--port", str(port)],
        env={**os.environ, "DIGITREC_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            httpx.get(f"{url}/api/health", timeout=2).raise_for_status()
            return process, url
        except httpx.TransportError:
            if process.poll() is not None:
                raise SystemExit(f"digitrec serve exited: {process.communicate()[1]}") from None
            if time.monotonic() > deadline:
                process.terminate()
                raise SystemExit("digitrec serve did not answer within 120 s") from None
            time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=500, help="canvas requests per row")
    parser.add_argument("--photo-requests", type=int, default=200, help="photo requests per row")
    parser.add_argument(
        "--clients", default="1,4", help="concurrent client threads, one row per value"
    )
    args = parser.parse_args()
    client_counts = [int(c) for c in args.clients.split(",")]
    counts = {"canvas": args.requests, "photo": args.photo_requests}

    scenarios: dict[str, Callable[[int], list[dict]]] = {
        "canvas": canvas_payloads,
        "photo": photo_payloads,
    }
    with tempfile.TemporaryDirectory(prefix="digitrec-load-") as scratch:
        model_dir = ensure_model(args.model, Path(scratch))
        payloads = {name: make(20) for name, make in scenarios.items()}
        process, url = start_server(model_dir, Path(scratch) / "home")
        try:
            info = httpx.get(f"{url}/api/model").json()
            load_before = os.getloadavg()
            rows = {}
            for name, items in payloads.items():
                run_load(url, items, 20, 2)  # warm-up: compiled kernels, caches, sockets
                for clients in client_counts:
                    # The server's CPU time per request does not depend on how busy the other
                    # processes keep the cores; wall-clock latency does.
                    cpu = cpu_seconds(process.pid)
                    rows[name, clients] = run_load(url, items, counts[name], clients)
                    rows[name, clients]["cpu_ms"] = (
                        1000 * (cpu_seconds(process.pid) - cpu) / counts[name]
                    )
            load_after = os.getloadavg()
        finally:
            process.terminate()
            process.wait(timeout=30)

    print(
        f"digitrec serve, {info['kind']} model on {info['training_size']} images; "
        f"{os.cpu_count()} cores; "
        f"1-min load average {load_before[0]:.1f} before, {load_after[0]:.1f} after"
    )
    header = (
        f"{'request':<28} {'clients':>7} {'n':>5} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'req/s':>7} {'cpu ms':>7} {'p99 goal':>9}  met"
    )
    print("cpu ms: the server's CPU time per request (user + system, all its threads)")
    print(header)
    print("-" * len(header))
    labels = {"canvas": "canvas, one digit (JSON)", "photo": "photo, 1 megapixel (JPEG)"}
    for (name, clients), row in rows.items():
        met = row["p99"] < GOALS_MS[name] and not row["errors"]
        print(
            f"{labels[name]:<28} {clients:>7} {row['n']:>5} {len(row['errors']):>6} "
            f"{row['p50']:>8.1f} {row['p99']:>8.1f} {row['max']:>8.1f} {row['rps']:>7.1f} "
            f"{row['cpu_ms']:>7.1f} "
            f"{GOALS_MS[name]:>7.0f} ms  {'yes' if met else 'NO'}"
        )
        for problem in sorted(set(row["errors"]))[:5]:
            print(f"    error: {problem}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
