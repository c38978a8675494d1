"""Random forests, kernel SVMs and the cnn through the model store: identical predictions after
a round trip, no pickles, and refusal of tampered files and of states that would make
scikit-learn's compiled code read outside its arrays."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.svm import SVC

from digitrec import models
from digitrec.errors import ModelFileError, ParameterError
from digitrec.persistence import model_store as store
from digitrec.persistence import serialize


@pytest.fixture(scope="module")
def forest(uci) -> models.Model:
    return models.train("random-forest", uci, {"n_estimators": 12})


@pytest.fixture(scope="module")
def svc(uci) -> models.Model:
    return models.train("svc-rbf", uci)


def round_trip(model: models.Model, directory) -> models.Model:
    models.save(model, directory)
    return models.load(directory)


# --- round trips ----------------------------------------------------------------------------


def test_saved_forest_predicts_exactly_as_the_original(forest, uci, tmp_path):
    loaded = round_trip(forest, tmp_path / "forest")
    np.testing.assert_array_equal(loaded.predict(uci.X_test), forest.predict(uci.X_test))
    np.testing.assert_array_equal(
        loaded.predict_proba(uci.X_test), forest.predict_proba(uci.X_test)
    )
    assert len(loaded.estimator[-1].estimators_) == 12
    # The forest is not a trivial one: its trees disagree on some test images.
    assert (forest.predict_proba(uci.X_test).max(axis=1) < 1).any()


def test_saved_svc_predicts_exactly_as_the_original(svc, uci, tmp_path):
    loaded = round_trip(svc, tmp_path / "svc")
    np.testing.assert_array_equal(loaded.predict(uci.X_test), svc.predict(uci.X_test))
    np.testing.assert_array_equal(
        loaded.estimator.decision_function(uci.X_test), svc.estimator.decision_function(uci.X_test)
    )
    assert svc.predict(uci.X_test).tolist() != [svc.classes[0]] * len(uci.y_test)


def test_two_class_svc_keeps_the_sign_of_its_public_coefficients(uci):
    two = np.isin(uci.y_train, [3, 8])
    X = uci.X_train[two].reshape(two.sum(), -1).astype(np.float64)
    fitted = SVC(C=5.0).fit(X, uci.y_train[two])
    state, arrays = serialize.export_state(fitted)
    restored = serialize.import_state(SVC(C=5.0), json.loads(json.dumps(state)), arrays)
    np.testing.assert_array_equal(restored.dual_coef_, fitted.dual_coef_)
    np.testing.assert_array_equal(restored.intercept_, fitted.intercept_)
    np.testing.assert_array_equal(restored.decision_function(X), fitted.decision_function(X))


def test_saved_forest_and_svc_are_plain_npy_files_without_pickles(forest, svc, tmp_path):
    for name, model in (("forest", forest), ("svc", svc)):
        directory = models.save(model, tmp_path / name)
        manifest = json.loads((directory / "model.json").read_text())
        assert {p.suffix for p in directory.iterdir()} == {".json", ".npy", ".sha256"}
        for entry in manifest["arrays"].values():
            array = np.load(directory / entry["file"], allow_pickle=False)
            assert not array.dtype.hasobject and array.dtype.names is None


def test_forest_trees_are_stored_end_to_end_not_one_file_each(forest, tmp_path):
    directory = models.save(forest, tmp_path / "forest")
    assert len(list(directory.glob("*.npy"))) < 20  # 12 trees, a dozen arrays in all


# --- refusals -------------------------------------------------------------------------------


def test_a_tampered_forest_array_is_refused(forest, tmp_path):
    directory = models.save(forest, tmp_path / "forest")
    path = directory / "forest__node_threshold.npy"
    array = np.load(path)
    array[0] += 1.0
    np.save(path, array)
    with pytest.raises(ModelFileError, match="sha256"):
        models.load(directory)


def test_a_tampered_svc_array_is_refused(svc, tmp_path):
    directory = models.save(svc, tmp_path / "svc")
    path = directory / "svc__dual_coef.npy"
    array = np.load(path)
    np.save(path, array * 2)
    with pytest.raises(ModelFileError, match="sha256"):
        models.load(directory)


def forest_state(forest: models.Model):
    state, arrays = serialize.export_state(forest.estimator)
    return json.loads(json.dumps(state)), {k: np.array(v) for k, v in arrays.items()}


def fresh(kind: str):
    return models.build(kind)[0]


def test_a_forged_forest_with_consistent_hashes_is_still_refused(forest, tmp_path):
    # Someone who rewrites model.json can give any file a matching hash: the structure checks
    # are what keeps a child pointer outside the tree from reaching compiled code.
    state, arrays = forest_state(forest)
    left = arrays["forest__node_left_child"]
    left[np.flatnonzero(left > 0)[0]] = 10**9
    saved = store.ModelFile("random-forest", forest.params, arrays, state, forest.info)
    store.save(tmp_path / "forged", saved)
    with pytest.raises(ModelFileError, match="child outside its tree"):
        models.load(tmp_path / "forged")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s, a: a["forest__node_right_child"].__setitem__(0, 0), "child outside"),
        (lambda s, a: a["forest__node_left_child"].__setitem__(0, -1), "leaf has a right child"),
        (lambda s, a: a["forest__node_feature"].__setitem__(0, 64), "feature outside"),
        (lambda s, a: a.__setitem__("forest__values", a["forest__values"][:-1]), "shape"),
        (
            lambda s, a: a.__setitem__("forest__node_counts", a["forest__node_counts"] * 10**12),
            "shape",
        ),
        (lambda s, a: a.pop("forest__node_impurity"), "node_impurity"),
        (lambda s, a: s["forest"].__setitem__("format", "sklearn-forest/99"), "format"),
        (lambda s, a: s["forest"].__setitem__("max_features", [8]), "differ in length"),
        (lambda s, a: s.__setitem__("forest", ["not", "a", "dict"]), "not a JSON object"),
        (
            lambda s, a: a.__setitem__("forest__node_feature", a["forest__node_feature"] * 1.5),
            "dtype",
        ),
    ],
)
def test_malformed_forest_states_are_refused(forest, change, message):
    state, arrays = forest_state(forest)
    change(state, arrays)
    with pytest.raises(ModelFileError, match=message):
        serialize.import_state(fresh("random-forest"), state, arrays)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s, a: a["svc__n_support"].__setitem__(0, a["svc__n_support"][0] + 1),
            "do not add up",
        ),
        (lambda s, a: a.__setitem__("svc__dual_coef", a["svc__dual_coef"][:, 1:]), "shape"),
        (lambda s, a: a.__setitem__("svc__intercept", a["svc__intercept"][:3]), "shape"),
        (
            lambda s, a: a.__setitem__("svc__support_vectors", a["svc__support_vectors"][:, :10]),
            "features",
        ),
        (lambda s, a: a["svc__dual_coef"].__setitem__((0, 0), np.inf), "not finite"),
        (lambda s, a: s["svc"].__setitem__("format", "something-else"), "format"),
        (lambda s, a: s["svc"].__setitem__("shape_fit", [10, 3]), "shape_fit"),
        (lambda s, a: a.pop("svc__classes"), "svc__classes|classes"),
    ],
)
def test_malformed_svc_states_are_refused(svc, change, message):
    state, arrays = serialize.export_state(svc.estimator)
    state = json.loads(json.dumps(state))
    arrays = {k: np.array(v) for k, v in arrays.items()}
    change(state, arrays)
    with pytest.raises(ModelFileError, match=message):
        serialize.import_state(fresh("svc-rbf"), state, arrays)


def test_a_precomputed_kernel_svc_is_not_loaded(svc):
    state, arrays = serialize.export_state(svc.estimator[-1])
    with pytest.raises(ModelFileError, match="precomputed"):
        serialize.import_state(SVC(kernel="precomputed"), state, arrays)


# --- the cnn in the registry ----------------------------------------------------------------


def test_registering_and_building_the_cnn_does_not_import_torch():
    code = (
        "import sys; from digitrec import models; models.build('cnn'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_bad_cnn_parameters_are_refused_before_training():
    with pytest.raises(ParameterError, match="epochs"):
        models.build("cnn", {"epochs": 0})
    with pytest.raises(ParameterError, match="bad parameter for cnn"):
        models.build("cnn", {"layers": 3})


def test_cnn_trains_saves_and_loads_through_the_registry(mnist, tmp_path):
    pytest.importorskip("torch")
    data = mnist.subset(600, 200, seed=0)
    model = models.train("cnn", data, {"epochs": 1, "batch_size": 64, "n_threads": 1})
    loaded = round_trip(model, tmp_path / "cnn")
    np.testing.assert_array_equal(
        loaded.predict_proba(data.X_test), model.predict_proba(data.X_test)
    )
    assert loaded.kind == "cnn" and loaded.params["epochs"] == 1
    assert np.mean(loaded.predict(data.X_test) == data.y_test) > 0.3  # far above 0.1 chance


def test_registry_defaults_are_the_classifiers_own_but_for_declared_overrides():
    from digitrec.neighbors.hybrid import HybridClassifier
    from digitrec.neighbors.knn import KNNClassifier
    from digitrec.nets.cnn import CNNClassifier

    assert models.kind("cnn").defaults == CNNClassifier().get_params()
    hybrid = {**HybridClassifier().get_params(), "network_weight": 75.0}
    assert models.kind("knn-idm-hknn").defaults == hybrid
    assert models.kind("knn").defaults == {**KNNClassifier().get_params(), "n_neighbors": 3}
