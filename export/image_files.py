"""Image files → training pixels, exactly as the service prepares a request's image.

``read_image`` decodes a file with ``service.imaging`` itself (format sniffed from the bytes, the
service's default pixel and frame limits, reduced-scale JPEG decoding, EXIF orientation,
``to_rgb``: alpha composited over white, 16-bit grey / 257) and ``prepare_image`` resizes and
centre-crops with ``preprocess_into`` for a card with the dataset's geometry, stopping before the
mean/std normalisation. ``scan_image_folder`` lists an image folder's classes and files.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from export.errors import DataError
from service.errors import ServiceError, UnsupportedMediaType
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess_into, to_rgb
from service.modelcard import ModelCard

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")
"""Files an image folder contributes (case-insensitive): the formats the service accepts."""
IMAGE_FORMATS = "JPEG, PNG, WebP, BMP or GIF"
DECODE_LIMITS = DecodeLimits()
"""The service's default limits (ACTLAB_MAX_PIXELS, ACTLAB_MAX_FRAMES): an image the service
would refuse is refused here too, with its file name."""
_NO_SUFFIX = "(no extension)"
# preprocess_into with this "normalisation" table writes the raw 0..255 values (exact in float32).
_IDENTITY_TABLE = np.tile(np.arange(256, dtype=np.float32), (3, 1))


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
    except ServiceError as exc:  # every malformed or oversized image, in decode_image's words
        raise DataError(f"cannot read image {path}: {exc.message}") from exc


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


@dataclass(frozen=True)
class FolderScan:
    labels: tuple[str, ...]
    """The class folders' names, sorted."""
    files: list[tuple[Path, int]]
    """(image file, class index), class by class, each class's files sorted."""
    skipped: tuple[tuple[str, int], ...]
    """Files left out (not an image, or not inside a class folder): (lower-case extension,
    count)."""


def scan_image_folder(root: Path) -> FolderScan:
    """The image files of ``root``: one sub-folder per class, images at any depth inside it.

    Raises ``DataError`` if ``root`` is not a readable folder, has no images, a class folder has
    none, or there is only one class."""
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
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
    labels = tuple(folder.name for folder in folders)
    return FolderScan(labels, files, tuple(sorted(skipped.items())))
