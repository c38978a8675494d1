"""Work on a Dask cluster: the client (a local cluster or a running scheduler), and
cross-validation with its folds and grid points as Dask tasks.

Batch prediction (:mod:`digitrec.apps.batch`) and ``digitrec tune --scheduler`` both get
their cluster here.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from functools import partial

from digitrec import models
from digitrec import progress as display
from digitrec.data.datasets import Dataset
from digitrec.errors import DigitrecError, ParameterError
from digitrec.evaluation import tuning


def scheduler_choice(scheduler: str, workers: int | None) -> str:
    """The scheduler to use: ``"none"`` (run here) when asked or with 0 workers, else
    ``scheduler``; ParameterError for option combinations that make no sense."""
    if workers is not None and workers < 0:
        raise ParameterError(f"--workers must be 0 or more, got {workers}")
    if scheduler == "none" or workers == 0:
        return "none"
    if scheduler != "local" and workers is not None:
        raise ParameterError(
            "--workers starts a local cluster; with --scheduler ADDRESS the cluster's own "
            "workers are used"
        )
    return scheduler


@contextmanager
def dask_client(scheduler: str, workers: int | None) -> Iterator:
    """A Dask client for ``scheduler``: ``"local"`` starts a cluster of ``workers``
    single-threaded processes (default: one per core) for the duration; anything else is
    the address of a running scheduler."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise DigitrecError(
            "Dask is not installed: pip install 'digitrec[dask]', or use --scheduler none"
        ) from None
    if scheduler != "local":
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DigitrecError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
        with client:
            yield client
        return
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    # One single-threaded process per core. Dask's nanny sets the OpenMP/MKL/OpenBLAS
    # threads to 1; numba's and OpenCV's pools must be told too, or every worker would
    # start a thread per core (measured: OpenCV kept 2 threads in each worker otherwise).
    # The nanny's MALLOC_TRIM_THRESHOLD_ also turns off glibc's adaptive mmap threshold,
    # which made segmenting photos 1.5-1.9x slower per chunk (measured); left unset here.
    no_trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with ExitStack() as stack:
        # Our own cluster's shutdown warnings ("worker still alive after 4 s, killing" on a
        # busy machine, keys lost when a run is interrupted) are noise to the user; entered
        # first, so that it lasts until the cluster has closed.
        stack.enter_context(_logged_from(logging.ERROR, "distributed"))
        # Starting the worker processes takes seconds (more on a busy machine): say so.
        with (
            display.stage(f"starting a local Dask cluster of {n_workers} workers"),
            _ctrl_c_for_this_process_only(),
        ):
            stack.enter_context(dask.config.set(no_trim))
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=n_workers,
                    threads_per_worker=1,
                    processes=True,
                    # the default :8787 may belong to another cluster
                    dashboard_address="127.0.0.1:0",
                    env={"NUMBA_NUM_THREADS": "1", "OPENCV_FOR_THREADS_NUM": "1"},
                )
            )
            client = stack.enter_context(Client(cluster))
        yield client


@contextmanager
def _logged_from(level: int, name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


@contextmanager
def _ctrl_c_for_this_process_only() -> Iterator[None]:
    """Start worker processes that Ctrl-C does not reach: only this process stops on it, and
    shuts the cluster down in order.

    A terminal's Ctrl-C signals every process of the foreground group: each worker would die
    printing its own traceback (35 to 85 lines for two workers, measured). An ignored SIGINT
    is the one disposition that survives exec, so the processes started in the block keep
    ignoring it (a signal mask does not reach the workers: tried). This process ignores it
    too while they start, so a ``sleep`` started before, which Ctrl-C does stop, stands
    watch: if it died of SIGINT, the block ends in KeyboardInterrupt. Off the main thread,
    where signal handlers cannot be set, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sleep = shutil.which("sleep")
    watch = subprocess.Popen([sleep, "86400"]) if sleep else None
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if watch is not None:
            pressed = watch.poll() == -signal.SIGINT
            watch.kill()
            watch.wait()
    if watch is not None and pressed:
        raise KeyboardInterrupt


def tune_on_dask(
    kind: str,
    dataset: Dataset,
    grid: dict[str, list] | None = None,
    folds: int = 5,
    *,
    scheduler: str = "local",
    workers: int | None = None,
    refit: bool = True,
    progress: bool = True,
) -> tuning.TuneResult:
    """:func:`digitrec.evaluation.tuning.tune` with its folds and grid points run as Dask tasks.

    Same folds, same scores, same best point, same refit: the tasks call tuning's own
    scoring on one fold each. The training images go to every worker once. kNN points that
    share a metric stay in one task, so each fold is still searched once per metric; other
    kinds make one task per grid point and fold. ``scheduler`` and ``workers`` are as for
    :func:`dask_client` (``"none"`` or 0 runs :func:`digitrec.evaluation.tuning.tune`
    itself).
    """
    scheduler = scheduler_choice(scheduler, workers)
    if scheduler == "none":
        return tuning.tune(kind, dataset, grid, folds=folds, refit=refit, progress=progress)
    with dask_client(scheduler, workers) as client:
        return tuning.tune(
            kind,
            dataset,
            grid,
            folds=folds,
            refit=refit,
            progress=progress,
            scores_on_folds=partial(_dask_cv_scores, client),
        )


def _dask_cv_scores(client, kind: str, dataset: Dataset, points, splits, progress: bool):
    """:func:`digitrec.evaluation.tuning.cv_scores`, one Dask task per group of points and fold."""
    from distributed import as_completed

    tasks = [(members, f) for members in _task_groups(kind, points) for f in range(len(splits))]
    scores = [[0.0] * len(splits) for _ in points]
    # The workers score folds of the training split only; the test split stays here.
    training_only = replace(dataset, X_test=dataset.X_train[:0], y_test=dataset.y_train[:0])
    shared = client.scatter(training_only, broadcast=True, hash=False)
    futures = [
        client.submit(
            tuning.cv_scores, kind, shared, [points[i] for i in members], [splits[f]], pure=False
        )
        for members, f in tasks
    ]
    task_of = {future.key: task for future, task in zip(futures, tasks, strict=True)}
    bar = display.bar(total=len(tasks), desc="cross-validating", unit="task", enabled=progress)
    try:
        for future in as_completed(futures):
            members, f = task_of[future.key]
            for i, column in zip(members, future.result(), strict=True):
                scores[i][f] = column[0]
            bar.update()
    finally:
        bar.close()
    return scores


def _task_groups(kind: str, points: list[dict]) -> list[list[int]]:
    """Indices of the grid points scored together in one task."""
    if kind != "knn":
        return [[i] for i in range(len(points))]
    defaults = models.REGISTRY["knn"].defaults
    groups: dict[tuple, list[int]] = {}
    for i, point in enumerate(points):
        params = {**defaults, **point}
        groups.setdefault((params["metric"], params["p"]), []).append(i)
    return list(groups.values())
