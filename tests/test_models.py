"""The model registry, parameters, saving and loading, kNN explanations, and the headline
accuracies the tutorials publish."""

from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from digitrec import KNNClassifier, models
from digitrec.errors import ModelFileError, ParameterError

# --- registry and parameters ----------------------------------------------------------------


def test_registry_lists_knn_and_linear_svc():
    assert {"knn", "linear-svc"} <= set(models.REGISTRY)
    for name in ("knn", "linear-svc"):
        entry = models.kind(name)
        assert entry.name == name and entry.summary and entry.defaults


def test_unknown_kind_is_refused_listing_the_kinds():
    with pytest.raises(ParameterError, match=r"unknown model kind 'forest'.*knn.*linear-svc"):
        models.kind("forest")


@pytest.mark.parametrize(
    "pair, expected",
    [
        ("n_neighbors=3", {"n_neighbors": 3}),
        ("n_neighbors = 7 ", {"n_neighbors": 7}),
        ("C=0.5", {"C": 0.5}),
        ("tol=1e-3", {"tol": 0.001}),
        ("random_state=-2", {"random_state": -2}),
        ("dual=true", {"dual": True}),
        ("fit_intercept=false", {"fit_intercept": False}),
        ("weights=distance", {"weights": "distance"}),
        ('metric="cosine"', {"metric": "cosine"}),
        ("batch_size=null", {"batch_size": None}),
        ("name=a=b", {"name": "a=b"}),
    ],
)
def test_parse_params_reads_numbers_bools_and_words(pair, expected):
    parsed = models.parse_params([pair])
    assert parsed == expected
    # 3 must be an int and 0.5 a float, not merely equal to one.
    for key, value in expected.items():
        assert type(parsed[key]) is type(value)


def test_parse_params_combines_several_pairs():
    assert models.parse_params(["n_neighbors=5", "weights=distance", "p=1"]) == {
        "n_neighbors": 5, "weights": "distance", "p": 1,
    }


@pytest.mark.parametrize("pair", ["n_neighbors", "=3", " =3", ""])
def test_parse_params_refuses_pairs_without_a_name_and_value(pair):
    with pytest.raises(ParameterError, match="not name=value"):
        models.parse_params([pair])


@pytest.mark.parametrize(
    "kind, bad, allowed",
    [
        ("knn", "k", ["n_neighbors", "weights", "metric", "p", "n_jobs", "batch_size"]),
        ("linear-svc", "n_neighbors", ["C", "max_iter", "random_state", "tol", "penalty"]),
    ],
)
def test_unknown_parameter_is_refused_naming_the_allowed_ones(kind, bad, allowed):
    with pytest.raises(ParameterError) as raised:
        models.build(kind, {bad: 3})
    message = str(raised.value)
    assert repr(bad) in message or bad in message
    allowed_part = message.split("allowed:")[1]
    for name in allowed:
        assert name in allowed_part


def test_build_merges_the_given_parameters_over_the_defaults():
    estimator, merged = models.build("knn", {"n_neighbors": 9})
    assert merged == {**models.kind("knn").defaults, "n_neighbors": 9}
    assert estimator.steps[-1][1].get_params()["n_neighbors"] == 9


def test_a_bad_parameter_value_is_a_parameter_error_at_training(uci):
    with pytest.raises(ParameterError, match="n_neighbors"):
        models.train("knn", uci, {"n_neighbors": 0})


# --- train, save, load -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(uci):
    # LinearSVC's default 1,000 iterations may not converge on raw UCI pixels; that says
    # nothing about saving and loading.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svc = models.train("linear-svc", uci)
    return {"knn": models.train("knn", uci, {"n_neighbors": 5}), "linear-svc": svc}


@pytest.mark.parametrize("kind", ["knn", "linear-svc"])
def test_saved_and_loaded_models_predict_exactly_the_same(trained, uci, tmp_path, kind):
    model = trained[kind]
    models.save(model, tmp_path / kind)
    loaded = models.load(tmp_path / kind)

    assert loaded.kind == kind and loaded.params == model.params
    assert loaded.input_shape == (8, 8) and loaded.max_value == 16
    np.testing.assert_array_equal(loaded.classes, model.classes)
    expected = model.predict(uci.X_test)
    got = loaded.predict(uci.X_test)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(loaded.predict_proba(uci.X_test), model.predict_proba(uci.X_test))
    # A model that learned something: far better than the 10% of guessing.
    assert np.mean(got == uci.y_test) > 0.9


