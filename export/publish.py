"""Atomic publishing into the model repository: ``<repository>/<name>/<version>/model.onnx``.

A version directory appears in one ``rename``: ``model.onnx`` and ``model.onnx.sha256`` are written
and fsynced inside a hidden staging directory (``<name>/.staging-…``, which the service never
scans: it only reads directories named by an integer), then the directory is renamed to its
integer version. An interrupted export therefore leaves no file the service could load. Versions
are increasing integers; an existing version is never overwritten (two concurrent publishers of
the same name get different versions).

Permissions do not depend on the umask: every directory publishing creates is 0755 and every file
0644, so a service running as another user (the api container) can read what an export job wrote.

A publisher holds an exclusive ``flock`` on its staging directory until the rename; the kernel
drops it when the process dies, however it dies (SIGKILL included). Each publish first removes the
staging directories of its model that nobody holds and that are older than
``STALE_STAGING_SECONDS`` (the grace covers the instant between creating a staging directory and
locking it, and leftovers of publishers that did not lock). Live concurrent publishers, in this
process or any other on the same kernel, are never touched.

``publish_model`` takes an already-built ONNX graph and a card, so a quantized variant or any
other graph can be published the same way as a freshly exported one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
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
STAGING_PREFIX = ".staging-"
STALE_STAGING_SECONDS = 60.0
DIR_MODE = 0o755
FILE_MODE = 0o644
_VERSION_NAME = re.compile(r"[1-9][0-9]*")  # ASCII only: str.isdigit() also accepts '²'
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


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
        if _VERSION_NAME.fullmatch(entry.name) and entry.is_dir()
    )


def next_version(repository: Path, name: str) -> int:
    versions = existing_versions(repository, name)
    return versions[-1] + 1 if versions else 1


def digest_line(sha256: str) -> str:
    """Content of ``model.onnx.sha256`` (sha256sum format)."""
    return f"{sha256}  {MODEL_FILENAME}\n"


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory created is ``DIR_MODE`` (existing ones are left as
    they are)."""
    if path.is_dir():
        return
    if path.parent != path:
        _make_dirs(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, DIR_MODE)


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    with open(fd, "wb") as handle:
        os.fchmod(fd, FILE_MODE)  # os.open's mode is filtered by the umask
        handle.write(data)
        handle.flush()
        os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    """Exclusive non-blocking ``flock``: True if taken, False if another holder has it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextlib.contextmanager
def _staging_dir(folder: Path) -> Iterator[Path]:
    """A fresh ``.staging-*`` directory in ``folder``, locked while in use and removed on exit
    unless it was renamed (to its version) meanwhile."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                raise
            locked = True  # no flock on this filesystem: cleaners cannot lock it either
        if not locked:
            raise OSError(errno.EAGAIN, "a concurrent cleaner took the new staging directory")
        os.chmod(staging, DIR_MODE)
        yield staging
    finally:
        try:
            shutil.rmtree(staging, ignore_errors=True)  # a no-op once renamed
        finally:
            os.close(fd)  # releases the lock


def remove_stale_staging(folder: Path, *, min_age_s: float | None = None) -> list[Path]:
    """Remove the ``.staging-*`` directories in ``folder`` that no live publisher holds and whose
    modification time is at least ``min_age_s`` (default ``STALE_STAGING_SECONDS``) old; returns
    what was removed. Never raises for an entry it cannot inspect or remove: a later publish
    tries again."""
    min_age_s = STALE_STAGING_SECONDS if min_age_s is None else min_age_s
    removed: list[Path] = []
    try:
        entries = sorted(e for e in folder.iterdir() if e.name.startswith(STAGING_PREFIX))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # gone, a symlink, not a directory, or unreadable
            continue
        try:
            opened = os.fstat(fd)
            if now - opened.st_mtime < min_age_s or not _try_lock(fd):
                continue
            # Still the directory we locked under that name (not renamed to a version since)?
            current = os.stat(entry, follow_symlinks=False)
            if (current.st_dev, current.st_ino) != (opened.st_dev, opened.st_ino):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            if not os.path.lexists(entry):
                removed.append(entry)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


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
        _make_dirs(folder)
    except OSError as exc:
        raise PublishError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    remove_stale_staging(folder)
    candidate = version if version is not None else next_version(repository, name)
    while True:
        stamped = card.model_copy(update={"version": candidate})
        model_bytes = with_card(proto, stamped).SerializeToString()
        sha256 = hashlib.sha256(model_bytes).hexdigest()
        target = folder / str(candidate)
        try:
            with _staging_dir(folder) as staging:
                _write_synced(staging / MODEL_FILENAME, model_bytes)
                _write_synced(
                    staging / (MODEL_FILENAME + DIGEST_SUFFIX), digest_line(sha256).encode()
                )
                _fsync_dir(staging)
                claimed = _claim(staging, target)
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
