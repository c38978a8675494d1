"""Where digitrec keeps its data: one directory, chosen by ``DIGITREC_HOME``."""

from __future__ import annotations

import os
from pathlib import Path

from digitrec.errors import DigitrecError

# What `digitrec train` and `make run` train when no kind is named: the most accurate model
# that answers a single image within 20 ms (MNIST test 0.9954 trained on MNIST, 0.9949 on
# DEFAULT_DATASET; about 16 ms per image on 2 cores; benchmarks/accuracy_mnist.py), and also
# the best reader of photos and drawings (benchmarks/real_world.py). It is more accurate
# than the cnn (0.9948), which needs the cnn extra besides. Kept here, not in
# digitrec.models, so that the CLI can name it in its help without importing scikit-learn.
DEFAULT_KIND = "knn-idm-hknn"
# What `digitrec train` trains on when no dataset is named: MNIST's training images with
# other writers' digits added (digitrec.data.datasets.load_mnist_unipen); MNIST's test set.
DEFAULT_DATASET = "mnist+unipen"


def home() -> Path:
    """The data directory: ``$DIGITREC_HOME``, else the user's cache directory for digitrec
    (``$XDG_CACHE_HOME/digitrec``, by default ``~/.cache/digitrec`` on Linux)."""
    env = os.environ.get("DIGITREC_HOME")
    if env:
        path = Path(env).expanduser()
    else:
        import platformdirs

        path = platformdirs.user_cache_path("digitrec", appauthor=False)
    if path.exists() and not path.is_dir():
        raise DigitrecError(f"the data directory {path} (DIGITREC_HOME) is a file, not a folder")
    return path


def datasets_dir() -> Path:
    return home() / "datasets"


def models_dir() -> Path:
    return home() / "models"


def default_model_dir() -> Path:
    return models_dir() / "default"
