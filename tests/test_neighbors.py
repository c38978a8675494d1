"""KNNClassifier and the exact search behind it, checked against scikit-learn."""

import numpy as np
import pytest
from exact_neighbors import metric_distances, ranking_distances, reference_proba, tied_at_kth
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.estimator_checks import check_estimator

from digitrec import KNNClassifier
from digitrec.neighbors.search import NeighborIndex


@pytest.fixture(scope="module")
def uci_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, random_state=1337)


@pytest.mark.slow
def test_passes_scikit_learn_estimator_checks():
    check_estimator(KNNClassifier())


def _same_as_sklearn(X_train, y_train, X_test, **params):
    ours = KNNClassifier(**params).fit(X_train, y_train)
    theirs = KNeighborsClassifier(algorithm="brute", **params).fit(X_train, y_train)
    our_dist, _ = ours.kneighbors(X_test)
    their_dist, _ = theirs.kneighbors(X_test)
    # Neighbours at exactly equal distance may come in another order; the distances may not.
    np.testing.assert_allclose(our_dist, their_dist, rtol=1e-9, atol=1e-9)
    # Where several training images tie at the k-th distance, which one joins the vote is a
    # choice: ours is the lower training index, checked against our own brute force; scikit-
    # learn's is its heap order. Everywhere else the answers must be identical.
    k = ours.n_neighbors
    metric, p = params.get("metric", "minkowski"), params.get("p", 2)
    ranking = ranking_distances(X_test, X_train, metric, p)
    clear = ~tied_at_kth(ranking, k)
    distances = metric_distances(X_test, X_train, metric, p)
    expected = reference_proba(ranking, distances, y_train, k, params.get("weights", "uniform"))
    np.testing.assert_allclose(ours.predict_proba(X_test), expected, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X_test)[clear], theirs.predict(X_test)[clear])
    np.testing.assert_allclose(
        ours.predict_proba(X_test)[clear], theirs.predict_proba(X_test)[clear], atol=1e-12
    )
    return clear


@pytest.mark.parametrize(
    "metric,p",
    [
        ("minkowski", 2),
        ("minkowski", 1),
        ("minkowski", 3),
        ("manhattan", 1),
        ("cosine", 2),
    ],
)
@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_matches_scikit_learn_on_uci_digits(uci_split, metric, p, weights, k):
    X_train, X_test, y_train, _ = uci_split
    clear = _same_as_sklearn(
        X_train, y_train, X_test, n_neighbors=k, weights=weights, metric=metric, p=p
    )
    assert clear.any()


def test_matches_scikit_learn_for_a_fractional_minkowski_power(uci_split):
    # scikit-learn's generic Minkowski path is slow: one k and weighting is enough here.
    X_train, X_test, y_train, _ = uci_split
    _same_as_sklearn(X_train, y_train, X_test, n_neighbors=4, weights="distance", p=1.5)


def test_even_k_vote_ties_go_to_the_lower_class():
    X = np.array([[0.0], [1.0], [10.0], [11.0]])
    y = np.array([7, 3, 7, 3])
    clf = KNNClassifier(n_neighbors=2).fit(X, y)
    # Query at 0.5: one neighbour of each class at equal distance -> class 3 (the lower).
    assert clf.predict([[0.5]])[0] == 3
    assert clf.predict([[0.2]])[0] == 3  # 2-vote tie again, still the lower class
    theirs = KNeighborsClassifier(n_neighbors=2, algorithm="brute").fit(X, y)
    assert theirs.predict([[0.2]])[0] == 3


def test_matches_scikit_learn_on_an_mnist_slice(mnist):
    X_train = mnist.X_train[:6000].reshape(6000, -1)
    X_test = mnist.X_test[:1000].reshape(1000, -1)
    for k, weights in [(3, "uniform"), (4, "uniform"), (5, "distance")]:
        _same_as_sklearn(X_train, mnist.y_train[:6000], X_test, n_neighbors=k, weights=weights)
    _same_as_sklearn(X_train[:2000], mnist.y_train[:2000], X_test[:200], n_neighbors=3, p=1)


def test_search_stays_exact_where_float32_cannot_separate_neighbours():
    # Points far from the origin that differ in the 6th significant digit: float32 rounds
    # them together, so the fast pass cannot rank them and the exact fallback must.
    rng = np.random.default_rng(0)
    X = 1e4 + rng.integers(0, 1000, size=(3000, 20)) * 1e-4
    Q = 1e4 + rng.integers(0, 1000, size=(50, 20)) * 1e-4
    ours_d, ours_i = NeighborIndex(X).query(Q, 5)
    exact = np.sqrt(((Q[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    expected_i = np.argsort(exact, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ours_i, expected_i)
    np.testing.assert_allclose(ours_d, np.take_along_axis(exact, expected_i, 1), rtol=1e-12)


@pytest.mark.parametrize("metric,p", [("euclidean", 2), ("manhattan", 1), ("minkowski", 3)])
def test_small_batches_give_the_same_answer(uci_split, metric, p):
    X_train, X_test, _, _ = uci_split
    whole = NeighborIndex(X_train, metric, p).query(X_test, 6)
    batched = NeighborIndex(X_train, metric, p, batch_size=7).query(X_test, 6)
    np.testing.assert_array_equal(whole[1], batched[1])
    np.testing.assert_array_equal(whole[0], batched[0])


def test_kneighbors_without_queries_leaves_each_point_out(uci_split):
    X_train, _, y_train, _ = uci_split
    ours = KNNClassifier(n_neighbors=3).fit(X_train, y_train)
    _, idx = ours.kneighbors()
    assert idx.shape == (len(X_train), 3)
    assert not (idx == np.arange(len(X_train))[:, None]).any()
    theirs = KNeighborsClassifier(n_neighbors=3, algorithm="brute").fit(X_train, y_train)
    np.testing.assert_allclose(ours.kneighbors()[0], theirs.kneighbors()[0])


def test_bad_parameters_name_the_parameter():
    X, y = np.zeros((4, 2)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="'weights' parameter"):
        KNNClassifier(weights="closest").fit(X, y)
    with pytest.raises(ValueError, match="'metric' parameter"):
        KNNClassifier(metric="hamming").fit(X, y)
    with pytest.raises(ValueError, match="n_neighbors <= n_samples_fit"):
        KNNClassifier(n_neighbors=9).fit(X, y).predict(X)
