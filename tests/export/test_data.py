"""Datasets: digits, shapes (seeded), imagefolder (images written here), split, labels.

Pixel parity with the service's decoding is in test_data_imaging.py."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.data import (
    SkippedFilesWarning,
    channel_stats,
    load_dataset,
    load_imagefolder,
    load_labels,
    stratified_split,
)
from export.errors import DataError
from export.image_files import prepare_image, preprocessing_card
from export.shapes import SHAPE_CLASSES, render_shapes


def test_digits_are_the_bundled_sklearn_digits_upscaled() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.images.shape == (1797, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels == tuple("0123456789")
    assert ds.input_size == (32, 32) and ds.resize_size == 32 and not ds.flips
    np.testing.assert_array_equal(ds.targets.numpy(), load_digits().target)
    assert torch.equal(ds.images[:, 0], ds.images[:, 1]) and torch.equal(
        ds.images[:, 1], ds.images[:, 2]
    )
    # Same pixels as an independent upscale of the first digit with PIL.
    raw = np.rint(load_digits().images[0] * 255 / 16).astype(np.uint8)
    expected = np.asarray(Image.fromarray(raw, "L").resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ds.images[0, 0].numpy(), expected)


def test_shapes_is_deterministic_per_seed_and_balanced() -> None:
    a, ta = render_shapes(3, 24, seed=5)
    b, tb = render_shapes(3, 24, seed=5)
    c, _ = render_shapes(3, 24, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ta, tb)
    assert not np.array_equal(a, c)
    assert a.shape == (3 * len(SHAPE_CLASSES), 24, 24, 3) and a.dtype == np.uint8
    assert len(SHAPE_CLASSES) >= 8
    assert np.bincount(ta).tolist() == [3] * len(SHAPE_CLASSES)


@pytest.mark.parametrize("size", [8, 17, 64])
def test_shapes_at_any_size_with_varied_images(size: int) -> None:
    ds = load_dataset("shapes", image_size=size, per_class=4, seed=1)
    assert ds.images.shape == (4 * len(SHAPE_CLASSES), 3, size, size)
    assert ds.labels == SHAPE_CLASSES and ds.flips
    flat = ds.images.reshape(len(ds), -1).float()
    assert torch.unique(flat, dim=0).shape[0] == len(ds)  # no two images alike
    assert float(flat.std()) > 20  # colourful, not blank


def test_shapes_too_small_is_refused() -> None:
    with pytest.raises(DataError, match="shapes needs an image size of at least 8 pixels, got 4"):
        load_dataset("shapes", image_size=4)


def write_folder(root: Path) -> dict[str, list[tuple[int, int, int]]]:
    colours = {"cats": [(250, 10, 10), (240, 20, 0)], "dogs": [(0, 0, 250)] * 3}
    for cls, cls_colours in colours.items():
        (root / cls).mkdir(parents=True)
        for i, colour in enumerate(cls_colours):
            image = Image.new("RGB", (40 + 7 * i, 30), colour)
            fmt = ["PNG", "JPEG", "WEBP"][i]
            image.save(root / cls / f"img{i}.{fmt.lower()}", format=fmt)
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return colours


def test_imagefolder_reads_jpeg_png_webp(tmp_path: Path) -> None:
    write_folder(tmp_path / "pets")
    with pytest.warns(SkippedFilesWarning, match="skipped 1 file that is not an image"):
        ds = load_dataset(f"imagefolder:{tmp_path / 'pets'}", image_size=16)
    assert ds.name == "imagefolder:pets"
    assert ds.labels == ("cats", "dogs")
    assert ds.targets.tolist() == [0, 0, 1, 1, 1]
    assert ds.images.shape == (5, 3, 16, 16)
    assert ds.resize_size == round(16 * 256 / 224)
    centre = ds.images[:, :, 8, 8].int()
    assert (centre[:2, 0] > 200).all() and (centre[:2, 2] < 40).all()  # red (JPEG/WebP ± loss)
    assert (centre[2:, 2] > 200).all() and (centre[2:, 0] < 40).all()  # blue
    assert ds.skipped == ((".txt", 1),)
    assert ds.skipped_note() == (
        "imagefolder:pets: skipped 1 file that is not an image (.jpg .jpeg .png .webp .bmp .gif) "
        "inside a class folder: 1 .txt"
    )


def test_empty_image_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "class_a").mkdir(parents=True)
    (tmp_path / "empty" / "class_a" / "readme.md").write_text("no images")
    with pytest.raises(
        DataError,
        match=r"no images found in .*empty: expected one sub-folder per "
        r"class containing jpg/jpeg/png/webp/bmp/gif files \(at any depth\)$",
    ):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")


def test_missing_folder_single_class_and_corrupt_image(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist or is not a directory"):
        load_imagefolder(tmp_path / "nope")
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(
        DataError, match=r"has images for only one class \(only\); need at least two"
    ):
        load_imagefolder(tmp_path / "one")
    (tmp_path / "one" / "other").mkdir()
    (tmp_path / "one" / "other" / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(
        DataError,
        match=r"^cannot read image .*broken.jpg: its content is not JPEG, PNG, WebP, BMP or GIF "
        r"\(whatever its extension says\)$",
    ):
        load_imagefolder(tmp_path / "one")
    (tmp_path / "one" / "other" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 64)
    with pytest.raises(DataError, match=r"^cannot read image .*broken.jpg: the JPEG image could"):
        load_imagefolder(tmp_path / "one")


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'mnist'; choose one of: digits, shapes, "
        r"imagefolder:PATH",
    ):
        load_dataset("mnist")
    with pytest.raises(DataError, match="unknown dataset 'imagefolder:'"):
        load_dataset("imagefolder:")


def test_prepare_image_matches_torchvision_policy() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(20, 40, 3), dtype=np.uint8)  # h=20, w=40
    got = prepare_image(Image.fromarray(array), preprocessing_card(36, 32))
    assert got.shape == (3, 32, 32) and got.dtype == np.uint8
    resized = np.asarray(Image.fromarray(array).resize((72, 36), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got.transpose(1, 2, 0), resized[2:34, 20:52])


def save(path: Path, colour: tuple[int, int, int], fmt: str, size: tuple[int, int] = (12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


def test_imagefolder_walks_sub_folders_and_takes_every_service_format(tmp_path: Path) -> None:
    root = tmp_path / "flowers"
    save(root / "red" / "a.png", (250, 0, 0), "PNG")
    save(root / "red" / "nested" / "deeper" / "b.BMP", (250, 0, 0), "BMP")
    save(root / "red" / "nested" / "c.gif", (250, 0, 0), "GIF")
    save(root / "red" / "nested" / ".hidden.png", (0, 250, 0), "PNG")  # hidden: ignored
    save(root / "red" / ".cache" / "d.png", (0, 250, 0), "PNG")  # hidden folder: ignored
    save(root / "blue" / "x.JPEG", (0, 0, 250), "JPEG")
    save(root / "blue" / "y.WebP", (0, 0, 250), "WEBP")
    save(root / "blue" / "sub" / "z.jpg", (0, 0, 250), "JPEG")
    save(root / "stray.png", (0, 250, 0), "PNG")  # not in a class folder
    (root / "red" / "nested" / "notes.txt").write_text("x")
    (root / "blue" / "sub" / "LICENSE").write_text("x")
    (root / "blue" / "meta.TXT").write_text("x")
    (root / "blue" / "raw.tiff").write_bytes(b"II*\x00")
    (root / ".hidden" / "green").mkdir(parents=True)
    (root / "red" / "loop").symlink_to(root / "red", target_is_directory=True)
    with pytest.warns(SkippedFilesWarning, match="skipped 5 files"):
        ds = load_imagefolder(root, image_size=8)
    assert ds.labels == ("blue", "red")
    # blue: sub/z.jpg, x.JPEG, y.WebP; red: a.png, nested/c.gif, nested/deeper/b.BMP (once).
    assert ds.targets.tolist() == [0, 0, 0, 1, 1, 1]
    centre = ds.images[:, :, 4, 4].int()
    assert (centre[:3, 2] > 200).all() and (centre[:3, 0] < 40).all()
    assert (centre[3:, 0] > 200).all() and (centre[3:, 2] < 40).all()
    assert ds.skipped == (("(no extension)", 1), (".png", 1), (".tiff", 1), (".txt", 2))
    assert ds.skipped_note() == (
        "imagefolder:flowers: skipped 5 files that are not an image (.jpg .jpeg .png .webp .bmp "
        ".gif) inside a class folder: 1 (no extension), 1 .png, 1 .tiff, 2 .txt"
    )


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    save(root / "cats" / "a.png", (1, 2, 3), "PNG")
    save(root / "dogs" / "a.png", (1, 2, 3), "PNG")
    (root / "birds" / "nested").mkdir(parents=True)
    (root / "birds" / "nested" / "readme.md").write_text("soon")
    with pytest.raises(
        DataError,
        match=r"^class folder 'birds' in .*pets has no jpg/jpeg/png/webp/bmp/gif files: a class "
        r"without images cannot be learned; add images or remove the folder$",
    ):
        load_imagefolder(root)
    (root / "fish").mkdir()
    with pytest.raises(DataError, match=r"^class folders 'birds', 'fish' in .*pets have no "):
        load_imagefolder(root)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width × height but holds no pixel data (nothing is allocated)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body).to_bytes(4, "big")
        return len(body).to_bytes(4, "big") + kind + body + crc

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_an_oversized_image_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    save(root / "a" / "ok.png", (1, 2, 3), "PNG")
    save(root / "b" / "ok.png", (1, 2, 3), "PNG")
    (root / "b" / "huge.png").write_bytes(png_header_only(20_000, 20_000))
    with pytest.raises(
        DataError,
        match=r"^cannot read image .*huge.png: the image is 20000×20000 = 400000000 pixels; "
        r"the limit is 40000000 pixels$",
    ):
        load_imagefolder(root, image_size=8)


def test_stratified_split_is_deterministic_disjoint_and_stratified() -> None:
    targets = torch.tensor([0] * 50 + [1] * 30 + [2] * 20 + [3] * 1)
    split = stratified_split(targets, 0.2, seed=3)
    again = stratified_split(targets, 0.2, seed=3)
    other = stratified_split(targets, 0.2, seed=4)
    assert torch.equal(split.train, again.train) and torch.equal(split.val, again.val)
    assert not torch.equal(split.val, other.val)
    assert set(split.train.tolist()).isdisjoint(split.val.tolist())
    assert sorted(split.train.tolist() + split.val.tolist()) == list(range(101))
    assert torch.bincount(targets[split.val], minlength=4).tolist() == [10, 6, 4, 0]
    assert split.describe() == {
        "train": 81,
        "val": 20,
        "val_fraction": 0.2,
        "seed": 3,
        "method": "stratified",
    }
    with pytest.raises(DataError, match=r"validation fraction must be between 0 and 1, got 1\.0"):
        stratified_split(targets, 1.0, seed=0)


def test_split_validates_every_class_that_has_two_images() -> None:
    targets = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3])
    split = stratified_split(targets, 0.05, seed=0)
    val_counts = torch.bincount(targets[split.val], minlength=4).tolist()
    train_counts = torch.bincount(targets[split.train], minlength=4).tolist()
    assert val_counts == [1, 1, 0, 1]  # the single image of class 2 trains
    assert train_counts == [1, 2, 1, 9]


def test_a_dataset_too_small_to_validate_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(
        DataError,
        match=r"^the dataset is too small to validate: none of its 3 classes has 2 or more images "
        r"\(one for training, one for validation\); add images$",
    ):
        stratified_split(torch.tensor([0, 1, 2]), 0.2, seed=0)
    save(tmp_path / "tiny" / "a" / "1.png", (1, 2, 3), "PNG")
    save(tmp_path / "tiny" / "b" / "1.png", (1, 2, 3), "PNG")
    with pytest.raises(DataError, match="too small to validate"):
        stratified_split(load_imagefolder(tmp_path / "tiny", image_size=8).targets, 0.2, seed=0)


def test_channel_stats_match_numpy() -> None:
    images = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    mean, std = channel_stats(images)
    x = images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)), atol=5e-5)
    np.testing.assert_allclose(std, x.std(axis=(0, 2, 3), ddof=1), atol=5e-5)


def test_imagenet_labels_ship_with_the_package() -> None:
    labels = load_labels("imagenet")
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert all(label.strip() == label and label for label in labels)
    assert (labels[0], labels[1], labels[281], labels[999]) == (
        "tench",
        "goldfish",
        "tabby",
        "toilet tissue",
    )


def test_labels_from_file_and_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "labels.txt"
    good.write_text("cat\n dog \n\nbird\n", encoding="utf-8")
    assert load_labels(str(good)) == ("cat", "dog", "bird")
    dup = tmp_path / "dup.txt"
    dup.write_text("cat\ncat\n")
    with pytest.raises(DataError, match="repeats a label"):
        load_labels(str(dup))
    with pytest.raises(DataError, match=r"cannot read labels file .*missing.txt: use 'imagenet'"):
        load_labels(str(tmp_path / "missing.txt"))
