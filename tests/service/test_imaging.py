"""Decoding (formats, modes, EXIF, limits, errors) and preprocessing against a reference."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps
from service_images import (
    animated_gif,
    encode,
    gradient_rgb,
    halves,
    jpeg,
    jpeg_with_orientation,
    png,
    png_header_only,
    png_i16,
)
from service_reference import reference_preprocess

from service import imaging
from service.errors import InvalidImage, Unprocessable, UnsupportedMediaType
from service.imaging import (
    MAX_RESIZED_PIXELS,
    DecodeLimits,
    decode_image,
    draft_size,
    preprocess,
    sniff_format,
    to_rgb,
)
from service.modelcard import ModelCard

LIMITS = DecodeLimits(max_pixels=40_000_000, max_frames=100)
RED, BLUE, GREEN, WHITE = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 255)
# An 8×8 animated GIF whose second frame stops inside its image descriptor (Pillow: IndexError);
# six bytes shorter, its first frame's data is cut too (Pillow: struct.error).
TRUNCATED_ANIMATED_GIF = (
    b"GIF89a\x08\x00\x08\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    b"\x21\xf9\x04\x04\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"
    b"\x21\xf9\x04\x04\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
)


def make_card(**overrides: object) -> ModelCard:
    fields: dict[str, object] = dict(
        name="m",
        version=1,
        architecture="resnet8",
        activation="relu",
        labels=["a", "b"],
        input_size=(32, 32),
        resize_size=36,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        dataset="test",
        opset=20,
        created_at="2026-01-01T00:00:00Z",
        parameters=1,
    )
    fields.update(overrides)
    return ModelCard.model_validate(fields)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


@pytest.mark.parametrize(
    ("fmt", "options"),
    [
        ("PNG", {}),
        ("JPEG", {"quality": 100}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("GIF", {}),
    ],
)
def test_every_allowed_format_decodes_to_rgb(fmt: str, options: dict[str, object]) -> None:
    source = halves(40, 30, RED, BLUE)
    data = encode(source, fmt, **options)
    assert sniff_format(data) == fmt
    image = decode_image(data, LIMITS)
    assert image.mode == "RGB"
    assert image.size == (40, 30)
    tolerance = 8 if fmt == "JPEG" else 0
    assert np.abs(pixels(image)[5, 5] - RED).max() <= tolerance
    assert np.abs(pixels(image)[5, 35] - BLUE).max() <= tolerance


def test_grey_l_is_replicated_to_three_channels() -> None:
    image = decode_image(png(Image.new("L", (8, 8), 77)), LIMITS)
    assert image.mode == "RGB"
    assert pixels(image)[0, 0].tolist() == [77, 77, 77]


@pytest.mark.parametrize("alpha", [0, 128, 255])
def test_rgba_is_composited_on_white(alpha: int) -> None:
    colour = (200, 40, 10)
    data = png(Image.new("RGBA", (8, 8), (*colour, alpha)))
    got = pixels(decode_image(data, LIMITS))[0, 0]
    expected = [round((alpha * c + (255 - alpha) * 255) / 255) for c in colour]
    assert np.abs(got - expected).max() <= 1


def test_la_is_composited_on_white() -> None:
    data = png(Image.new("LA", (8, 8), (0, 0)))
    assert pixels(decode_image(data, LIMITS))[0, 0].tolist() == list(WHITE)
    data = png(Image.new("LA", (8, 8), (60, 255)))
    assert pixels(decode_image(data, LIMITS))[0, 0].tolist() == [60, 60, 60]


def test_palette_with_transparency_is_white_where_transparent() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([10, 20, 30] + [200, 100, 50] * 255)
    image.putpixel((4, 4), 1)
    data = encode(image, "PNG", transparency=0)
    decoded = pixels(decode_image(data, LIMITS))
    assert decoded[0, 0].tolist() == list(WHITE)
    assert decoded[4, 4].tolist() == [200, 100, 50]


def test_palette_without_transparency_keeps_colours() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([10, 20, 30] * 256)
    assert pixels(decode_image(png(image), LIMITS))[0, 0].tolist() == [10, 20, 30]


def test_sixteen_bit_grey_is_scaled_to_eight_bit() -> None:
    values = np.array([[0, 257 * 100], [65535, 257 * 7 + 100]], dtype=np.uint16)
    decoded = pixels(decode_image(png_i16(values), LIMITS))
    expected = np.rint(values.astype(np.float64) / 257).astype(np.int32)
    assert decoded[..., 0].tolist() == expected.tolist()
    assert (decoded[..., 0] == decoded[..., 2]).all()


def test_cmyk_jpeg_uses_pillows_conversion() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in CMYK
    data = encode(cmyk, "JPEG", quality=100)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    decoded = pixels(decode_image(data, LIMITS))
    assert np.abs(decoded[8, 8] - np.array(RED)).max() <= 4


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    source = halves(40, 20, RED, BLUE)
    data = jpeg_with_orientation(source, orientation)
    decoded = decode_image(data, LIMITS)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert decoded.size == reference.size
    assert np.abs(pixels(decoded) - pixels(reference)).max() <= 0
    if orientation == 6:  # rotate 90° clockwise to display: the left (red) half ends on top
        assert decoded.size == (20, 40)
        assert np.abs(pixels(decoded)[5, 10] - RED).max() <= 8
        assert np.abs(pixels(decoded)[35, 10] - BLUE).max() <= 8


def test_gif_uses_only_the_first_frame() -> None:
    decoded = decode_image(animated_gif([RED, GREEN, BLUE]), LIMITS)
    assert pixels(decoded)[0, 0].tolist() == list(RED)


def test_too_many_frames_is_422() -> None:
    with pytest.raises(Unprocessable) as info:
        decode_image(animated_gif([RED, GREEN, BLUE]), DecodeLimits(max_frames=2))
    assert info.value.code == "too_many_frames"
    assert "3 frames" in info.value.message and "limit is 2" in info.value.message


def test_decompression_bomb_header_is_rejected_before_decoding() -> None:
    with pytest.raises(Unprocessable) as info:
        decode_image(png_header_only(100_000, 100_000), LIMITS)
    assert info.value.status == 422
    assert info.value.code == "image_too_large"
    assert "10000000000 pixels" in info.value.message


def test_pixel_limit_is_exact() -> None:
    data = png(Image.new("RGB", (100, 100)))
    assert decode_image(data, DecodeLimits(max_pixels=10_000)).size == (100, 100)
    with pytest.raises(Unprocessable):
        decode_image(data, DecodeLimits(max_pixels=9_999))


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(png()[:60], id="truncated-png"),
        pytest.param(jpeg()[:300], id="truncated-jpeg"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, id="png-magic-garbage"),
        pytest.param(b"GIF89a" + b"\x01" * 5, id="gif-short"),
    ],
)
def test_empty_truncated_and_corrupt_images_are_400(data: bytes) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data, LIMITS)
    assert info.value.status == 400


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(TRUNCATED_ANIMATED_GIF, id="second-frame-cut"),
        pytest.param(TRUNCATED_ANIMATED_GIF[:-6], id="first-frame-cut"),
    ],
)
def test_truncated_animated_gif_is_400_not_a_crash(data: bytes) -> None:
    with pytest.raises(InvalidImage) as info:
        decode_image(data, LIMITS)
    assert (info.value.status, info.value.code) == (400, "invalid_image")
    assert info.value.message == "the animated GIF image is truncated or corrupt"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(encode(gradient_rgb(), "TIFF"), id="tiff"),
        pytest.param(encode(gradient_rgb(), "PPM"), id="ppm"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b"just some text", id="text"),
    ],
)
def test_formats_outside_the_allowlist_are_415(data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as info:
        decode_image(data, LIMITS)
    assert info.value.status == 415
    assert "JPEG, PNG, WebP, BMP or GIF" in info.value.message


@pytest.mark.parametrize("size", [(64, 48), (48, 64), (37, 36), (300, 100), (32, 32)])
def test_preprocess_matches_resize_then_centre_crop(size: tuple[int, int]) -> None:
    card = make_card()
    image = gradient_rgb(*size, seed=size[0])
    got = preprocess(image, card)
    assert got.shape == (1, 3, 32, 32) and got.dtype == np.float32
    expected = reference_preprocess(image, card)
    assert np.abs(got - expected).max() <= 1e-5


@pytest.mark.parametrize("size", [(1_000_000, 1), (1, 400_000), (60_000, 3)])
def test_a_thin_strip_never_materialises_its_resized_image(
    size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resized so its short side is 256, a 1 000 000 × 1 strip would be 256 000 000 × 256 (750 GB
    of RGB): only the crop window is resized."""
    card = make_card(resize_size=256, input_size=(224, 224))
    outputs: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def spy(
        self: Image.Image, size: tuple[int, int], *args: object, **kwargs: object
    ) -> Image.Image:
        outputs.append(size)
        return real_resize(self, size, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    strip = (np.arange(size[0] * size[1]) % 251).astype(np.uint8)
    image = Image.fromarray(strip.reshape(size[1], size[0]), "L").convert("RGB")
    got = preprocess(image, card)
    assert got.shape == (1, 3, 224, 224) and np.isfinite(got).all()
    assert outputs == [(224, 224)]


@pytest.mark.parametrize("size", [(300, 40), (40, 300), (97, 13), (500, 500)])
def test_resizing_only_the_crop_window_matches_the_full_resize(
    size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded path (forced here by a tiny bound) has the full resize's geometry; Pillow's
    rounding may differ by at most 2 levels of 255 (so 2 / 255 / std in normalised units)."""
    card = make_card()
    image = gradient_rgb(*size, seed=size[1])
    monkeypatch.setattr(imaging, "MAX_RESIZED_PIXELS", 1)
    got = preprocess(image, card)
    expected = reference_preprocess(image, card)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 2 / 255 / min(card.std) + 1e-6
    assert MAX_RESIZED_PIXELS >= 64 * 256 * 256  # a 64:1 panorama at a 256 resize stays exact


def test_normalisation_of_a_flat_colour_is_exact() -> None:
    card = make_card()
    got = preprocess(Image.new("RGB", (50, 70), (10, 128, 250)), card)
    expected = (np.array([10, 128, 250]) / 255 - np.array(card.mean)) / np.array(card.std)
    for channel in range(3):
        assert np.allclose(got[0, channel], expected[channel], rtol=0, atol=1e-6)


def test_stretch_policy_ignores_aspect() -> None:
    card = make_card(resize_policy="stretch", input_size=(8, 16))
    image = halves(100, 10, RED, BLUE)
    got = preprocess(image, card)
    assert got.shape == (1, 3, 8, 16)
    red = (1.0 - card.mean[0]) / card.std[0]
    assert np.allclose(got[0, 0, :, :7], red, atol=1e-5)  # left half stays red


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_result() -> None:
    card = make_card()
    big = gradient_rgb(2000, 1600, seed=3).resize((2000, 1600))
    data = jpeg(big, quality=90)
    reduced = decode_image(data, LIMITS, min_size=draft_size(card))
    full = decode_image(data, LIMITS)
    assert full.size == (2000, 1600)
    assert reduced.size == (250, 200)  # 1/8 scale still covers the 36-pixel shorter side
    assert min(reduced.size) >= card.resize_size
    difference = np.abs(preprocess(reduced, card) - preprocess(full, card))
    assert difference.mean() < 0.05  # in normalised units: far below one std


def test_small_jpeg_is_decoded_at_full_scale() -> None:
    data = jpeg(gradient_rgb(60, 60))
    assert decode_image(data, LIMITS, min_size=draft_size(make_card())).size == (60, 60)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "CMYK", "YCbCr", "I", "F"])
def test_to_rgb_accepts_every_mode(mode: str) -> None:
    image = Image.new("RGB", (4, 4), (90, 90, 90)).convert(mode)
    assert to_rgb(image).mode == "RGB"
