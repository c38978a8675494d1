"""Batch prediction: read the digits in many images, on a Dask cluster or in this process.

``predict_batch`` splits the input into chunks of images. Each chunk is read, segmented and
classified as one task (:func:`predict_chunk`), on Dask workers or in this process; the model
travels to each worker once (``client.scatter(..., broadcast=True)``) and the tasks refer to
it. Every finished chunk is written atomically to ``OUTPUT.parts/chunk-NNNNN.parquet``, so a
rerun with the same OUTPUT computes only the chunks that are missing; at the end the parts
are combined, in input order, into OUTPUT (Parquet or CSV) in one atomic rename.

A bad image becomes a row with its error; only a broken model or cluster stops the job.

Columns, with ``layout="number"`` (every image one number; the default): ``path``,
``text`` (the digits read, left to right), ``digits`` (JSON list of
``{"digit", "probability", "box"}``), ``probabilities`` (JSON list, per digit, of the ten
class probabilities), ``diagnosis`` (why nothing was read from a readable image, such as
"no ink found"), ``error`` (why the image could not be read) and ``path_bytes``.

With any other layout (``auto``, ``lines``, ``table``: each image read as a page, see
:func:`digitrec.reading.page.read_page`) there is one row per field (number) instead:
``path``, ``line`` and ``field`` (0-based: the line on the page, top to bottom, and the
field in its line, left to right), ``column`` (the table column, ``table`` only), ``text``
(e.g. ``-4``, ``3.5``), ``confidence`` (the product of its digits'), ``needs_review``,
``box`` (JSON ``[x, y, width, height]``), ``diagnosis`` (why it needs review, or why
nothing was read from the image), ``error`` and ``path_bytes``. An image with no field
(nothing read, or an error) still gets one row, with ``line`` and ``field`` empty.

A file name that is not valid UTF-8 (possible on Linux) cannot be written as text: ``path``
shows it with each undecodable byte as ``\\xNN``, and ``path_bytes`` holds the name's exact
bytes in base64 (``os.fsdecode(base64.b64decode(...))`` gives the path back); for every
other name ``path_bytes`` is empty.
"""

from __future__ import annotations

import base64
import csv
import glob
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import models
from digitrec import progress as display
from digitrec.data.folders import (
    READABLE_SUFFIXES,
    files_matching,
    files_under,
    labelled_image_files,
)
from digitrec.data.images import load_image
from digitrec.errors import DatasetError, DigitrecError, ParameterError
from digitrec.evaluation.dask_runner import dask_client, scheduler_choice
from digitrec.persistence import model_store as store
from digitrec.persistence.atomic import atomic_write_bytes, atomic_write_text
from digitrec.reading.recognize import Reading, read_images

COLUMNS = ("path", "text", "digits", "probabilities", "diagnosis", "error", "path_bytes")
# One row per field (number) when images are read as pages; typed, so a spreadsheet or
# pandas gets numbers and booleans.
FIELD_COLUMNS = (
    ("path", "string"),
    ("line", "int64"),
    ("field", "int64"),
    ("column", "int64"),
    ("text", "string"),
    ("confidence", "float64"),
    ("needs_review", "bool"),
    ("box", "string"),
    ("diagnosis", "string"),
    ("error", "string"),
    ("path_bytes", "string"),
)
# Chunks: about 64 per input, so even a small cluster gets several per worker thread, of
# 16 to 500 images, so per-task overhead stays small and every part stays a few MB.
TARGET_CHUNKS = 64
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 500
PARTS_FORMAT = "digitrec-batch-parts"
# 2: parts record how many images they hold (a part of field rows has more rows than images).
PARTS_FORMAT_VERSION = 2
_IMAGES_KEY = b"digitrec.images"
# A folder input lists every image file, also of the types load_image refuses, so each gets
# a row saying why it was not read instead of vanishing silently; files that are not images
# (notes, a previous run's output) are not listed. A glob lists whatever it matches.
LISTED_SUFFIXES = READABLE_SUFFIXES | {
    ".gif", ".bmp", ".dib", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".jp2",
    ".j2k", ".jpx", ".ico", ".svg", ".pbm", ".pgm", ".ppm", ".pnm", ".tga", ".psd", ".dng",
}  # fmt: skip
_OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


# --- input ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One task's worth of images: file paths to read, or images already decoded."""

    index: int
    names: list[str]
    images: np.ndarray | None = None  # (n, h, w) uint8 when the input is an array
    single_digit: bool = False  # folder: datasets hold one digit per file


