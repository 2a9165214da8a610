"""Training pixels are the service's pixels: an image folder is decoded and resized by
service.imaging, so for every file the uint8 training image equals what the service feeds the
model (before mean/std), checked against the service's own public path (decode_image →
preprocess) and against values computed here independently."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export.data import load_imagefolder
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess
from service.modelcard import ModelCard

ORIENTATION = 0x0112


def card(input_size: int, resize_size: int) -> ModelCard:
    """A real card whose mean 0 / std 1 makes the service's input tensor pixel / 255."""
    return ModelCard(
        name="parity",
        version=1,
        architecture="resnet8",
        activation="relu",
        labels=["a", "b"],
        input_size=(input_size, input_size),
        resize_size=resize_size,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        dataset="test",
        opset=20,
        created_at="2026-01-01T00:00:00+00:00",
        parameters=0,
    )


def training_pixels(tmp_path: Path, name: str, data: bytes, size: int, resize: int) -> np.ndarray:
    """uint8 [3, H, W]: the training image of one file in an image folder."""
    (tmp_path / "a").mkdir(exist_ok=True)
    (tmp_path / "b").mkdir(exist_ok=True)
    (tmp_path / "a" / name).write_bytes(data)
    Image.new("RGB", (5, 5)).save(tmp_path / "b" / "filler.png")
    dataset = load_imagefolder(tmp_path, image_size=size, resize_size=resize)
    assert dataset.labels == ("a", "b") and dataset.resize_size == resize
    return dataset.images[0].numpy()


def assert_same_as_service(pixels: np.ndarray, data: bytes, size: int, resize: int) -> None:
    served_card = card(size, resize)
    image = decode_image(data, DecodeLimits(), min_size=draft_size(served_card))
    served = preprocess(image, served_card)[0]
    np.testing.assert_array_equal(served, (pixels.astype(np.float64) / 255.0).astype(np.float32))


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_transparent_pixels_train_as_white_like_the_service(tmp_path: Path) -> None:
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 200, 30)
    rgba[:, 8:, 3] = 255  # left half fully transparent, right half opaque
    rgba[0, 8:, 3] = 128  # one half-transparent row
    data = encode(Image.fromarray(rgba, "RGBA"), "PNG")
    pixels = training_pixels(tmp_path, "rgba.png", data, 16, 16)
    assert (pixels[:, :, :8] == 255).all()  # composited on white, not the hidden colour
    assert pixels[:, 5, 12].tolist() == [10, 200, 30]
    assert_same_as_service(pixels, data, 16, 16)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied_like_the_service(tmp_path: Path, fmt: str) -> None:
    stored = np.zeros((16, 24, 3), dtype=np.uint8)  # 24 wide, 16 high as stored
    stored[:, :12] = (250, 0, 0)  # left half red
    stored[:, 12:] = (0, 0, 250)  # right half blue
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # "rotate 90° clockwise to display": left becomes top
    data = encode(Image.fromarray(stored), fmt, exif=exif, quality=95)
    pixels = training_pixels(tmp_path, f"photo.{fmt.lower()}", data, 16, 16)
    # Upright: 16 wide × 24 high, resized to 16 × 24, rows 4..19 cropped: top red, bottom blue.
    top, bottom = pixels[:, 2, 8].astype(int), pixels[:, 13, 8].astype(int)
    assert top[0] > 200 and top[2] < 40 and bottom[2] > 200 and bottom[0] < 40
    assert_same_as_service(pixels, data, 16, 16)


def test_16_bit_grey_is_scaled_by_257_like_the_service(tmp_path: Path) -> None:
    values = np.array([0, 128, 1000, 40_000, 65_535, 30_000, 257, 514], dtype=np.uint16)
    grey = np.tile(values, (16, 2))  # 16 × 16, no resize: pixels are exact
    image = Image.fromarray(grey)
    assert image.mode.startswith("I;16")
    data = encode(image, "PNG")
    pixels = training_pixels(tmp_path, "grey16.png", data, 16, 16)
    expected = np.rint(grey / 257.0).astype(np.uint8)
    for channel in range(3):
        np.testing.assert_array_equal(pixels[channel], expected)
    assert_same_as_service(pixels, data, 16, 16)


def test_resize_and_crop_round_like_the_service(tmp_path: Path) -> None:
    """46 × 31 at resize 18: the short side becomes 18 and the long side int(26.7) = 26 (not
    round() = 27), the 16 × 16 window starts at (round(1.0), round(5.0)) = (1, 5)."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, size=(31, 46, 3), dtype=np.uint8)
    data = encode(Image.fromarray(source), "PNG")
    pixels = training_pixels(tmp_path, "odd.png", data, 16, 18)
    resized = np.asarray(Image.fromarray(source).resize((26, 18), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(pixels.transpose(1, 2, 0), resized[1:17, 5:21])
    assert_same_as_service(pixels, data, 16, 18)


@pytest.mark.parametrize(
    ("name", "image", "fmt"),
    [
        ("big.jpg", Image.linear_gradient("L").resize((320, 240)).convert("RGB"), "JPEG"),
        ("cmyk.jpg", Image.new("CMYK", (30, 20), (10, 200, 30, 5)), "JPEG"),
        ("la.png", Image.new("LA", (21, 35), (90, 100)), "PNG"),
        ("palette.gif", Image.new("P", (33, 17), 3), "GIF"),
        ("bitmap.bmp", Image.linear_gradient("L").resize((37, 29)).convert("RGB"), "BMP"),
        ("tall.webp", Image.linear_gradient("L").resize((9, 40)).convert("RGB"), "WEBP"),
    ],
)
def test_other_modes_and_formats_match_the_service(
    tmp_path: Path, name: str, image: Image.Image, fmt: str
) -> None:
    """Including a JPEG large enough for the service's reduced-scale (draft) decoding."""
    options: dict[str, object] = {"transparency": 3} if fmt == "GIF" else {}
    data = encode(image, fmt, **options)
    pixels = training_pixels(tmp_path, name, data, 16, 18)
    assert_same_as_service(pixels, data, 16, 18)
