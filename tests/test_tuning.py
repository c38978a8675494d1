"""Grid search: the same folds, scores and choice as scikit-learn's GridSearchCV."""

import json

import numpy as np
import pytest
from conftest import run_digitrec
from exact_neighbors import ranking_distances, reference_proba, tied_at_kth
from scipy.spatial.distance import cdist
from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier

from digitrec.errors import ParameterError
from digitrec.evaluation import tuning

GRID = {"n_neighbors": [2, 4, 6, 8, 10], "p": [1, 2, 3], "weights": ["uniform", "distance"]}


@pytest.fixture(scope="module")
def searches(uci):
    X = uci.X_train.reshape(len(uci.X_train), -1)
    theirs = GridSearchCV(KNeighborsClassifier(), GRID, cv=5).fit(X, uci.y_train)
    ours = tuning.tune("knn", uci, GRID, folds=5, progress=False)
    return theirs, ours


def _reference_folds(X, y, params):
    """Per fold: the accuracy by our own brute force (equal distances to the lower training
    index), and whether the fold's answer is defined for any implementation (no validation
    image has training images tied at its k-th distance)."""
    k, p = params["n_neighbors"], params["p"]
    folds = []
    for train, valid in StratifiedKFold(5).split(X, y):
        ranking = ranking_distances(X[valid], X[train], "minkowski", p)
        distances = cdist(X[valid], X[train], "minkowski", p=p)
        proba = reference_proba(ranking, distances, y[train], k, params["weights"])
        accuracy = np.mean(proba.argmax(axis=1) == y[valid])
        folds.append((accuracy, not tied_at_kth(ranking, k).any()))
    return folds


@pytest.fixture(scope="module")
def reference(uci, searches):
    X = uci.X_train.reshape(len(uci.X_train), -1)
    params = searches[0].cv_results_["params"]
    return [_reference_folds(X, uci.y_train, point) for point in params]


def test_every_grid_point_follows_the_tie_rule_of_our_brute_force(searches, reference):
    theirs, ours = searches
    for params, folds in zip(theirs.cv_results_["params"], reference, strict=True):
        point = next(pt for pt in ours.results if pt.params == params)
        assert point.scores == [accuracy for accuracy, _ in folds], params
    # The UCI folds do hold k-th distance ties, so the rule is exercised, not vacuous.
    assert not all(defined for folds in reference for _, defined in folds)


def test_every_grid_point_equals_grid_search_cv_where_the_answer_is_defined(searches, reference):
    theirs, ours = searches
    results = theirs.cv_results_
    compared = 0
    for j, (params, folds) in enumerate(zip(results["params"], reference, strict=True)):
        point = next(pt for pt in ours.results if pt.params == params)
        for fold, (_, defined) in enumerate(folds):
            # Which of several equidistant images joins the vote is scikit-learn's heap order,
            # an arbitrary choice: those folds are checked against our brute force only.
            if defined:
                assert point.scores[fold] == results[f"split{fold}_test_score"][j], (params, fold)
                compared += 1
        if all(defined for _, defined in folds):
            assert point.mean == results["mean_test_score"][j]
            assert point.std == pytest.approx(results["std_test_score"][j], abs=1e-15)
    assert compared > 0


def test_best_parameters_are_the_first_highest_mean_as_in_grid_search_cv(searches, reference):
    theirs, ours = searches
    # GridSearchCV's rule (rank by mean, the first in grid order on equal means) applied to
    # the brute force's scores: scikit-learn's own choice may hang on its tie order.
    means = [np.mean([accuracy for accuracy, _ in folds]) for folds in reference]
    assert ours.best.params == theirs.cv_results_["params"][int(np.argmax(means))]
    assert ours.best.mean == max(means)


def test_the_tutorial_grid_picks_k2_p2(uci, searches):
    _, ours = searches
    uniform = [pt for pt in ours.results if pt.params["weights"] == "uniform"]
    best = max(uniform, key=lambda pt: pt.mean)
    assert (best.params["n_neighbors"], best.params["p"]) == (2, 2)
    assert round(best.mean, 4) == 0.9833


def test_result_json_has_the_documented_keys(searches):
    _, ours = searches
    document = json.loads(json.dumps(ours.to_json()))
    assert {"best_params", "best_score", "results", "test_accuracy", "seconds"} <= set(document)
    assert len(document["results"]) == 30
    assert {"params", "mean", "std"} <= set(document["results"][0])
    assert 0.9 < document["test_accuracy"] <= 1.0


def test_grid_specs_parse_and_bad_ones_are_refused():
    assert tuning.parse_grid(["n_neighbors=2,4", "weights=uniform,distance"]) == {
        "n_neighbors": [2, 4],
        "weights": ["uniform", "distance"],
    }
    with pytest.raises(ParameterError):
        tuning.parse_grid(["n_neighbors"])
    with pytest.raises(ParameterError):
        tuning.parse_grid(["=3"])


def test_unknown_grid_parameters_are_refused_before_any_work(uci):
    with pytest.raises(ParameterError, match="bogus"):
        tuning.tune("knn", uci, {"bogus": [1, 2]}, progress=False)


def test_other_model_kinds_use_plain_cross_validation(uci):
    result = tuning.tune("linear-svc", uci, {"C": [0.01, 0.1]}, folds=3, progress=False)
    assert [pt.params for pt in result.results] == [{"C": 0.01}, {"C": 0.1}]
    assert all(len(pt.scores) == 3 for pt in result.results)
    assert result.best.mean >= max(pt.mean for pt in result.results)


def test_cli_tune_without_a_kind_tunes_knn_on_its_default_grid(digitrec_home):
    done = run_digitrec("tune", "-d", "uci-digits", "--folds", "2", "--json", timeout=300)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["kind"] == "knn"
    assert len(found["results"]) == len(ParameterGrid(tuning.DEFAULT_GRIDS["knn"]))
