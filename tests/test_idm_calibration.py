"""knn-idm's probabilities: a softmin of each class's nearest IDM distance with a temperature
fitted at training time, so a doubtful digit no longer reads 100%; kept in the model file."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest

from digitrec import models
from digitrec.errors import ModelFileError
from digitrec.neighbors.calibration import fit_temperature, log_loss, softmin


@pytest.fixture(scope="module")
def data(mnist):
    return mnist.subset(2000, 500, seed=0)


@pytest.fixture(scope="module")
def model(data):
    return models.train("knn-idm", data, {"n_candidates": 30})


@pytest.fixture(scope="module")
def proba(model, data) -> np.ndarray:
    return model.predict_proba(data.X_test)


def test_a_temperature_is_fitted_and_probabilities_are_no_longer_all_certain(model, proba):
    assert model.estimator.temperature_ > 0
    assert np.allclose(proba.sum(axis=1), 1)
    assert proba.max(axis=1).min() < 0.9


def test_the_most_probable_class_is_the_answer(model, data, proba):
    np.testing.assert_array_equal(
        model.classes[np.argmax(proba, axis=1)], model.predict(data.X_test)
    )


def test_wrong_answers_are_less_sure_than_right_ones(model, data, proba):
    right = model.predict(data.X_test) == data.y_test
    confidence = proba.max(axis=1)
    assert (~right).any()
    assert confidence[~right].mean() < confidence[right].mean() - 0.2


def test_the_fitted_temperature_has_the_lowest_log_loss():
    rng = np.random.default_rng(0)
    # Scores whose true class is nearest by an exponential margin, sometimes wrongly.
    labels = rng.integers(0, 10, 500)
    scores = rng.uniform(50, 100, (500, 10))
    scores[np.arange(500), labels] -= rng.normal(20, 15, 500)
    best = fit_temperature(scores, labels)
    for other in (best / 2, best * 2):
        assert log_loss(scores, labels, best) < log_loss(scores, labels, other)
    assert softmin(scores, best).shape == (500, 10)


def test_the_temperature_is_saved_and_loaded_with_the_model(model, data, proba, tmp_path):
    directory = models.save(model, tmp_path / "idm")
    manifest = json.loads((directory / "model.json").read_text())
    assert "calibration_temperature" in manifest["arrays"]
    loaded = models.load(directory)
    assert loaded.estimator.temperature_ == model.estimator.temperature_
    np.testing.assert_array_equal(loaded.predict_proba(data.X_test), proba)


@pytest.mark.parametrize("value", [0.0, -3.0])
def test_a_temperature_that_is_not_positive_is_refused(model, tmp_path, value):
    directory = models.save(model, tmp_path / "idm")
    buffer = io.BytesIO()
    np.save(buffer, np.array([value]), allow_pickle=False)
    data = buffer.getvalue()
    (directory / "calibration_temperature.npy").write_bytes(data)
    manifest = json.loads((directory / "model.json").read_text())
    manifest["arrays"]["calibration_temperature"]["sha256"] = hashlib.sha256(data).hexdigest()
    (directory / "model.json").write_text(json.dumps(manifest))
    digest = hashlib.sha256((directory / "model.json").read_bytes()).hexdigest()
    (directory / "model.sha256").write_text(digest + "\n")
    with pytest.raises(ModelFileError, match="calibration_temperature"):
        models.load(directory)


def test_a_vote_of_several_neighbours_keeps_its_vote_shares(data):
    voting = models.train(
        "knn-idm", data.subset(300, 50, seed=0), {"n_candidates": 10, "n_neighbors": 3}
    )
    assert voting.estimator.temperature_ is None
    shares = voting.predict_proba(data.X_test[:50]) * 3
    np.testing.assert_allclose(shares, np.rint(shares))
