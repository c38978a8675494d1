"""Batch prediction: Dask and one process agree, bad images are rows, runs survive a lost
worker and resume after an interruption without redoing finished chunks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from distributed import Client, LocalCluster  # noqa: E402

from digitrec import models  # noqa: E402
from digitrec.apps import batch  # noqa: E402
from digitrec.data.images import load_image  # noqa: E402
from digitrec.errors import DatasetError, DigitrecError, ParameterError  # noqa: E402
from digitrec.reading.page import read_page  # noqa: E402
from digitrec.reading.recognize import read_image  # noqa: E402
from digitrec.testing import pages  # noqa: E402

N_TILES = 280
N_STRIPS = 24
CHUNK = 16
CORRUPT = {
    "junk.png": b"this is not an image at all",
    "empty.png": b"",
    "notes.jpg": b"%PDF-1.4 a pdf wearing a jpg name",
    "sub/old.gif": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
}


def _cluster() -> LocalCluster:
    return LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("batch")


@pytest.fixture(scope="module")
def model_dir(mnist, workdir) -> Path:
    """A small kNN (2,000 MNIST training images): cheap to ship, exact answers."""
    small = mnist.subset(2000, 100, seed=0)
    return models.save(models.train("knn", small, {"n_neighbors": 3}), workdir / "model")


@pytest.fixture(scope="module")
def images(mnist, workdir) -> Path:
    """MNIST test tiles as PNGs, strips of three digits on white (segmented like photos),
    a blank page, and files that are not images or are cut short."""
    folder = workdir / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(N_TILES):
        Image.fromarray(mnist.X_test[i]).save(folder / f"tile-{i:04d}.png")
    for i in range(N_STRIPS):
        strip = np.full((48, 120), 255, np.uint8)
        for j in range(3):
            strip[10:38, 8 + 36 * j : 36 + 36 * j] = 255 - mnist.X_test[1000 + 3 * i + j]
        Image.fromarray(strip).save(folder / "sub" / f"strip-{i:03d}.png")
    Image.fromarray(np.full((60, 90), 250, np.uint8)).save(folder / "sub" / "blank.png")
    for name, data in CORRUPT.items():
        (folder / name).write_bytes(data)
    whole = (folder / "tile-0000.png").read_bytes()
    (folder / "sub" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "labels.txt").write_text("not an image suffix: not picked up\n")
    return folder


@pytest.fixture(scope="module")
def reference(model_dir, images, workdir) -> list[dict]:
    """The single-process answer that every other way of running must reproduce."""
    out = workdir / "reference.parquet"
    batch.predict_batch(
        model_dir, images, out, scheduler="none", chunk_size=CHUNK, progress=False
    )
    return batch.read_output(out)


@pytest.fixture(scope="module")
def cluster():
    with _cluster() as running:
        yield running


def _expected_paths(images: Path) -> list[str]:
    return sorted(
        str(p) for p in images.rglob("*") if p.is_file() and p.suffix != ".txt"
    )


def test_one_process_reads_every_image_once_in_order_with_bad_files_as_rows(
    reference, images
):
    assert [row["path"] for row in reference] == _expected_paths(images)
    failed = {Path(row["path"]).name for row in reference if row["error"]}
    assert failed == {Path(name).name for name in CORRUPT} | {"truncated.png"}
    for row in reference:
        if row["error"]:
            assert row["path"] in row["error"] and row["text"] is None
    blank = next(row for row in reference if row["path"].endswith("blank.png"))
    assert blank["error"] is None and blank["text"] == "" and blank["diagnosis"]


def test_readings_in_chunks_equal_read_image_one_at_a_time(reference, model_dir):
    model = models.load(model_dir)
    # read_image classifies one digit per call (tens of ms each), so check a sample: every
    # strip (segmentation), the blank page (diagnosis) and every eighth tile.
    tiles = [row for row in reference if "tile-" in row["path"]]
    sample = tiles[::8] + [row for row in reference if "/sub/" in row["path"]]
    for row in sample:
        if row["error"]:
            continue
        alone = read_image(model, load_image(row["path"])).to_json()
        assert row["text"] == alone["text"]
        assert row["diagnosis"] == alone["diagnosis"]
        digits = json.loads(row["digits"])
        assert [d["digit"] for d in digits] == [d["digit"] for d in alone["digits"]]
        assert [d["probability"] for d in digits] == [d["probability"] for d in alone["digits"]]
        assert [d["box"] for d in digits] == [d["box"] for d in alone["digits"]]
        assert json.loads(row["probabilities"]) == [d["probabilities"] for d in alone["digits"]]


def test_strips_of_three_digits_go_through_segmentation(reference):
    strips = [row for row in reference if "strip-" in row["path"]]
    assert len(strips) == N_STRIPS
    counts = [len(json.loads(row["digits"])) for row in strips]
    assert all(count >= 2 for count in counts)
    assert sum(count == 3 for count in counts) >= 0.75 * N_STRIPS


@pytest.mark.slow
def test_two_worker_processes_give_exactly_the_single_process_output(
    cluster, model_dir, images, workdir, reference
):
    out = workdir / "dask.parquet"
    summary = batch.predict_batch(
        model_dir, images, out, scheduler=cluster.scheduler_address, chunk_size=CHUNK,
        progress=False,
    )
    assert batch.read_output(out) == reference
    assert summary.images == len(reference) and summary.computed == len(reference)
    assert summary.errors == len(CORRUPT) + 1
    assert not out.with_name(out.name + ".parts").exists()


def test_an_array_dataset_reads_the_same_digits_as_the_png_files(
    cluster, mnist, model_dir, workdir, reference
):
    archive = workdir / "tiles.npz"
    np.savez(archive, images=mnist.X_test[:N_TILES])
    out = workdir / "array.csv"
    batch.predict_batch(
        model_dir, archive, out, scheduler=cluster.scheduler_address, chunk_size=CHUNK,
        progress=False,
    )
    rows = batch.read_output(out)
    tiles = [row for row in reference if "tile-" in row["path"]]
    assert [row["path"] for row in rows] == [f"{archive}[{i}]" for i in range(N_TILES)]
    strip = ("text", "digits", "probabilities", "diagnosis", "error")
    assert [[r[c] for c in strip] for r in rows] == [[r[c] for c in strip] for r in tiles]


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_no_row_is_lost_or_duplicated(
    model_dir, images, workdir, reference
):
    """A real SIGKILL of a busy worker process of a two-worker cluster: the nanny starts a
    replacement, the replacement takes chunks (the scattered model reaches it from the
    surviving worker), and the output has every row exactly once, as in one process."""
    from distributed import get_task_stream

    out = workdir / "killed.parquet"
    killed, replacement = [], []
    with _cluster() as own, Client(own) as watcher:
        pids = watcher.run(os.getpid)

        def kill_a_busy_worker(index: int) -> None:
            if killed:
                return
            busy = [addr for addr, keys in watcher.processing().items() if keys]
            victim = (busy or sorted(pids))[0]
            os.kill(pids[victim], signal.SIGKILL)
            killed.append((victim, bool(busy)))
            # Hold the run here until the replacement has joined, so that chunks remain for
            # it; bounded so that a cluster that never recovers fails instead of hanging.
            for _ in range(3000):
                joined = set(watcher.scheduler_info()["workers"]) - set(pids)
                if joined:
                    replacement.extend(joined)
                    return
                time.sleep(0.1)
            raise AssertionError("no worker replaced the killed one")

        with get_task_stream(client=watcher) as stream:
            batch.predict_batch(
                model_dir, images, out, scheduler=own.scheduler_address, chunk_size=CHUNK // 2,
                progress=False, on_chunk=kill_a_busy_worker,
            )
        assert killed and killed[0][1], "the worker was killed while it had work"
        alive = watcher.run(os.getpid)
        assert pids[killed[0][0]] not in alive.values() and len(alive) == 2
    ran_on = {
        task["worker"] for task in stream.data if str(task["key"]).startswith("digitrec-chunk")
    }
    assert replacement and replacement[0] in ran_on, "the replacement worker took no chunk"
    rows = batch.read_output(out)
    assert [row["path"] for row in rows] == [row["path"] for row in reference]
    assert rows == reference


def test_ctrl_c_while_the_cluster_starts_ends_with_one_line_and_status_130(
    model_dir, images, workdir
):
    """Ctrl-C on a terminal sends SIGINT to the whole foreground process group: the command
    and the cluster processes it is starting. It ends with one line and exit status 130, no
    traceback from any process, no output file, and no process left behind. Ctrl-C in the
    seconds the workers take to start counts as much as one after (it used to be ignored
    there, and the whole batch ran)."""
    import psutil

    out = workdir / "interrupted.csv"
    command = [sys.executable, "-m", "digitrec", "predict-batch", str(model_dir), str(images),
               "-o", str(out), "--scheduler", "local", "--workers", "2"]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, env={**os.environ, "DIGITREC_QUIET": "1"},
    )
    # The cluster is starting once the command has child processes (Dask's nannies).
    children: list = []
    while not children and process.poll() is None:
        time.sleep(0.05)
        children = psutil.Process(process.pid).children(recursive=True)
    assert process.poll() is None, process.communicate()
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 130, err
    assert err == "", "Ctrl-C ends quietly, as the shell's ^C already says it"
    assert not out.exists()
    _, alive = psutil.wait_procs(children, timeout=60)
    assert not alive


class Interrupted(Exception):
    pass


def _stop_after(n: int):
    seen = []

    def hook(index: int) -> None:
        seen.append(index)
        if len(seen) == n:
            raise Interrupted

    return hook, seen


def test_an_interrupted_run_resumes_without_redoing_finished_chunks(
    model_dir, images, workdir, reference, monkeypatch
):
    out = workdir / "resumed.csv"
    hook, finished = _stop_after(3)
    with pytest.raises(Interrupted):
        batch.predict_batch(
            model_dir, images, out, scheduler="none", chunk_size=CHUNK, progress=False,
            on_chunk=hook,
        )
    assert not out.exists()
    computed = []
    real = batch.predict_chunk

    def counting(model, chunk, **reading):
        computed.append(chunk.index)
        return real(model, chunk, **reading)

    monkeypatch.setattr(batch, "predict_chunk", counting)
    summary = batch.predict_batch(
        model_dir, images, out, scheduler="none", chunk_size=CHUNK, progress=False
    )
    n_chunks = -(-len(reference) // CHUNK)
    assert sorted(computed) == sorted(set(range(n_chunks)) - set(finished))
    assert summary.reused_chunks == 3
    assert summary.computed == len(reference) - 3 * CHUNK
    assert batch.read_output(out) == reference


def test_an_interrupted_dask_run_resumes_on_the_cluster(
    cluster, model_dir, images, workdir, reference
):
    out = workdir / "resumed-dask.parquet"
    hook, finished = _stop_after(2)
    with pytest.raises(Interrupted):
        batch.predict_batch(
            model_dir, images, out, scheduler=cluster.scheduler_address, chunk_size=CHUNK,
            progress=False, on_chunk=hook,
        )
    summary = batch.predict_batch(
        model_dir, images, out, scheduler=cluster.scheduler_address, chunk_size=CHUNK,
        progress=False,
    )
    assert summary.reused_chunks == len(finished) == 2
    assert summary.computed == len(reference) - 2 * CHUNK
    assert batch.read_output(out) == reference


def test_a_rerun_with_another_chunk_size_refuses_to_mix_parts(model_dir, images, workdir):
    out = workdir / "mixed.parquet"
    hook, _ = _stop_after(1)
    with pytest.raises(Interrupted):
        batch.predict_batch(
            model_dir, images, out, scheduler="none", chunk_size=CHUNK, progress=False,
            on_chunk=hook,
        )
    with pytest.raises(DigitrecError, match="different model, input, layout or chunk size"):
        batch.predict_batch(
            model_dir, images, out, scheduler="none", chunk_size=CHUNK + 1, progress=False
        )


def test_default_chunks_depend_on_the_input_size_alone():
    assert [batch.default_chunk_size(n) for n in (1, 310, 2000, 100_000)] == [16, 16, 32, 500]


def test_a_glob_picks_the_files_it_matches(images):
    found = batch.resolve_input(str(images / "sub" / "strip-00*.png"))
    assert found.names == sorted(str(p) for p in (images / "sub").glob("strip-00*.png"))
    assert len(found) == 10


def test_inputs_and_options_that_cannot_work_are_refused(model_dir, images, workdir):
    with pytest.raises(DatasetError, match="not a folder, file, glob"):
        batch.resolve_input(workdir / "missing")
    archive = workdir / "floats.npz"
    np.savez(archive, images=np.full((2, 28, 28), 0.5))
    with pytest.raises(DatasetError, match="integers 0..255"):
        batch.resolve_input(archive)
    with pytest.raises(ParameterError, match=r"\.parquet, \.pq or \.csv"):
        batch.predict_batch(model_dir, images, workdir / "out.xlsx", scheduler="none")
    with pytest.raises(ParameterError, match="--workers"):
        batch.predict_batch(
            model_dir, images, workdir / "o.csv", scheduler="tcp://127.0.0.1:1", workers=2
        )


@pytest.mark.slow
def test_the_command_line_runs_a_local_cluster_of_two_workers(
    mnist, model_dir, workdir, reference
):
    archive = workdir / "cli-tiles.npz"
    np.savez(archive, images=mnist.X_test[:64])
    out = workdir / "cli.csv"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("digitrec")), "predict-batch", str(model_dir),
            str(archive), "-o", str(out), "--workers", "2", "--chunk-size", str(CHUNK),
            "--json",
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["images"] == 64 and summary["errors"] == 0 and summary["chunks"] == 4
    tiles = [row for row in reference if "tile-" in row["path"]][:64]
    assert [row["text"] for row in batch.read_output(out)] == [row["text"] for row in tiles]


def test_the_command_line_reports_a_bad_output_name_in_one_line(model_dir, images, workdir):
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("digitrec")), "predict-batch", str(model_dir),
            str(images), "-o", str(workdir / "out.xlsx"),
        ],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: output {workdir / 'out.xlsx'} must end in .parquet, .pq or .csv"
    ]


# Tuning seeds: a two-line plain table, a signed table, a plain list of three lines.
PAGE_SEEDS = (5004, 5005, 5001)
FIELD_HEADER = (
    "path,line,field,column,text,confidence,needs_review,box,diagnosis,error,path_bytes"
)


@pytest.fixture(scope="module")
def page_folder(workdir) -> Path:
    """Generated photos of tables and lists of numbers, a blank page and a broken file."""
    folder = workdir / "pages"
    folder.mkdir()
    for seed in PAGE_SEEDS:
        (folder / f"page-{seed}.jpg").write_bytes(pages.page(seed).data)
    Image.fromarray(np.full((60, 90), 250, np.uint8)).save(folder / "blank.png")
    (folder / "junk.png").write_bytes(b"this is not an image at all")
    return folder


@pytest.fixture(scope="module")
def field_rows(model_dir, page_folder, workdir) -> dict[str, list[dict]]:
    """``predict-batch --layout table`` through the command line, to CSV and to Parquet."""
    found = {}
    for name in ("fields.csv", "fields.parquet"):
        out = workdir / name
        done = run_digitrec(
            "predict-batch", model_dir, page_folder, "-o", out, "--layout", "table",
            "--scheduler", "none", "--chunk-size", "2", "--json",
        )
        assert done.returncode == 0, done.stderr
        summary = json.loads(done.stdout)
        assert summary["images"] == len(PAGE_SEEDS) + 2 and summary["errors"] == 1
        found[name] = batch.read_output(out)
        assert summary["rows"] == len(found[name])
    return found


def test_a_page_layout_writes_one_row_per_field_as_read_page_reads_it(
    field_rows, model_dir, page_folder
):
    rows = field_rows["fields.parquet"]
    model = models.load(model_dir)
    for seed in PAGE_SEEDS:
        path = str(page_folder / f"page-{seed}.jpg")
        reading = read_page(model, load_image(path), layout="table")
        expected = [
            {
                "line": i, "field": j, "column": f.column, "text": f.text,
                "confidence": round(f.confidence, 4), "needs_review": f.needs_review,
                "box": list(f.box), "diagnosis": f.diagnosis,
            }
            for i, line in enumerate(reading.lines)
            for j, f in enumerate(line)
        ]
        got = [
            {**{k: row[k] for k in expected[0] if k != "box"}, "box": json.loads(row["box"])}
            for row in rows
            if row["path"] == path
        ]
        assert got == expected
        # The generated page's own shape: as many lines, as many numbers on each.
        assert [len(line) for line in reading.lines] == [
            len(line) for line in pages.page(seed).lines
        ]


def test_a_page_with_nothing_or_a_broken_file_is_still_one_row(field_rows):
    rows = field_rows["fields.csv"]
    blank = [row for row in rows if row["path"].endswith("blank.png")]
    junk = [row for row in rows if row["path"].endswith("junk.png")]
    assert len(blank) == 1 and blank[0]["line"] is None and blank[0]["diagnosis"]
    assert blank[0]["error"] is None
    assert len(junk) == 1 and junk[0]["line"] is None and "junk.png" in junk[0]["error"]


def test_field_rows_are_the_same_in_csv_and_parquet(field_rows, workdir):
    assert field_rows["fields.csv"] == field_rows["fields.parquet"]
    assert (workdir / "fields.csv").read_text().splitlines()[0].replace('"', "") == FIELD_HEADER


def test_a_page_run_on_the_cluster_gives_the_same_rows(
    cluster, model_dir, page_folder, workdir, field_rows
):
    out = workdir / "fields-dask.parquet"
    batch.predict_batch(
        model_dir, page_folder, out, scheduler=cluster.scheduler_address, chunk_size=2,
        progress=False, layout="table",
    )
    assert batch.read_output(out) == field_rows["fields.parquet"]


def test_an_interrupted_page_run_resumes_by_images_not_rows(
    model_dir, page_folder, workdir, field_rows
):
    out = workdir / "fields-resumed.parquet"
    hook, finished = _stop_after(1)
    with pytest.raises(Interrupted):
        batch.predict_batch(
            model_dir, page_folder, out, scheduler="none", chunk_size=2, progress=False,
            on_chunk=hook, layout="table",
        )
    summary = batch.predict_batch(
        model_dir, page_folder, out, scheduler="none", chunk_size=2, progress=False,
        layout="table",
    )
    assert summary.reused_chunks == 1 and summary.computed == len(PAGE_SEEDS) + 2 - 2
    assert batch.read_output(out) == field_rows["fields.parquet"]
    # Another layout is another run: its parts are never mixed in.
    hook, _ = _stop_after(1)
    with pytest.raises(Interrupted):
        batch.predict_batch(
            model_dir, page_folder, out, scheduler="none", chunk_size=2, progress=False,
            on_chunk=hook, layout="lines",
        )
    with pytest.raises(DigitrecError, match="layout"):
        batch.predict_batch(
            model_dir, page_folder, out, scheduler="none", chunk_size=2, progress=False,
            layout="table",
        )


def test_an_unknown_layout_is_one_error_line(model_dir, page_folder, workdir):
    done = run_digitrec(
        "predict-batch", model_dir, page_folder, "-o", workdir / "x.csv", "--layout", "grid"
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: unknown layout 'grid'; choose from auto, number, lines, table"
    ]


@pytest.mark.parametrize(
    ("kind", "grid"),
    [
        ("knn", {"n_neighbors": [1, 3, 5], "p": [1, 2], "weights": ["uniform", "distance"]}),
        ("linear-svc", {"C": [0.1, 1.0]}),
    ],
)
def test_cross_validation_on_the_cluster_scores_exactly_as_tune(cluster, uci, kind, grid):
    from digitrec.evaluation import tuning
    from digitrec.evaluation.dask_runner import tune_on_dask

    here = tuning.tune(kind, uci, grid, folds=3, progress=False)
    there = tune_on_dask(
        kind, uci, grid, folds=3, scheduler=cluster.scheduler_address, progress=False
    )
    assert [(p.params, p.scores) for p in there.results] == [
        (p.params, p.scores) for p in here.results
    ]
    assert there.best.params == here.best.params
    assert there.test_accuracy == here.test_accuracy
