"""Two-stage search: the IDM kernel, the stage-1 search over copies, the estimator."""

from __future__ import annotations

import numpy as np
import pytest

from digitrec.errors import ParameterError
from digitrec.features.augment import augment
from digitrec.neighbors.idm import (
    IDMClassifier,
    idm_distance,
    idm_features,
    idm_pairs,
    nearest_references,
)


def idm_reference(q: np.ndarray, r: np.ndarray, warp: int, context: int) -> float:
    """Straight from the definition, with explicit loops: the kernel must agree."""
    channels, h, w = q.shape
    pad = warp + context
    qp = np.pad(q, ((0, 0), (context, context), (context, context)))
    rp = np.pad(r, ((0, 0), (pad, pad), (pad, pad)))
    total = 0.0
    size = 2 * context + 1
    for y in range(h):
        for x in range(w):
            patch = qp[:, y : y + size, x : x + size]
            best = np.inf
            for dy in range(-warp, warp + 1):
                for dx in range(-warp, warp + 1):
                    ry, rx = y + dy + warp, x + dx + warp
                    other = rp[:, ry : ry + size, rx : rx + size]
                    best = min(best, float(((patch - other) ** 2).sum()))
            total += best
    return total


@pytest.mark.parametrize(("warp", "context"), [(0, 0), (1, 1), (2, 1), (1, 2)])
@pytest.mark.parametrize("query_ink", ["everywhere", "in a corner block", "nowhere"])
def test_idm_kernel_matches_the_definition(warp, context, query_ink):
    rng = np.random.default_rng(warp * 10 + context)
    q = rng.random((2, 9, 11), dtype=np.float32)
    r = rng.random((2, 9, 11), dtype=np.float32)
    # A query with blank margins takes the kernel's shortcut outside the inked box.
    if query_ink == "in a corner block":
        q[:, :, :] *= np.pad(np.ones((4, 3), np.float32), ((1, 4), (6, 2)))
    elif query_ink == "nowhere":
        q[:] = 0
    r[:, 6:, :4] = 0
    expected = idm_reference(q, r, warp, context)
    assert idm_distance(q, r, warp, context) == pytest.approx(expected, rel=1e-4)


def digit() -> np.ndarray:
    img = np.zeros((28, 28), np.uint8)
    img[6:22, 12:15] = 255
    img[6:9, 9:15] = 255
    img[19:22, 9:19] = 255
    return img


def test_idm_is_zero_for_identical_images_and_small_for_a_shift():
    feats = idm_features(np.stack([digit(), np.roll(digit(), 1, axis=1)]))
    assert idm_distance(feats[0], feats[0]) == 0.0
    euclidean = float(((feats[0] - feats[1]) ** 2).sum())
    # warp 0 and no context is the squared euclidean distance itself
    assert idm_distance(feats[1], feats[0], warp=0, context=0) == pytest.approx(euclidean, rel=1e-5)
    assert euclidean > 0
    assert idm_distance(feats[1], feats[0], warp=1, context=0) < 1e-6 * euclidean
    # with 3x3 context, the shift still costs far less than the unwarped comparison
    assert idm_distance(feats[1], feats[0], warp=1) < 0.01 * idm_distance(
        feats[1], feats[0], warp=0
    )


def test_idm_pairs_checks_candidate_indices():
    feats = idm_features(np.stack([digit(), digit()]))
    with pytest.raises(ParameterError):
        idm_pairs(feats[:1], feats, np.array([[2]]))


def test_nearest_references_takes_the_best_copy_of_each_query():
    rng = np.random.default_rng(3)
    refs = rng.random((10, 5), dtype=np.float32)
    queries = rng.random((4, 3, 5), dtype=np.float32)  # 4 queries, 3 copies each
    dist, idx = nearest_references(refs, queries, k=4)
    full = np.sqrt(((queries[:, :, None, :] - refs[None, None]) ** 2).sum(-1))  # (4, 3, 10)
    best = full.min(axis=1)
    np.testing.assert_array_equal(idx, np.argsort(best, axis=1)[:, :4])
    np.testing.assert_allclose(dist, np.sort(best, axis=1)[:, :4], rtol=1e-4)


