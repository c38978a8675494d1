"""Grid search: the same folds, scores and choice as scikit-learn's GridSearchCV."""

import json

import numpy as np
import pytest
from conftest import run_digitrec
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


def _boundary_ties(X, y, p, k):
    """Per fold: does any validation image have training images tied at its k-th distance?"""
    tied = []
    for train, valid in StratifiedKFold(5).split(X, y):
        distances = np.sort(cdist(X[valid], X[train], "minkowski", p=p), axis=1)
        tied.append(bool(np.any(distances[:, k - 1] == distances[:, k])))
    return tied


def _reference_scores(X, y, params):
    """Brute force with the documented rule: equal distances go to the lower training index."""
    scores = []
    for train, valid in StratifiedKFold(5).split(X, y):
        distances = cdist(X[valid], X[train], "minkowski", p=params["p"])
        order = np.argsort(distances, axis=1, kind="stable")[:, : params["n_neighbors"]]
        nearest = np.take_along_axis(distances, order, axis=1)
        if params["weights"] == "uniform":
            weights = np.ones_like(nearest)
        else:
            with np.errstate(divide="ignore"):
                weights = 1.0 / nearest
            exact = np.isinf(weights)
            weights[exact.any(axis=1)] = exact[exact.any(axis=1)]
        votes = np.zeros((len(valid), 10))
        np.add.at(votes, (np.arange(len(valid))[:, None], y[train][order]), weights)
        scores.append(np.mean(votes.argmax(axis=1) == y[valid]))
    return scores


def test_best_parameters_and_score_equal_grid_search_cv(searches):
    theirs, ours = searches
    assert ours.best.params == theirs.best_params_
    assert ours.best.mean == theirs.best_score_


def test_every_grid_point_equals_grid_search_cv_but_for_ties(uci, searches):
    theirs, ours = searches
    X = uci.X_train.reshape(len(uci.X_train), -1)
    results = theirs.cv_results_
    identical = 0
    for j, params in enumerate(results["params"]):
        point = next(pt for pt in ours.results if pt.params == params)
        # Exact neighbours with equal distances going to the lower index, by brute force.
        assert point.scores == pytest.approx(_reference_scores(X, uci.y_train, params), abs=0)
        their_scores = [results[f"split{f}_test_score"][j] for f in range(5)]
        if point.scores == their_scores:
            assert point.mean == results["mean_test_score"][j]
            assert point.std == pytest.approx(results["std_test_score"][j], abs=1e-15)
            identical += 1
            continue
        # Which of several equidistant images joins the vote is arbitrary in scikit-learn
        # (its heap order): a fold may differ only where such a tie exists.
        ties = _boundary_ties(X, uci.y_train, params["p"], params["n_neighbors"])
        for fold, (mine, sklearn_score) in enumerate(zip(point.scores, their_scores, strict=True)):
            assert mine == sklearn_score or ties[fold], (params, fold)
    assert identical >= 0.8 * len(results["params"])


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
