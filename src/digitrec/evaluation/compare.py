"""Several model kinds trained and tested on one dataset and split, side by side.

Each model runs in its own child process, started with ``spawn`` so that it begins from a
fresh interpreter: its peak memory is then its own, read from ``resource.getrusage``'s
``ru_maxrss`` (the high-water mark of the child's resident set). That peak includes the
interpreter, the libraries and the dataset, so every row also reports the peak just before
fitting (``base_mb``): the difference is what fitting, predicting and saving added, including
libraries imported on the way (torch, for the cnn).

Kernel SVMs fit in time that grows with the square of the training set, so a model kind can
carry a training-size limit (:data:`TRAIN_LIMITS`); such a model trains on a stratified
subset of the training split, tests on the same test images as the others, and its row says
so in ``note``.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from digitrec import models
from digitrec import progress as display
from digitrec.data import datasets
from digitrec.errors import DigitrecError, ParameterError

DEFAULT_MODELS: tuple[str, ...] = ("knn", "random-forest", "linear-svc", "cnn", "svc-rbf")
TRAIN_LIMITS: dict[str, int] = {"svc-rbf": 10_000}
CNN_IMAGE_SHAPE = (28, 28)


@dataclass
class Row:
    """One model's line of the comparison."""

    model: str
    dataset: str
    n_train: int
    n_test: int
    accuracy: float
    fit_seconds: float
    fit_cpu_seconds: float  # CPU time of all the threads while fitting (fit_seconds: wall clock)
    predict_seconds_per_1000: float
    size_mb: float  # the saved model directory
    peak_mb: float  # child process high-water resident memory
    base_mb: float  # the same, just before fitting: interpreter, libraries, dataset
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        row = asdict(self)
        for key, digits in (
            ("accuracy", 6),
            ("fit_seconds", 3),
            ("fit_cpu_seconds", 3),
            ("predict_seconds_per_1000", 4),
            ("size_mb", 3),
            ("peak_mb", 1),
            ("base_mb", 1),
        ):
            row[key] = round(row[key], digits)
        return row


def choose_models(requested: list[str] | None, image_shape: tuple[int, ...]) -> tuple[list, list]:
    """The model kinds to run and, for defaults left out, why.

    An explicit request is checked and refused whole if one kind cannot run; the default
    list quietly leaves out the cnn where it cannot run (other image sizes, no torch).
    """
    if requested:
        for name in requested:
            models.kind(name)
            reason = _cannot_run(name, image_shape)
            if reason:
                raise ParameterError(f"{name}: {reason}")
        return list(dict.fromkeys(requested)), []
    chosen, skipped = [], []
    for name in DEFAULT_MODELS:
        reason = _cannot_run(name, image_shape)
        if reason:
            skipped.append(f"{name} left out: {reason}")
        else:
            chosen.append(name)
    return chosen, skipped


def _cannot_run(name: str, image_shape: tuple[int, ...]) -> str | None:
    if name != "cnn":
        return None
    if tuple(image_shape) != CNN_IMAGE_SHAPE:
        return f"it takes 28x28 images, the dataset has {image_shape[0]}x{image_shape[1]}"
    if importlib.util.find_spec("torch") is None:
        return "it needs the cnn extra: pip install 'digitrec[cnn]'"
    return None


def compare(
    dataset: str,
    kinds: list[str] | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
    limits: dict[str, int] | None = None,
    source: str | Path | None = None,
    progress: bool = True,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[list[Row], list[str]]:
    """Train and test each model kind on one split; returns the rows and what was left out.

    ``params`` maps a kind to parameters overriding its defaults; ``limits`` (default
    :data:`TRAIN_LIMITS`) caps the training images of a kind. ``on_row`` is called with each
    row as soon as it is measured (full-MNIST runs take many minutes per model).
    """
    data = _subset(datasets.load(dataset, source), train_size, test_size, seed)
    chosen, skipped = choose_models(kinds, data.image_shape)
    params = params or {}
    limits = TRAIN_LIMITS if limits is None else limits
    for name in chosen:
        models.build(name, params.get(name))  # refuse bad parameters before any training
    job = {
        "dataset": dataset,
        "source": None if source is None else str(source),
        "train_size": train_size,
        "test_size": test_size,
        "seed": seed,
    }
    rows = []
    bar = display.bar(chosen, desc="comparing", unit="model", enabled=progress)
    for name in bar:
        bar.set_postfix(model=name)
        limit = limits.get(name)
        row = _in_child(
            measure, {**job, "kind": name, "params": params.get(name, {}), "limit": limit}
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)
    return rows, skipped


def _subset(data: datasets.Dataset, train_size, test_size, seed) -> datasets.Dataset:
    if train_size is None and test_size is None:
        return data
    return data.subset(train_size, test_size, seed)


def _in_child(function, job: dict[str, Any]) -> Row:
    # spawn, not fork: a fresh interpreter whose memory high-water mark is this model's alone.
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            return pool.submit(function, job).result()
    except BrokenProcessPool as exc:
        raise DigitrecError(
            f"the process measuring {job['kind']} died (out of memory?): {exc}"
        ) from exc


def measure(job: dict[str, Any]) -> Row:
    """Load the split, train, test, save and measure one model kind (runs in the child)."""
    from digitrec.evaluation.metrics import evaluate

    data = _subset(
        datasets.load(job["dataset"], job["source"]),
        job["train_size"],
        job["test_size"],
        job["seed"],
    )
    n_available, note = len(data.y_train), ""
    if job["limit"] is not None and n_available > job["limit"]:
        data = data.subset(job["limit"], None, job["seed"])
        note = f"trained on {job['limit']:,} of {n_available:,} images (stratified)"
    base_mb = _peak_rss_mb()
    cpu_start = time.process_time()
    model = models.train(job["kind"], data, job["params"])
    fit_cpu = time.process_time() - cpu_start
    result = evaluate(model, data.X_test, data.y_test)
    with tempfile.TemporaryDirectory(prefix="digitrec-compare-") as tmp:
        saved = models.save(model, Path(tmp) / "model")
        size = sum(f.stat().st_size for f in saved.iterdir() if f.is_file())
    return Row(
        model=job["kind"],
        dataset=data.name,
        n_train=int(len(data.y_train)),
        n_test=int(len(data.y_test)),
        accuracy=result.accuracy,
        fit_seconds=float(model.info["fit_seconds"]),
        fit_cpu_seconds=fit_cpu,
        predict_seconds_per_1000=result.seconds / max(result.n, 1) * 1000,
        size_mb=size / 1e6,
        peak_mb=_peak_rss_mb(),
        base_mb=base_mb,
        note=note,
    )


def _peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux and in bytes on macOS.
    scale = 1 / 1e6 if sys.platform == "darwin" else 1024 / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def format_table(rows: list[Row]) -> str:
    """The rows as a fixed-width text table, one model a line."""
    header = (
        f"{'model':<14} {'train':>6} {'test':>6} {'accuracy':>8} {'fit s':>8} {'fit cpu s':>9} "
        f"{'pred s/1k':>9} {'size MB':>8} {'peak MB':>8} {'base MB':>8}  note"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.model:<14} {row.n_train:>6} {row.n_test:>6} {row.accuracy:>8.4f} "
            f"{row.fit_seconds:>8.1f} {row.fit_cpu_seconds:>9.1f} "
            f"{row.predict_seconds_per_1000:>9.3f} {row.size_mb:>8.2f} {row.peak_mb:>8.0f} "
            f"{row.base_mb:>8.0f}  {row.note}".rstrip()
        )
    return "\n".join(lines)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, to say how busy the cores were."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
