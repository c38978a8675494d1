"""Pages of numbers (issue 16): lines, fields, tables, signs and decimals, and how honest
the confidence is.

    python benchmarks/pages.py                      # the default model, held-out seeds
    python benchmarks/pages.py --tuning --count 60  # the seeds thresholds were chosen on
    python benchmarks/pages.py --kind knn --train-size 10000 --count 30   # a quick look

Pages come from :mod:`digitrec.testing.pages` (``HELD_OUT_SEEDS`` unless ``--tuning``):
tables and lists of 2-8 lines of 1-4 numbers, plain, signed or decimal, spaced, close or
touching lines, as phone photos or canvas drawings. Each page is read as
``digitrec predict --layout table`` reads it (:func:`digitrec.reading.page.read_page`).

- lines right: share of pages with as many lines read as written;
- fields exact: share of written numbers read exactly (line i, field j against line i,
  field j);
- tables exact / CSV cells: for table pages, the whole grid exact, and the share of cells
  exact;
- wrong, unflagged: numbers read wrong without ``needs_review``; "mark missed" counts
  those whose minus, point or comma was lost or invented, including numbers with one that
  were not read at all (no field at their line and place: lines or fields merged), which
  "of them not read" counts.

Then the default threshold's trade-off on the single-number sets of
benchmarks/real_world.py (held-out seeds 1001-1003; ``--tuning``: 9001-9003): accuracy
of what is not flagged at 100/99/98/95/90% coverage, the share of wrong answers carrying
no flag, and the expected calibration error of the digit probabilities.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from real_world import GENERATED_SETS, SIZE_SHARE, load_or_train
from tqdm import tqdm

from digitrec.data.images import load_image
from digitrec.reading.page import MIN_CONFIDENCE, read_page
from digitrec.testing import pages

COVERAGES = (1.0, 0.99, 0.98, 0.95, 0.90)
MARKS = "-.,"


def page_scores(model, seeds: range, threshold: float) -> dict[str, dict[str, float]]:
    """Counts per page kind (and "all") of the measures in the module docstring."""
    counts: dict[str, dict[str, float]] = {}
    for seed in tqdm(seeds, desc="pages", unit="page"):
        page = pages.page(seed)
        image = load_image(page.data, name=f"page-{seed}")
        reading = read_page(model, image, layout="table", min_confidence=threshold)
        read_lines = [[f for f in line] for line in reading.lines]
        for key in (page.kind, "all"):
            c = counts.setdefault(key, {})
            _add(c, "pages", 1)
            _add(c, "lines right", len(read_lines) == len(page.lines))
            for i, line in enumerate(page.lines):
                for j, truth in enumerate(line):
                    got = (
                        read_lines[i][j] if i < len(read_lines) and j < len(read_lines[i]) else None
                    )
                    right = got is not None and got.text == truth
                    _add(c, "fields", 1)
                    _add(c, "fields exact", right)
                    flagged = got is not None and got.needs_review
                    _add(c, "wrong, unflagged", not right and got is not None and not flagged)
                    marks_truth = [ch for ch in truth if ch in MARKS]
                    marks_read = [ch for ch in got.text if ch in MARKS] if got else []
                    _add(c, "mark missed, unflagged", marks_truth != marks_read and not flagged)
                    _add(c, "mark missed, not read", bool(marks_truth) and got is None)
                    _add(c, "with marks", bool(marks_truth))
                    _add(c, "with marks exact", bool(marks_truth) and right)
            if page.table:
                _add(c, "tables", 1)
                grid = reading.grid()
                _add(c, "tables exact", grid == page.lines)
                for i, line in enumerate(page.lines):
                    for j, truth in enumerate(line):
                        _add(c, "cells", 1)
                        _add(
                            c,
                            "cells exact",
                            i < len(grid) and j < len(grid[i]) and grid[i][j] == truth,
                        )
    return counts


def _add(counts: dict[str, float], key: str, value: float) -> None:
    counts[key] = counts.get(key, 0) + float(value)


def confidence_sets(model, seed: int, count: int, threshold: float):
    """Per number (field confidence, right) and per digit (probability, right) on the
    single-number sets, read with the default layout."""
    numbers, digits, exact = [], [], {}
    for offset, name in enumerate(("photos", "numbers", "drawings"), start=1):
        items = GENERATED_SETS[name](seed + offset, max(1, round(count * SIZE_SHARE[name])))
        for index, (data, label, _writer) in enumerate(tqdm(items, desc=name, unit="image")):
            image = load_image(data, name=f"{name}-{index}")
            reading = read_page(model, image, min_confidence=threshold)
            fields = [f for line in reading.lines for f in line]
            confidence = fields[0].confidence if len(fields) == 1 else 0.0
            flagged = len(fields) != 1 or fields[0].needs_review
            numbers.append((confidence, reading.text == label, flagged))
            exact.setdefault(name, []).append(reading.text == label)
            if len(reading.digits) == len(label):
                for d, truth in zip(reading.digits, label, strict=True):
                    digits.append((d.confidence, str(d.digit) == truth))
    return np.array(numbers, float), np.array(digits, float), exact


def expected_calibration_error(probability: np.ndarray, right: np.ndarray, bins: int = 15) -> float:
    """Sum over equal-width probability bins of (share of items) x |accuracy - mean probability|."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(right[inside].mean() - probability[inside].mean())
    return float(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a saved model directory")
    source.add_argument("--kind", help="train a model of this kind first (on --dataset)")
    parser.add_argument("--dataset", default="mnist+unipen", help="with --kind: training data")
    parser.add_argument("-p", "--param", action="append", default=[], help="name=value")
    parser.add_argument("--train-size", type=int, help="with --kind: a stratified subset")
    parser.add_argument("--save", help="with --kind: save the trained model here")
    parser.add_argument("--count", type=int, default=200, help="pages (at most 200; 0: none)")
    parser.add_argument("--sets-count", type=int, default=100, help="real_world set scale")
    parser.add_argument("--tuning", action="store_true", help="tuning seeds, not held-out")
    parser.add_argument("--min-confidence", type=float, default=MIN_CONFIDENCE)
    args = parser.parse_args(argv)
    if args.save is not None or args.model is not None:
        from pathlib import Path

        args.save = Path(args.save) if args.save else None
        args.model = Path(args.model) if args.model else None

    model, what = load_or_train(args)
    print(f"model: {what}; min confidence {args.min_confidence}")
    seeds = pages.TUNING_SEEDS if args.tuning else pages.HELD_OUT_SEEDS
    seeds = seeds[: args.count]
    if seeds:
        page_table(model, seeds, args)
    confidence_table(model, args)
    return 0


def page_table(model, seeds: range, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    counts = page_scores(model, seeds, args.min_confidence)
    seconds = time.perf_counter() - started
    print(f"\n{len(seeds)} {'tuning' if args.tuning else 'held-out'} pages read in {seconds:.0f} s")
    print(
        f"{'pages':<9}{'n':>5}{'lines right':>12}{'fields exact':>13}{'tables exact':>13}"
        f"{'CSV cells':>10}{'marked exact':>13}{'wrong unflagged':>16}{'mark missed unfl.':>18}"
        f"{'of them not read':>17}"
    )
    for key in ("all", *pages.KINDS):
        c = counts.get(key)
        if not c:
            continue
        tables = f"{c['tables exact'] / c['tables']:.3f}" if c.get("tables") else "-"
        cells = f"{c['cells exact'] / c['cells']:.3f}" if c.get("cells") else "-"
        marked = f"{c['with marks exact'] / c['with marks']:.3f}" if c.get("with marks") else "-"
        print(
            f"{key:<9}{int(c['pages']):>5}{c['lines right'] / c['pages']:>12.3f}"
            f"{c['fields exact'] / c['fields']:>13.3f}{tables:>13}{cells:>10}{marked:>13}"
            f"{int(c['wrong, unflagged']):>16}{int(c['mark missed, unflagged']):>18}"
            f"{int(c['mark missed, not read']):>17}"
        )
    print("goals: lines right >= 0.99, fields exact >= 0.95, tables exact >= 0.85, "
          "signed/decimal exact >= 0.95, mark missed unflagged = 0")  # fmt: skip


def confidence_table(model, args: argparse.Namespace) -> None:
    seed = 9000 if args.tuning else 1000
    numbers, digits, exact = confidence_sets(model, seed, args.sets_count, args.min_confidence)
    shown = ", ".join(f"{name} {np.mean(right):.3f}" for name, right in exact.items())
    print(f"\nexact with the default layout (auto): {shown}")
    order = np.argsort(-numbers[:, 0], kind="stable")
    ranked = numbers[order, 1]
    print(f"\nselective accuracy on photos+numbers+drawings (seeds {seed + 1}-{seed + 3}, "
          f"{len(numbers)} images)")  # fmt: skip
    print(f"{'coverage':>9}{'accuracy':>10}{'threshold':>11}")
    for coverage in COVERAGES:
        kept = max(1, int(round(coverage * len(ranked))))
        print(f"{coverage:>9.2f}{ranked[:kept].mean():>10.4f}{numbers[order[kept - 1], 0]:>11.4f}")
    flagged = numbers[:, 2] > 0
    wrong = numbers[:, 1] == 0
    print(
        f"at min confidence {args.min_confidence}: coverage {1 - flagged.mean():.3f}, "
        f"accuracy of unflagged {numbers[~flagged, 1].mean():.4f}, "
        f"wrong answers without a flag {(wrong & ~flagged).sum()}/{wrong.sum()} "
        f"({(wrong & ~flagged).sum() / max(1, wrong.sum()):.3f}; "
        f"{(wrong & ~flagged).mean():.4f} of all answers)"
    )
    ece = expected_calibration_error(digits[:, 0], digits[:, 1])
    print(f"digit probabilities: {len(digits)} digits, accuracy {digits[:, 1].mean():.4f}, "
          f"mean probability {digits[:, 0].mean():.4f}, ECE {ece:.4f} (goal <= 0.02)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
