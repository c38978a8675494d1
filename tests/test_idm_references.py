"""knn-idm's references load fast and answer the same: stage-1 references saved with the
model, IDM features of a reference made the first time it is a candidate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import sign_model

from digitrec import models

PARAMS = {"n_neighbors": 3, "n_candidates": 20, "n_components": 20}


@pytest.fixture(scope="module")
def small(mnist):
    return mnist.subset(1000, 100, seed=0)


@pytest.fixture(scope="module")
def saved(small, tmp_path_factory):
    model = models.train("knn-idm", small, PARAMS)
    directory = models.save(model, tmp_path_factory.mktemp("idm") / "model")
    return model, directory


def test_the_answers_do_not_depend_on_which_references_were_needed_before(saved, small):
    model, directory = saved
    queries = small.X_test
    in_order = models.load(directory)
    in_order.neighbors(queries[:50])  # makes the features of the first queries' candidates
    later = in_order.neighbors(queries[50:])
    fresh = models.load(directory).neighbors(queries[50:])
    np.testing.assert_array_equal(later[1], fresh[1])
    np.testing.assert_array_equal(later[0], fresh[0])
    np.testing.assert_array_equal(in_order.predict(queries), model.predict(queries))


def test_a_model_saved_without_stage_1_references_is_remade_identically(saved, small):
    model, directory = saved
    manifest_path = directory / "model.json"
    manifest = json.loads(manifest_path.read_text())
    assert "stage1_refs" in manifest["arrays"]
    del manifest["arrays"]["stage1_refs"]
    manifest_path.write_text(json.dumps(manifest))
    sign_model(directory)
    (directory / "stage1_refs.npy").unlink()
    older = models.load(directory)
    np.testing.assert_array_equal(older.predict(small.X_test), model.predict(small.X_test))
    d1, i1 = older.neighbors(small.X_test[:20])
    d2, i2 = model.neighbors(small.X_test[:20])
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(d1, d2)
