"""The sample database, folder export/import, and the kNN that includes the samples."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import models
from digitrec.data import datasets
from digitrec.data.images import load_image
from digitrec.neighbors.knn import KNNClassifier, vote
from digitrec.neighbors.personal import PersonalModel
from digitrec.neighbors.search import exact_distances
from digitrec.persistence.sample_db import (
    Sample,
    SampleError,
    SampleStore,
    database_path,
    export_folder,
    import_folder,
)
from digitrec.testing import synthetic


@pytest.fixture(scope="module")
def small(mnist) -> datasets.Dataset:
    return mnist.subset(2000, 300, seed=1)


@pytest.fixture(scope="module")
def knn(small) -> models.Model:
    return models.train("knn", small, {"n_neighbors": 3})


@pytest.fixture
def store(tmp_path) -> SampleStore:
    return SampleStore(tmp_path / "samples.sqlite")


def some_tiles(small, n: int, start: int = 0) -> tuple[list[np.ndarray], list[int]]:
    return list(small.X_test[start : start + n]), [int(y) for y in small.y_test[start : start + n]]


# --- the database ---------------------------------------------------------------------------


def test_database_lives_in_the_data_directory(digitrec_home):
    assert database_path() == digitrec_home / "samples.sqlite"
    assert database_path(Path("/x")) == Path("/x/samples.sqlite")


def test_added_samples_come_back_from_a_new_connection(store, small):
    tiles, labels = some_tiles(small, 3)
    added = [store.add(tile, label) for tile, label in zip(tiles, labels, strict=True)]
    again = SampleStore(store.path)
    assert [s.id for s in again.all()] == [s.id for s in added]
    for sample, tile, label in zip(again.all(), tiles, labels, strict=True):
        assert sample.label == label
        np.testing.assert_array_equal(sample.tile, tile)
        assert sample.tile.dtype == np.uint8 and sample.tile.shape == (28, 28)
    assert again.get(added[1].id).label == labels[1]
    assert again.count() == 3


def test_delete_removes_one_sample_and_ids_are_not_reused(store, small):
    tiles, labels = some_tiles(small, 2)
    first, second = store.add(tiles[0], labels[0]), store.add(tiles[1], labels[1])
    assert store.delete(second.id) is True
    assert store.delete(second.id) is False
    assert store.get(second.id) is None
    third = store.add(tiles[1], labels[1])
    assert third.id > second.id
    assert [s.id for s in store.all()] == [first.id, third.id]


def test_revision_changes_with_every_write_from_any_connection(store, small):
    tiles, labels = some_tiles(small, 1)
    other = SampleStore(store.path)
    seen = [store.revision()]
    sample = other.add(tiles[0], labels[0])
    seen.append(store.revision())
    other.delete(sample.id)
    seen.append(store.revision())
    other.delete(sample.id)  # nothing deleted: nothing changed
    seen.append(store.revision())
    assert seen == [0, 1, 2, 2]


@pytest.mark.parametrize(
    ("tile", "label", "message"),
    [
        (np.ones((28, 27), np.uint8), 3, "28x28"),
        (np.zeros((28, 28), np.uint8), 3, "blank"),
        (np.full((28, 28), 300, np.int32), 3, "uint8"),
        (np.ones((28, 28), np.float32), 3, "uint8"),
        (np.ones((28, 28), np.uint8), 10, "0-9"),
        (np.ones((28, 28), np.uint8), -1, "0-9"),
        (np.ones((28, 28), np.uint8), True, "0-9"),
        (np.ones((28, 28), np.uint8), "3", "0-9"),
    ],
)
def test_malformed_samples_are_refused_and_nothing_is_stored(store, tile, label, message):
    with pytest.raises(SampleError, match=message):
        store.add(tile, label)
    assert store.count() == 0


def test_add_many_stores_all_or_none(store, small):
    tiles, labels = some_tiles(small, 3)
    with pytest.raises(SampleError):
        store.add_many(tiles, labels[:2] + [11])
    assert store.count() == 0
    assert len(store.add_many(tiles, labels)) == 3


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path):
    path = tmp_path / "samples.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SampleError, match="samples.sqlite"):
        SampleStore(path)


def test_a_database_from_a_newer_digitrec_is_refused(tmp_path, small):
    store = SampleStore(tmp_path / "samples.sqlite")
    with sqlite3.connect(store.path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SampleError, match="version 99"):
        SampleStore(store.path)


# --- folders --------------------------------------------------------------------------------


def test_export_writes_a_folder_dataset_that_imports_back_unchanged(store, small, tmp_path):
    tiles, labels = some_tiles(small, 6)
    stored = store.add_many(tiles, labels)
    out = tmp_path / "export"
    written = export_folder(store, out)
    assert sorted(written) == sorted(out / str(s.label) / f"sample-{s.id}.png" for s in stored)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    for sample in stored:
        np.testing.assert_array_equal(
            load_image(out / str(sample.label) / f"sample-{sample.id}.png"), sample.tile
        )
    fresh = SampleStore(tmp_path / "fresh.sqlite")
    result = import_folder(fresh, out)
    assert len(result.added) == 6 and result.skipped == []
    got = sorted((s.label, s.tile.tobytes()) for s in fresh.all())
    assert got == sorted((label, tile.tobytes()) for tile, label in zip(tiles, labels, strict=True))
    # The export is also a dataset that `digitrec train --dataset folder:DIR` reads.
    as_dataset = datasets.load(f"folder:{out}")
    assert len(as_dataset.y_train) + len(as_dataset.y_test) == 6


def test_importing_the_same_folder_twice_adds_nothing_the_second_time(store, small, tmp_path):
    store.add_many(*some_tiles(small, 4))
    export_folder(store, tmp_path / "out")
    again = import_folder(store, tmp_path / "out")
    assert again.added == [] and len(again.skipped) == 4
    assert store.count() == 4


def test_import_makes_tiles_of_ordinary_pictures_of_digits(store, tmp_path):
    folder = tmp_path / "mine" / "4"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(synthetic.drawing("4", np.random.default_rng(0)))
    (folder / "notes.txt").write_text("not an image, and not named like one: ignored")
    result = import_folder(store, tmp_path / "mine")
    assert [s.label for s in result.added] == [4]
    tile = result.added[0].tile
    assert tile.shape == (28, 28) and tile[0].max() == 0 and tile.max() > 200  # MNIST-style


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"GIF89a" + bytes(40), "GIF"), (None, "no ink")],
)
def test_import_stores_nothing_when_one_file_is_bad_and_names_it(
    store, small, tmp_path, content, message
):
    export_folder_with = tmp_path / "in"
    (export_folder_with / "1").mkdir(parents=True)
    Image.fromarray(small.X_test[0]).save(export_folder_with / "1" / "good.png")
    bad = export_folder_with / "2" / "bad.png"
    bad.parent.mkdir()
    if content is None:
        Image.new("L", (50, 50), 255).save(bad)  # a blank page
    else:
        bad.write_bytes(content)
    with pytest.raises(SampleError, match=message) as caught:
        import_folder(store, export_folder_with)
    assert str(bad) in str(caught.value)
    assert store.count() == 0


def test_import_of_a_missing_folder_is_an_error(store, tmp_path):
    with pytest.raises(SampleError, match="not a directory"):
        import_folder(store, tmp_path / "nowhere")


# --- the kNN with samples -------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"n_neighbors": 3},
        {"n_neighbors": 4, "weights": "distance", "metric": "manhattan"},
        {"n_neighbors": 5, "metric": "cosine"},
        {"n_neighbors": 3, "metric": "minkowski", "p": 3},
    ],
)
def test_neighbours_and_votes_equal_a_knn_refitted_on_training_plus_samples(small, params):
    model = models.train("knn", small, params)
    tiles, labels = some_tiles(small, 40)
    personal = PersonalModel(model, sample_weight=1)
    samples = [
        _sample(i + 1, tile, label)
        for i, (tile, label) in enumerate(zip(tiles, labels, strict=True))
    ]
    personal.set_samples(samples, revision=1)
    queries = small.X_test[40:140]
    X_all = np.concatenate([small.X_train, np.stack(tiles)]).reshape(-1, 784)
    y_all = np.concatenate([small.y_train, labels])
    reference = KNNClassifier(**params).fit(X_all, y_all)
    want_d, want_i = reference.kneighbors(queries.reshape(-1, 784))
    got_d, got_i = personal.neighbors(queries)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=1e-12)
    # The queries include near copies of samples: some neighbours really are samples.
    assert (got_i >= len(small.y_train)).any()
    np.testing.assert_allclose(
        personal.predict_proba(queries), reference.predict_proba(queries.reshape(-1, 784))
    )


def _sample(sample_id, tile, label):
    return Sample(sample_id, int(label), np.asarray(tile), "2026-01-01T00:00:00+00:00")


def _correct(personal: PersonalModel, query: np.ndarray, index: int):
    """Store another label than the answer for ``query[index]`` as sample 1, and check that
    it decides exactly the answers of the queries that have it among their nearest.
    Returns the answers before, the label stored, and which queries have it."""
    before = personal.predict(query)
    wrong = int((before[index] + 1) % 10)
    personal.add_sample(_sample(1, query[index], wrong), revision=1)
    after = personal.predict(query)
    assert after[index] == wrong
    has_sample = (personal.neighbors(query)[1] >= personal.n_training).any(axis=1)
    assert (after[has_sample] == wrong).all()
    np.testing.assert_array_equal(after[~has_sample], before[~has_sample])
    return before, wrong, has_sample


def test_one_correction_changes_the_answer_for_the_same_tile(knn, small):
    personal = PersonalModel(knn)
    query = small.X_test[:50]
    _, wrong, has_sample = _correct(personal, query, 7)
    assert has_sample.sum() < 10
    nearest = personal.nearest(query[7:8])[0]
    assert nearest[0].sample_id == 1 and nearest[0].distance == 0.0
    assert nearest[0].label == wrong
    assert all(n.sample_id is None for n in nearest[1:])
    np.testing.assert_array_equal(
        nearest[1].image, small.X_train[personal.neighbors(query[7:8])[1][0, 1]]
    )


def test_an_idm_model_takes_corrections_the_same_way(small):
    idm = models.train("knn-idm", small, {"n_candidates": 20})
    personal = PersonalModel(idm)
    query = small.X_test[:40]
    # Without samples it is the model itself: same answers, same neighbours.
    np.testing.assert_array_equal(personal.predict(query), idm.predict(query))
    np.testing.assert_array_equal(personal.neighbors(query, 3)[1], idm.neighbors(query, 3)[1])
    before, wrong, _ = _correct(personal, query, 5)
    nearest = personal.nearest(query[5:6], k=3)[0]
    assert nearest[0].sample_id == 1 and nearest[0].distance == 0.0 and nearest[0].label == wrong
    training = personal.neighbors(query[5:6], k=3)[1][0, 1:]
    for neighbor, index in zip(nearest[1:], training, strict=True):
        np.testing.assert_array_equal(neighbor.image, small.X_train[index])
    personal.remove_sample(1, revision=2)
    np.testing.assert_array_equal(personal.predict(query), before)


def test_a_hybrid_model_answers_itself_until_a_sample_is_among_its_neighbours(small):
    params = {"n_candidates": 20, "scattering_components": 40, "hyperplane_k": 15}
    hybrid = models.train("knn-idm-hknn", small, params)
    personal = PersonalModel(hybrid)
    query = small.X_test[:40]
    np.testing.assert_array_equal(personal.predict(query), hybrid.predict(query))
    # Its explanations show training images of the class it answered.
    proba, explanations = personal.explain(query)
    answers = personal.classes[proba.argmax(axis=1)]
    assert [e.references[0].label for e in explanations] == answers.tolist()
    before, wrong, _ = _correct(personal, query, 5)
    personal.remove_sample(1, revision=2)
    np.testing.assert_array_equal(personal.predict(query), before)


def test_incremental_add_and_remove_equal_a_full_reload(knn, small, store):
    tiles, labels = some_tiles(small, 12)
    incremental = PersonalModel(knn)
    incremental.sync(store)
    for tile, label in zip(tiles, labels, strict=True):
        sample = store.add(tile, label)
        incremental.add_sample(sample, store.revision())
    for sample in store.all()[::3]:
        store.delete(sample.id)
        incremental.remove_sample(sample.id, store.revision())
    assert incremental.revision == store.revision()
    reloaded = PersonalModel(knn)
    reloaded.sync(store)
    queries = small.X_test[:60]
    np.testing.assert_array_equal(incremental.neighbors(queries)[1], reloaded.neighbors(queries)[1])
    np.testing.assert_array_equal(
        incremental.predict_proba(queries), reloaded.predict_proba(queries)
    )


def test_sync_picks_up_what_another_process_stored(knn, small, store):
    personal = PersonalModel(knn)
    personal.sync(store)
    assert personal.n_samples == 0
    SampleStore(store.path).add(small.X_test[0], 3)
    personal.sync(store)
    assert personal.n_samples == 1
    # An update that is not the next revision (someone else wrote too) forces a reload.
    SampleStore(store.path).add(small.X_test[1], 4)
    extra = store.add(small.X_test[2], 5)
    personal.add_sample(extra, store.revision())
    assert personal.revision == -1
    personal.sync(store)
    assert personal.n_samples == 3 and personal.revision == store.revision()


def test_a_label_the_model_never_saw_is_refused_when_added_and_left_out_when_loaded(
    mnist, store
):
    only_low = mnist.subset(500, 100, seed=0)
    keep = only_low.y_train < 5
    low = datasets.Dataset(
        "low", only_low.X_train[keep], only_low.y_train[keep], only_low.X_test, only_low.y_test
    )
    personal = PersonalModel(models.train("knn", low, {"n_neighbors": 3}))
    with pytest.raises(SampleError, match="knows the digits 0, 1, 2, 3, 4"):
        personal.add_sample(_sample(1, only_low.X_test[0], 7), revision=1)
    # A shared database may hold digits this model lacks: they are skipped, not fatal.
    store.add_many(list(only_low.X_test[:2]), [7, 2])
    personal.sync(store)
    assert personal.n_samples == 1
    assert personal.nearest(only_low.X_test[1:2])[0][0].label == 2


def test_models_that_are_not_knn_cannot_take_samples(small):
    forest = models.train("random-forest", small.subset(300, 10), {"n_estimators": 5})
    with pytest.raises(SampleError, match="not a kNN"):
        PersonalModel(forest)


def test_distance_weighted_vote_counts_only_exact_matches_when_there_are_some():
    classes = np.array([[0, 1, 2], [0, 1, 2]])
    distances = np.array([[0.0, 1.0, 2.0], [1.0, 2.0, 4.0]])
    weights = np.array([[1.0, 3.0, 1.0], [1.0, 3.0, 1.0]])
    got = vote(classes, distances, 3, "distance", weights)
    np.testing.assert_allclose(got[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(got[1], np.array([1.0, 1.5, 0.25]) / 2.75)
    uniform = vote(classes, distances, 3, "uniform", weights)
    np.testing.assert_allclose(uniform[0], [0.2, 0.6, 0.2])


def test_exact_distances_by_definition():
    rng = np.random.default_rng(0)
    Q, S = rng.integers(0, 256, (3, 20)), rng.integers(0, 256, (5, 20))
    diff = np.abs(Q[:, None, :] - S[None, :, :]).astype(np.float64)
    np.testing.assert_allclose(exact_distances(Q, S, "euclidean"), np.sqrt((diff**2).sum(-1)))
    np.testing.assert_allclose(exact_distances(Q, S, "manhattan"), diff.sum(-1))
    np.testing.assert_allclose(exact_distances(Q, S, "minkowski", 3), (diff**3).sum(-1) ** (1 / 3))
    cos = 1 - (Q @ S.T) / np.outer(np.linalg.norm(Q, axis=1), np.linalg.norm(S, axis=1))
    np.testing.assert_allclose(exact_distances(Q, S, "cosine"), cos)
    zero = np.zeros((1, 20))
    assert exact_distances(zero, S, "cosine").tolist() == [[1.0] * 5]


# --- the command line -----------------------------------------------------------------------


def test_samples_commands_list_export_and_import(small, tmp_path, digitrec_home):
    store = SampleStore(database_path())
    store.add_many(*some_tiles(small, 3))
    def run(*args):
        return run_digitrec("samples", *args, timeout=120)

    listed = run("list")
    assert listed.returncode == 0, listed.stderr
    assert "3 samples" in listed.stdout
    exported = run("export", tmp_path / "out")
    assert exported.returncode == 0 and "wrote 3 samples" in exported.stdout
    assert len(list((tmp_path / "out").rglob("*.png"))) == 3
    again = run("import", tmp_path / "out")
    assert again.returncode == 0 and "imported 0 samples" in again.stdout
    assert "3 already stored" in again.stdout
    missing = run("import", tmp_path / "nowhere")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and "not a directory" in missing.stderr
