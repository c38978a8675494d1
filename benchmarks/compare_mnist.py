"""The registry's models side by side on full MNIST (60,000 train, 10,000 test images).

Runs :func:`digitrec.evaluation.compare.compare` with its default models (knn, random-forest,
linear-svc, cnn, and svc-rbf on a stratified 10,000-image subset of the training split) and
prints one table: accuracy, fit seconds (wall clock and CPU), predict seconds per 1,000
images, the saved model's size, and the peak resident memory of the child process that ran
the model (``base MB`` is that peak just before fitting: interpreter, libraries, data).
The last column gives each model's test errors as a multiple of the kNN reference's.

    .venv/bin/python benchmarks/compare_mnist.py
    .venv/bin/python benchmarks/compare_mnist.py --models knn,random-forest --json

The load average is printed before and after: on cores shared with other work the seconds
are inflated, so compare rows of one run, and read "fit cpu s" beside "fit s".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from digitrec.evaluation import compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated kinds (default: all)")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args(argv)

    kinds = args.models.split(",") if args.models else None
    print(f"cores: {os.cpu_count()}; load average before: {compare.load_average()}", flush=True)
    started = time.perf_counter()
    rows, skipped = compare.compare(
        "mnist",
        kinds,
        args.train_size,
        args.test_size,
        # Each row as it comes: a full run takes long enough that partial results matter.
        on_row=lambda row: print(f"done: {row.to_json()}", flush=True),
    )
    minutes = (time.perf_counter() - started) / 60
    print(f"load average after: {compare.load_average()}; {minutes:.1f} min in all")
    for reason in skipped:
        print(reason)
    print()
    print(compare.format_table(rows))
    reference = next((row for row in rows if row.model == "knn"), None)
    if reference is not None and reference.accuracy < 1:
        print("\ntest errors as a multiple of knn's:")
        for row in rows:
            print(f"  {row.model:<14} {(1 - row.accuracy) / (1 - reference.accuracy):.2f}x")
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
