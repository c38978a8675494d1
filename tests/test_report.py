"""`digitrec report`: one self-contained HTML page, checked as text and in a real browser."""

from __future__ import annotations

import base64
import copy
import io
import re

import numpy as np
import pytest
from conftest import run_digitrec
from PIL import Image

from digitrec import models
from digitrec.data import datasets
from digitrec.errors import DigitrecError
from digitrec.evaluation import report
from digitrec.evaluation.metrics import evaluate

IMG_SRC = re.compile(r"<img\b[^>]*\bsrc=\"([^\"]*)\"")


@pytest.fixture(scope="module")
def knn(uci) -> models.Model:
    return models.train("knn", uci, {"n_neighbors": 3})


@pytest.fixture(scope="module")
def knn_page(knn, uci) -> str:
    return report.build_report(knn, uci, "models/knn-uci")


def decoded_images(page: str) -> list[Image.Image]:
    images = []
    for src in IMG_SRC.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:40]
        images.append(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))))
    return images


# --- the page as text -------------------------------------------------------------------------


def test_knn_page_has_every_section_and_only_embedded_images(knn_page, uci, knn):
    accuracy = evaluate(knn, uci.X_test, uci.y_test).accuracy
    assert f"knn on uci-digits: {accuracy:.2%} accurate</h1>" in knn_page
    for heading in (
        "Per-class results",
        "Most confused pairs",
        "Accuracy against k",
        "Misclassified test images",
    ):
        assert f"<h2>{heading}</h2>" in knn_page
    assert "the 3 that voted" in knn_page
    images = decoded_images(knn_page)
    result = evaluate(knn, uci.X_test, uci.y_test)
    n_wrong = int(np.sum(result.y_true != result.y_pred))
    examples = sum(min(count, 6) for _, _, count in result.most_confused(top=8))
    # heat map + k curve, each mistake with the 3 that voted, up to 6 examples of each pair
    assert n_wrong > 0 and len(images) == 2 + n_wrong * (1 + 3) + examples
    for image in images:
        image.load()  # raises on a broken PNG
        assert image.width > 0
    assert "<script" not in knn_page and "http://" not in knn_page and "https://" not in knn_page


def test_classification_table_has_each_digit_and_the_averages(knn_page):
    table = knn_page.split('<table class="report">')[1].split("</table>")[0]
    first_cells = re.findall(r"<tr[^>]*><td>([^<]*)</td>", table)
    assert first_cells == [str(d) for d in range(10)] + ["macro avg", "weighted avg", "accuracy"]


def test_gallery_shows_each_mistake_with_its_true_and_predicted_label(knn_page, knn, uci):
    predicted = knn.predict(uci.X_test)
    wrong = np.flatnonzero(predicted != uci.y_test)
    shown = re.findall(r"true (\d)</span> <span class='pred'>predicted (\d)</span>", knn_page)
    assert len(shown) == min(len(wrong), report.DEFAULT_EXAMPLES)
    pairs = {(str(uci.y_test[i]), str(predicted[i])) for i in wrong}
    assert set(shown) <= pairs


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_accuracy_against_k_matches_a_model_fitted_for_each_k(uci, weights):
    model = models.train("knn", uci, {"n_neighbors": 3, "weights": weights})
    curve = report.parameter_curve(model, uci.X_test, uci.y_test, k_max=9)
    assert curve.values == list(range(1, 10)) and curve.model_value == 3
    for k in (1, 2, 3, 6, 9):
        refit = models.train("knn", uci, {"n_neighbors": k, "weights": weights})
        assert curve.accuracies[k - 1] == np.mean(refit.predict(uci.X_test) == uci.y_test)


def test_a_non_knn_model_gets_no_neighbour_sections(uci):
    model = models.train("linear-svc", uci, {"max_iter": 3000})
    page = report.build_report(model, uci)
    assert "<h2>Misclassified test images</h2>" in page
    assert "Accuracy against" not in page and "that voted" not in page
    assert report.parameter_curve(model, uci.X_test, uci.y_test, 5) is None
    # LinearSVC has no probabilities: no made-up confidence, mistakes in test-set order.
    assert "in test-set order (no probabilities)" in page and "confidence" not in page


def test_a_k20_knn_shows_every_neighbour_that_voted_next_to_a_mistake(uci):
    model = models.train("knn", uci, {"n_neighbors": 20, "weights": "distance"})
    page = report.build_report(model, uci, examples=3)
    cards = page.split('<figure class="card">')[1:]
    assert len(cards) == 3
    for card in cards:
        assert "the 20 that voted" in card
        assert card.count("<span>w ") == 20  # each voter with its weight
        assert "of the vote, weighted by closeness" in card


