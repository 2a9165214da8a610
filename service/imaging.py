"""Image bytes → RGB ``PIL.Image`` → float32 NCHW batch, exactly as the model card says.

Decoding (``decode_image``):

- The format is sniffed from the first bytes, never taken from a filename or content type.
  Allowed: JPEG, PNG, WebP, BMP, GIF; anything else → 415 ``unsupported_media_type``.
- Width × height is read from the header and checked against ``max_pixels`` *before* any pixel
  is decoded → 422 ``image_too_large``; an animation declaring more than ``max_frames`` frames
  → 422 ``too_many_frames``. Only the first frame of an animation is used.
- Empty, truncated or undecodable bytes → 400 ``invalid_image``.
- A JPEG much larger than the model needs is decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT
  scaling, "draft" mode); the decoded image is never smaller than what the resize step needs.
- The EXIF orientation tag is applied (the image is turned upright).
- Every mode becomes RGB by one rule (``to_rgb``):
  RGB as is; L and 1 replicated to three channels; anything with alpha (RGBA, LA, PA, P with a
  transparency entry, RGBa, La) is composited over white; CMYK and YCbCr/LAB/HSV via Pillow's
  conversion; 16/32-bit integer grey (I;16*, I) is clipped to [0, 65535] and scaled to 8 bit
  (value / 257, rounded); float grey (F) is clipped to [0, 255] and rounded.

Preprocessing (``preprocess_into`` / ``preprocess``) uses the model card only: resize policy,
resize size, centre crop to ``input_size``, bilinear (antialiased) interpolation, mean/std. It
matches torchvision's ``Resize(resize_size) + CenterCrop(input_size)`` on a PIL image (the crop
is a view, not a copy), and uint8 → normalised float32 is one table lookup per channel (computed
in float64 once per card), written straight into the NCHW batch. The resized image is bounded:
when it would exceed ``MAX_RESIZED_PIXELS`` (a long thin strip resized so that its short side
becomes ``resize_size``: a 1 KB PNG of 1 000 000 × 1 would become gigabytes), only the crop
window is resized, straight from the source, with the same geometry (Pillow's rounding then
differs from the full resize by at most 2 levels of 255).
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile

from service.errors import InvalidImage, Unprocessable, UnsupportedMediaType
from service.modelcard import ModelCard

# The service enforces its own pixel limit (from settings, checked from the header before
# decoding), so Pillow's process-wide bomb check, which warns or raises at fixed sizes, is off.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

ALLOWED_FORMATS: Final = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
MAX_RESIZED_PIXELS: Final = 1 << 22
"""Largest resized image (before the centre crop) that is materialised: 12 MB of RGB, enough for
a 64:1 panorama at a 256 resize. Past it only the crop window is resized."""
_ALLOWED_TEXT: Final = "JPEG, PNG, WebP, BMP or GIF"
_EXIF_ORIENTATION: Final = 0x0112
_WHITE: Final = (255, 255, 255)
# What Pillow raises on malformed bytes, as opposed to a bug here. ``Image.open`` itself treats
# SyntaxError, IndexError, TypeError and struct.error from a format plugin as "not this format";
# reading headers, frames and pixel data adds OSError (truncated or broken data, including
# UnidentifiedImageError), EOFError (missing frames), ValueError, and IndexError or KeyError
# (LookupError: a table or palette index out of range).
_MALFORMED: Final = (OSError, EOFError, SyntaxError, ValueError, TypeError, LookupError,
                     struct.error)  # fmt: skip


@dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000
    max_frames: int = 1000


def sniff_format(data: bytes) -> str | None:
    """The Pillow format name from the magic bytes, or None if not an allowed format."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[:2] == b"BM":
        return "BMP"
    return None


def draft_size(card: ModelCard) -> tuple[int, int]:
    """The smallest (width, height) a decoded image may have without losing what resize needs."""
    height, width = card.input_size
    if card.resize_policy == "stretch":
        side = max(height, width)
    else:
        side = max(card.resize_size, height, width)
    # Square: EXIF rotation may swap width and height after decoding.
    return side, side


