"""Datasets (nothing is downloaded): ``digits``, ``shapes`` and ``imagefolder:PATH``.

Every dataset becomes an in-memory ``ImageDataset``: RGB uint8 images [N, 3, H, W] already at the
network's input size, prepared exactly as the service will prepare a request (PIL bilinear resize,
then the card's policy), integer targets and the class labels. ``stratified_split`` makes the
deterministic train/val split; ``channel_stats`` gives the mean/std recorded in the card.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from export.errors import DataError
from export.shapes import SHAPE_CLASSES, render_shapes

DATASETS = ("digits", "shapes", "imagefolder:PATH")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.targets.shape[0])


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


def resize_and_crop(image: Image.Image, resize_size: int, crop: int) -> np.ndarray:
    """Shorter side to ``resize_size`` (bilinear, aspect kept), then the centred crop × crop."""
    image = image.convert("RGB")
    w, h = image.size
    scale = resize_size / min(w, h)
    new_w, new_h = max(crop, round(w * scale)), max(crop, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - crop) // 2, (new_h - crop) // 2
    return np.asarray(image.crop((left, top, left + crop, top + crop)), dtype=np.uint8)


def _to_dataset(
    name: str,
    images_hwc: np.ndarray,
    targets: np.ndarray,
    labels: tuple[str, ...],
    resize_size: int,
    flips: bool,
) -> ImageDataset:
    images = torch.from_numpy(np.ascontiguousarray(images_hwc.transpose(0, 3, 1, 2)))
    return ImageDataset(
        name, images, torch.from_numpy(targets.astype(np.int64)), labels, resize_size, flips
    )


def load_digits(image_size: int = 32) -> ImageDataset:
    """scikit-learn's bundled 8×8 handwritten digits (1797 images), upscaled to image_size."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    raw = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    images = np.stack(
        [resize_and_crop(Image.fromarray(img, "L"), image_size, image_size) for img in raw]
    )
    labels = tuple(str(i) for i in range(10))
    return _to_dataset("digits", images, bunch.target, labels, image_size, flips=False)


def load_shapes(image_size: int = 32, per_class: int = 300, seed: int = 0) -> ImageDataset:
    images, targets = render_shapes(per_class, image_size, seed)
    return _to_dataset("shapes", images, targets, SHAPE_CLASSES, image_size, flips=True)


def _class_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_imagefolder(
    root: Path, image_size: int = 224, resize_size: int | None = None
) -> ImageDataset:
    """One sub-folder per class (sorted names are the labels), JPEG/PNG/WebP files inside."""
    root = root.expanduser()
    resize = resize_size or round(image_size * 256 / 224)
    labels: list[str] = []
    files: list[tuple[Path, int]] = []
    for folder in _class_folders(root):
        images = sorted(
            p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if images:
            files += [(p, len(labels)) for p in images]
            labels.append(folder.name)
    allowed = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"no images found in {root}: expected one sub-folder per class containing "
            f"{allowed} files"
        )
    if len(labels) < 2:
        raise DataError(f"{root} has images for only one class ({labels[0]}); need at least two")
    array = np.empty((len(files), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        try:
            with Image.open(path) as image:
                array[i] = resize_and_crop(image, resize, image_size)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise DataError(f"cannot read image {path}: not a valid {allowed} image") from exc
    targets = np.array([t for _, t in files], dtype=np.int64)
    return _to_dataset(f"imagefolder:{root.name}", array, targets, tuple(labels), resize, True)


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
    """Per class: shuffle with ``seed``, put round(fraction × count) (≥ 1) into val.

    Classes with a single image go to train only. Same targets and seed → same split.
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
