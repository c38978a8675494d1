"""Metrics on a hand-made set of answers, whose values are worked out by hand below."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from digitrec import models
from digitrec.evaluation import metrics as evaluate
from digitrec.evaluation.metrics import evaluation_of

# Ten answers over three classes. By hand:
#   confusion (rows true, columns predicted): 0: [2 1 0]   1: [0 2 0]   2: [2 1 2]
#   accuracy 6/10; precision 2/4, 2/4, 2/2; recall 2/3, 2/2, 2/5.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 2, 2, 0, 0, 1])


@pytest.fixture
def result():
    return evaluation_of(Y_TRUE, Y_PRED, 1.23456, [0, 1, 2])


def test_accuracy_and_count(result):
    assert result.accuracy == pytest.approx(0.6)
    assert result.n == 10


def test_confusion_matrix_rows_are_true_labels(result):
    np.testing.assert_array_equal(result.confusion, [[2, 1, 0], [0, 2, 0], [2, 1, 2]])


def test_per_class_precision_recall_f1_support(result):
    assert result.per_class() == {
        "0": {"precision": 0.5, "recall": 0.6667, "f1": 0.5714, "support": 3},
        "1": {"precision": 0.5, "recall": 1.0, "f1": 0.6667, "support": 2},
        "2": {"precision": 1.0, "recall": 0.4, "f1": 0.5714, "support": 5},
    }


def test_most_confused_pairs_come_biggest_first_and_skip_zeros(result):
    assert result.most_confused(top=1) == [(2, 0, 2)]
    pairs = result.most_confused()
    assert pairs[0] == (2, 0, 2)
    assert sorted(pairs[1:]) == [(0, 1, 1), (2, 1, 1)]


def test_plain_lists_give_the_same_result_as_arrays():
    # Lists compare as whole objects under ==; the metrics must compare them element-wise.
    from_lists = evaluation_of(Y_TRUE.tolist(), Y_PRED.tolist(), 0.0, [0, 1, 2])
    assert from_lists.accuracy == pytest.approx(0.6)
    np.testing.assert_array_equal(from_lists.confusion, [[2, 1, 0], [0, 2, 0], [2, 1, 2]])


def test_a_class_never_predicted_scores_zero_without_warnings():
    # zero_division=0: no precision warning, just 0 for a class the model never says.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluation_of(np.array([0, 1, 2]), np.array([0, 0, 0]), 0.0, [0, 1, 2])
    assert result.per_class()["1"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert sorted(result.most_confused()) == [(1, 0, 1), (2, 0, 1)]


def test_to_json_has_the_documented_keys_and_is_serialisable(result):
    data = result.to_json()
    assert set(data) == {"accuracy", "n", "per_class", "confusion", "seconds"}
    assert data["accuracy"] == pytest.approx(0.6)
    assert data["n"] == 10
    assert data["per_class"] == result.per_class()
    assert data["confusion"] == [[2, 1, 0], [0, 2, 0], [2, 1, 2]]
    assert data["seconds"] == 1.235
    assert json.loads(json.dumps(data)) == data


def test_text_report_and_confusion_table(result):
    report = result.report()
    assert "0.5714" in report and "0.6000" in report  # four decimals, as the tutorials print
    lines = result.confusion_text().splitlines()
    assert lines[0].split() == ["true\\pred", "0", "1", "2"]
    assert [line.split() for line in lines[1:]] == [
        ["0", "2", "1", "0"], ["1", "0", "2", "0"], ["2", "2", "1", "2"],
    ]


def test_evaluate_predicts_in_chunks_with_the_same_answers(uci, monkeypatch):
    model = models.train("knn", uci, {"n_neighbors": 3})
    whole = evaluate.evaluate(model, uci.X_test, uci.y_test)
    # Chunks of 7 split the 360 test images unevenly: the joined answers must not change.
    monkeypatch.setattr(evaluate, "PREDICT_CHUNK", 7)
    chunked = evaluate.evaluate(model, uci.X_test, uci.y_test, progress=True)

    expected = model.predict(uci.X_test)
    for result in (whole, chunked):
        np.testing.assert_array_equal(result.y_pred, expected)
        assert result.n == 360
        assert result.accuracy == pytest.approx(np.mean(expected == uci.y_test))
        assert result.labels == list(range(10))
        assert result.confusion.sum() == 360
        assert np.trace(result.confusion) == round(result.accuracy * 360)