def decode_image(
    data: bytes, limits: DecodeLimits, *, min_size: tuple[int, int] | None = None
) -> Image.Image:
    """Decode one image to an upright RGB image; ``min_size`` enables reduced-scale JPEG decode."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"the image format is not supported; send {_ALLOWED_TEXT}",
            code="unsupported_image_format",
        )
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except _MALFORMED as exc:
        raise InvalidImage(f"the {fmt} image could not be read: its header is invalid") from exc
    width, height = image.size
    if width < 1 or height < 1:
        raise InvalidImage(f"the {fmt} image has no pixels")
    if width * height > limits.max_pixels:
        raise Unprocessable(
            f"the image is {width}×{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels",
            code="image_too_large",
        )
    _check_frames(image, fmt, limits)
    if fmt == "JPEG" and min_size is not None:
        image.draft(None, min_size)
    try:
        image.load()
    except _MALFORMED as exc:
        raise InvalidImage(
            f"the {fmt} image is truncated or corrupt and could not be decoded"
        ) from exc
    return to_rgb(_apply_exif_orientation(image))


def warm_up_decoders() -> None:
    """Decode a tiny image of every allowed format once (reduced-scale JPEG path included).

    Pillow loads its format plugins and codec libraries on first use: without this, the first
    request of a process pays for them (measured: ≈6 ms before the first JPEG, ≈25 ms more
    before the first WebP)."""
    for fmt in ALLOWED_FORMATS:
        encoded = io.BytesIO()
        Image.new("RGB", (16, 16), _WHITE).save(encoded, fmt)
        decode_image(encoded.getvalue(), DecodeLimits(), min_size=(8, 8))


def _check_frames(image: Image.Image, fmt: str, limits: DecodeLimits) -> None:
    if fmt not in ("GIF", "PNG", "WEBP"):
        return
    try:  # is_animated and n_frames read every frame header: untrusted bytes
        if not getattr(image, "is_animated", False):
            return
        frames = int(getattr(image, "n_frames", 1))
        image.seek(0)
    except _MALFORMED as exc:
        raise InvalidImage(f"the animated {fmt} image is truncated or corrupt") from exc
    if frames > limits.max_frames:
        raise Unprocessable(
            f"the animated image has {frames} frames; the limit is {limits.max_frames} "
            "(only the first frame is used)",
            code="too_many_frames",
        )


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # malformed EXIF is ignored, as browsers do
        return image
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return image if method is None else image.transpose(method)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode → RGB by the documented rule (see the module docstring)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        grey = np.rint(np.clip(values, 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        grey = np.rint(np.clip(np.asarray(image, dtype=np.float64), 0, 255)).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return image.convert("RGB")


def resize_plan(size: tuple[int, int], card: ModelCard) -> tuple[tuple[int, int], tuple[int, int]]:
    """((resized width, height), (top, left) of the crop window) for an image of ``size``."""
    width, height = size
    out_h, out_w = card.input_size
    if card.resize_policy == "stretch":
        return (out_w, out_h), (0, 0)
    # torchvision Resize(int): shorter side → resize_size, longer side truncated to int.
    short = card.resize_size
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    if new_w < out_w or new_h < out_h:  # a card whose resize is smaller than its crop: cover it
        cover = max(out_w / width, out_h / height)
        new_w, new_h = max(out_w, round(width * cover)), max(out_h, round(height * cover))
    # torchvision CenterCrop: offsets rounded to the nearest integer.
    return (new_w, new_h), (round((new_h - out_h) / 2.0), round((new_w - out_w) / 2.0))


def normalisation_table(card: ModelCard) -> NDArray[np.float32]:
    """[3, 256] float32: ``table[c, v] = (v / 255 - mean[c]) / std[c]`` (computed in float64)."""
    return _normalisation_table(card.mean, card.std)


@functools.lru_cache(maxsize=64)
def _normalisation_table(
    mean: tuple[float, float, float], std: tuple[float, float, float]
) -> NDArray[np.float32]:
    values = np.arange(256, dtype=np.float64) / 255.0
    table = (values[None, :] - np.asarray(mean)[:, None]) / np.asarray(std)[:, None]
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


def preprocess_into(
    image: Image.Image, card: ModelCard, out: NDArray[np.float32], table: NDArray[np.float32]
) -> None:
    """Write one RGB image, resized/cropped/normalised, into ``out`` of shape [3, H, W]."""
    pixels = _resized_crop(image, card)
    for channel in range(3):
        np.take(table[channel], pixels[:, :, channel], out=out[channel])


def _resized_crop(image: Image.Image, card: ModelCard) -> NDArray[np.uint8]:
    """[H, W, 3] uint8: the image resized by the card's policy, centre-cropped to input_size."""
    size, (top, left) = resize_plan(image.size, card)
    out_h, out_w = card.input_size
    if size[0] * size[1] > MAX_RESIZED_PIXELS:
        scale_x, scale_y = image.width / size[0], image.height / size[1]
        box = (left * scale_x, top * scale_y, (left + out_w) * scale_x, (top + out_h) * scale_y)
        window = image.resize((out_w, out_h), Image.Resampling.BILINEAR, box=box)
        return np.asarray(window, dtype=np.uint8)
    resized = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)[top : top + out_h, left : left + out_w]


def preprocess(image: Image.Image, card: ModelCard) -> NDArray[np.float32]:
    """One RGB image → float32 [1, 3, H, W], as the model's ``input`` tensor expects."""
    height, width = card.input_size
    batch = np.empty((1, 3, height, width), dtype=np.float32)
    preprocess_into(image, card, batch[0], normalisation_table(card))
    return batch
