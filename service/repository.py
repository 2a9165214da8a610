"""The model repository on disk: scan ``<root>/<name>/<version>/model.onnx``, verify SHA-256.

Nothing here loads a session; ``service.registry`` decides what to load and serve. A version
directory counts when its name is a positive integer and it holds ``model.onnx``; the digest file
``model.onnx.sha256`` beside it must hold ``"<64 hex digits>  model.onnx"``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_VERSION = re.compile(r"[0-9]+")  # ASCII digits only: the names publish writes
_DIGEST_LINE = re.compile(r"^([0-9a-fA-F]{64})(?:\s+\*?(\S+))?\s*$")
_CHUNK = 1 << 20


class VerificationError(Exception):
    """A model file's digest file is missing or malformed, or the file does not match it."""


@dataclass(frozen=True)
class ModelFile:
    """One ``model.onnx`` found in the repository, not yet verified."""

    name: str
    version: int
    path: Path

    @property
    def digest_path(self) -> Path:
        return self.path.with_name(self.path.name + DIGEST_SUFFIX)

    def fingerprint(self) -> tuple[str, int, int, int, str]:
        """Cheap change detector for polling: size, mtime and the recorded digest."""
        try:
            stat = self.path.stat()
            recorded = self.digest_path.read_text(errors="replace")[:200]
        except OSError:
            return (self.name, self.version, -1, -1, "")
        return (self.name, self.version, stat.st_size, stat.st_mtime_ns, recorded)


def scan_repository(root: Path) -> dict[str, list[ModelFile]]:
    """Every model name → its version files, oldest first. A missing root is an empty repository."""
    found: dict[str, list[ModelFile]] = {}
    if not root.is_dir():
        return found
    for model_dir in sorted(root.iterdir()):
        if not model_dir.is_dir() or not _NAME.match(model_dir.name):
            continue
        versions = []
        for version_dir in model_dir.iterdir():
            if not (version_dir.is_dir() and _VERSION.fullmatch(version_dir.name)):
                continue  # str.isdigit() also takes '²' and '٣', which int() refuses or reads
            version = int(version_dir.name)
            model_path = version_dir / MODEL_FILENAME
            if version >= 1 and model_path.is_file():
                versions.append(ModelFile(model_dir.name, version, model_path))
        if versions:
            found[model_dir.name] = sorted(versions, key=lambda f: f.version)
    return found


def repository_fingerprint(root: Path) -> tuple[tuple[str, int, int, int, str], ...]:
    return tuple(f.fingerprint() for files in scan_repository(root).values() for f in files)


def read_recorded_digest(model: ModelFile) -> str:
    try:
        text = model.digest_path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise VerificationError(
            f"no digest file {model.digest_path.name} beside the model"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise VerificationError(f"the digest file {model.digest_path.name} is unreadable") from exc
    match = _DIGEST_LINE.match(text.splitlines()[0] if text else "")
    if match is None or (match.group(2) not in (None, MODEL_FILENAME)):
        raise VerificationError(
            f"the digest file must read '<sha256 hex>  {MODEL_FILENAME}'; it does not"
        )
    return match.group(1).lower()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_model_file(model: ModelFile) -> str:
    """The file's SHA-256 if it matches the recorded one; raises ``VerificationError`` otherwise."""
    recorded = read_recorded_digest(model)
    try:
        actual = sha256_of(model.path)
    except OSError as exc:
        raise VerificationError("the model file is unreadable") from exc
    if actual != recorded:
        raise VerificationError(
            f"SHA-256 mismatch: the file hashes to {actual[:12]}…, "
            f"the digest file records {recorded[:12]}…"
        )
    return actual
