"""knn-idm's probabilities before (the single neighbour's vote: 100% for every answer) and
after calibration (a softmin of each class's nearest IDM distance, temperature fitted at
training time), side by side on one trained model.

    python benchmarks/calibration_idm.py                    # 10,000 MNIST training images
    python benchmarks/calibration_idm.py --train-size 60000 --mnist-test 10000

Measured per digit: on MNIST test images, and on the single-number photo, number and
drawing sets of benchmarks/pages.py (held-out seeds 1001-1003; ``--tuning``: 9001-9003),
read as `digitrec predict` reads them. Printed: accuracy, mean probability of the answer,
expected calibration error (15 bins) and log loss of the true class.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from pages import confidence_sets, expected_calibration_error

from digitrec import models
from digitrec.data import datasets
from digitrec.reading.page import MIN_CONFIDENCE

# A true class given no probability at all costs as much as this probability.
_FLOOR = 1e-6


def mnist_digits(model: models.Model, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(probability of the answer, right, probability of the true class) per image."""
    proba = model.predict_proba(images)
    answer = np.argmax(proba, axis=1)
    true = np.searchsorted(model.classes, labels)
    right = model.classes[answer] == labels
    return np.column_stack([proba.max(axis=1), right, proba[np.arange(len(labels)), true]])


def row(name: str, digits: np.ndarray) -> str:
    ece = expected_calibration_error(digits[:, 0], digits[:, 1])
    loss = f"{'-':>9}"
    if digits.shape[1] > 2:  # the true class's probability is known
        loss = f"{-np.log(np.maximum(digits[:, 2], _FLOOR)).mean():>9.4f}"
    return (
        f"{name:<44}{len(digits):>6}{digits[:, 1].mean():>10.4f}{digits[:, 0].mean():>10.4f}"
        f"{ece:>8.4f}{loss}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-size", type=int, default=10_000, help="stratified subset")
    parser.add_argument("--mnist-test", type=int, default=2000, help="MNIST test images")
    parser.add_argument("--sets-count", type=int, default=100, help="pages.py's set scale")
    parser.add_argument("--tuning", action="store_true", help="tuning seeds, not held-out")
    args = parser.parse_args(argv)

    mnist = datasets.load("mnist").subset(args.train_size, args.mnist_test, 0)
    started = time.perf_counter()
    model = models.train("knn-idm", mnist, {})
    temperature = model.estimator.temperature_
    print(f"knn-idm on {len(mnist.y_train)} MNIST images, fitted in "
          f"{time.perf_counter() - started:.0f} s; temperature {temperature:.2f}")  # fmt: skip
    seed = 9000 if args.tuning else 1000
    results = {}
    for name, value in (("before: vote", None), ("after: calibrated", temperature)):
        # The fitted model with and without its temperature: the same neighbours either way.
        model.estimator.temperature_ = value
        on_mnist = mnist_digits(model, mnist.X_test, mnist.y_test)
        _, sets, _ = confidence_sets(model, seed, args.sets_count, MIN_CONFIDENCE)
        results[name] = (on_mnist, sets)
    header = f"{'model / digits':<44}{'n':>6}{'accuracy':>10}{'mean p':>10}{'ECE':>8}"
    print(f"\n{header}{'log loss':>9}")
    for name, (on_mnist, sets) in results.items():
        print(row(f"{name}, MNIST test", on_mnist))
        print(row(f"{name}, photos+numbers+drawings", sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