@pytest.fixture(scope="module")
def slice_(mnist):
    return mnist.X_train[:3000], mnist.y_train[:3000], mnist.X_test[:300], mnist.y_test[:300]


def test_idm_reranking_does_not_lose_accuracy_against_stage_1(slice_):
    X, y, X_te, y_te = slice_
    params = dict(n_neighbors=3, n_candidates=30, n_components=30)
    first = IDMClassifier(rerank=False, **params).fit(X, y)
    second = IDMClassifier(rerank=True, **params).fit(X, y)
    acc_first = np.mean(first.predict(X_te) == y_te)
    acc_second = np.mean(second.predict(X_te) == y_te)
    assert acc_first > 0.85
    assert acc_second >= acc_first


def test_kneighbors_returns_real_training_images(slice_):
    X, y, X_te, _ = slice_
    model = IDMClassifier(n_neighbors=5, n_candidates=20, shift=1).fit(X, y)
    dist, idx = model.kneighbors(X_te[:10])
    assert idx.shape == dist.shape == (10, 5)
    assert idx.min() >= 0 and idx.max() < len(X)
    assert np.all(np.diff(dist, axis=1) >= 0)
    assert all(len(set(row)) == 5 for row in idx.tolist())  # copies never repeat an image
    # a training image's nearest neighbour is itself, at IDM distance 0
    d_self, i_self = model.kneighbors(X[:5], n_neighbors=1)
    np.testing.assert_array_equal(i_self[:, 0], np.arange(5))
    np.testing.assert_array_equal(d_self[:, 0], 0.0)
    proba = model.predict_proba(X_te[:10])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X_te[:10]))


def test_export_import_round_trip_predicts_identically(slice_):
    X, y, X_te, _ = slice_
    params = dict(n_neighbors=3, weights="distance", n_candidates=20, shift=1, n_components=20)
    model = IDMClassifier(**params).fit(X[:1000], y[:1000])
    state, arrays = model.export_state()
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["images"].dtype == np.uint8
    fresh = IDMClassifier(**params)
    fresh.import_state(state, arrays)
    np.testing.assert_array_equal(fresh.predict(X_te), model.predict(X_te))
    d1, i1 = model.kneighbors(X_te[:20])
    d2, i2 = fresh.kneighbors(X_te[:20])
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)


@pytest.mark.parametrize(
    "params",
    [
        {"n_neighbors": 0},
        {"weights": "gaussian"},
        {"warp": -1},
        {"n_candidates": 2, "n_neighbors": 3},
        {"n_components": 0},
    ],
)
def test_bad_parameters_are_refused_by_name(params):
    name = next(iter(params)) if "n_candidates" not in params else "n_candidates"
    with pytest.raises(ParameterError, match=name):
        IDMClassifier(**params).fit(np.zeros((4, 28, 28)), np.arange(4))


def test_stage_1_with_shifted_copies_is_the_brute_force_minimum_over_copies(slice_):
    X, y, X_te, _ = slice_
    model = IDMClassifier(rerank=False, shift=1, deskew=False, n_components=None)
    model.fit(X[:300], y[:300])
    dist, idx = model.kneighbors(X_te[:6], n_neighbors=4)
    copies, _, origin = augment(X_te[:6], None, shift=1)  # shifted copies of the queries
    q = copies.reshape(len(copies), -1).astype(np.float64)
    r = X[:300].reshape(300, -1).astype(np.float64)
    full = np.sqrt(((q[:, None, :] - r[None]) ** 2).sum(-1))
    best = np.full((6, 300), np.inf)
    np.minimum.at(best, (origin, slice(None)), full)
    np.testing.assert_array_equal(idx, np.argsort(best, axis=1, kind="stable")[:, :4])
    np.testing.assert_allclose(dist, np.sort(best, axis=1)[:, :4], rtol=1e-4)
