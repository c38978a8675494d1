"""Corrections with an owner: one user's samples never change another's answers; writes
need a token on a reachable server, are rate-limited and capped; the sample database may
vanish or lock under a running server."""

from __future__ import annotations

import sqlite3
from concurrent.futures import Executor, Future

import numpy as np
import pytest
from conftest import run_digitrec
from fastapi.testclient import TestClient

from digitrec import models
from digitrec.apps.web.access import RateLimit, is_loopback
from digitrec.apps.web.app import create_app, png_data_url
from digitrec.neighbors.knn import KNNClassifier
from digitrec.neighbors.personal import PersonalModel
from digitrec.persistence.sample_db import (
    SHARED,
    SampleError,
    SampleLimitReached,
    SampleStore,
    database_path,
)


@pytest.fixture(scope="module")
def small(mnist):
    return mnist.subset(2000, 600, seed=2)


@pytest.fixture(scope="module")
def knn(small) -> models.Model:
    return models.train("knn", small, {"n_neighbors": 3})


@pytest.fixture
def store(tmp_path) -> SampleStore:
    return SampleStore(tmp_path / "samples.sqlite")


def _wrong(model: models.Model, tile: np.ndarray) -> int:
    """A label other than the model's answer for ``tile``."""
    return int((model.predict(tile[None])[0] + 1) % 10)


# --- the database ---------------------------------------------------------------------------


def test_owners_keep_their_own_samples_until_merged(store, small):
    tiles = list(small.X_test[:5])
    store.add_many(tiles[:2], [1, 2], "alice")
    store.add_many(tiles[2:3], [3], "bob")
    store.add(tiles[3], 4)
    assert [s.label for s in store.all("alice")] == [1, 2]
    assert [s.label for s in store.all()] == [4]  # the shared set
    assert store.owners() == {"alice": 2, "bob": 1, SHARED: 1}
    before = store.revisions(["alice", "bob", SHARED])
    assert store.merge("alice") == 2
    after = store.revisions(["alice", "bob", SHARED])
    assert after["alice"] > before["alice"] and after[SHARED] > before[SHARED]
    assert after["bob"] == before["bob"]
    assert sorted(s.label for s in store.all()) == [1, 2, 4] and store.all("alice") == []
    # Only the owner deletes: another owner's sample is not found.
    bobs = store.all("bob")[0]
    assert not store.delete(bobs.id, "alice") and store.delete(bobs.id, "bob")


def test_user_names_are_checked(store, small):
    with pytest.raises(SampleError, match="user name"):
        store.add(small.X_test[0], 1, "../etc")
    with pytest.raises(SampleError, match="name the user"):
        store.merge(SHARED)


