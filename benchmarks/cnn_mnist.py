"""Full-MNIST benchmark of digitrec's CNN, beside the tutorials' kNN (k=3) as the reference.

Trains ``CNNClassifier`` on the 60,000 training images (its validation split is carved from
them), scores it on the 10,000 test images and prints one table: test accuracy, training
seconds, seconds to predict the 10k test images, peak resident memory and parameter count.
Each model runs in its own child process so that its peak memory is its own.

    .venv/bin/python benchmarks/cnn_mnist.py                 # CNN + kNN reference
    .venv/bin/python benchmarks/cnn_mnist.py --no-baseline --epochs 6 --threads 1

The machine's load average is printed before and after: with other work on the same cores
the wall-clock seconds are inflated, so compare rows from one run, not across runs. "train
cpu s" is the CPU time the training used (all threads): with one thread it is close to the
wall-clock time the same training takes on an otherwise idle core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def run_cnn(
    epochs: int, threads: int | None, seed: int, verbose: bool, limit: int | None
) -> dict[str, Any]:
    from digitrec.data.datasets import load_mnist
    from digitrec.nets.cnn import CNNClassifier

    ds = load_mnist()
    model = CNNClassifier(epochs=epochs, n_threads=threads, seed=seed, verbose=verbose)
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(ds.X_train[:limit], ds.y_train[:limit])
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    started = time.perf_counter()
    predicted = model.predict(ds.X_test)
    predict_seconds = time.perf_counter() - started
    best = model.best_epoch_ - 1
    return {
        "what": "digitrec CNNClassifier",
        "accuracy": float((predicted == ds.y_test).mean()),
        "train_s": train_seconds,
        "train_cpu_s": train_cpu_seconds,
        "predict_s": predict_seconds,
        "peak_mb": _peak_rss_mb(),
        "params": model.n_parameters_,
        "notes": (
            f"{model.n_epochs_} epochs, best {model.best_epoch_} "
            f"(val acc {model.history_['val_accuracy'][best]:.4f}), "
            f"threads {threads or len(os.sched_getaffinity(0))}"
        ),
    }


def run_knn() -> dict[str, Any]:
    """The tutorials' model: scikit-learn kNN, k=3, raw pixels, brute force."""
    from sklearn.neighbors import KNeighborsClassifier

    from digitrec.data.datasets import load_mnist

    ds = load_mnist()
    model = KNeighborsClassifier(n_neighbors=3, algorithm="brute")
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(ds.X_train.reshape(len(ds.X_train), -1).astype("float32"), ds.y_train)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - cpu_started
    started = time.perf_counter()
    predicted = model.predict(ds.X_test.reshape(len(ds.X_test), -1).astype("float32"))
    predict_seconds = time.perf_counter() - started
    return {
        "what": "scikit-learn kNN k=3 (reference)",
        "accuracy": float((predicted == ds.y_test).mean()),
        "train_s": train_seconds,
        "train_cpu_s": train_cpu_seconds,
        "predict_s": predict_seconds,
        "peak_mb": _peak_rss_mb(),
        "params": 0,
        "notes": "stores the 60k training images",
    }


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux (bytes on macOS).
    scale = 1 / 1024**2 if sys.platform == "darwin" else 1 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _in_child(function, *args) -> dict[str, Any]:
    # spawn, not fork: a fresh interpreter, so the peak memory is this model's alone.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def print_table(rows: list[dict[str, Any]]) -> None:
    reference = rows[-1] if rows[-1]["what"].endswith("(reference)") else None
    header = (
        f"{'what':34} {'test acc':>8} {'train s':>8} {'train cpu s':>11} {'predict s':>9} "
        f"{'peak MB':>8} "
        f"{'params':>8} {'errors vs ref':>13}  notes"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = (
            f"{(1 - row['accuracy']) / (1 - reference['accuracy']):.2f}x"
            if reference and reference["accuracy"] < 1
            else "-"
        )
        print(
            f"{row['what']:34} {row['accuracy']:8.4f} {row['train_s']:8.1f} "
            f"{row['train_cpu_s']:11.1f} {row['predict_s']:9.2f} {row['peak_mb']:8.0f} "
            f"{row['params']:8,d} {ratio:>13}  {row['notes']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="default: the model's own")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the kNN reference")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--limit", type=int, default=None, help="train the CNN on the first N images (smoke test)"
    )
    args = parser.parse_args(argv)

    from digitrec.nets.cnn import CNNClassifier

    epochs = args.epochs or CNNClassifier().epochs
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = [_in_child(run_cnn, epochs, args.threads, args.seed, not args.quiet, args.limit)]
    if not args.no_baseline:
        rows.append(_in_child(run_knn))
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"cores: {os.cpu_count()}\n")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
