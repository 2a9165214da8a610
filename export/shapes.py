"""The built-in ``shapes`` dataset: seeded, procedurally rendered coloured shapes, any image size.

Each image is one shape (class) with random size, position, rotation and colour, drawn anti-aliased
(4× supersampling) on a noisy background: a random two-colour gradient plus Gaussian pixel noise.
The shape's colour is always far from the background colour, so the class stays visible.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "ring",
    "triangle",
    "square",
    "star",
    "cross",
    "crescent",
    "arrow",
)

_SUPERSAMPLE = 4
Point = tuple[float, float]


def _polygon(points: list[Point], angle: float, cx: float, cy: float, r: float) -> list[Point]:
    """Unit-scale points rotated by ``angle``, scaled by ``r`` and moved to (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in points]


def _regular(n: int, start: float = -math.pi / 2) -> list[Point]:
    return [
        (math.cos(start + 2 * math.pi * i / n), math.sin(start + 2 * math.pi * i / n))
        for i in range(n)
    ]


def _star() -> list[Point]:
    outer, inner = _regular(5), _regular(5, -math.pi / 2 + math.pi / 5)
    return [
        p
        for pair in zip(outer, [(0.45 * x, 0.45 * y) for x, y in inner], strict=True)
        for p in pair
    ]


_CROSS = [
    (-0.3, -1),
    (0.3, -1),
    (0.3, -0.3),
    (1, -0.3),
    (1, 0.3),
    (0.3, 0.3),
    (0.3, 1),
    (-0.3, 1),
    (-0.3, 0.3),
    (-1, 0.3),
    (-1, -0.3),
    (-0.3, -0.3),
]
_ARROW = [(-1, -0.25), (0.2, -0.25), (0.2, -0.7), (1, 0), (0.2, 0.7), (0.2, 0.25), (-1, 0.25)]
_SQUARE = [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    kind: str,
    cx: float,
    cy: float,
    r: float,
    angle: float,
    colour: tuple[int, int, int],
    background: tuple[int, int, int],
) -> None:
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "ring":
        draw.ellipse(box, fill=colour)
        inner = 0.55 * r
        draw.ellipse((cx - inner, cy - inner, cx + inner, cy + inner), fill=background)
    elif kind == "crescent":
        draw.ellipse(box, fill=colour)
        dx, dy = 0.45 * r * math.cos(angle), 0.45 * r * math.sin(angle)
        draw.ellipse(
            (cx + dx - 0.85 * r, cy + dy - 0.85 * r, cx + dx + 0.85 * r, cy + dy + 0.85 * r),
            fill=background,
        )
    else:
        unit = {
            "triangle": _regular(3),
            "square": _SQUARE,
            "star": _star(),
            "cross": _CROSS,
            "arrow": _ARROW,
        }[kind]
        draw.polygon(_polygon(unit, angle, cx, cy, r), fill=colour)


def _distinct_colours(rng: np.random.Generator) -> tuple[tuple[int, int, int], ...]:
    """(background start, background end, shape) with the shape far from both ends."""
    while True:
        bg = rng.integers(0, 256, size=3)
        bg2 = np.clip(bg + rng.integers(-40, 41, size=3), 0, 255)
        fg = rng.integers(0, 256, size=3)
        if min(np.abs(fg - bg).sum(), np.abs(fg - bg2).sum()) >= 200:
            return tuple(int(v) for v in bg), tuple(int(v) for v in bg2), tuple(int(v) for v in fg)  # type: ignore[return-value]


def render_shape(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 image [size, size, 3] of ``kind`` drawn with random parameters from ``rng``."""
    big = size * _SUPERSAMPLE
    bg, bg2, fg = _distinct_colours(rng)
    ramp = np.linspace(0.0, 1.0, big)[None, :, None]
    direction = rng.integers(0, 2)
    ramp = ramp if direction == 0 else np.transpose(ramp, (1, 0, 2))
    base = (np.array(bg) * (1 - ramp) + np.array(bg2) * ramp) * np.ones((big, big, 1))
    image = Image.fromarray(base.astype(np.uint8), "RGB")
    r = rng.uniform(0.22, 0.42) * big
    margin = r * 1.05
    cx, cy = rng.uniform(margin, big - margin, size=2)
    angle = rng.uniform(0.0, 2 * math.pi)
    mid_bg = tuple((a + b) // 2 for a, b in zip(bg, bg2, strict=True))
    _draw_shape(ImageDraw.Draw(image), kind, cx, cy, r, angle, fg, mid_bg)  # type: ignore[arg-type]
    small = np.asarray(image.resize((size, size), Image.Resampling.BOX), dtype=np.float64)
    noisy = small + rng.normal(0.0, rng.uniform(4.0, 16.0), size=small.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def render_shapes(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` images of every class: (images uint8 [N, size, size, 3], targets int64 [N])."""
    if size < 8:
        raise ValueError(f"shapes needs an image size of at least 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    images = np.empty((per_class * len(SHAPE_CLASSES), size, size, 3), dtype=np.uint8)
    targets = np.repeat(np.arange(len(SHAPE_CLASSES), dtype=np.int64), per_class)
    for i, target in enumerate(targets):
        images[i] = render_shape(SHAPE_CLASSES[int(target)], size, rng)
    return images, targets