def test_a_version_1_database_is_migrated_and_its_samples_become_the_shared_set(tmp_path, small):
    path = tmp_path / "samples.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT,
                label INTEGER NOT NULL, tile BLOB NOT NULL, created TEXT NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            INSERT INTO meta VALUES ('revision', 1);
            PRAGMA user_version = 1;
            """
        )
        db.execute(
            "INSERT INTO samples (label, tile, created) VALUES (7, ?, '2026-01-01')",
            (small.X_test[0].tobytes(),),
        )
    store = SampleStore(path)
    (old,) = store.all()
    assert old.owner == SHARED and old.label == 7
    store.add(small.X_test[1], 2, "alice")
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_the_cap_refuses_what_would_pass_it_and_stores_nothing(store, small):
    store.add_many(list(small.X_test[:2]), [1, 2], "alice", limit=3)
    with pytest.raises(SampleLimitReached, match="alice has 2 samples"):
        store.add_many(list(small.X_test[2:4]), [1, 2], "alice", limit=3)
    assert store.count("alice") == 2


def test_a_deleted_database_is_created_again(store, small):
    store.add(small.X_test[0], 1)
    for suffix in ("", "-wal", "-shm"):
        (store.path.parent / f"{store.path.name}{suffix}").unlink(missing_ok=True)
    assert store.count() == 0
    store.add(small.X_test[1], 2, "alice")
    assert store.count("alice") == 1


# --- answers per owner ----------------------------------------------------------------------


def test_a_users_correction_changes_only_that_users_answers(knn, small, store):
    personal = PersonalModel(knn)
    query = small.X_test[:60]
    before = personal.predict(query)
    wrong = _wrong(knn, query[7])
    sample = store.add(query[7], wrong, "alice")
    alice, bob = personal.for_owner("alice"), personal.for_owner("bob")
    alice.sync(store)
    bob.sync(store)
    assert alice.predict(query[7:8])[0] == wrong
    np.testing.assert_array_equal(bob.predict(query), before)
    np.testing.assert_array_equal(personal.predict(query), before)  # the shared set alone
    # Merged into the shared set, it changes every user's answer.
    store.merge("alice")
    bob.sync(store)
    assert bob.predict(query[7:8])[0] == wrong
    assert bob.nearest(query[7:8])[0][0].sample_id == sample.id


@pytest.mark.parametrize(
    "params",
    [{"n_neighbors": 3}, {"n_neighbors": 4, "weights": "distance", "metric": "manhattan"}],
)
def test_many_samples_are_searched_through_an_index_with_the_same_answer(small, params):
    """Past the few samples searched one by one, an index finds the same neighbours as a kNN
    refitted on training images and samples, after additions and deletions too."""
    model = models.train("knn", small, params)
    n = 300  # more than searched one by one: an index is built
    tiles, labels = small.X_test[:n], small.y_test[:n]
    store = SampleStore(database_path())
    personal = PersonalModel(model, sample_weight=1).for_owner("alice")
    store.add_many(list(tiles[:270]), [int(y) for y in labels[:270]], "alice")
    personal.sync(store)  # a load of more than _TAIL samples: indexed in the background
    personal.wait_for_indexes()
    assert personal.unindexed("alice") == 0
    for tile, label in zip(tiles[270:], labels[270:], strict=True):  # searched one by one
        personal.add_sample(store.add(tile, int(label), "alice"), store.revision("alice"))
    for sample in store.all("alice")[::7]:
        store.delete(sample.id)
        personal.remove_sample(sample.id, store.revision("alice"), "alice")
    assert personal.revision_of("alice") == store.revision("alice")
    kept = store.all("alice")
    X_all = np.concatenate([small.X_train, np.stack([s.tile for s in kept])]).reshape(-1, 784)
    y_all = np.concatenate([small.y_train, [s.label for s in kept]])
    reference = KNNClassifier(**params).fit(X_all, y_all)
    queries = small.X_test[250:450]  # half of them are stored samples
    want_d, want_i = reference.kneighbors(queries.reshape(-1, 784))
    got_d, got_i = personal.neighbors(queries)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-12, atol=1e-9)
    from_sample = got_i >= personal.n_training
    np.testing.assert_array_equal(got_i[~from_sample], want_i[~from_sample])
    nearest = personal.nearest(queries)
    ids = {s.id: i + len(small.y_train) for i, s in enumerate(kept)}
    got_ids = [[ids[n.sample_id] if n.sample_id else -1 for n in row] for row in nearest]
    np.testing.assert_array_equal(np.where(from_sample, got_ids, got_i), want_i)
    np.testing.assert_allclose(
        personal.predict_proba(queries), reference.predict_proba(queries.reshape(-1, 784))
    )


class _Deferred(Executor):
    """Runs what is submitted only when told to: an index build held back at will."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, object, tuple]] = []

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        self.jobs.append((future, fn, args))
        return future

    def run_all(self) -> None:
        while self.jobs:
            future, fn, args = self.jobs.pop(0)
            future.set_result(fn(*args))


