"""Where digitrec keeps its data: one directory, chosen by ``DIGITREC_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

from digitrec.errors import DigitrecError


def home() -> Path:
    """The data directory: ``$DIGITREC_HOME``, else ``~/.cache/digitrec``."""
    env = os.environ.get("DIGITREC_HOME")
    path = Path(env).expanduser() if env else Path.home() / ".cache" / "digitrec"
    if path.exists() and not path.is_dir():
        raise DigitrecError(f"the data directory {path} (DIGITREC_HOME) is a file, not a folder")
    return path


def datasets_dir() -> Path:
    return home() / "datasets"


def models_dir() -> Path:
    return home() / "models"


def default_model_dir() -> Path:
    return models_dir() / "default"
