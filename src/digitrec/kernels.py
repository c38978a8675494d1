"""The numba kernels' one-time compilation: made visible, and done ahead when asked.

numba compiles a kernel the first time it runs and keeps the machine code in its cache
(``cache=True``: in ``__pycache__`` beside the module, or, where that is read-only, in the
user's cache directory; ``NUMBA_CACHE_DIR`` overrides both). A fresh install therefore pays
the compilation once, on its first command. :func:`compile_kernels` pays it up front
(``digitrec compile-kernels``, run by ``make install``), and :func:`announce_compiling` puts
a status line on screen whenever it happens anyway, so that it is never a silent wait.
"""

from __future__ import annotations

import io
import threading
import time

import numba.core.event as numba_event
import numpy as np

from digitrec import progress

__all__ = ["announce_compiling", "compile_kernels", "sample_digit_png"]

_ANNOUNCED = threading.Lock()
_registered = False


def announce_compiling() -> None:
    """Show "compiling numeric kernels" (on the progress display) while numba compiles one
    of digitrec's kernels. Called by the modules that define kernels; idempotent."""
    global _registered
    with _ANNOUNCED:
        if _registered:
            return
        numba_event.register("numba:compile", _CompileStatus())
        _registered = True


class _CompileStatus(numba_event.Listener):
    """A status line from the start of an outermost digitrec kernel's compilation to its end
    (numba compiles under one global lock: the events nest, they never interleave)."""

    def __init__(self) -> None:
        self.depth = 0
        self.status = None

    def on_start(self, event: numba_event.Event) -> None:
        self.depth += 1
        if self.depth == 1 and _is_ours(event):
            self.status = progress.bar(
                total=None,
                desc="compiling numeric kernels (first run only, then cached)",
                bar_format="{desc} ({elapsed})",
            )

    def on_end(self, event: numba_event.Event) -> None:
        self.depth -= 1
        if self.depth == 0 and self.status is not None:
            self.status.close()
            self.status = None


def _is_ours(event) -> bool:
    dispatcher = event.data.get("dispatcher") if isinstance(event.data, dict) else None
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "")
    return module.startswith("digitrec")


def compile_kernels() -> float:
    """Run every kernel once on a few random images, with the argument types of real work
    (uint8 images, as every dataset and the photo reader give them), so that numba compiles
    or loads each one now. Returns the seconds it took."""
    from digitrec.neighbors.idm import IDMClassifier
    from digitrec.neighbors.knn import KNNClassifier

    start = time.perf_counter()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10
    flat = images.reshape(len(images), -1)
    # One fit and query per compiled search: euclidean (also kNN's default), cosine, and
    # the Minkowski loop, whose p=1 and p=3 take their own branches of the same kernel.
    for metric, p in (("euclidean", 2), ("cosine", 2), ("manhattan", 1), ("minkowski", 3)):
        KNNClassifier(n_neighbors=3, metric=metric, p=p).fit(flat, labels).predict(flat[:3])
    # The image distortion model's kernels, as knn-idm and the default knn-idm-hknn use them.
    idm = IDMClassifier(n_candidates=5, n_components=None, batch_size=8).fit(images, labels)
    idm.predict(images[:2])
    return time.perf_counter() - start


def sample_digit_png() -> bytes:
    """A small PNG of a dark ring on white paper, read like any photo (server warm-up)."""
    from PIL import Image, ImageDraw

    page = Image.new("L", (160, 120), 235)
    ImageDraw.Draw(page).ellipse((55, 25, 105, 95), outline=20, width=9)
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    return buffer.getvalue()