@pytest.mark.parametrize("kind", ["knn", "knn-idm"])
def test_answers_while_an_index_is_built_equal_answers_after_it(small, kind):
    """Samples waiting for their index are searched one by one: the neighbours and answers
    are those the index gives once built, through loads, additions and deletions."""
    model = models.train(kind, small, {"n_neighbors": 3})
    builds = _Deferred()
    personal = PersonalModel(model, index_executor=builds).for_owner("alice")
    store = SampleStore(database_path())
    tiles, labels = small.X_test[:320], [int(y) for y in small.y_test[:320]]
    # Labels shifted by one, so that samples among the neighbours change the answers.
    store.add_many(list(tiles[:300]), [(y + 1) % 10 for y in labels[:300]], "alice")
    queries = small.X_test[280:340]  # stored samples, and digits that are not

    def answers():
        nearest = personal.nearest(queries)
        ids = [[n.sample_id for n in row] for row in nearest]
        return personal.predict_proba(queries), ids

    personal.sync(store)
    assert personal.unindexed("alice") == 300 and len(builds.jobs) == 1  # pending
    pending = answers()
    assert any(any(row) for row in pending[1])  # samples are among the neighbours
    for tile, label in zip(tiles[300:], labels[300:], strict=True):
        personal.add_sample(store.add(tile, (label + 1) % 10, "alice"), store.revision("alice"))
    for sample in store.all("alice")[::9]:
        store.delete(sample.id)
        personal.remove_sample(sample.id, store.revision("alice"), "alice")
    assert len(builds.jobs) == 1  # one build at a time
    pending = answers()
    builds.run_all()
    # The build caught up with the changes made while it ran: nothing left to rebuild.
    assert personal.unindexed("alice") == 20 and not builds.jobs
    assert personal.revision_of("alice") == store.revision("alice")
    indexed = answers()
    np.testing.assert_allclose(indexed[0], pending[0], rtol=1e-12)
    assert indexed[1] == pending[1]
    # A reload from the database gives the same answers again, once indexed.
    reloaded = PersonalModel(model, index_executor=builds).for_owner("alice")
    reloaded.sync(store)
    builds.run_all()
    np.testing.assert_allclose(reloaded.predict_proba(queries), indexed[0], rtol=1e-12)


# --- the web app ----------------------------------------------------------------------------


def _app(knn, home, **options):
    return create_app(model=knn, home=home, **options)


def _correct(client: TestClient, tile: np.ndarray, label: int, **headers) -> dict:
    return client.post(
        "/api/samples", json={"image": png_data_url(tile), "label": label}, headers=headers
    )