def test_model_json_records_the_training_data_and_merged_parameters(trained, uci, tmp_path):
    models.save(trained["knn"], tmp_path / "knn")
    manifest = json.loads((tmp_path / "knn" / "model.json").read_text())
    assert manifest["kind"] == "knn"
    assert manifest["params"] == {**models.kind("knn").defaults, "n_neighbors": 5}
    assert manifest["dataset"]["name"] == "uci-digits"
    assert manifest["dataset"]["fingerprint"] == uci.fingerprint()
    assert manifest["input"] == {"shape": [8, 8], "max_value": 16}
    # The kNN reference images are saved as the uint8 pixels they are, not as floats.
    assert manifest["arrays"]["knn__X"]["shape"] == [1437, 64]
    assert np.dtype(manifest["arrays"]["knn__X"]["dtype"]) == np.uint8


def test_loading_a_model_of_an_unknown_kind_is_refused(trained, tmp_path):
    models.save(trained["knn"], tmp_path / "m")
    manifest_path = tmp_path / "m" / "model.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["kind"] = "deep-dream"
    manifest_path.write_text(json.dumps(manifest))
    signature = hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    (tmp_path / "m" / "model.sha256").write_text(signature)
    with pytest.raises(ModelFileError, match="unknown model kind 'deep-dream'"):
        models.load(tmp_path / "m")


def test_knn_neighbors_are_training_images_nearest_first(trained, uci):
    model = trained["knn"]
    queries = uci.X_test[:10]
    distances, indices = model.neighbors(queries, k=4)
    assert distances.shape == indices.shape == (10, 4)
    assert np.all(np.diff(distances, axis=1) >= 0)
    # Each distance is the euclidean distance to the training image the index names.
    reference = uci.X_train[indices].reshape(10, 4, -1).astype(np.float64)
    flat = queries.reshape(10, 1, -1).astype(np.float64)
    np.testing.assert_allclose(distances, np.linalg.norm(reference - flat, axis=2))
    # and no training image is nearer than the first one found.
    all_distances = np.linalg.norm(
        uci.X_train.reshape(1, len(uci.X_train), -1).astype(np.float64) - flat, axis=2
    )
    np.testing.assert_allclose(distances[:, 0], all_distances.min(axis=1))


def test_knn_neighbors_default_to_the_models_k(trained, uci):
    distances, indices = trained["knn"].neighbors(uci.X_test[:3])
    assert indices.shape == (3, 5)


def test_knn_training_images_and_labels_survive_saving(trained, uci, tmp_path):
    models.save(trained["knn"], tmp_path / "knn")
    for model in (trained["knn"], models.load(tmp_path / "knn")):
        images = model.training_images()
        assert images.shape == (1437, 8, 8)
        np.testing.assert_array_equal(images, uci.X_train)
        np.testing.assert_array_equal(model.training_labels(), uci.y_train)


def test_models_without_neighbours_say_so(trained, uci):
    svc = trained["linear-svc"]
    assert svc.neighbors(uci.X_test[:2]) is None
    assert svc.training_images() is None
    assert svc.training_labels() is None


# --- the headline numbers -----------------------------------------------------------------------


@pytest.mark.slow
def test_full_mnist_knn_k3_accuracy_is_the_published_0_9705(mnist):
    model = models.train("knn", mnist, {"n_neighbors": 3})
    # The registry's defaults are scikit-learn's: uniform votes, Minkowski p=2 (euclidean).
    assert model.params["weights"] == "uniform"
    assert (model.params["metric"], model.params["p"]) == ("minkowski", 2)
    accuracy = float(np.mean(model.predict(mnist.X_test) == mnist.y_test))
    assert round(accuracy, 4) == 0.9705


def test_uci_first_1000_k3_distance_weights_accuracy_is_0_9611():
    X, y = load_digits(return_X_y=True)
    classifier = KNNClassifier(n_neighbors=3, weights="distance").fit(X[:1000], y[:1000])
    assert len(y[1000:]) == 797
    assert round(classifier.score(X[1000:], y[1000:]), 4) == 0.9611


def test_uci_tutorial_split_k20_accuracy_is_0_9694():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=1337)
    classifier = KNNClassifier(n_neighbors=20).fit(X_train, y_train)
    assert round(classifier.score(X_test, y_test), 4) == 0.9694