@pytest.fixture(scope="module")
def small_mnist(mnist) -> datasets.Dataset:
    return mnist.subset(2000, 120, seed=2)


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("knn", {"n_neighbors": 3}),
        ("knn-idm", {"n_candidates": 20, "n_neighbors": 2}),
        ("knn-idm-hknn", {"n_candidates": 20, "scattering_components": 40, "hyperplane_k": 15}),
    ],
)
def test_the_curve_at_the_models_own_value_is_the_headline_accuracy(small_mnist, kind, params):
    model = models.train(kind, small_mnist, params)
    data = small_mnist
    curve = report.parameter_curve(model, data.X_test, data.y_test, k_max=6)
    headline = evaluate(model, data.X_test, data.y_test).accuracy
    assert curve.accuracies[curve.values.index(curve.model_value)] == headline
    page = report.build_report(model, data, examples=4)
    assert f"<h2>Accuracy against {curve.parameter}</h2>" in page
    if kind == "knn-idm-hknn":
        # Another weight is evaluated as the model with that weight answers.
        assert curve.parameter == "hyperplane_weight" and 0.0 in curve.values
        other = copy.deepcopy(model.estimator).set_params(hyperplane_weight=50.0)
        accuracy = np.mean(other.predict(data.X_test) == data.y_test)
        assert curve.accuracies[curve.values.index(50.0)] == accuracy
        assert "IDM distance" in page and "hyperplane distance" in page
    if kind == "knn-idm":
        for k in (1, 4):
            other = copy.deepcopy(model.estimator).set_params(n_neighbors=k)
            accuracy = np.mean(other.predict(data.X_test) == data.y_test)
            assert curve.accuracies[k - 1] == accuracy


def test_text_from_the_data_is_escaped(knn, uci):
    hostile = datasets.Dataset(
        '<script>alert("x")</script>', uci.X_train, uci.y_train, uci.X_test, uci.y_test, 16
    )
    page = report.build_report(knn, hostile, model_path="<img src=x onerror=alert(1)>")
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_a_perfect_score_says_there_are_no_mistakes(uci):
    easy = datasets.Dataset("easy", uci.X_train, uci.y_train, uci.X_train[:50], uci.y_train[:50])
    model = models.train("knn", easy, {"n_neighbors": 1})
    page = report.build_report(model, easy)
    assert page.count("No mistakes on this test split.") == 2  # confused pairs and gallery


def test_images_of_another_size_are_refused(knn, mnist):
    with pytest.raises(DigitrecError, match="the model takes"):
        report.build_report(knn, mnist.subset(100, 100))


def test_cli_writes_the_report(tmp_path):
    done = run_digitrec("train", "knn", "-d", "uci-digits", "-o", tmp_path / "m")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "report.html"
    done = run_digitrec("report", tmp_path / "m", "-o", out, "--examples", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and len(re.findall('<figure class="card"', page)) == 4
    done = run_digitrec("report", tmp_path / "nothing", "-o", out)
    assert done.returncode == 1 and done.stderr.startswith("error: no model at")


# --- the page in a browser --------------------------------------------------------------------


def test_report_renders_offline_in_chromium(browser, mnist, tmp_path):
    data = mnist.subset(3000, 500, seed=0)
    model = models.train("knn", data, {"n_neighbors": 3})
    models.save(model, tmp_path / "knn-mnist")
    path = report.write_report(tmp_path / "knn-mnist", tmp_path / "report.html", test_size=500)
    accuracy = evaluate(model, data.X_test, data.y_test).accuracy

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    assert page.locator("#headline").inner_text() == f"knn on mnist: {accuracy:.2%} accurate"
    counts = page.evaluate(
        "() => { const all = Array.from(document.images);"
        " return [all.length, all.filter(i => i.complete && i.naturalWidth > 0).length]; }"
    )
    assert counts[0] > 100 and counts[1] == counts[0]
    chart_width = page.evaluate("() => document.querySelector('figure.chart img').naturalWidth")
    assert chart_width > 300
    assert all(url.startswith(("file:", "data:")) for url in requested), requested

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    page.close()
    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape[0] > 2000 and image.shape[1] == 1280
    assert image.std() > 20  # text, tables and digits, not a blank page


def test_report_fits_a_phone_without_sideways_scrolling(browser, mnist, tmp_path, screenshots):
    data = mnist.subset(2000, 200, seed=0)
    model = models.train("knn", data, {"n_neighbors": 20})
    path = tmp_path / "report.html"
    path.write_text(report.build_report(model, data, "models/knn-k20", examples=6))
    page = browser.new_page(viewport={"width": 360, "height": 740})
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    # Wide content scrolls inside its own box: the heat map keeps readable numbers.
    heat_width = page.evaluate(
        "() => document.querySelector('figure.chart.wide img').getBoundingClientRect().width"
    )
    assert heat_width >= 460
    page.screenshot(path=str(screenshots / "report-360x740.png"), full_page=True)
    page.close()