def _answer(client: TestClient, tile: np.ndarray, **headers) -> int:
    response = client.post("/api/predict", json={"image": png_data_url(tile)}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["digit"]


def assert_problem(response, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert fragment in response.json()["detail"]


def test_user_a_correction_does_not_change_user_b_answer(knn, small, tmp_path):
    tile = small.X_test[11]
    wrong = _wrong(knn, tile)
    with TestClient(_app(knn, tmp_path)) as alice, TestClient(_app(knn, tmp_path)) as bob:
        first = _answer(bob, tile)
        assert _correct(alice, tile, wrong).status_code == 201
        assert _answer(alice, tile) == wrong
        assert _answer(bob, tile) == first
        # Named users through the header: the same isolation.
        assert _correct(alice, tile, wrong, **{"X-Digitrec-User": "carol"}).status_code == 201
        assert _answer(bob, tile, **{"X-Digitrec-User": "carol"}) == wrong
        assert _answer(bob, tile, **{"X-Digitrec-User": "dave"}) == first
        # Bob cannot see or delete Alice's sample.
        theirs = alice.get("/api/samples").json()["samples"][0]["id"]
        assert bob.get("/api/samples").json()["count"] == 0
        assert_problem(bob.get(f"/api/samples/{theirs}"), 404, "no sample")
        assert_problem(bob.delete(f"/api/samples/{theirs}"), 404, "no sample")
    assert run_digitrec("samples", "merge", "--user", "carol", timeout=120).returncode == 0


def test_the_first_visit_gets_an_httponly_samesite_identity_cookie(knn, tmp_path):
    with TestClient(_app(knn, tmp_path)) as client:
        cookie = client.get("/").headers["set-cookie"]
        assert cookie.startswith("digitrec_user=")
        assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
        assert "set-cookie" not in client.get("/").headers  # kept, not replaced
    with TestClient(_app(knn, tmp_path)) as client:
        assert_problem(
            client.get("/api/samples", headers={"X-Digitrec-User": "a b"}), 422, "user name"
        )


def test_writes_to_a_reachable_server_need_its_token(knn, small, tmp_path):
    app = _app(knn, tmp_path, write_token="s3cret")
    tile = small.X_test[0]
    with TestClient(app, client=("203.0.113.9", 40000)) as remote:
        assert_problem(_correct(remote, tile, 1), 401, "token")
        assert_problem(_correct(remote, tile, 1, Authorization="Bearer nope"), 401, "token")
        assert _correct(remote, tile, 1, Authorization="Bearer s3cret").status_code == 201
        assert_problem(remote.delete("/api/samples/1"), 401, "token")
        assert _answer(remote, tile) in range(10)  # reading needs no token
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def test_serve_on_a_network_address_prints_the_token_it_requires(monkeypatch, knn, tmp_path):
    import uvicorn

    from digitrec.apps import cli

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setattr(cli, "_model_dir", lambda model: tmp_path)
    monkeypatch.setattr("digitrec.models.load", lambda directory: knn)
    (tmp_path / "model.json").write_text("{}")
    monkeypatch.setenv("DIGITREC_TOKEN", "from-env")
    result = run_cli(cli, ["serve", "--host", "0.0.0.0"])
    assert "?token=from-env" in result.output
    assert seen["app"].state.service.write_token == "from-env"
    monkeypatch.delenv("DIGITREC_TOKEN")
    result = run_cli(cli, ["serve", "--host", "127.0.0.1"])
    assert "token" not in result.output and seen["app"].state.service.write_token is None


def run_cli(cli, args):
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    return result


def test_too_many_writes_are_429_json_with_retry_after(knn, small, tmp_path):
    app = _app(knn, tmp_path, write_limit=RateLimit(burst=2, per_second=0.01))
    with TestClient(app) as client:
        assert [_correct(client, small.X_test[i], 1).status_code for i in range(2)] == [201, 201]
        refused = _correct(client, small.X_test[2], 1)
        assert_problem(refused, 429, "too many writes")
        assert int(refused.headers["retry-after"]) >= 1
        assert client.get("/api/samples").json()["count"] == 2


def test_the_cap_per_user_is_409_json(knn, small, tmp_path):
    with TestClient(_app(knn, tmp_path, max_samples_per_user=2)) as client:
        for i in range(2):
            assert _correct(client, small.X_test[i], 1).status_code == 201
        assert_problem(_correct(client, small.X_test[2], 1), 409, "the most one user may store")
        # Another user has room of their own.
        assert _correct(client, small.X_test[2], 1, **{"X-Digitrec-User": "eve"}).status_code == 201


def test_a_database_deleted_under_the_server_is_created_again(knn, small, tmp_path):
    with TestClient(_app(knn, tmp_path)) as client:
        assert _correct(client, small.X_test[0], 1).status_code == 201
        for path in tmp_path.glob("samples.sqlite*"):
            path.unlink()
        assert client.get("/api/health").json() == {"status": "ok", "model": "knn", "samples": 0}
        assert _answer(client, small.X_test[0]) in range(10)
        assert _correct(client, small.X_test[1], 2).status_code == 201


def test_a_locked_database_gives_503_and_a_degraded_health(knn, small, tmp_path):
    with TestClient(_app(knn, tmp_path)) as client:
        client.app.state.service.store.timeout = 0.05
        with sqlite3.connect(database_path(tmp_path)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            health = client.get("/api/health")
            assert health.status_code == 200
            assert health.json()["status"] == "degraded"
            assert health.json()["samples"] == "unavailable"
            assert_problem(_correct(client, small.X_test[0], 1), 503, "cannot be used now")
            assert client.get("/api/samples").status_code == 200  # WAL readers go on
            assert _answer(client, small.X_test[0]) in range(10)  # answers go on
            holder.rollback()
        assert client.get("/api/health").json()["status"] == "ok"
