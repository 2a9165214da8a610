"""Datasets (nothing is downloaded): ``digits``, ``shapes`` and ``imagefolder:PATH``.

Every dataset becomes an in-memory ``ImageDataset``: RGB uint8 images [N, 3, H, W] already at the
network's input size, integer targets and the class labels. Images are prepared by the service's
own code (``export.image_files``), so a training pixel is the pixel the service feeds the model
for the same file. ``stratified_split`` makes the deterministic train/val split;
``channel_stats`` gives the mean/std recorded in the card.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.errors import DataError
from export.image_files import (
    IMAGE_SUFFIXES,
    prepare_image,
    preprocessing_card,
    read_image,
    scan_image_folder,
)
from export.shapes import SHAPE_CLASSES, render_shapes

DATASETS = ("digits", "shapes", "imagefolder:PATH")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SkippedFilesWarning(UserWarning):
    """An image folder held files that are not images; they were left out (the CLI shows it)."""


@dataclass(frozen=True)
class ImageDataset:
    name: str
    """As recorded in the card: 'digits', 'shapes', 'imagefolder:<folder name>'."""
    images: torch.Tensor
    """uint8 [N, 3, H, W], RGB, at the network input size."""
    targets: torch.Tensor
    """int64 [N]."""
    labels: tuple[str, ...]
    resize_size: int
    """The card's resize_size: shorter side before the centre crop to the input size."""
    flips: bool
    """Horizontal flips keep the class (not for digits)."""
    skipped: tuple[tuple[str, int], ...] = ()
    """imagefolder: files left out (not an image, or not inside a class folder), as (lower-case
    extension, count), sorted."""

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def skipped_note(self) -> str | None:
        """One line for the CLI about files left out of the dataset, or None if there were none."""
        if not self.skipped:
            return None
        total = sum(count for _, count in self.skipped)
        kinds = ", ".join(f"{count} {suffix}" for suffix, count in self.skipped)
        return (
            f"{self.name}: skipped {total} file{'s' if total != 1 else ''} that "
            f"{'is' if total == 1 else 'are'} not an image ({' '.join(IMAGE_SUFFIXES)}) inside "
            f"a class folder: {kinds}"
        )


@dataclass(frozen=True)
class Split:
    train: torch.Tensor
    """Indices (int64) into the dataset."""
    val: torch.Tensor
    val_fraction: float
    seed: int

    def describe(self) -> dict[str, float | int | str]:
        """The card's ``split`` field."""
        return {
            "train": len(self.train),
            "val": len(self.val),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "method": "stratified",
        }


def _to_dataset(
    name: str,
    images: np.ndarray,
    targets: np.ndarray,
    labels: tuple[str, ...],
    resize_size: int,
    flips: bool,
    skipped: tuple[tuple[str, int], ...] = (),
) -> ImageDataset:
    """``images`` is uint8 [N, 3, H, W]."""
    return ImageDataset(
        name,
        torch.from_numpy(np.ascontiguousarray(images)),
        torch.from_numpy(targets.astype(np.int64)),
        labels,
        resize_size,
        flips,
        skipped,
    )


def load_digits(image_size: int = 32) -> ImageDataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images), upscaled to image_size."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    raw = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    card = preprocessing_card(image_size, image_size)
    images = np.stack([prepare_image(Image.fromarray(img, "L"), card) for img in raw])
    labels = tuple(str(i) for i in range(10))
    return _to_dataset("digits", images, bunch.target, labels, image_size, flips=False)


def load_shapes(image_size: int = 32, per_class: int = 300, seed: int = 0) -> ImageDataset:
    images, targets = render_shapes(per_class, image_size, seed)
    chw = images.transpose(0, 3, 1, 2)
    return _to_dataset("shapes", chw, targets, SHAPE_CLASSES, image_size, flips=True)


def load_imagefolder(
    root: Path, image_size: int = 224, resize_size: int | None = None
) -> ImageDataset:
    """One sub-folder per class (sorted names are the labels) holding JPEG, PNG, WebP, BMP or GIF
    files, at any depth below it (recognised by extension, case-insensitive). Other files are
    skipped and counted in ``ImageDataset.skipped``; hidden files and folders are ignored.

    Raises ``DataError`` if the folder has no images, a class folder has none, there is only one
    class, or an image cannot be decoded the way the service decodes it (the message names it).
    """
    root = root.expanduser()
    resize = resize_size or round(image_size * 256 / 224)
    scan = scan_image_folder(root)
    card = preprocessing_card(resize, image_size)
    array = np.empty((len(scan.files), 3, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(scan.files):
        array[i] = read_image(path, card)
    targets = np.array([target for _, target in scan.files], dtype=np.int64)
    name = f"imagefolder:{root.name}"
    dataset = _to_dataset(name, array, targets, scan.labels, resize, True, scan.skipped)
    note = dataset.skipped_note()
    if note is not None:
        warnings.warn(note, SkippedFilesWarning, stacklevel=2)
    return dataset


def load_dataset(
    spec: str, *, image_size: int | None = None, seed: int = 0, per_class: int = 300
) -> ImageDataset:
    """``digits`` | ``shapes`` | ``imagefolder:PATH``; raises ``DataError`` listing the choices."""
    if spec == "digits":
        return load_digits(image_size or 32)
    if spec == "shapes":
        if per_class < 2:
            raise DataError(f"shapes needs at least 2 images per class, got {per_class}")
        try:
            return load_shapes(image_size or 32, per_class, seed)
        except ValueError as exc:
            raise DataError(str(exc)) from exc
    if spec.startswith("imagefolder:") and spec.removeprefix("imagefolder:"):
        return load_imagefolder(Path(spec.removeprefix("imagefolder:")), image_size or 224)
    raise DataError(f"unknown dataset {spec!r}; choose one of: {', '.join(DATASETS)}")


def stratified_split(targets: torch.Tensor, val_fraction: float, seed: int) -> Split:
    """Per class: shuffle with ``seed``, put round(fraction × count) into val, but at least one
    image of every class with two or more, and never all of them.

    A class with a single image goes to train only; if no class has two images there is nothing
    to validate on and ``DataError`` says so (a card must not record an accuracy measured on no
    images). Same targets and seed → same split.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"the validation fraction must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    labels = targets.numpy()
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(val_fraction * len(idx))))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    if not sum(len(v) for v in val):
        raise DataError(
            f"the dataset is too small to validate: none of its {len(np.unique(labels))} classes "
            "has 2 or more images (one for training, one for validation); add images"
        )
    return Split(
        torch.from_numpy(np.sort(np.concatenate(train))),
        torch.from_numpy(np.sort(np.concatenate(val))),
        val_fraction,
        seed,
    )


def channel_stats(
    images: torch.Tensor,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units (rounded to 4 decimals)."""
    x = images.double() / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return (
        tuple(round(float(v), 4) for v in mean),  # type: ignore[return-value]
        tuple(round(float(v), 4) for v in std),
    )


def load_labels(spec: str) -> tuple[str, ...]:
    """``imagenet`` (the shipped 1000 class names) or a text file with one label per line."""
    if spec == "imagenet":
        path = Path(__file__).with_name("data") / "imagenet_classes.txt"
    else:
        path = Path(spec).expanduser()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read labels file {path}: use 'imagenet' or a UTF-8 text file "
            "with one label per line"
        ) from exc
    labels = tuple(line.strip() for line in lines if line.strip())
    if not labels:
        raise DataError(f"labels file {path} has no labels (one label per line expected)")
    if len(set(labels)) != len(labels):
        raise DataError(f"labels file {path} repeats a label; labels must be unique")
    return labels
