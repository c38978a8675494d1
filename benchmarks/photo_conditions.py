"""Real pen-written digits photographed under the conditions people photograph in: plain
paper, ruled and squared paper, a sheet lying on a table, faint pencil, a tiny or a huge
digit, a shaken phone, a turned page, tinted paper. One table, one row per condition.

    python benchmarks/photo_conditions.py                       # the held-out writers
    python benchmarks/photo_conditions.py --part tuning --count 50

Each digit of the UNIPEN writers of ``--part`` (UNIPEN train_r01_v07 category 1a,
International Unipen Foundation, doi:10.5281/zenodo.1195803, CC BY 4.0) is drawn as ink
(:func:`digitrec.data.pen_digits.ink_image`) and photographed with
:func:`digitrec.testing.synthetic.photo_rgb_of_ink` (light, shadow, warp, blur, noise),
then changed by the condition, then read the way ``digitrec predict`` reads a photo. The
ruled, squared and table conditions were developed on the tuning writers; the held-out
writers judge them.
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from digitrec import config, models, progress
from digitrec.data import pen_digits
from digitrec.data.images import load_image
from digitrec.reading.recognize import read_image
from digitrec.testing.synthetic import photo_rgb_of_ink

Strokes = list[np.ndarray]


def ink_of(strokes: Strokes, height: int, pen: float) -> np.ndarray:
    """Ink coverage of ``strokes`` ``height`` px tall, with a pen ``pen`` of the height."""
    scale = height / pen_digits.height_of(strokes)
    return pen_digits.ink_image(strokes, scale=scale, pen=pen * height, pad=2)


def photographed(strokes: Strokes, rng: np.random.Generator, *, shadow=None) -> np.ndarray:
    """An RGB photo of a ballpoint or felt-tip digit 40-110 px tall."""
    height = int(rng.integers(40, 110))
    ink = ink_of(strokes, height, rng.uniform(0.035, 0.11))
    return photo_rgb_of_ink(ink, rng, height=height, shadow=shadow).astype(np.float32)


def printed_lines(rgb: np.ndarray, rng: np.random.Generator, *, squared: bool) -> np.ndarray:
    """``rgb`` on paper printed with light blue lines (and columns if ``squared``) under
    the ink: lines every 0.9-1.6 digit heights, squares of 0.45-0.8."""
    h, w = rgb.shape[:2]
    written = np.flatnonzero((rgb.mean(axis=2) < 120).any(axis=1))
    height = max(10, int(written[-1] - written[0])) if written.size else h // 3
    step = height * (rng.uniform(0.45, 0.8) if squared else rng.uniform(0.9, 1.6))
    lines = np.zeros((h, w), np.float32)
    for y in np.arange(rng.uniform(0, step), h, step):
        cv2.line(lines, (0, int(y)), (w - 1, int(y)), 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)
    if squared:
        for x in np.arange(rng.uniform(0, step), w, step):
            cv2.line(lines, (int(x), 0), (int(x), h - 1), 1.0, 1, cv2.LINE_AA)
    colour = np.array([rng.uniform(120, 190), rng.uniform(150, 200), rng.uniform(200, 240)])
    alpha = (0.6 * lines * (rgb.mean(axis=2) > 150))[..., None]
    return rgb * (1 - alpha) + colour * alpha


def plain(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    return photographed(strokes, rng)


def ruled(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    return printed_lines(photographed(strokes, rng, shadow=0.0), rng, squared=False)


def squared(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    return printed_lines(photographed(strokes, rng, shadow=0.0), rng, squared=True)


def on_a_table(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    """The sheet lying on a darker table that shows on all sides."""
    sheet = photographed(strokes, rng)
    h, w = sheet.shape[:2]
    top, left = int(h * rng.uniform(0.15, 0.4)), int(w * rng.uniform(0.15, 0.4))
    table = np.array([rng.uniform(20, 90), rng.uniform(30, 110), rng.uniform(40, 140)])
    grain = cv2.GaussianBlur(rng.normal(0, 1, (h + 2 * top, w + 2 * left)).astype(np.float32),
                             (0, 0), 4)  # fmt: skip
    photo = table + 10 * grain[..., None]
    photo[top : top + h, left : left + w] = sheet
    return photo


def pencil(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    height = int(rng.integers(40, 110))
    ink = ink_of(strokes, height, rng.uniform(0.02, 0.045)) * rng.uniform(0.35, 0.6)
    return photo_rgb_of_ink(ink, rng, height=height, shadow=None)


def tiny(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    height = int(rng.integers(16, 30))
    ink = ink_of(strokes, height, rng.uniform(0.06, 0.12))
    return photo_rgb_of_ink(ink, rng, height=height, shadow=None)


def huge_fine_pen(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    height = int(rng.integers(250, 450))
    ink = ink_of(strokes, height, rng.uniform(0.012, 0.03))
    return photo_rgb_of_ink(ink, rng, height=height, shadow=None)


def shaken(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    """Motion blur 5-11 px long in any direction."""
    rgb = photographed(strokes, rng)
    length = int(rng.integers(5, 12))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1
    centre = (length / 2 - 0.5, length / 2 - 0.5)
    turn = cv2.getRotationMatrix2D(centre, float(rng.uniform(0, 180)), 1)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(rgb, -1, kernel / kernel.sum())


def turned(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    """The digit turned by 12-25 degrees either way."""
    angle = np.deg2rad(rng.choice([-1, 1]) * rng.uniform(12, 25))
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return photographed([stroke @ rotation.T for stroke in strokes], rng)


def tinted(strokes: Strokes, rng: np.random.Generator) -> np.ndarray:
    tint = np.array([rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0), rng.uniform(0.5, 0.9)])
    return photographed(strokes, rng) * tint


CONDITIONS: dict[str, Callable[[Strokes, np.random.Generator], np.ndarray]] = {
    "plain": plain,
    "ruled": ruled,
    "squared": squared,
    "on a table": on_a_table,
    "pencil": pencil,
    "tiny (16-30 px)": tiny,
    "huge with a fine pen": huge_fine_pen,
    "shaken": shaken,
    "turned 12-25 deg": turned,
    "tinted paper": tinted,
}


def jpeg(rgb: np.ndarray, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    pixels = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=int(rng.integers(60, 92)))
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a saved model (default: the default)")
    parser.add_argument("--part", choices=("held-out", "tuning"), default="held-out")
    parser.add_argument("--count", type=int, default=300, help="digits per condition")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="comma-separated")
    args = parser.parse_args()
    wanted = args.conditions.split(",")
    unknown = sorted(set(wanted) - set(CONDITIONS))
    if unknown:
        parser.error(f"unknown condition {', '.join(unknown)}; choose from {', '.join(CONDITIONS)}")

    model = models.load(args.model or config.default_model_dir())
    digits = pen_digits.load()
    chosen = np.random.default_rng(args.seed).permutation(digits.writer_indices(args.part))
    chosen = chosen[: args.count]
    print(f"UNIPEN {args.part} writers, {len(chosen)} digits per condition; {pen_digits.CREDIT}")
    rows = []
    for name in wanted:
        condition = CONDITIONS[name]
        started = time.perf_counter()
        right = 0
        for index in progress.bar(chosen, desc=name, unit="photo"):
            rng = np.random.default_rng([args.seed, int(index), zlib.crc32(name.encode())])
            data = jpeg(condition(digits.strokes(int(index)), rng), rng)
            reading = read_image(model, load_image(data, name=name))
            right += reading.text == str(digits.label[index])
        rows.append((name, len(chosen), right / len(chosen), time.perf_counter() - started))
    print(f"\n{'condition':18} {'photos':>6} {'exact':>6} {'s/photo':>8}")
    for name, count, exact, seconds in rows:
        print(f"{name:18} {count:>6} {exact:6.3f} {seconds / count:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
