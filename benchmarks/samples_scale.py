"""Prediction latency with 0 and with 10,000 stored samples of one user.

Two web apps (FastAPI's TestClient, in this process) serve the same model: one with an empty
sample database, one whose database holds ``--samples`` corrections of the user who asks
(MNIST test digits). Requests alternate between the two, so both see the same machine load;
each is a canvas drawing of one digit sent as the page sends it, under that user's identity.
The first request of each app (which loads the samples) is left out, and the timed requests
start once their index is built.
Prints one table and exits 0.

    python benchmarks/samples_scale.py [--model DIR] [--samples 10000] [--requests 300]

Without --model it uses the default model (``digitrec train`` makes it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from serve_load import canvas_payloads  # benchmarks/ is on the path when run as a script
from tqdm import tqdm

from digitrec import config, models
from digitrec.apps.web.app import create_app
from digitrec.data import datasets
from digitrec.persistence.sample_db import SampleStore, database_path

USER = {"X-Digitrec-User": "bench"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    model = models.load(args.model or config.default_model_dir())
    mnist = datasets.load("mnist")
    tiles = mnist.X_test[: args.samples]
    labels = [int(y) for y in mnist.y_test[: args.samples]]
    # The same drawings serve_load.py sends, as JSON bodies.
    payloads = [p["json"] for p in canvas_payloads(args.requests)]
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as full:
        SampleStore(database_path(Path(full))).add_many(
            list(tiles), labels, USER["X-Digitrec-User"]
        )
        clients = {
            0: TestClient(create_app(model=model, home=Path(empty))),
            args.samples: TestClient(create_app(model=model, home=Path(full))),
        }
        times: dict[int, list[float]] = {n: [] for n in clients}
        start = time.perf_counter()
        for client in clients.values():  # loads the samples; their index is built behind it
            client.post("/api/predict", json=payloads[0], headers=USER).raise_for_status()
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        for client in clients.values():
            client.app.state.service.personal.wait_for_indexes()
        indexing = time.perf_counter() - start
        for payload in tqdm(payloads, desc="requests"):
            for n, client in clients.items():
                begin = time.perf_counter()
                client.post("/api/predict", json=payload, headers=USER).raise_for_status()
                times[n].append(time.perf_counter() - begin)
    base = np.percentile(times[0], 99)
    print(
        f"\nmodel {model.kind}; {args.requests} canvas requests each, alternating; "
        f"first requests (load {args.samples} samples) {warm_up:.1f} s, "
        f"then their index built in the background {indexing:.1f} s"
    )
    print(f"{'stored samples':>15} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'p99 ratio':>10}")
    for n, measured in times.items():
        ms = np.array(measured) * 1000
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"{n:>15,} {p50:>10.1f} {p90:>8.1f} {p99:>8.1f} {p99 / (base * 1000):>10.2f}")


if __name__ == "__main__":
    main()
