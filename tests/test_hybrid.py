"""Local hyperplanes, scattering features, and the IDM + hyperplane classifier."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec import models
from digitrec.errors import ModelFileError, ParameterError
from digitrec.features.scattering import ScatteringFeatures, scattering_coefficients
from digitrec.neighbors.hybrid import MIN_NETWORK_PROBABILITY, HybridClassifier
from digitrec.neighbors.hyperplane import LocalHyperplanes
from digitrec.neighbors.idm import IDMClassifier
from digitrec.nets.onnx_network import OnnxNetwork, shipped
from digitrec.persistence import serialize

# --- k-local hyperplanes ----------------------------------------------------------------


def brute_hull_distance(q: np.ndarray, points: np.ndarray, reg: float) -> float:
    """Ridge-regularised distance from q to the affine hull of points, by least squares."""
    centre = points.mean(axis=0)
    V = points - centre
    A = np.vstack([V.T, np.sqrt(reg) * np.eye(len(points))])
    b = np.concatenate([q - centre, np.zeros(len(points))])
    coef = np.linalg.lstsq(A, b, rcond=None)[0]
    return float(np.linalg.norm(q - centre - V.T @ coef))


def test_a_point_on_a_class_plane_is_at_distance_zero_from_it():
    rng = np.random.default_rng(0)
    # class 0 spans a plane through the origin in 5-d, class 1 the same plane moved by 10
    # along the last axis
    plane = rng.normal(size=(40, 2)) @ np.array([[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]], float)
    refs = np.vstack([plane, plane + [0, 0, 0, 0, 10]])
    labels = np.repeat([0, 1], 40)
    q = np.array([[0.3, -0.7, 0, 0, 0], [0.3, -0.7, 2.0, 0, 0]])
    d = LocalHyperplanes(refs, labels, 2).distances(q, k=10, reg=1e-6)
    assert d[0, 0] == pytest.approx(0.0, abs=1e-3)
    assert d[1, 0] == pytest.approx(2.0, abs=1e-3)  # off the plane by 2 along the 3rd axis
    assert d[0, 1] == pytest.approx(10.0, abs=1e-3)


def test_distances_match_a_brute_force_fit_on_the_k_nearest():
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(60, 8)).astype(np.float32)
    labels = np.arange(60) % 3
    q = rng.normal(size=(7, 8)).astype(np.float32)
    hyperplanes = LocalHyperplanes(refs, labels, 3)
    np.testing.assert_array_equal(hyperplanes.references(), refs)
    d = hyperplanes.distances(q, k=5, reg=0.5)
    for i in range(len(q)):
        for c in range(3):
            members = refs[labels == c]
            nearest = members[np.argsort(((members - q[i]) ** 2).sum(1))[:5]]
            assert d[i, c] == pytest.approx(brute_hull_distance(q[i], nearest, 0.5), rel=1e-3)


def test_unwanted_pairs_and_empty_classes_are_infinite():
    refs = np.eye(4, dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    wanted = np.array([[True, False, True], [False, True, True]])
    d = LocalHyperplanes(refs, labels, 3).distances(refs[:2], k=10, reg=0.1, wanted=wanted)
    assert np.isfinite(d[0, 0]) and np.isfinite(d[1, 1])
    assert np.isinf(d[0, 1]) and np.isinf(d[1, 0])
    assert np.isinf(d[:, 2]).all()  # class 2 has no reference


@pytest.mark.parametrize("k, reg", [(0, 1.0), (3, 0.0), (3, -1.0)])
def test_bad_hyperplane_arguments_are_refused(k, reg):
    with pytest.raises(ParameterError):
        LocalHyperplanes(np.zeros((3, 2)), np.zeros(3), 1).distances(np.zeros((1, 2)), k, reg)


# --- scattering features ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slice_(mnist):
    return mnist.X_train[:1500], mnist.y_train[:1500], mnist.X_test[:200], mnist.y_test[:200]


def test_batched_scattering_equals_kymatios_path_by_path_transform(slice_):
    from kymatio.scattering2d.frontend.numpy_frontend import ScatteringNumPy2D

    X = slice_[0][:20].astype(np.float32)
    reference = ScatteringNumPy2D(J=3, shape=(28, 28), L=8)(X / 255).reshape(20, -1)
    np.testing.assert_allclose(scattering_coefficients(X), reference, rtol=1e-5, atol=1e-6)
    assert scattering_coefficients(X[:0]).shape == (0, reference.shape[1])


def test_scattering_is_stable_to_a_one_pixel_shift_where_pixels_are_not(slice_):
    X = slice_[0][:50].astype(np.float32)
    shifted = np.roll(X, 1, axis=2)
    pixels = np.linalg.norm((X - shifted).reshape(50, -1), axis=1) / np.linalg.norm(
        X.reshape(50, -1), axis=1
    )
    a, b = scattering_coefficients(X), scattering_coefficients(shifted)
    coefs = np.linalg.norm(a - b, axis=1) / np.linalg.norm(a, axis=1)
    assert a.shape == (50, 217 * 3 * 3)  # 1 + J L + L^2 J (J-1) / 2 paths on a 3x3 grid
    assert np.median(coefs) < 0.3 * np.median(pixels)


@pytest.mark.slow
def test_scattering_features_round_trip_and_refuse_a_mismatched_state(slice_):
    X = slice_[0][:300]
    features = ScatteringFeatures(n_components=20)
    out = features.fit_transform(X)
    assert out.shape == (300, 20) and out.dtype == np.float32
    np.testing.assert_allclose(features.transform(X), out, rtol=1e-4, atol=1e-4)
    state, arrays = features.export_state()
    fresh = ScatteringFeatures(n_components=20)
    fresh.import_state(state, arrays)
    np.testing.assert_array_equal(fresh.transform(X[:10]), features.transform(X[:10]))
    with pytest.raises(ModelFileError):
        ScatteringFeatures(n_components=20).import_state(
            state, {**arrays, "mean": arrays["mean"][:-1]}
        )
    with pytest.raises(ModelFileError):
        ScatteringFeatures(n_components=20).import_state({"image_shape": [4, 4]}, arrays)
    with pytest.raises(ParameterError, match="fitted on images"):
        features.transform(np.zeros((1, 16, 16)))


# --- the classifier ---------------------------------------------------------------------

SMALL = dict(n_candidates=30, n_components=30, scattering_components=40, hyperplane_k=15)


@pytest.fixture(scope="module")
def fitted(slice_):
    X, y, _, _ = slice_
    return HybridClassifier(**SMALL).fit(X, y)


@pytest.mark.slow
def test_hybrid_scores_are_the_idm_nearest_plus_the_weighted_hyperplane(fitted, slice_):
    _, _, X_te, _ = slice_
    scores = fitted.class_scores(X_te[:20])
    dist, idx = fitted.kneighbors(X_te[:20], n_neighbors=fitted.n_candidates)
    labels = fitted.reference_classes()[idx]
    for i in range(20):
        for c in range(10):
            present = labels[i] == c
            if not present.any():
                assert np.isinf(scores[i, c])
                continue
            references = fitted.hyperplanes_.references()
            hull = LocalHyperplanes(references, fitted.reference_classes(), 10).distances(
                fitted.scattering_.transform(fitted.upright(X_te[i : i + 1])),
                fitted.hyperplane_k,
                fitted.hyperplane_reg,
            )[0, c]
            expected = dist[i][present].min() + fitted.hyperplane_weight * hull
            assert scores[i, c] == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_hybrid_is_at_least_as_accurate_as_the_idm_alone_on_a_slice(fitted, slice_):
    X, y, X_te, y_te = slice_
    idm = IDMClassifier(**{k: v for k, v in SMALL.items() if k in IDMClassifier().get_params()})
    acc_idm = np.mean(idm.fit(X, y).predict(X_te) == y_te)
    acc_hybrid = np.mean(fitted.predict(X_te) == y_te)
    assert acc_hybrid >= acc_idm > 0.85
    proba = fitted.predict_proba(X_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], fitted.predict(X_te))
    # a softmin over the candidates' classes: the others get nothing, and no answer is
    # certain when two classes are close
    scores = fitted.class_scores(X_te)
    np.testing.assert_array_equal(proba[np.isinf(scores)], 0.0)
    assert ((proba > 0.05) & (proba < 0.95)).any()
    fitted.set_params(temperature=1e-6)
    try:
        np.testing.assert_array_equal(fitted.predict_proba(X_te).max(axis=1), 1.0)
    finally:
        fitted.set_params(temperature=150.0)
    # with no hyperplane term the vote is the IDM's nearest neighbour
    fitted.set_params(hyperplane_weight=0.0)
    try:
        np.testing.assert_array_equal(fitted.predict(X_te), idm.predict(X_te))
    finally:
        fitted.set_params(hyperplane_weight=SMALL.get("hyperplane_weight", 150.0))


@pytest.mark.slow
def test_the_neighbours_behind_an_answer_are_of_the_class_answered(fitted, slice_):
    _, _, X_te, _ = slice_
    proba, dist, idx = fitted.answer(X_te, n_neighbors=3)
    answers = fitted.predict(X_te)
    np.testing.assert_array_equal(fitted.classes_[proba.argmax(1)], answers)
    assert idx.shape == dist.shape == (len(X_te), 3)
    np.testing.assert_array_equal(fitted.classes_[fitted.reference_classes()[idx[:, 0]]], answers)
    both = fitted.reference_classes()[idx[:, 1]] == fitted.reference_classes()[idx[:, 0]]
    assert np.all(dist[both, 1] >= dist[both, 0])  # IDM order within the class
    # where the IDM-nearest image has the class answered, it comes first as in kneighbors
    k_dist, k_idx = fitted.kneighbors(X_te, n_neighbors=1)
    agree = fitted.classes_[fitted.reference_classes()[k_idx[:, 0]]] == answers
    assert agree.mean() > 0.9
    np.testing.assert_array_equal(idx[agree, 0], k_idx[agree, 0])
    with pytest.raises(ParameterError, match="n_neighbors"):
        fitted.answer(X_te[:1], n_neighbors=fitted.n_candidates + 1)


@pytest.mark.slow
def test_hybrid_saves_and_loads_through_the_model_store(fitted, slice_, tmp_path):
    _, _, X_te, _ = slice_
    state, arrays = serialize.export_state(fitted)
    assert all(a.dtype != object for a in arrays.values())
    fresh = models.REGISTRY["knn-idm-hknn"].build(**fitted.get_params())
    serialize.import_state(fresh, state, arrays)
    np.testing.assert_array_equal(fresh.predict(X_te), fitted.predict(X_te))
    broken = {**arrays, "scattering_refs": arrays["scattering_refs"][:-1]}
    with pytest.raises(ModelFileError):
        serialize.import_state(
            models.REGISTRY["knn-idm-hknn"].build(**fitted.get_params()), state, broken
        )


@pytest.mark.parametrize(
    "params",
    [{"hyperplane_k": 0}, {"hyperplane_reg": 0.0}, {"hyperplane_weight": -1.0}, {"temperature": 0}],
)
def test_bad_hybrid_parameters_are_refused_by_name(params):
    with pytest.raises(ParameterError, match=next(iter(params))):
        HybridClassifier(**params).fit(np.zeros((4, 28, 28)), np.arange(4))


# --- the network's second opinion -------------------------------------------------------


@pytest.fixture(scope="module")
def with_network(slice_):
    X, y, _, _ = slice_
    return HybridClassifier(**SMALL, network_weight=60.0).fit(X, y)


@pytest.mark.slow
def test_the_network_adds_its_weight_times_minus_its_log_probability(fitted, with_network, slice_):
    _, _, X_te, _ = slice_
    images = X_te[:40]
    network = shipped().predict_proba(np.asarray(images).reshape(-1, 28, 28))
    plain = fitted.class_scores(images)
    among = np.isfinite(plain)
    np.testing.assert_array_equal(np.isfinite(with_network.class_scores(images)), among)
    added = with_network.class_scores(images)[among] - plain[among]
    expected = 60.0 * -np.log(np.clip(network, MIN_NETWORK_PROBABILITY, 1.0))
    np.testing.assert_allclose(added, expected[among], rtol=1e-6)
    _, parts = with_network.score_parts(images)
    np.testing.assert_allclose(parts.network[among], -np.log(np.clip(network, 1e-6, 1))[among])


@pytest.mark.slow
def test_a_hybrid_with_its_network_saves_loads_and_refuses_a_broken_network(
    with_network, slice_
):
    _, _, X_te, _ = slice_
    state, arrays = serialize.export_state(with_network)
    assert arrays["network_onnx"].dtype == np.uint8
    params = with_network.get_params()
    fresh = models.REGISTRY["knn-idm-hknn"].build(**params)
    serialize.import_state(fresh, state, arrays)
    np.testing.assert_array_equal(fresh.predict_proba(X_te), with_network.predict_proba(X_te))
    broken = {**arrays, "network_onnx": arrays["network_onnx"][:1000]}
    with pytest.raises(ModelFileError, match="ONNX"):
        serialize.import_state(models.REGISTRY["knn-idm-hknn"].build(**params), state, broken)
    without = {k: v for k, v in arrays.items() if k != "network_onnx"}
    with pytest.raises(ModelFileError, match="network"):
        serialize.import_state(models.REGISTRY["knn-idm-hknn"].build(**params), state, without)


def test_images_the_network_cannot_read_are_scored_without_it():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 17, size=(40, 8, 8)).astype(np.float64)
    y = np.arange(40) % 4
    small = dict(n_candidates=10, n_components=None, scattering_components=10, hyperplane_k=5)
    hybrid = HybridClassifier(**small, network_weight=60.0).fit(X, y)
    assert hybrid.network_ is None
    plain = HybridClassifier(**small).fit(X, y)
    np.testing.assert_array_equal(hybrid.class_scores(X[:5]), plain.class_scores(X[:5]))


def test_bytes_that_are_not_a_digit_network_are_refused():
    with pytest.raises(ModelFileError, match="ONNX"):
        OnnxNetwork(b"not a network")
    network = shipped()
    assert network.predict_proba(np.zeros((0, 28, 28))).shape == (0, 10)
    proba = network.predict_proba(np.zeros((3, 28, 28), np.uint8))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
def test_a_model_file_older_than_the_network_loads_and_answers_without_it(
    fitted, slice_, tmp_path
):
    _, _, X_te, _ = slice_
    params = {k: v for k, v in fitted.get_params().items() if k != "network_weight"}
    info = {"input": {"shape": [28, 28], "max_value": 255}}
    models.save(models.Model("knn-idm-hknn", params, fitted, info), tmp_path / "old")
    loaded = models.load(tmp_path / "old")
    assert loaded.estimator.network_weight == 0 and loaded.estimator.network_ is None
    np.testing.assert_array_equal(loaded.predict_proba(X_te), fitted.predict_proba(X_te))
