"""CNNClassifier: learns, is reproducible, saves without pickles, stops early, checks input.

The data are scikit-learn's bundled 8x8 UCI digits blown up to MNIST's 28x28 format, so
these tests need no download and train in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits

pytest.importorskip("torch")

from digitrec.errors import ModelFileError, ParameterError  # noqa: E402
from digitrec.nets import cnn  # noqa: E402
from digitrec.nets.cnn import CNNClassifier  # noqa: E402

FAST = {"epochs": 2, "batch_size": 32, "n_threads": 1}


def uci_as_mnist() -> tuple[np.ndarray, np.ndarray]:
    """UCI digits (values 0..16, 8x8) as uint8 28x28: 3x upscale to 24x24, 2-pixel border."""
    digits = load_digits()
    big = np.kron(digits.images, np.ones((3, 3))) * (255 / 16)
    images = np.pad(big, ((0, 0), (2, 2), (2, 2))).round().astype(np.uint8)
    return images, digits.target


@pytest.fixture(scope="module")
def data():
    images, labels = uci_as_mnist()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, test = order[:800], order[800:1200]
    return images[train], labels[train], images[test], labels[test]


@pytest.fixture(scope="module")
def fitted(data):
    X, y, _, _ = data
    return CNNClassifier(epochs=4, batch_size=32, n_threads=1, seed=1).fit(X, y)


def test_learns_digits_far_above_chance(fitted, data):
    _, _, X_test, y_test = data
    assert fitted.score(X_test, y_test) > 0.85


def test_predict_proba_is_a_distribution_over_classes(fitted, data):
    _, _, X_test, _ = data
    proba = fitted.predict_proba(X_test)
    assert proba.shape == (len(X_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert (proba >= 0).all()
    np.testing.assert_array_equal(fitted.predict(X_test), fitted.classes_[proba.argmax(1)])


def test_flattened_and_square_images_give_the_same_answer(fitted, data):
    _, _, X_test, _ = data
    np.testing.assert_array_equal(
        fitted.predict_proba(X_test), fitted.predict_proba(X_test.reshape(len(X_test), -1))
    )


def test_history_has_one_entry_per_epoch(fitted):
    history = fitted.history_
    assert fitted.n_epochs_ == len(history["epoch"]) >= 1
    for key in ("train_loss", "val_loss", "val_accuracy", "learning_rate", "seconds"):
        assert len(history[key]) == fitted.n_epochs_, key
    assert history["train_loss"][-1] < history["train_loss"][0]
    assert all(0 <= a <= 1 for a in history["val_accuracy"])
    assert fitted.n_features_in_ == 784
    assert 50_000 < fitted.n_parameters_ < 300_000


def test_same_seed_gives_identical_weights_and_predictions(data):
    X, y, X_test, _ = data
    first = CNNClassifier(seed=7, **FAST).fit(X[:300], y[:300])
    second = CNNClassifier(seed=7, **FAST).fit(X[:300], y[:300])
    other = CNNClassifier(seed=8, **FAST).fit(X[:300], y[:300])
    w1, w2, w_other = (m.export_state()[1] for m in (first, second, other))
    for name in w1:
        np.testing.assert_array_equal(w1[name], w2[name], err_msg=name)
    assert any(not np.array_equal(w1[name], w_other[name]) for name in w1)
    np.testing.assert_array_equal(first.predict_proba(X_test), second.predict_proba(X_test))
    assert first.history_["train_loss"] == second.history_["train_loss"]


def test_fit_leaves_the_callers_torch_random_state_alone(data):
    import torch

    X, y, _, _ = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    CNNClassifier(epochs=1, n_threads=1).fit(X[:100], y[:100])
    assert torch.equal(torch.rand(3), expected)


def test_export_import_round_trip_through_json_is_exact(fitted, data):
    _, _, X_test, _ = data
    state, arrays = fitted.export_state()
    for name, array in arrays.items():
        assert name.isidentifier(), name
        assert array.dtype == np.float32, name
    restored = CNNClassifier(**fitted.get_params())
    restored.import_state(json.loads(json.dumps(state)), {k: v.copy() for k, v in arrays.items()})
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))
    np.testing.assert_array_equal(restored.classes_, fitted.classes_)
    assert restored.history_ == fitted.history_
    assert restored.best_epoch_ == fitted.best_epoch_


def test_round_trip_through_the_model_store(fitted, data, tmp_path):
    from digitrec.persistence import model_store as store

    _, _, X_test, _ = data
    state, arrays = fitted.export_state()
    store.save(
        tmp_path / "cnn",
        store.ModelFile(kind="cnn", params=fitted.get_params(), arrays=arrays, state=state),
    )
    saved = store.load(tmp_path / "cnn", mmap=True)  # read-only arrays must load too
    restored = CNNClassifier(**saved.params)
    restored.import_state(saved.state, saved.arrays)
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))


def test_round_trip_as_a_pipeline_step_through_serialize(fitted, data):
    from sklearn.pipeline import Pipeline

    from digitrec.persistence import serialize

    _, _, X_test, _ = data
    state, arrays = serialize.export_state(Pipeline([("cnn", fitted)]))
    fresh = Pipeline([("cnn", CNNClassifier(**fitted.get_params()))])
    serialize.import_state(fresh, json.loads(json.dumps(state)), arrays)
    np.testing.assert_array_equal(fresh.predict_proba(X_test), fitted.predict_proba(X_test))


def test_string_labels_survive_the_round_trip(data):
    X, y, X_test, _ = data
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                      "nine"])  # fmt: skip
    model = CNNClassifier(**FAST).fit(X[:300], names[y[:300]])
    state, arrays = model.export_state()
    restored = CNNClassifier(**FAST)
    restored.import_state(json.loads(json.dumps(state)), arrays)
    assert set(restored.predict(X_test)) <= set(names)
    np.testing.assert_array_equal(restored.predict(X_test), model.predict(X_test))


def test_import_rejects_weights_that_do_not_fit(fitted):
    state, arrays = fitted.export_state()
    missing = dict(arrays)
    missing.pop("classifier__fc__bias")
    with pytest.raises(ModelFileError, match="classifier__fc__bias"):
        CNNClassifier().import_state(state, missing)
    reshaped = dict(arrays, classifier__fc__bias=np.zeros(3, np.float32))
    with pytest.raises(ModelFileError, match="do not fit"):
        CNNClassifier().import_state(state, reshaped)
    with pytest.raises(ModelFileError, match="format"):
        CNNClassifier().import_state(dict(state, format="something else"), arrays)


def test_safetensors_file_round_trip(fitted, data, tmp_path):
    _, _, X_test, _ = data
    path = tmp_path / "cnn.safetensors"
    fitted.save_safetensors(path)
    restored = CNNClassifier.load_safetensors(path)
    assert restored.get_params() == fitted.get_params()
    np.testing.assert_array_equal(restored.predict_proba(X_test), fitted.predict_proba(X_test))


def test_early_stopping_keeps_the_best_epoch_weights(data, monkeypatch):
    """Validation losses are scripted: best at epoch 2, then two worse epochs with patience 2."""
    X, y, _, _ = data
    scripted = iter([(1.0, 0.5), (0.5, 0.8), (0.6, 0.7), (0.7, 0.6), (0.1, 0.9)])
    snapshots = []

    def fake_evaluate(model, images, labels):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    monkeypatch.setattr(cnn, "evaluate", fake_evaluate)
    model = CNNClassifier(patience=2, **{**FAST, "epochs": 10}).fit(X[:200], y[:200])
    assert model.stopped_early_
    assert model.n_epochs_ == 4
    assert model.best_epoch_ == 2
    assert model.history_["val_loss"] == [1.0, 0.5, 0.6, 0.7]
    kept = model.network_.state_dict()
    for key, value in snapshots[1].items():
        assert value.equal(kept[key]), key
    assert not snapshots[3]["classifier.fc.weight"].equal(kept["classifier.fc.weight"])


def test_runs_every_epoch_while_validation_improves(data, monkeypatch):
    X, y, _, _ = data
    losses = iter([(0.9 - 0.1 * i, 0.5) for i in range(5)])
    monkeypatch.setattr(cnn, "evaluate", lambda model, images, labels: next(losses))
    model = CNNClassifier(patience=1, **{**FAST, "epochs": 5}).fit(X[:200], y[:200])
    assert not model.stopped_early_
    assert model.n_epochs_ == model.best_epoch_ == 5


def test_without_validation_split_trains_all_epochs(data):
    X, y, _, _ = data
    model = CNNClassifier(validation_fraction=0.0, **FAST).fit(X[:200], y[:200])
    assert model.n_epochs_ == 2
    assert "val_loss" not in model.history_


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", 0),
        ("learning_rate", 0),
        ("learning_rate", float("nan")),
        ("validation_fraction", 1.0),
        ("validation_fraction", -0.1),
        ("patience", 0),
        ("seed", -1),
        ("seed", "abc"),
        ("augment", "yes"),
        ("verbose", "loud"),
        ("n_threads", 0),
    ],
)
def test_bad_parameters_name_themselves(data, name, value):
    X, y, _, _ = data
    with pytest.raises(ParameterError, match=name):
        CNNClassifier(**{name: value}).fit(X[:50], y[:50])


def test_validation_split_too_small_for_the_classes(data):
    X, y, _, _ = data
    with pytest.raises(ParameterError, match="validation_fraction"):
        CNNClassifier(validation_fraction=0.05).fit(X[:60], y[:60])


@pytest.mark.parametrize(
    "images",
    [np.zeros((5, 27, 28)), np.zeros((5, 100)), np.full((5, 28, 28), 300.0), np.zeros((0, 784))],
)
def test_bad_images_are_rejected(images):
    with pytest.raises(ValueError, match="images|pixel"):
        CNNClassifier(**FAST).fit(images, np.arange(len(images)) % 2)


def test_predict_before_fit_raises():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CNNClassifier().predict(np.zeros((1, 28, 28), np.uint8))


def test_parameters_are_stored_unchanged_and_clone():
    model = CNNClassifier(epochs=3, learning_rate=0.01, seed=None, augment=False)
    assert model.get_params()["epochs"] == 3
    assert model.get_params()["seed"] is None
    assert clone(model).get_params() == model.get_params()


def test_importing_digitrec_cnn_does_not_import_torch():
    code = "import sys, digitrec, digitrec.nets.cnn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_torch_gives_the_install_hint():
    # A finder that refuses torch, as if it were not installed. (sys.modules["torch"] = None
    # would also block it, but confuses scikit-learn's array-API probes.)
    code = (
        "import sys, numpy as np\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from digitrec.nets.cnn import CNNClassifier\n"
        "from digitrec.errors import ParameterError\n"
        "try:\n"
        "    CNNClassifier().fit(np.zeros((20, 28, 28)), np.arange(20) % 2)\n"
        "except ParameterError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == cnn.MISSING_TORCH_MESSAGE
