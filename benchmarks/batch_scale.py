"""Batch prediction throughput: one process vs a local Dask cluster of 1 and 2 workers.

Two inputs, read with a full-MNIST kNN (k=3, 60,000 references):

* 100,000 MNIST-style 28x28 tiles: the 10,000 MNIST test tiles, each shifted to ten
  positions, passed as an ``.npz`` array dataset. Nothing is decoded, so this measures
  the model and the batch machinery rather than PNG decoding.
* 2,000 synthetic phone photos (``digitrec.testing.synthetic.photos``, JPEG files in a folder):
  decoding and segmentation dominate.

Every configuration runs as the user runs it, ``digitrec predict-batch ... --json`` in a
fresh process, so each pays its own start-up (imports, model load, cluster start, the
model's trip to the workers); seconds are the child's wall clock. Peak memory is the
largest sum of resident memory over the child and all its descendants (Dask's nanny and
worker processes), sampled every 0.2 s; pages shared between processes count once per
process. Prints one table and exits 0.

    python benchmarks/batch_scale.py [--tiles 100000] [--photos 2000] [--workdir DIR]

With ``--references 60000,240000,540000`` it prints instead how one worker's cost grows with
the reference set (MNIST's training images plus shifted copies, ``digitrec.features.augment``): the
bytes shipped to each worker, the memory the model takes in a worker (references plus the
index over them), digits per second on one core for exact kNN, and the same for a faiss
IVF-PQ index (faiss-cpu, the ``bench`` extra) when installed.
Each size runs in a fresh process.

Timings are noisy on shared machines: the load average during the run is printed with the
table so the numbers can be read against it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIGITREC = Path(sys.executable).with_name("digitrec")
SHIFTS = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1), (0, 2)]
CONFIGS = [
    ("one process (no Dask)", ["--scheduler", "none"]),
    ("Dask LocalCluster, 1 worker", ["--workers", "1"]),
    ("Dask LocalCluster, 2 workers", ["--workers", "2"]),
]


def prepare_model(workdir: Path) -> Path:
    from digitrec import models
    from digitrec.data import datasets

    directory = workdir / "knn-mnist"
    if not (directory / "model.json").exists():
        model = models.train("knn", datasets.load("mnist"), {"n_neighbors": 3})
        models.save(model, directory)
    return directory


def prepare_tiles(workdir: Path, count: int) -> tuple[Path, list[str]]:
    from digitrec.data import datasets

    path = workdir / f"tiles-{count}.npz"
    test = datasets.load("mnist")
    copies = -(-count // len(test.y_test))
    shifted = [np.roll(test.X_test, shift, axis=(1, 2)) for shift in SHIFTS[:copies]]
    labels = np.tile(test.y_test, copies)[:count]
    if not path.exists():
        np.savez(path, images=np.concatenate(shifted)[:count])
    return path, [str(label) for label in labels]


def prepare_photos(workdir: Path, count: int) -> tuple[Path, list[str]]:
    from digitrec.testing import synthetic

    folder = workdir / f"photos-{count}"
    labels_file = folder / "labels.json"
    if not labels_file.exists():
        folder.mkdir(parents=True, exist_ok=True)
        labels = {}
        for i, (data, label) in enumerate(synthetic.photos(seed=0, count=count)):
            name = f"photo-{i:05d}.jpg"
            (folder / name).write_bytes(data)
            labels[str(folder / name)] = label
        labels_file.write_text(json.dumps(labels))
    labels = json.loads(labels_file.read_text())
    return folder, [labels[name] for name in sorted(labels)]


class PeakTreeMemory:
    """Largest summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self._root, *self._root.children(recursive=True)]
                total = 0
                for proc in procs:
                    with contextlib.suppress(psutil.Error):  # a process may just have ended
                        total += proc.memory_info().rss
                self.peak = max(self.peak, total)
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 1e6


def run(model: Path, source: Path, output: Path, options: list[str], chunk: int | None) -> dict:
    # Each configuration starts from nothing: no finished parts to resume from.
    shutil.rmtree(output.with_name(output.name + ".parts"), ignore_errors=True)
    output.unlink(missing_ok=True)
    command = [str(DIGITREC), "predict-batch", str(model), str(source), "-o", str(output),
               "--json", *options]  # fmt: skip
    if chunk is not None:
        command += ["--chunk-size", str(chunk)]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    memory = PeakTreeMemory(child.pid)
    stdout, stderr = child.communicate()
    seconds = time.perf_counter() - start
    peak = memory.stop()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    summary = json.loads(stdout)
    return {"seconds": seconds, "peak_mb": peak, "summary": summary}


def accuracy(output: Path, labels: list[str]) -> float:
    from digitrec.apps.batch import read_output

    texts = [row["text"] for row in read_output(output)]
    return float(np.mean([text == label for text, label in zip(texts, labels, strict=True)]))


