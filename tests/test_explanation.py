"""Explanations agree with the answers: for every model kind the explanation is made from
what the model used to decide (digitrec.explanation)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from digitrec import models
from digitrec.data import datasets
from digitrec.neighbors.hybrid import MIN_NETWORK_PROBABILITY
from digitrec.neighbors.personal import PersonalModel
from digitrec.persistence.sample_db import Sample


@pytest.fixture(scope="module")
def small(mnist) -> datasets.Dataset:
    return mnist.subset(2000, 40, seed=3)


def class_of(model: models.Model, labels) -> np.ndarray:
    return np.searchsorted(model.classes, labels)


def check_common(model: models.Model, images: np.ndarray, explanations, proba) -> None:
    """The explanation's winner is the answer, and the probabilities are the model's."""
    np.testing.assert_allclose(proba, model.predict_proba(images), rtol=1e-9, atol=1e-12)
    answers = model.classes[proba.argmax(axis=1)]
    assert [e.answer for e in explanations] == answers.tolist()
    for e in explanations:
        assert e.summary.startswith(f"{e.answer}:") or e.summary.startswith(f"{e.answer} at")
        json.dumps(e.to_json(model.max_value))  # the web app's form is plain JSON


@pytest.mark.parametrize(("k", "weights"), [(5, "uniform"), (4, "distance"), (20, "uniform")])
def test_knn_shows_the_k_that_voted_and_their_weights_make_the_vote(small, k, weights):
    model = models.train("knn", small, {"n_neighbors": k, "weights": weights})
    images = small.X_test
    proba, explanations = model.explain(images)
    check_common(model, images, explanations, proba)
    assert (model.classes[proba.argmax(axis=1)] == model.predict(images)).all()
    distances, indices = model.neighbors(images, k)
    training = model.training_images()
    for row, e in enumerate(explanations):
        assert e.method == "vote" and len(e.voters) == k
        np.testing.assert_allclose([r.distance for r in e.voters], distances[row])
        assert [r.label for r in e.voters] == model.training_labels()[indices[row]].tolist()
        for r, j in zip(e.voters, indices[row], strict=True):
            np.testing.assert_array_equal(r.image, training[j])
        # The weights, summed per class, are the probabilities the model answers with.
        votes = np.zeros(len(model.classes))
        for r in e.voters:
            votes[class_of(model, r.label)] += r.weight
        np.testing.assert_allclose(votes / votes.sum(), proba[row], rtol=1e-9)
        for c in e.classes:
            assert c.vote == pytest.approx(proba[row][class_of(model, c.label)])
        if weights == "uniform":
            assert {r.weight for r in e.voters} == {1.0}


def test_knn_idm_shows_the_voters_and_each_class_nearest_by_idm(small):
    model = models.train("knn-idm", small, {"n_candidates": 20, "n_neighbors": 3})
    images = small.X_test[:15]
    proba, explanations = model.explain(images)
    check_common(model, images, explanations, proba)
    distances, indices = model.neighbors(images, 20)  # every candidate, by IDM distance
    labels = model.training_labels()[indices]
    for row, e in enumerate(explanations):
        assert e.method == "vote" and "IDM distance" in e.meaning
        np.testing.assert_allclose([r.distance for r in e.voters], distances[row, :3])
        assert [r.label for r in e.voters] == labels[row, :3].tolist()
        for c in e.classes:
            assert c.nearest.distance == pytest.approx(distances[row][labels[row] == c.label][0])
        assert e.classes[0].label == e.answer


def test_knn_idm_hknn_shows_each_top_class_with_its_three_terms_and_its_score(small):
    params = {"n_candidates": 20, "scattering_components": 40, "hyperplane_k": 15}
    model = models.train("knn-idm-hknn", small, params)
    images = small.X_test[:20]
    proba, explanations = model.explain(images)
    check_common(model, images, explanations, proba)
    assert (model.classes[proba.argmax(axis=1)] == model.predict(images)).all()
    classifier = model.estimator
    scores = classifier.class_scores(images)
    # The answer's own references (the class answered first) start with the winner's nearest.
    answer_distances = classifier.answer(images)[1]
    candidates_d, candidates_i = model.neighbors(images, 20)
    candidate_labels = model.training_labels()[candidates_i]
    weight = model.params["hyperplane_weight"]
    network_weight = model.params["network_weight"]
    assert network_weight > 0 and "network" in explanations[0].meaning
    several = 0
    for row, e in enumerate(explanations):
        assert e.method == "hybrid" and e.voters == []
        assert "IDM distance" in e.summary and "hyperplane distance" in e.summary
        assert "network" in e.summary
        best = e.classes[0]
        assert best.label == e.answer and best.score == pytest.approx(scores[row].min())
        assert best.nearest.distance == pytest.approx(answer_distances[row, 0])
        for c in e.classes:
            network = -np.log(max(c.network, MIN_NETWORK_PROBABILITY))
            expected = c.nearest.distance + weight * c.hyperplane + network_weight * network
            assert c.score == pytest.approx(expected)
            assert c.score == pytest.approx(scores[row, class_of(model, c.label)])
            nearest = candidates_d[row][candidate_labels[row] == c.label][0]
            assert c.nearest.distance == pytest.approx(nearest)
        assert [c.score for c in e.classes] == sorted(c.score for c in e.classes)
        if len(e.classes) > 1:
            several += 1
            assert f"next best class {e.classes[1].label}" in e.summary
    assert several > 0  # the runner-up is shown where there is one


def test_cnn_gets_an_occlusion_map_of_its_own_answer(small):
    model = models.train("cnn", small, {"epochs": 1, "n_threads": 1, "validation_fraction": 0})
    images = small.X_test[:4]
    proba, explanations = model.explain(images)
    check_common(model, images, explanations, proba)
    for image, e in zip(images, explanations, strict=True):
        assert e.method == "occlusion" and e.heat.shape == (28, 28)
        assert e.heat.min() >= 0 and e.heat.max() <= 1
        np.testing.assert_array_equal(e.image, image)
        assert e.to_json(255)["heatmap"].startswith("data:image/png;base64,")
    # Hiding blank margin changes nothing: the heat lies on or near the ink.
    assert all(e.heat[:2].max() <= e.heat.max() for e in explanations)


def test_a_stored_sample_among_the_neighbours_is_shown_with_its_weight(small):
    model = models.train("knn", small, {"n_neighbors": 3})
    personal = PersonalModel(model)
    query = small.X_test[:6]
    proba, untouched = personal.explain(query)
    check_common(model, query, untouched, proba)
    wrong = (model.predict(query[:1])[0] + 1) % 10
    personal.add_sample(Sample(1, int(wrong), query[0], "now", ""), revision=0)
    proba, explanations = personal.explain(query)
    assert (personal.classes[proba.argmax(axis=1)] == personal.predict(query)).all()
    first = explanations[0]
    assert first.answer == wrong and first.voters[0].sample_id == 1
    assert first.voters[0].weight == personal.sample_weight
    votes = np.zeros(len(model.classes))
    for r in first.voters:
        votes[class_of(model, r.label)] += r.weight
    np.testing.assert_allclose(votes / votes.sum(), proba[0])
    assert "counts 3 times" in first.meaning


def test_reading_with_explanations_searches_once_and_reads_as_without(small, monkeypatch):
    from digitrec.data.images import load_image
    from digitrec.reading.recognize import read_images
    from digitrec.testing import synthetic

    params = {"n_candidates": 20, "scattering_components": 40, "hyperplane_k": 15}
    model = models.train("knn-idm-hknn", small, params)
    # The distance that chooses cuts is the same read from explanations as from a search.
    images = small.X_test[:20]
    _, distance = model.proba_and_distance(images)
    np.testing.assert_allclose(model.distance_in(model.explain(images)[1]), distance)

    photos = [load_image(data, name="photo") for data, _ in synthetic.photos(5, 4)]
    plain = read_images(model, photos)
    calls = []
    for name in ("explain", "proba_and_distance"):
        method = getattr(models.Model, name)
        monkeypatch.setattr(
            models.Model,
            name,
            lambda self, x, name=name, method=method: (calls.append(name), method(self, x))[1],
        )
    explained = read_images(model, photos, explain=True)
    assert [r.text for r in explained] == [r.text for r in plain]
    for with_why, without in zip(explained, plain, strict=True):
        for digit, same in zip(with_why.digits, without.digits, strict=True):
            assert digit.confidence == pytest.approx(same.confidence)
            assert digit.explanation.answer == digit.digit
    # The search that reads the candidates explains them: one call for geometry's pieces
    # and one more only for marks worth a second look, never another to explain.
    assert set(calls) == {"explain"} and len(calls) <= 2
