"""Cutting marks into digits by how well the model reads the pieces (digitrec.reading.cuts,
digitrec.reading.candidates), on small drawn images and hand-made lattices."""

from __future__ import annotations

import cv2
import numpy as np

from digitrec.reading import cuts
from digitrec.reading.candidates import find_candidates, read_candidates
from digitrec.reading.ink import find_ink
from digitrec.reading.segment import digit_marks


def two_touching_rings() -> np.ndarray:
    """Two '0'-like rings joined by a short stroke, as in a cursive number: one mark no
    wider than its height, which geometry alone leaves whole."""
    page = np.full((120, 200), 255, np.uint8)
    cv2.ellipse(page, (76, 60), (18, 40), 0, 0, 360, 0, 6)
    cv2.ellipse(page, (124, 60), (18, 40), 0, 0, 360, 0, 6)
    cv2.line(page, (94, 60), (106, 60), 0, 6)
    return page


def one_ring() -> np.ndarray:
    page = np.full((120, 200), 255, np.uint8)
    cv2.ellipse(page, (100, 60), (24, 40), 0, 0, 360, 0, 6)
    return page


def sure_reader(calls: list[int]):
    """A stand-in for the model: every tile a sure '0', near the digits it knows."""

    def read(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(tiles))
        proba = np.zeros((len(tiles), 10))
        proba[:, 0] = 1.0
        return proba, np.full(len(tiles), 3.0)

    return read


def test_the_two_rings_are_one_mark_that_geometry_leaves_whole():
    marks = digit_marks(find_ink(two_touching_rings()))
    assert len(marks) == 1
    assert len(marks[0].pieces()) == 1


def test_the_lattice_of_two_touching_rings_holds_a_cut_between_them():
    ink = find_ink(two_touching_rings())
    found = cuts.lattice(ink, digit_marks(ink))
    last = found.nodes - 1
    halves = [
        (found.boxes[i], found.boxes[j])
        for i in found.read()
        for j in found.read()
        if found.starts[i] == 0 and found.ends[i] == found.starts[j] and found.ends[j] == last
    ]
    # Some two-piece path cuts where the rings meet (x = 100 in the image, scale 1).
    assert any(
        abs(left[0] + left[2] - 100) <= 6 and abs(right[0] - 100) <= 6 for left, right in halves
    )


def test_choose_takes_the_path_with_the_highest_score():
    found = cuts.Lattice(nodes=3)
    found.add(0, 2, None, (0, 0, 40, 20), 20, 0.0, True, (0, 0))  # the whole mark
    found.add(0, 1, None, (0, 0, 20, 20), 20, 0.0, False, (0, 0))
    found.add(1, 2, None, (20, 0, 20, 20), 20, 1.0, False, (0, 0))
    assert cuts.choose(found, np.array([-1.0, -0.2, -0.3])) == [1, 2]
    assert cuts.choose(found, np.array([-0.4, -0.2, -0.3])) == [0]


def test_a_piece_not_read_is_never_chosen():
    found = cuts.Lattice(nodes=3)
    found.add(0, 2, None, (0, 0, 20, 20), 20, 0.0, True, (0, 0))
    found.add(0, 1, None, (0, 0, 10, 20), 20, 0.0, False, (0, 0))
    found.add(1, 2, None, (10, 0, 10, 20), 20, 0.0, False, (0, 0))
    best = np.array([0.5, np.nan, 1.0])
    scores = cuts.piece_scores(found, best, None)
    assert np.isneginf(scores[1])
    assert cuts.choose(found, scores) == [0]


def test_a_merged_pair_far_from_every_digit_loses_to_its_two_digits():
    # Read from a written '35' whose two digits touch: the whole mark reads as a '0' that
    # lies far from every '0' the model knows; the two pieces read as a '3' and a '5', each
    # nearer its own kind, though the cut between them crosses ink. A cost that grew only
    # in step with distance took the merged '0' (two digits add up more distance).
    found = cuts.Lattice(nodes=3)
    found.add(0, 2, None, (0, 0, 56, 50), 50, 0.0, True, (0, 0))
    found.add(0, 1, None, (0, 0, 28, 37), 50, 0.0, False, (0, 0))
    found.add(1, 2, None, (28, 4, 32, 42), 50, 1.6, False, (0, 0))
    best = np.array([0.85, 1.0, 0.9])
    distance = np.array([27.5, 9.2, 17.4])
    assert cuts.choose(found, cuts.piece_scores(found, best, distance)) == [1, 2]


