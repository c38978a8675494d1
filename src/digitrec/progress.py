"""Progress of long work: tqdm bars and status lines, behind one switch.

Library code wraps its long loops in :func:`bar` and its long single steps in :func:`stage`;
whether anything is shown is decided once, by whoever runs the work: the CLI turns progress
on (``--quiet`` turns it off), a Python user with :func:`shown`. It is off by default, so
that the estimators stay silent inside other programs.

On a terminal a bar redraws in place and its elapsed time ticks even while one step of the
loop takes long; elsewhere (a log file, CI) it prints a plain line now and then instead of
carriage returns.
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["bar", "set_shown", "shown", "showing", "stage"]

_SHOWING: ContextVar[bool] = ContextVar("digitrec_progress", default=False)
# Nothing is drawn for work that ends sooner: short predictions stay quiet.
_DELAY_SECONDS = 1.0
_TTY_TICK_SECONDS = 1.0
# Off a terminal, one line per this many seconds at most (a bar also prints its last state).
_LINE_SECONDS = 15.0
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def showing() -> bool:
    """Whether progress is shown in this context."""
    return _SHOWING.get()


def set_shown(on: bool) -> None:
    """Show (or hide) progress from now on in this context (the CLI's global switch)."""
    _SHOWING.set(bool(on))


@contextmanager
def shown(on: bool = True) -> Iterator[None]:
    """Show (or hide) progress inside the block.

    >>> from digitrec import progress
    >>> with progress.shown():
    ...     progress.showing()
    True
    """
    token = _SHOWING.set(bool(on))
    try:
        yield
    finally:
        _SHOWING.reset(token)


class _Lines:
    """A stream for tqdm off a terminal: each redraw becomes one plain line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        for part in _ANSI.sub("", text).replace("\r", "\n").split("\n"):
            line = part.rstrip()
            if line.strip() and line != self.last:  # closing redraws the last state again
                self.stream.write(line + "\n")
                self.last = line

    def flush(self) -> None:
        self.stream.flush()


class _Bar(tqdm):
    """tqdm whose display also refreshes on a timer, so the elapsed time of a slow step moves."""

    def __init__(self, *args: Any, tick: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        self._ticker = None
        if not self.disable:
            self._ticker = threading.Thread(target=self._tick, args=(tick,), daemon=True)
            self._ticker.start()

    def _tick(self, every: float) -> None:
        while not self._stop.wait(every):
            self.refresh()

    def close(self) -> None:
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
            if self._ticker is not None and self._ticker is not threading.current_thread():
                self._ticker.join()
        super().close()


def _style(stream: TextIO | None) -> dict[str, Any]:
    stream = stream or sys.stderr or sys.__stderr__
    if stream.isatty():
        return {"file": stream, "delay": _DELAY_SECONDS, "leave": False, "tick": _TTY_TICK_SECONDS}
    return {
        "file": _Lines(stream),
        "delay": _DELAY_SECONDS,
        "mininterval": _LINE_SECONDS,
        "maxinterval": _LINE_SECONDS,
        "leave": True,
        "ascii": True,
        "ncols": 100,
        "tick": _LINE_SECONDS,
    }


def bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool | None = None,
    file: TextIO | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar on ``file`` (stderr), drawn only if progress is shown (or if ``enabled``
    says so). Use it as tqdm: iterate over it, or ``update(n)`` it inside ``with``.
    """
    on = showing() if enabled is None else enabled
    return _Bar(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        disable=not on,
        dynamic_ncols=True,
        **{**_style(file), **options},
    )


@contextmanager
def stage(desc: str, enabled: bool | None = None) -> Iterator[None]:
    """A status line for one long step without a count: ``desc (elapsed)`` while it runs."""
    with bar(total=None, desc=desc, enabled=enabled, bar_format="{desc} ({elapsed})"):
        yield
