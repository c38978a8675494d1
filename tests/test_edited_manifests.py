"""Anyone can edit model.json and sign it again, so an edited and re-signed manifest must
still be refused cleanly: parameters that are not a mapping, or values the estimator would
reject, are a ModelFileError at load time rather than a traceback later."""

from __future__ import annotations

import hashlib
import json

import pytest

from digitrec import models
from digitrec.errors import ModelFileError


@pytest.fixture
def knn_dir(uci, tmp_path):
    models.save(models.train("knn", uci, {"n_neighbors": 3}), tmp_path / "knn")
    return tmp_path / "knn"


def _edit_manifest(directory, edit) -> None:
    # Signed again, so these edits pass the signature check and meet the ones behind it.
    path = directory / "model.json"
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    signature = hashlib.sha256(path.read_bytes()).hexdigest()
    (directory / "model.sha256").write_text(signature + "\n")


@pytest.mark.parametrize("params", [[1, 2], "n_neighbors=3", 7])
def test_a_manifest_whose_params_are_not_an_object_is_a_model_file_error(knn_dir, params):
    """models.build (models.py:114) merges `{**entry.defaults, **(params or {})}` outside its
    try block, so a list/str/int `params` raises a bare TypeError; models.load only turns
    ParameterError/InvalidParameterError into ModelFileError. `digitrec evaluate DIR` then
    prints a traceback ('TypeError: 'list' object is not a mapping')."""
    _edit_manifest(knn_dir, lambda m: m.__setitem__("params", params))
    with pytest.raises(ModelFileError):
        models.load(knn_dir)


@pytest.mark.parametrize(
    "name, value", [("n_neighbors", 0), ("weights", "loudest")]
)
def test_a_manifest_with_invalid_parameter_values_is_a_model_file_error(knn_dir, name, value):
    """models.load (models.py:220-223) expects build() to reject bad saved parameters, but
    scikit-learn estimators validate values only in fit, which loading never calls: the
    model loads, and `digitrec evaluate DIR` then dies with a traceback (n_neighbors=0:
    'ValueError: k=0 must be between 1 and the 1437 references' from search.py)."""
    _edit_manifest(knn_dir, lambda m: m["params"].__setitem__(name, value))
    with pytest.raises(ModelFileError):
        models.load(knn_dir)