def three_touching_digits(
    merged_distance: float,
) -> tuple[cuts.Lattice, np.ndarray, np.ndarray]:
    """Read from a written '330' whose digits touch: the whole mark, 1.65 line heights
    wide, reads as a sure '0' (MNIST framing squeezes it), and so do its three pieces,
    each a '3', '3' and '0', across cuts that cross ink."""
    found = cuts.Lattice(nodes=4)
    found.add(0, 3, None, (0, 0, 82, 50), 50, 0.0, True, (0, 0))
    found.add(0, 1, None, (0, 5, 30, 39), 50, 0.0, False, (0, 0))
    found.add(1, 2, None, (30, 7, 24, 36), 50, 1.7, False, (0, 0))
    found.add(2, 3, None, (44, 5, 38, 45), 50, 2.0, False, (0, 0))
    best = np.array([1.0, 1.0, 1.0, 1.0])
    return found, np.array([merged_distance, 8.4, 9.2, 5.4]), best


def test_a_wide_piece_far_from_every_digit_loses_to_its_pieces():
    found, distance, best = three_touching_digits(14.7)
    assert cuts.choose(found, cuts.piece_scores(found, best, distance)) == [1, 2, 3]
    # Width and distance each alone did not tell it from one wide digit.
    alone = dict(cuts.SCORE_WEIGHTS, wide_far=0.0)
    assert cuts.choose(found, cuts.piece_scores(found, best, distance, alone)) == [0]


def test_a_wide_digit_that_reads_like_a_known_digit_stays_whole():
    found, distance, best = three_touching_digits(6.0)
    assert cuts.choose(found, cuts.piece_scores(found, best, distance)) == [0]


def test_a_cut_down_through_a_joint_crosses_one_stroke_and_one_through_a_ring_two():
    stroke = 6.0
    joint = np.zeros(80, bool)
    joint[20:50] = True  # the cut runs down a joint five strokes long
    ring = np.zeros(80, bool)
    ring[10:16] = ring[64:70] = True  # the top and bottom of a '0', a stroke each
    graze = np.zeros(80, bool)
    graze[40:43] = True  # half a stroke: the tip of a stroke
    assert cuts.crossed_ink(joint, stroke) == 1.0
    assert cuts.crossed_ink(ring, stroke) == 2.0
    assert cuts.crossed_ink(graze, stroke) == 0.5
    assert cuts.crossed_ink(np.zeros(80, bool), stroke) == 0.0


def ring_reader(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in for the model that knows one ring: every tile a sure '0', but a tile
    whose ink is as wide as it is tall (two rings) lies far from every '0' it knows."""
    columns = (tiles > 0).any(axis=1)
    widths = columns.shape[1] - np.argmax(columns, axis=1) - np.argmax(columns[:, ::-1], axis=1)
    proba = np.zeros((len(tiles), 10))
    proba[:, 0] = 1.0
    return proba, np.where(widths >= 16, 12.0, 2.0)


def test_touching_digits_are_cut_where_the_pieces_read_best():
    found = find_candidates(two_touching_rings())
    read_candidates(ring_reader, [found])
    chosen = found.chosen()
    assert len(chosen) == 2
    (left, *_), (right, *_) = (found.boxes[i] for i in chosen)
    assert left < 100 <= right


def test_one_ring_read_surely_costs_one_model_call_of_one_tile():
    calls: list[int] = []
    found = find_candidates(one_ring())
    read_candidates(sure_reader(calls), [found])
    assert calls == [1]
    assert len(found.chosen()) == 1


def test_a_mark_read_unsurely_gets_a_second_look_at_its_other_cuts():
    calls: list[int] = []

    def unsure(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(tiles))
        proba = np.zeros((len(tiles), 10))
        proba[:, [0, 8]] = 0.5
        return proba, np.full(len(tiles), 3.0)

    found = find_candidates(two_touching_rings())
    read_candidates(unsure, [found])
    assert calls[0] == 1  # geometry's one piece
    assert len(calls) == 2 and calls[1] == len(found.tiles) - 1


def test_candidates_are_bounded_however_many_marks():
    page = np.full((100, 1900), 255, np.uint8)
    for i in range(18):
        # Pairs of touching rings, each mark wide enough to try cutting.
        cv2.ellipse(page, (60 + 100 * i, 50), (22, 36), 0, 0, 360, 0, 5)
        cv2.ellipse(page, (98 + 100 * i, 50), (22, 36), 0, 0, 360, 0, 5)
    found = find_candidates(page)
    # Geometry's pieces of each mark, neighbouring marks as one, and the extra candidates.
    geometric = sum(found.lattice.geometric)
    assert len(found.tiles) <= geometric + 17 + cuts.MAX_PIECES
    assert len(found.tiles) > geometric


def test_a_blank_page_has_no_candidates_and_says_why():
    found = find_candidates(np.full((80, 120), 255, np.uint8))
    read_candidates(sure_reader([]), [found])
    assert found.diagnosis == "no ink found"
    assert len(found.tiles) == 0 and found.chosen() == []
