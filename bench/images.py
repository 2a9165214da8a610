"""Photo-like JPEGs generated on the spot: smooth gradients, soft shapes, texture and sensor noise.

Flat synthetic images compress to almost nothing and decode unrealistically fast; these have the
entropy of a real photo (a 2.4 MP one is several hundred kB at quality 90), so decode costs are
realistic. Deterministic from the seed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

PHOTO_SIZE = (1920, 1280)  # 2.46 MP, a typical phone photo downscaled by a messaging app
SMALL_SIZE = (224, 224)


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """An RGB image with gradients, blurred shapes, fine texture and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= max(width - 1, 1)
    y /= max(height - 1, 1)
    base = np.empty((height, width, 3), dtype=np.float32)
    for c in range(3):
        a, b, d = rng.uniform(-120, 120, size=3)
        base[..., c] = 128 + a * x + b * y + d * x * y
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    scale = min(width, height)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.05, 0.3) * scale
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=int(rng.integers(3, 7))))
            points = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in angles]
            draw.polygon(points, fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(1.0, scale / 300)))
    pixels = np.asarray(image, dtype=np.float32)
    texture = rng.normal(0, 1, size=(height // 4 + 1, width // 4 + 1, 1)).astype(np.float32)
    texture = np.kron(texture, np.ones((4, 4, 1), dtype=np.float32))[:height, :width]
    noise = rng.normal(0, 6, size=pixels.shape).astype(np.float32)
    pixels = pixels + 10 * texture + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photo_jpegs(count: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``count`` distinct photo-like JPEGs of ``size`` (width, height)."""
    return [jpeg_bytes(photo_like(*size, seed=seed + i)) for i in range(count)]


def bits_per_pixel(jpeg: bytes) -> float:
    """Compressed bits per pixel: how much entropy decoding a JPEG costs, whatever its size."""
    with Image.open(io.BytesIO(jpeg)) as image:
        return 8 * len(jpeg) / (image.width * image.height)


def reference_photo_density() -> dict[str, float]:
    """Bits per pixel of the real photographs scikit-learn ships (china.jpg, flower.jpg), to
    show the generated photos are no harder to decode than real ones; empty without sklearn."""
    try:
        import sklearn.datasets
    except ImportError:
        return {}
    folder = Path(sklearn.datasets.__file__).parent / "images"
    return {p.name: bits_per_pixel(p.read_bytes()) for p in sorted(folder.glob("*.jpg"))}
