"""A new user's first minutes, timed in fresh processes: before and after.

For one installed digitrec (a venv's ``bin`` folder) it times, each command in a new process,
with an empty numba cache at the start (``NUMBA_CACHE_DIR`` pointed at a fresh folder) and a
fresh data directory that sees the given default model and the MNIST cache:

- the install step that compiles the kernels, if this version has one (``make install`` runs
  ``digitrec compile-kernels``);
- ``digitrec --help`` (median of three);
- the first and the second ``digitrec predict`` of one photo with the default model;
- the first and the second ``digitrec train knn -d uci-digits``;
- ``digitrec serve``: from start to ``/api/health`` answering, and to the first answered
  ``/api/predict`` of the photo.

Wall seconds and CPU seconds (user + system of the child): the machine may be shared, and
CPU time shows the work whatever the load.

    .venv/bin/python benchmarks/first_run.py --bin OLD/.venv/bin --save before.json
    .venv/bin/python benchmarks/first_run.py --save after.json --compare before.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROWS = [
    ("install", "install step: compile kernels"),
    ("help", "digitrec --help"),
    ("predict1", "first predict, one photo"),
    ("predict2", "second predict, one photo"),
    ("train1", "first train knn -d uci-digits"),
    ("train2", "second train knn -d uci-digits"),
    ("serve_health", "serve: start -> /api/health ok"),
    ("serve_predict", "serve: start -> first /api/predict"),
    ("first_request", "serve: health ok -> first predict"),
]


def photo(mnist: Path, out: Path) -> Path:
    """Four MNIST test digits as dark ink on unevenly lit paper, 3x upscaled: a phone photo."""
    with np.load(mnist, allow_pickle=False) as data:
        key = "x_test" if "x_test" in data else "X_test"
        digits = np.asarray(data[key][:4], np.float32)
    strip = np.concatenate([np.pad(d, 8) for d in digits], axis=1)
    page = 235.0 - strip * (200.0 / 255.0)
    h, w = page.shape
    light = np.linspace(-25, 10, w)[None, :] + np.linspace(-10, 5, h)[:, None]
    noise = np.random.default_rng(0).normal(0, 4, page.shape)
    pixels = np.clip(page + light + noise, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels).resize((w * 3, h * 3), Image.BILINEAR).convert("RGB")
    image.save(out, quality=90)
    return out


def timed(command: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit status) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        print(f"  {' '.join(command[1:3])}: exit {done.returncode}: {tail}", file=sys.stderr)
    return wall, cpu, done.returncode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def multipart(path: Path) -> tuple[bytes, str]:
    boundary = "digitrecbenchboundary"
    body = io.BytesIO()
    body.write(f"--{boundary}\r\n".encode())
    body.write(f'Content-Disposition: form-data; name="file"; filename="{path.name}"\r\n'.encode())
    body.write(b"Content-Type: image/jpeg\r\n\r\n")
    body.write(path.read_bytes())
    body.write(f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def serve_times(digitrec: str, env: dict, image: Path, limit: float = 900.0) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = time.perf_counter()
    server = subprocess.Popen(
        [digitrec, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    out = {}
    try:
        while time.perf_counter() - start < limit:
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with status {server.returncode}")
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=5) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        healthy = time.perf_counter()
        body, kind = multipart(image)
        request = urllib.request.Request(
            f"{base}/api/predict", data=body, headers={"Content-Type": kind}
        )
        with urllib.request.urlopen(request, timeout=limit) as reply:
            answer = json.loads(reply.read())
        answered = time.perf_counter()
        out = {
            "serve_health": healthy - start,
            "serve_predict": answered - start,
            "first_request": answered - healthy,
            "serve_text": answer.get("text"),
        }
    finally:
        server.terminate()
        server.wait(timeout=60)
    return out


def measure(bin_dir: Path, model: Path, mnist: Path) -> dict:
    digitrec = str(bin_dir / "digitrec")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        tmp = Path(tmp)
        home = tmp / "home"
        (home / "models").mkdir(parents=True)
        (home / "datasets").mkdir()
        (home / "models" / "default").symlink_to(model.resolve())
        (home / "datasets" / "mnist.npz").symlink_to(mnist.resolve())
        cache = tmp / "numba-cache"
        cache.mkdir()
        env = {**os.environ, "DIGITREC_HOME": str(home), "NUMBA_CACHE_DIR": str(cache)}
        image = photo(mnist, tmp / "photo.jpg")
        has_step = subprocess.run(
            [digitrec, "compile-kernels", "--help"], env=env, capture_output=True
        ).returncode == 0
        if has_step:
            results["install"] = timed([digitrec, "compile-kernels"], env)[:2]
        helps = [timed([digitrec, "--help"], env)[:2] for _ in range(3)]
        results["help"] = tuple(statistics.median(column) for column in zip(*helps, strict=True))
        for key in ("predict1", "predict2"):
            results[key] = timed([digitrec, "predict", str(image)], env)[:2]
        for key in ("train1", "train2"):
            command = [digitrec, "train", "knn", "-d", "uci-digits", "-o", str(tmp / "uci")]
            results[key] = timed(command, env)[:2]
        served = serve_times(digitrec, env, image)
        for key in ("serve_health", "serve_predict", "first_request"):
            results[key] = (served[key], None)
        results["serve_text"] = served["serve_text"]
    return results


def cell(value) -> str:
    if value is None:
        return f"{'-':>16}"
    wall, cpu = value
    return f"{wall:>8.2f}" + (f" ({cpu:5.1f})" if cpu is not None else " " * 8)


def table(after: dict, before: dict | None) -> str:
    head = f"{'what (wall s, CPU s in brackets)':<38}"
    lines = [head + (f"{'before':>16}" if before else "") + f"{'after':>16}"]
    for key, label in ROWS:
        row = f"{label:<38}"
        if before is not None:
            row += cell(before.get(key))
        lines.append(row + cell(after.get(key)))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    default_home = Path(os.environ.get("DIGITREC_HOME", Path.home() / ".cache" / "digitrec"))
    parser.add_argument("--model", type=Path, default=default_home / "models" / "default")
    parser.add_argument("--mnist", type=Path, default=default_home / "datasets" / "mnist.npz")
    parser.add_argument("--save", type=Path, help="write this run's numbers here (JSON)")
    parser.add_argument("--compare", type=Path, help="a saved run to print beside this one")
    args = parser.parse_args()
    results = measure(args.bin, args.model, args.mnist)
    if args.save:
        args.save.write_text(json.dumps(results, indent=1))
    before = json.loads(args.compare.read_text()) if args.compare else None
    print(table(results, before))
    return 0


if __name__ == "__main__":
    sys.exit(main())
