"""Real image bytes for service tests, generated with Pillow (every format and mode we accept)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def gradient_rgb(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth RGB image with some texture, deterministic from ``seed``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [255 * x / max(width - 1, 1), 255 * y / max(height - 1, 1), 128 + 0 * x], axis=-1
    )
    noise = rng.integers(-20, 21, size=base.shape)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def png(image: Image.Image | None = None) -> bytes:
    return encode(image if image is not None else gradient_rgb(), "PNG")


def jpeg(image: Image.Image | None = None, quality: int = 95, **options: object) -> bytes:
    return encode(
        image if image is not None else gradient_rgb(), "JPEG", quality=quality, **options
    )


def halves(
    width: int, height: int, left: tuple[int, int, int], right: tuple[int, int, int]
) -> Image.Image:
    """Left half one colour, right half another: shows rotations and flips unambiguously."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = left
    pixels[:, width // 2 :] = right
    return Image.fromarray(pixels, "RGB")


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def animated_gif(colours: list[tuple[int, int, int]], size: tuple[int, int] = (16, 16)) -> bytes:
    frames = [Image.new("RGB", size, colour) for colour in colours]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` (a decompression bomb's header), no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def png_i16(values: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG holding exactly ``values`` (uint16)."""
    image = Image.fromarray(values.astype(np.uint16))
    data = encode(image, "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I"), "not a 16-bit PNG"
    return data
