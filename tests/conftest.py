"""Shared fixtures: a temporary model repository of tiny exported models.

``model_repo`` (session): a Path to a model repository built once per session (export/tiny.py:
CIFAR-style resnet8, width 8, seeded random init, 32×32 input, resize 36 + centre crop 32,
ImageNet mean/std, labels ``digit-0`` … ``digit-9``), holding:

    tiny-relu      versions 1 (seed 0) and 2 (seed 1)
    tiny-sigmoid   version 1
    tiny-tanh      version 1
    tiny-identity  version 1
    tiny-maxout    version 1 (k=2)

Treat it as read-only; use ``model_repo_copy`` (a fresh per-test copy) to change files, or
``make_model`` to publish more tiny models into a repository of your choice.

torch is imported lazily inside the fixtures, so collecting service tests never imports it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from export.publish import PublishedModel

MODEL_REPO_CONTENTS: dict[str, list[tuple[int, str, int]]] = {
    # name: [(version, activation, seed), ...]
    "tiny-relu": [(1, "relu", 0), (2, "relu", 1)],
    "tiny-sigmoid": [(1, "sigmoid", 0)],
    "tiny-tanh": [(1, "tanh", 0)],
    "tiny-identity": [(1, "identity", 0)],
    "tiny-maxout": [(1, "maxout", 0)],
}

MakeModel = Callable[..., "PublishedModel"]


def _make_model(
    repository: Path,
    name: str,
    activation: str = "relu",
    version: int | None = None,
    *,
    seed: int = 0,
    **kwargs: Any,
) -> PublishedModel:
    import torch

    from export.tiny import publish_tiny_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    return publish_tiny_model(repository, name, activation, version=version, seed=seed, **kwargs)


@pytest.fixture(scope="session")
def make_model() -> MakeModel:
    """``make_model(repository, name, activation="relu", version=None, *, seed=0,
    activation_params=None) -> PublishedModel``: publish one more tiny model (about 1 s)."""
    return _make_model


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary model repository with the tiny models listed in this module's docstring."""
    repository = tmp_path_factory.mktemp("model_repo")
    for name, entries in MODEL_REPO_CONTENTS.items():
        for version, activation, seed in entries:
            _make_model(repository, name, activation, version, seed=seed)
    return repository


@pytest.fixture
def model_repo_copy(model_repo: Path, tmp_path: Path) -> Path:
    """A private copy of ``model_repo`` that a test may modify."""
    target = tmp_path / "models"
    shutil.copytree(model_repo, target)
    return target