def references(n: int, n_queries: int = 2000) -> dict:
    """One worker's cost for ``n`` references: memory, bytes shipped, 1-core speed."""
    import pickle

    import psutil
    from threadpoolctl import threadpool_limits

    from digitrec.data import datasets
    from digitrec.features.augment import augment
    from digitrec.neighbors.knn import KNNClassifier, vote

    mnist = datasets.load("mnist")
    copies = -(-n // len(mnist.y_train))
    # Copy-major order: the first 60,000 rows are MNIST itself, then whole shifted copies.
    X_aug, y_aug, _ = augment(mnist.X_train, mnist.y_train, shift=1)
    X = X_aug.reshape(len(mnist.y_train), 9, -1)[:, :copies].transpose(1, 0, 2).reshape(-1, 784)
    y = y_aug.reshape(len(mnist.y_train), 9)[:, :copies].T.reshape(-1)
    X, y = np.ascontiguousarray(X[:n]), y[:n]
    queries = mnist.X_test[:n_queries].reshape(n_queries, -1)
    truth = mnist.y_test[:n_queries]
    rss = psutil.Process().memory_info().rss
    out: dict = {"n": n}
    with threadpool_limits(limits=1):
        start = time.perf_counter()
        knn = KNNClassifier(n_neighbors=3, n_jobs=1).fit(X, y)
        out["knn_build_s"] = time.perf_counter() - start
        out["knn_worker_mb"] = (psutil.Process().memory_info().rss - rss + X.nbytes) / 1e6
        out["knn_shipped_mb"] = len(pickle.dumps(knn, protocol=5)) / 1e6
        knn.predict(queries[:10])  # load the compiled kernels outside the timing
        start = time.perf_counter()
        predicted = knn.predict(queries)
        out["knn_per_s"] = n_queries / (time.perf_counter() - start)
        out["knn_accuracy"] = float(np.mean(predicted == truth))
    try:
        import faiss
    except ImportError:
        return out
    faiss.omp_set_num_threads(1)
    start = time.perf_counter()
    # 256 inverted lists trained on a 30,000-image sample keep the one-off build to tens
    # of seconds on one core (all 60,000 with 4 x sqrt(n) lists took 174 s); the codes are
    # 56 bytes per reference whatever the number of lists.
    lists = 256
    sample = np.random.default_rng(0).choice(n, size=min(n, 30_000), replace=False)
    index = faiss.index_factory(784, f"IVF{lists},PQ56")
    index.train(X[np.sort(sample)].astype(np.float32))
    for rows in range(0, n, 100_000):
        index.add(X[rows : rows + 100_000].astype(np.float32))
    out["ivfpq_build_s"] = time.perf_counter() - start
    out["ivfpq_shipped_mb"] = len(faiss.serialize_index(index)) / 1e6
    out["ivfpq_worker_mb"] = out["ivfpq_shipped_mb"]  # the codes and lists are all it holds
    index.nprobe = 16
    start = time.perf_counter()
    distances, indices = index.search(queries.astype(np.float32), 3)
    out["ivfpq_per_s"] = n_queries / (time.perf_counter() - start)
    probabilities = vote(y[indices], distances, 10, "uniform")
    out["ivfpq_accuracy"] = float(np.mean(np.argmax(probabilities, axis=1) == truth))
    return out


def reference_table(sizes: list[int]) -> None:
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()}", flush=True)
    results = []
    for n in sizes:
        # A fresh process per size, so memory measured is that size's alone.
        done = subprocess.run(
            [sys.executable, __file__, "--one-reference-size", str(n)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    print(f"\nload average after: {os.getloadavg()}\n")
    print("| references | engine | build s | shipped MB | worker MB | digits/s/core | accuracy |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        for engine, key in (
            ("exact kNN (digitrec)", "knn"),
            ("faiss IVF-PQ56, nprobe 16", "ivfpq"),
        ):
            if f"{key}_per_s" not in r:
                continue
            print(
                f"| {r['n']:,} | {engine} | {r[key + '_build_s']:.1f} | "
                f"{r[key + '_shipped_mb']:.0f} | {r[key + '_worker_mb']:.0f} | "
                f"{r[key + '_per_s']:.0f} | {r[key + '_accuracy']:.4f} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--photos", type=int, default=2_000)
    parser.add_argument("--chunk-size", type=int, default=None, help="default: digitrec's")
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs here")
    parser.add_argument("--references", default=None, help="comma-separated sizes")
    parser.add_argument("--one-reference-size", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_reference_size:
        print(json.dumps(references(args.one_reference_size)))
        return 0
    if args.references:
        reference_table([int(n) for n in args.references.split(",")])
        return 0
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="batch-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"cores: {os.cpu_count()}, load average before: {os.getloadavg()}", flush=True)
    model = prepare_model(workdir)
    inputs = []
    if args.tiles:
        inputs.append((f"{args.tiles:,} MNIST tiles (.npz)", *prepare_tiles(workdir, args.tiles)))
    if args.photos:
        inputs.append((f"{args.photos:,} photos (JPEG)", *prepare_photos(workdir, args.photos)))
    rows = []
    for name, source, labels in inputs:
        baseline = None
        for config, options in CONFIGS:
            output = workdir / "out.parquet"
            result = run(model, source, output, options, args.chunk_size)
            result["accuracy"] = accuracy(output, labels)
            baseline = baseline or result["seconds"]
            rows.append((name, config, result, result["seconds"] / baseline))
            print(f"{name} | {config}: {result['seconds']:.1f} s", flush=True)
    print(f"\nload average after: {os.getloadavg()}\n")
    header = (
        f"| {'input':<24} | {'how':<28} | {'images/s':>8} | {'seconds':>7} | "
        f"{'vs one process':>14} | {'peak MB':>7} | {'text right':>10} | {'errors':>6} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for name, config, result, ratio in rows:
        images = result["summary"]["images"]
        print(
            f"| {name:<24} | {config:<28} | {images / result['seconds']:>8.0f} | "
            f"{result['seconds']:>7.1f} | {ratio:>13.2f}x | {result['peak_mb']:>7.0f} | "
            f"{result['accuracy']:>10.4f} | {result['summary']['errors']:>6} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