@dataclass(frozen=True)
class BatchInput:
    """What a batch reads, in a fixed order, and a fingerprint of it for resuming."""

    spec: str
    names: list[str]
    fingerprint: str
    images: np.ndarray | None = None
    single_digit: bool = False

    def __len__(self) -> int:
        return len(self.names)

    def n_chunks(self, chunk_size: int) -> int:
        return -(-len(self.names) // chunk_size)

    def chunk(self, index: int, chunk_size: int) -> Chunk:
        span = slice(index * chunk_size, (index + 1) * chunk_size)
        images = None if self.images is None else self.images[span]
        return Chunk(index, self.names[span], images, self.single_digit)


def resolve_input(spec: str | Path) -> BatchInput:
    """``INPUT`` -> the images it names.

    A folder (searched recursively for image files), a glob pattern, one image file, an
    ``.npz`` file holding an ``images`` array ``(n, h, w)``, or ``folder:PATH`` (a labelled
    folder dataset, ``PATH/<digit>/*``, read one digit per file as :mod:`digitrec.data.datasets`
    does).
    """
    text = str(spec)
    if text.startswith("folder:"):
        return _folder_dataset(Path(text.removeprefix("folder:")), text)
    path = Path(text)
    if path.suffix.lower() == ".npz" and path.is_file():
        return _npz_input(path, text)
    if path.is_dir():
        files = [p for p in files_under(path) if p.suffix.lower() in LISTED_SUFFIXES]
    elif path.is_file():
        files = [path]
    elif glob.has_magic(text):
        files = files_matching(text)
    else:
        raise DatasetError(f"input {text!r} is not a folder, file, glob, .npz or folder:PATH")
    if not files:
        raise DatasetError(f"no image files found in {text!r}")
    return _files_input([str(p) for p in files], text, single_digit=False)


def _files_input(names: list[str], spec: str, single_digit: bool) -> BatchInput:
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogateescape")).hexdigest()
    return BatchInput(spec, names, digest, single_digit=single_digit)


def _folder_dataset(path: Path, spec: str) -> BatchInput:
    files = [str(file) for file, _ in labelled_image_files(path)]
    if not files:
        raise DatasetError(f"folder dataset {str(path)!r} has no images in 0/..9/")
    return _files_input(files, spec, single_digit=True)


def _npz_input(path: Path, spec: str) -> BatchInput:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "images" not in archive.files:
                raise DatasetError(f"{path}: no 'images' array (it has {archive.files})")
            images = archive["images"]
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable .npz of plain arrays ({exc})") from None
    if images.ndim != 3 or len(images) == 0:
        raise DatasetError(
            f"{path}: 'images' must be a non-empty (n, h, w) array, got {images.shape}"
        )
    if images.dtype != np.uint8:
        integral = np.issubdtype(images.dtype, np.integer) or images.dtype == np.bool_
        if not integral or images.min() < 0 or images.max() > 255:
            raise DatasetError(
                f"{path}: 'images' must hold integers 0..255 (uint8), got {images.dtype}"
            )
        images = images.astype(np.uint8)
    names = [f"{path}[{i}]" for i in range(len(images))]
    return BatchInput(spec, names, store.sha256_file(path), images=images)


# --- one chunk -----------------------------------------------------------------------------


def predict_chunk(
    model: models.Model,
    chunk: Chunk,
    layout: str = "number",
    min_confidence: float | None = None,
) -> dict[str, list]:
    """Read every image of a chunk; returns the output columns for its rows, in order.

    With ``layout="number"`` the digits of all its images are classified together (see
    :func:`~digitrec.reading.recognize.read_images`) and each image is one row; with any
    other layout each image is read as a page and each of its fields is a row. An image
    that cannot be loaded or read gets a row with its error, and the others are read all
    the same.
    """
    readings = read_images(
        model,
        _chunk_images(chunk),
        one_digit=chunk.single_digit,
        isolate_errors=True,
        layout=layout,
        min_confidence=min_confidence,
    )
    by_field = layout != "number"
    columns: dict[str, list] = {name: [] for name in column_names(layout)}
    for name, reading in zip(chunk.names, readings, strict=True):
        error = None if reading.failure is None else _error_text(reading.failure)
        if by_field:
            _append_field_rows(columns, name, reading, error)
        else:
            _append_row(columns, name, None if error else reading, error)
    return columns


def column_names(layout: str) -> tuple[str, ...]:
    """The output's columns for ``layout``: one row per image, or one per field."""
    return COLUMNS if layout == "number" else tuple(name for name, _ in FIELD_COLUMNS)


def _chunk_images(chunk: Chunk) -> Iterator[np.ndarray | Exception]:
    """The chunk's images, loaded one at a time; a file that cannot be loaded is its error."""
    for i, name in enumerate(chunk.names):
        try:
            yield chunk.images[i] if chunk.images is not None else load_image(name)
        # One unreadable file must not fail the other images of the job.
        except Exception as exc:
            yield exc


def _error_text(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, DigitrecError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def printable(text: str) -> str:
    """``text`` as valid UTF-8: bytes a file name could not decode (held as lone
    surrogates by ``os.fsdecode``) become ``\\xNN``."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _raw_name(name: str) -> str | None:
    """The name's exact bytes in base64 when it is not valid UTF-8, else None."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii")
    return None


def _append_row(columns: dict[str, list], name: str, reading: Reading | None, error) -> None:
    columns["path"].append(printable(name))
    columns["path_bytes"].append(_raw_name(name))
    columns["error"].append(None if error is None else printable(error))
    if reading is None:
        for column in ("text", "digits", "probabilities", "diagnosis"):
            columns[column].append(None)
        return
    shown = [d.to_json() for d in reading.digits]
    columns["text"].append(reading.text)
    columns["digits"].append(
        _compact([{k: d[k] for k in ("digit", "probability", "box")} for d in shown])
    )
    columns["probabilities"].append(_compact([d["probabilities"] for d in shown]))
    columns["diagnosis"].append(reading.diagnosis)


def _append_field_rows(
    columns: dict[str, list], name: str, reading: Reading, error: str | None
) -> None:
    """One row per field of a page; a single row for an image with none."""
    fields = [
        (line_index, field_index, f)
        for line_index, line in enumerate(reading.lines)
        for field_index, f in enumerate(line)
    ]
    if error is not None or not fields:
        _append_field_row(columns, name, error=error, diagnosis=reading.diagnosis)
        return
    for line_index, field_index, f in fields:
        _append_field_row(
            columns,
            name,
            line=line_index,
            field=field_index,
            column=f.column,
            text=f.text,
            confidence=round(f.confidence, 4),
            needs_review=f.needs_review,
            box=_compact(list(f.box)),
            diagnosis=f.diagnosis,
        )


def _append_field_row(columns: dict[str, list], name: str, **values: Any) -> None:
    error = values.get("error")
    values.update(
        path=printable(name),
        path_bytes=_raw_name(name),
        error=None if error is None else printable(error),
    )
    for column in columns:
        columns[column].append(values.get(column))


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


# --- the run -------------------------------------------------------------------------------


@dataclass
class BatchSummary:
    """What a run did: images and rows in OUTPUT (more rows than images when read by
    field), how many images were errors, and how fast this run was."""

    output: Path
    images: int
    rows: int
    errors: int
    computed: int  # images read by this run (the rest came from an earlier run's parts)
    chunks: int
    reused_chunks: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        return {
            "output": str(self.output),
            "images": self.images,
            "rows": self.rows,
            "errors": self.errors,
            "computed": self.computed,
            "chunks": self.chunks,
            "reused_chunks": self.reused_chunks,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


def predict_batch(
    model_dir: str | Path,
    source: str | Path | BatchInput,
    output: str | Path,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    chunk_size: int | None = None,
    progress: bool = True,
    on_chunk: Callable[[int], None] | None = None,
    layout: str = "number",
    min_confidence: float | None = None,
) -> BatchSummary:
    """Read every image of ``source`` with the model in ``model_dir``; write ``output``.

    Parameters
    ----------
    layout
        ``"number"``: each image is one number, one row per image; ``"auto"``, ``"lines"``
        or ``"table"``: each image is a page of numbers, one row per field (see the module
        docstring for the columns).
    min_confidence
        A page's number less sure than this is flagged ``needs_review`` (default:
        :data:`digitrec.reading.page.MIN_CONFIDENCE`).
    scheduler
        ``"local"``: start a ``dask.distributed.LocalCluster`` of ``workers`` processes on
        this machine (default: one per core); ``"none"``: no Dask, every chunk in this
        process; anything else is the address of a running Dask scheduler
        (``tcp://HOST:8786``), used as it is.
    workers
        Worker processes for ``scheduler="local"``; 0 means no Dask, like ``"none"``.
    chunk_size
        Images per task, and per part file written; by default
        :func:`default_chunk_size` of the input.
    on_chunk
        Called with a chunk's index once its part is safely on disk (progress hooks, tests).
    """
    start = time.perf_counter()
    output = Path(output)
    output_format = _output_format(output)
    if chunk_size is not None and chunk_size < 1:
        raise ParameterError(f"--chunk-size must be at least 1, got {chunk_size}")
    _check_layout(layout, min_confidence)
    scheduler = scheduler_choice(scheduler, workers)
    _require_pyarrow()
    model_dir = Path(model_dir)
    model = models.load(model_dir)
    batch = source if isinstance(source, BatchInput) else resolve_input(source)
    if batch.single_digit and layout != "number":
        raise ParameterError(
            f"--layout {layout} reads pages; folder:PATH holds one digit per file "
            "(use --layout number)"
        )
    chunk_size = chunk_size or default_chunk_size(len(batch))
    parts = _parts_dir(output)
    n_chunks = batch.n_chunks(chunk_size)
    reading = {"layout": layout, "min_confidence": min_confidence}
    _check_or_write_manifest(
        parts, _manifest(model_dir, batch, chunk_size, n_chunks, layout) | reading
    )
    pending = [i for i in range(n_chunks) if not _part_is_complete(parts, i, batch, chunk_size)]
    bar = display.bar(
        total=n_chunks,
        initial=n_chunks - len(pending),
        desc="predicting",
        unit="chunk",
        enabled=progress,
    )
    computed = 0
    if scheduler == "none":
        results = _run_here(model, batch, chunk_size, pending, reading)
    else:
        results = _run_on_dask(model, batch, chunk_size, pending, scheduler, workers, reading)
    try:
        for index, columns in results:
            images = len(batch.chunk(index, chunk_size).names)
            _write_part(parts, index, columns, images, layout)
            computed += images
            bar.update()
            if on_chunk is not None:
                on_chunk(index)
    finally:
        # Closing the generator now (not when the traceback is dropped) shuts a local
        # cluster down and cancels its tasks as soon as the run stops, even by an exception.
        results.close()
        bar.close()
    rows, errors = _combine(parts, n_chunks, output, output_format, layout)
    shutil.rmtree(parts, ignore_errors=True)
    return BatchSummary(
        output,
        len(batch),
        rows,
        errors,
        computed,
        n_chunks,
        n_chunks - len(pending),
        time.perf_counter() - start,
    )


def _check_layout(layout: str, min_confidence: float | None) -> None:
    # Imported here: the page reader is only needed to name the choices.
    from digitrec.reading.page import LAYOUTS

    if layout not in LAYOUTS:
        raise ParameterError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    if min_confidence is not None and not 0 <= min_confidence <= 1:
        raise ParameterError(f"--min-confidence must be between 0 and 1, got {min_confidence}")


def default_chunk_size(n_images: int) -> int:
    """Images per chunk for an input of ``n_images``.

    It depends on the input alone, not on the cluster, so a rerun with other workers cuts
    the same chunks and can resume.
    """
    return max(MIN_CHUNK_SIZE, min(MAX_CHUNK_SIZE, -(-n_images // TARGET_CHUNKS)))


def _run_here(
    model, batch: BatchInput, chunk_size: int, pending: list[int], reading: dict
) -> Iterator:
    for index in pending:
        yield index, predict_chunk(model, batch.chunk(index, chunk_size), **reading)


def _run_on_dask(
    model,
    batch: BatchInput,
    chunk_size: int,
    pending: list[int],
    scheduler: str,
    workers,
    reading: dict,
) -> Iterator:
    """Chunks as Dask tasks, yielded as they finish; a few per worker thread in flight."""
    if not pending:
        return
    with dask_client(scheduler, workers) as client:
        from distributed import as_completed

        shared = client.scatter(model, broadcast=True, hash=False)
        run = uuid.uuid4().hex[:8]  # task keys unique even on a cluster shared by many runs
        # Bounded in flight: array inputs travel with their tasks, so submitting every
        # chunk at once would put the whole array in the scheduler's memory.
        window = max(4, 3 * sum(client.nthreads().values()))
        queue = iter(pending)

        index_of: dict[str, int] = {}

        def submit(index: int):
            future = client.submit(
                predict_chunk,
                shared,
                batch.chunk(index, chunk_size),
                **reading,
                key=f"digitrec-chunk-{run}-{index:05d}",
            )
            index_of[future.key] = index
            return future

        running = as_completed([submit(i) for _, i in zip(range(window), queue, strict=False)])
        for future in running:
            columns = future.result()
            index = index_of.pop(future.key)
            following = next(queue, None)
            if following is not None:
                running.add(submit(following))
            yield index, columns


# --- parts, manifest, output -----------------------------------------------------------------


def _output_format(output: Path) -> str:
    fmt = _OUTPUT_FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise ParameterError(f"output {output} must end in .parquet, .pq or .csv")
    return fmt


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DigitrecError("pyarrow is not installed: pip install 'digitrec[dask]'") from None


def _schema(by_field: bool):
    """The output's columns and types: one row per image, or (``by_field``) per field."""
    import pyarrow as pa

    if not by_field:
        return pa.schema([(name, pa.string()) for name in COLUMNS])
    return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in FIELD_COLUMNS])


def _parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _part_path(parts: Path, index: int) -> Path:
    return parts / f"chunk-{index:05d}.parquet"


def _manifest(
    model_dir: Path, batch: BatchInput, chunk_size: int, n_chunks: int, layout: str
) -> dict:
    return {
        "format": PARTS_FORMAT,
        "format_version": PARTS_FORMAT_VERSION,
        # model.json lists the sha256 of every array, so its own hash names the whole model.
        "model": store.sha256_file(model_dir / store.MANIFEST),
        "input": {
            "spec": batch.spec,
            "images": len(batch),
            "sha256": batch.fingerprint,
            "single_digit": batch.single_digit,
        },
        "chunk_size": chunk_size,
        "chunks": n_chunks,
        "columns": list(column_names(layout)),
    }


def _check_or_write_manifest(parts: Path, manifest: dict) -> None:
    """Parts from an earlier run are reused only if that run had the same model, input and
    chunking; anything else is refused rather than mixed in or silently thrown away."""
    path = parts / "manifest.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            previous = None
        if previous == manifest:
            return
        raise DigitrecError(
            f"{parts} holds an unfinished run with a different model, input, layout or "
            "chunk size, or by an older digitrec; "
            "delete it to start again, or choose another output"
        )
    if parts.exists() and any(parts.iterdir()):
        raise DigitrecError(f"{parts} exists without a manifest; not writing into it")
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True))


def _part_is_complete(parts: Path, index: int, batch: BatchInput, chunk_size: int) -> bool:
    """A part counts only if it is a readable Parquet file of the chunk's images."""
    return _images_in_part(_part_path(parts, index)) == len(batch.chunk(index, chunk_size).names)


def _images_in_part(path: Path) -> int | None:
    """How many images a part holds (its rows may be fields), or None if it is unreadable."""
    import pyarrow.parquet as pq

    if not path.is_file():
        return None
    try:
        metadata = pq.read_schema(path).metadata or {}
        return int(metadata[_IMAGES_KEY])
    except Exception:  # any unreadable part (pyarrow raises several types) is redone
        return None


def _write_part(
    parts: Path, index: int, columns: dict[str, list], images: int, layout: str
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _schema(layout != "number").with_metadata({_IMAGES_KEY: str(images).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns, schema=schema), sink)
    atomic_write_bytes(_part_path(parts, index), sink.getvalue().to_pybytes())


def _combine(
    parts: Path, n_chunks: int, output: Path, output_format: str, layout: str
) -> tuple[int, int]:
    """Concatenate the parts in order into ``output``; returns (rows, error rows).

    Streamed part by part into a temporary file that is renamed over ``output`` at the end
    (the streaming form of ``atomic_write_bytes``): memory stays at one part.
    """
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    os.close(fd)
    rows = errors = 0
    try:
        writer_class = pq.ParquetWriter if output_format == "parquet" else pcsv.CSVWriter
        schema = _schema(layout != "number")
        with writer_class(tmp, schema) as writer:
            for index in range(n_chunks):
                table = pq.read_table(_part_path(parts, index), schema=schema)
                writer.write_table(table.replace_schema_metadata(None))
                rows += table.num_rows
                errors += table.num_rows - table.column("error").null_count
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows, errors


def read_output(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a batch OUTPUT (Parquet or CSV) as dictionaries, in input order."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    if _output_format(path) == "parquet":
        return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    # The writer quotes empty strings and leaves nulls bare; reading must keep them apart
    # ("" is an image with no digits, null a column that does not apply to the row).
    options = pcsv.ConvertOptions(
        column_types=_schema("field" in header),
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    return pcsv.read_csv(path, convert_options=options).to_pylist()
