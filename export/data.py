"""Datasets (nothing is downloaded): ``digits``, ``shapes`` and ``imagefolder:PATH``.

Every dataset becomes an in-memory ``ImageDataset``: RGB uint8 images [N, 3, H, W] already at the
network's input size, integer targets and the class labels. Images are prepared by the service's
own code (``service.imaging``), so a training pixel is the pixel the service feeds the model for
the same file: ``decode_image`` (format sniffed from the bytes, the service's default pixel and
frame limits, reduced-scale JPEG decoding, EXIF orientation, ``to_rgb``: alpha composited over
white, 16-bit grey / 257) then ``preprocess_into``'s resize and centre crop for a card with the
dataset's ``resize_size`` and input size, stopping before the mean/std normalisation.
``stratified_split`` makes the deterministic train/val split; ``channel_stats`` gives the mean/std
recorded in the card.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from export.errors import DataError
from export.shapes import SHAPE_CLASSES, render_shapes
from service.errors import ServiceError, UnsupportedMediaType
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess_into, to_rgb
from service.modelcard import ModelCard

DATASETS = ("digits", "shapes", "imagefolder:PATH")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
"""Files an image folder contributes (case-insensitive): the formats the service accepts."""
IMAGE_FORMATS = "JPEG, PNG, WebP, BMP or GIF"
DECODE_LIMITS = DecodeLimits()
"""The service's default limits (ACTLAB_MAX_PIXELS, ACTLAB_MAX_FRAMES): an image the service
would refuse is refused here too, with its file name."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NO_SUFFIX = "(no extension)"
# preprocess_into with this "normalisation" table writes the raw 0..255 values (exact in float32).
_IDENTITY_TABLE = np.tile(np.arange(256, dtype=np.float32), (3, 1))
# What Pillow raises on malformed pixel data that service.imaging does not already translate.
_MALFORMED = (OSError, EOFError, SyntaxError, ValueError, TypeError, LookupError, struct.error)


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


def preprocessing_card(resize_size: int, input_size: int) -> ModelCard:
    """A card carrying only the geometry ``service.imaging`` reads (resize policy, resize size,
    input size): what the published card will say for a model trained on this data."""
    return ModelCard.model_construct(
        input_size=(input_size, input_size),
        resize_size=resize_size,
        resize_policy="shorter_side_then_center_crop",
    )


def prepare_image(image: Image.Image, card: ModelCard) -> np.ndarray:
    """uint8 [3, H, W]: ``image`` made RGB, resized and centre-cropped exactly as the service's
    ``preprocess_into`` does for ``card``, before the mean/std normalisation."""
    height, width = card.input_size
    out = np.empty((3, height, width), dtype=np.float32)
    preprocess_into(to_rgb(image), card, out, _IDENTITY_TABLE)
    return out.astype(np.uint8)


def read_image(path: Path, card: ModelCard) -> np.ndarray:
    """uint8 [3, H, W] from an image file, decoded by the service's rules; ``DataError`` naming
    the file if the service would refuse it (unknown format, corrupt, too many pixels)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path}: {exc.strerror or exc}") from exc
    try:
        return prepare_image(decode_image(data, DECODE_LIMITS, min_size=draft_size(card)), card)
    except UnsupportedMediaType as exc:
        raise DataError(
            f"cannot read image {path}: its content is not {IMAGE_FORMATS} "
            f"(whatever its extension says)"
        ) from exc
    except ServiceError as exc:
        raise DataError(f"cannot read image {path}: {exc.message}") from exc
    except Image.DecompressionBombError as exc:  # only if something re-enabled Pillow's own limit
        raise DataError(f"cannot read image {path}: {exc}") from exc
    except _MALFORMED as exc:
        raise DataError(f"cannot read image {path}: not a valid {IMAGE_FORMATS} image") from exc


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


def _visible(entries: list[str]) -> list[str]:
    return sorted(name for name in entries if not name.startswith("."))


def _files_below(folder: Path) -> list[Path]:
    """Every file under ``folder``, recursively and sorted; hidden files and folders (name starts
    with '.') are left out; symlinks are followed, each directory is visited once."""

    def fail(exc: OSError) -> None:
        raise DataError(f"cannot read folder {exc.filename}: {exc.strerror or exc}") from exc

    seen: set[tuple[int, int]] = set()
    files: list[Path] = []
    for current, dirs, names in os.walk(folder, onerror=fail, followlinks=True):
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) in seen:  # a symlink loop or a second link to a folder
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = _visible(dirs)
        files += [Path(current, name) for name in _visible(names)]
    return sorted(path for path in files if path.is_file())


def _suffix(path: Path) -> str:
    return path.suffix.lower() or _NO_SUFFIX


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
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    resize = resize_size or round(image_size * 256 / 224)
    try:
        entries = [root / name for name in _visible(os.listdir(root))]
    except OSError as exc:
        raise DataError(f"cannot read folder {root}: {exc.strerror or exc}") from exc
    folders = [p for p in entries if p.is_dir()]
    skipped = Counter(_suffix(p) for p in entries if p.is_file())
    files: list[tuple[Path, int]] = []
    empty: list[str] = []
    for target, folder in enumerate(folders):
        found = _files_below(folder)
        images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped.update(_suffix(p) for p in found if p.suffix.lower() not in IMAGE_SUFFIXES)
        files += [(path, target) for path in images]
        if not images:
            empty.append(folder.name)
    allowed = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"no images found in {root}: expected one sub-folder per class containing "
            f"{allowed} files (at any depth)"
        )
    if empty:
        names = ", ".join(repr(name) for name in empty)
        raise DataError(
            f"class folder{'s' if len(empty) > 1 else ''} {names} in {root} "
            f"{'have' if len(empty) > 1 else 'has'} no {allowed} files: a class without images "
            "cannot be learned; add images or remove the folder"
        )
    if len(folders) < 2:
        raise DataError(
            f"{root} has images for only one class ({folders[0].name}); need at least two"
        )
    card = preprocessing_card(resize, image_size)
    array = np.empty((len(files), 3, image_size, image_size), dtype=np.uint8)
    for i, (path, _) in enumerate(files):
        array[i] = read_image(path, card)
    targets = np.array([t for _, t in files], dtype=np.int64)
    labels = tuple(folder.name for folder in folders)
    dataset = _to_dataset(
        f"imagefolder:{root.name}",
        array,
        targets,
        labels,
        resize,
        True,
        tuple(sorted(skipped.items())),
    )
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
