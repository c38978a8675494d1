"""Leave writers out (issue 15): how the default model's kind reads writers it was not
trained on, measured within UNIPEN's tuning writers, so that choices can be made without
looking at the held-out writers.

    python benchmarks/writer_folds.py                 # two folds, 200 numbers each
    python benchmarks/writer_folds.py --folds 4242 --count 50   # a quick look
    python benchmarks/writer_folds.py --models build/folds --sets numbers   # train once, reuse

For each fold, five of the 20 tuning writers (a seeded choice: ``--folds`` gives the seeds;
the default two folds share no writer) are left out of the training data, which is
otherwise ``mnist+unipen``'s (MNIST's training images, the other tuning writers' digits
drawn as :func:`digitrec.data.pen_digits.training_tiles` draws them, the slashed and
flagged MNIST copies of :mod:`digitrec.features.styles`). A ``knn-idm-hknn`` model trained
on that reads the left-out writers' digits as canvas drawings and paper photos and their
whole numbers (:mod:`digitrec.testing.unipen`, seed ``--seed``), every image the way
``digitrec predict`` reads it.

The score weights of :mod:`digitrec.reading.cuts`, the flag lengths of
:mod:`digitrec.features.styles` and ``knn-idm-hknn``'s ``network_weight`` were chosen with
these folds while the shipped network was trained on MNIST alone; the held-out writers of
``benchmarks/real_world.py`` judge them. The shipped network is now trained on
``mnist+unipen``, so it has seen every tuning writer, left-out ones included: the script
says so, and its numbers are then optimistic wherever the network's opinion counts.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from real_world import score_set

from digitrec import models
from digitrec.data import datasets, pen_digits
from digitrec.nets.onnx_network import SHIPPED_DIRECTORY
from digitrec.testing import unipen

FOLD_SIZE = 5


def fold_writers(digits: pen_digits.PenDigits, seed: int) -> set[str]:
    """``FOLD_SIZE`` of the tuning writers, chosen with ``seed``."""
    tuning = digits.writer_indices("tuning")
    writers = sorted(set(digits.writer[tuning].tolist()))
    return set(np.random.default_rng(seed).choice(writers, FOLD_SIZE, replace=False).tolist())


def training_data(
    mnist: datasets.Dataset, digits: pen_digits.PenDigits, left_out: set[str]
) -> datasets.Dataset:
    """``mnist+unipen`` without the digits of the ``left_out`` writers."""
    tuning = digits.writer_indices("tuning")
    kept = np.array([i for i in tuning if str(digits.writer[i]) not in left_out])
    tiles, labels = datasets.extra_tiles(mnist, digits, kept)
    return datasets.Dataset(
        "mnist+unipen-without-fold",
        np.concatenate([mnist.X_train, tiles]),
        np.concatenate([mnist.y_train, labels]),
        mnist.X_test,
        mnist.y_test,
    )


def fold_model(
    mnist: datasets.Dataset,
    digits: pen_digits.PenDigits,
    left_out: set[str],
    directory: Path | None,
) -> models.Model:
    """The fold's model: loaded from ``directory`` when one was saved there, else trained
    (and saved there, when given)."""
    if directory is not None and directory.exists():
        return models.load(directory)
    started = time.perf_counter()
    model = models.train("knn-idm-hknn", training_data(mnist, digits, left_out), {})
    print(f"  trained in {time.perf_counter() - started:.0f} s", flush=True)
    if directory is not None:
        models.save(model, directory)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folds", default="4242,8", help="comma-separated fold seeds")
    parser.add_argument("--seed", type=int, default=9100, help="seed of the sets read")
    parser.add_argument("--count", type=int, default=200, help="numbers per fold")
    parser.add_argument(
        "--models",
        type=Path,
        help="keep each fold's model in DIR/fold-SEED and reuse it when it is there "
        "(training one takes minutes; a change to reading needs no new model)",
    )
    parser.add_argument(
        "--sets", default="drawings,photos,numbers", help="comma-separated sets to read"
    )
    args = parser.parse_args()
    wanted = args.sets.split(",")
    unknown = sorted(set(wanted) - {"drawings", "photos", "numbers"})
    if unknown:
        parser.error(f"unknown set {', '.join(unknown)}; choose from drawings, photos, numbers")

    mnist = datasets.load("mnist")
    digits = pen_digits.load()
    network_data = json.loads((SHIPPED_DIRECTORY / "model.json").read_text())["dataset"]
    if "unipen" in network_data["name"]:
        print(
            f"note: the shipped network was trained on {network_data['name']}, which holds "
            "the left-out writers: these folds are optimistic where its opinion counts",
            flush=True,
        )
    rows = []
    for fold in (int(seed) for seed in args.folds.split(",")):
        left_out = fold_writers(digits, fold)
        print(f"fold {fold}: leaving out {', '.join(sorted(left_out))}", flush=True)
        model = fold_model(mnist, digits, left_out, args.models and args.models / f"fold-{fold}")
        tuning = digits.writer_indices("tuning")
        mine = np.array([i for i in tuning if str(digits.writer[i]) in left_out])
        per_writer = unipen.per_writer(mine, digits, args.count, args.seed)
        for name in wanted:
            if name == "numbers":
                items = unipen.numbers(digits, mine, args.seed, args.count)
            else:
                make = unipen.drawings if name == "drawings" else unipen.photos
                items = make(digits, per_writer, args.seed)
            result = score_set(f"fold {fold} {name}", model, items)
            rows.append((fold, name, result))

    print(f"{'fold':>6} {'set':10} {'images':>6} {'exact':>6} {'count off':>9}")
    for fold, name, result in rows:
        exact = result.exact / result.images
        print(f"{fold:>6} {name:10} {result.images:>6} {exact:6.3f} {result.count_off:>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
