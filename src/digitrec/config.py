"""Where digitrec keeps its data: one directory, chosen by ``DIGITREC_HOME``."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The data directory: ``$DIGITREC_HOME``, else ``~/.cache/digitrec``."""
    env = os.environ.get("DIGITREC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "digitrec"


def datasets_dir() -> Path:
    return home() / "datasets"


def models_dir() -> Path:
    return home() / "models"


def default_model_dir() -> Path:
    return models_dir() / "default"
