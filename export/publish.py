"""Atomic publishing into the model repository: ``<repository>/<name>/<version>/model.onnx``.

A version directory appears in one ``rename``: ``model.onnx`` and ``model.onnx.sha256`` are written
and fsynced inside a hidden staging directory (``<name>/.staging-…``, which the service never
scans), then the directory is renamed to its integer version. An interrupted export therefore
leaves no file the service could load. Versions are increasing integers; an existing version is
never overwritten (two concurrent publishers of the same name get different versions).

``publish_model`` takes an already-built ONNX graph and a card, so a quantized variant or any
other graph can be published the same way as a freshly exported one.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

from export.errors import PublishError
from export.exporter import with_card
from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME, ModelCard

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
NAME_RULE = (
    "1-64 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
)


@dataclass(frozen=True)
class PublishedModel:
    name: str
    version: int
    path: Path
    """The published ``model.onnx``."""
    sha256: str
    card: ModelCard


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise PublishError(f"invalid model name {name!r}: use {NAME_RULE}")
    return name


def existing_versions(repository: Path, name: str) -> list[int]:
    """Published versions of ``name`` (integer directory names), ascending."""
    folder = repository / name
    if not folder.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in folder.iterdir()
        if entry.is_dir() and entry.name.isdigit() and not entry.name.startswith("0")
    )


def next_version(repository: Path, name: str) -> int:
    versions = existing_versions(repository, name)
    return versions[-1] + 1 if versions else 1


def digest_line(sha256: str) -> str:
    """Content of ``model.onnx.sha256`` (sha256sum format)."""
    return f"{sha256}  {MODEL_FILENAME}\n"


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stage(folder: Path, model_bytes: bytes, sha256: str) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        _write_synced(staging / MODEL_FILENAME, model_bytes)
        _write_synced(staging / (MODEL_FILENAME + DIGEST_SUFFIX), digest_line(sha256).encode())
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _claim(staging: Path, target: Path) -> bool:
    """Rename ``staging`` to ``target`` unless ``target`` already exists (then False)."""
    if target.exists():
        return False
    try:
        os.rename(staging, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def publish_model(
    repository: Path,
    proto: onnx.ModelProto,
    card: ModelCard,
    *,
    version: int | None = None,
) -> PublishedModel:
    """Publish ``proto`` with ``card`` as ``card.name`` at ``version`` (default: the next one).

    The card's ``version`` field is set to the published version. Raises ``PublishError`` if the
    name is invalid, the requested version exists, or the repository cannot be written.
    """
    name = validate_model_name(card.name)
    if version is not None and version < 1:
        raise PublishError(f"version must be a positive integer, got {version}")
    folder = repository / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"cannot create {folder}: {exc.strerror}") from exc
    candidate = version if version is not None else next_version(repository, name)
    while True:
        stamped = card.model_copy(update={"version": candidate})
        model_bytes = with_card(proto, stamped).SerializeToString()
        sha256 = hashlib.sha256(model_bytes).hexdigest()
        target = folder / str(candidate)
        claimed = False
        try:
            staging = _stage(folder, model_bytes, sha256)
            try:
                claimed = _claim(staging, target)
            finally:
                if not claimed:
                    shutil.rmtree(staging, ignore_errors=True)
            if claimed:
                _fsync_dir(folder)
        except OSError as exc:
            raise PublishError(f"cannot write to {folder}: {exc.strerror or exc}") from exc
        if claimed:
            return PublishedModel(name, candidate, target / MODEL_FILENAME, sha256, stamped)
        if version is not None:
            raise PublishError(
                f"{name} version {version} already exists; versions are never overwritten "
                f"(the next free version is {next_version(repository, name)})"
            )
        candidate = max(candidate, next_version(repository, name) - 1) + 1
