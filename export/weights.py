"""Loading and saving ResNet weights: torchvision/timm state dicts, strict, with clear errors.

- ``.pth``/``.pt``: ``torch.load(weights_only=True)`` (no arbitrary pickles); a checkpoint that
  wraps the weights under ``state_dict``/``model`` and DDP's ``module.`` prefix are unwrapped.
- ``.safetensors``: ``safetensors.torch.load_file``; metadata ``actlab.activation`` (written by
  ``save_weights``) records the activation the weights were trained with.

``load_weights`` is strict: missing keys, unexpected keys and shape mismatches are all listed in
one ``WeightsError``. Two deliberate exceptions: the classifier head (``fc``) is replaced when the
class count differs, and an activation's own parameters (PReLU slopes) may be absent or extra when
the activation is swapped. Swapping the activation emits an ``ActivationSwapWarning``.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from export.errors import WeightsError

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
ACTIVATION_METADATA_KEY = "actlab.activation"
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "weights")
_LIST_LIMIT = 8


class ActivationSwapWarning(UserWarning):
    """Weights trained with one activation are used with another."""


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    activation: str | None
    """The activation the weights were trained with, when the file records it."""


@dataclass(frozen=True)
class LoadReport:
    head_replaced: bool
    source_classes: int | None
    activation_keys_skipped: tuple[str, ...]


def _listing(title: str, items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    more = f" … and {len(items) - _LIST_LIMIT} more" if len(items) > _LIST_LIMIT else ""
    return f"{title} ({len(items)}): {shown}{more}"


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(2):
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            f"{path.name} is not a state dict (expected a mapping of parameter names to tensors, "
            f"got {type(obj).__name__})"
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise WeightsError(
            f"{path.name} is not a state dict: "
            + _listing("entries that are not tensors", not_tensors)
        )
    state = {str(k): v for k, v in obj.items()}
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a weights file; raises ``WeightsError`` saying what is wrong and what is accepted."""
    path = path.expanduser()
    suffix = path.suffix.lower()
    if suffix not in WEIGHT_SUFFIXES:
        raise WeightsError(
            f"unsupported weights file {path.name!r}: use one of {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {path.name}: not a valid .safetensors file") from exc
        return Checkpoint(_as_state_dict(state, path), metadata.get(ACTIVATION_METADATA_KEY))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():
            raise WeightsError(
                f"cannot read {path.name}: not a valid PyTorch .pth/.pt file"
            ) from exc
        raise WeightsError(
            f"cannot read {path.name}: it holds objects other than tensors, which are not loaded "
            "for safety (weights_only=True); save model.state_dict() instead"
        ) from exc
    except Exception as exc:  # torch.load on arbitrary bytes can raise almost anything (KeyError…)
        raise WeightsError(f"cannot read {path.name}: not a valid PyTorch .pth/.pt file") from exc
    activation = obj.get("activation") if isinstance(obj, Mapping) else None
    return Checkpoint(
        _as_state_dict(obj, path), activation if isinstance(activation, str) else None
    )


def _is_activation_key(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2].startswith("act") and parts[-2][3:].isdigit()


def load_weights(
    model: nn.Module, checkpoint: Checkpoint, *, activation: str | None = None
) -> LoadReport:
    """Load ``checkpoint`` into ``model`` strictly (see the module doc for the two exceptions)."""
    own = model.state_dict()
    given = dict(checkpoint.state_dict)
    head_replaced, source_classes = False, None
    fc_w, own_fc_w = given.get("fc.weight"), own.get("fc.weight")
    if fc_w is not None and own_fc_w is not None and fc_w.ndim == 2:
        source_classes = int(fc_w.shape[0])
        if fc_w.shape[0] != own_fc_w.shape[0] and fc_w.shape[1] == own_fc_w.shape[1]:
            head_replaced = True
            given.pop("fc.weight")
            given.pop("fc.bias", None)
    skipped = tuple(
        sorted(k for k in set(given) ^ set(own) if _is_activation_key(k) and k != "fc.weight")
    )
    missing = sorted(k for k in own if k not in given and k not in skipped)
    if head_replaced:
        missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = sorted(k for k in given if k not in own and k not in skipped)
    mismatched = sorted(
        f"{k} (file {tuple(v.shape)}, model {tuple(own[k].shape)})"
        for k, v in given.items()
        if k in own and v.shape != own[k].shape
    )
    problems = [
        _listing(title, items)
        for title, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    if problems:
        raise WeightsError("the weights do not fit this architecture: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in given.items() if k in own}, strict=False)
    source = checkpoint.activation
    if source is None and any(_is_activation_key(k) for k in checkpoint.state_dict):
        source = "prelu"  # the only catalogue activation with weights of its own
    _warn_on_swap(source, activation)
    return LoadReport(head_replaced, source_classes, skipped)


def _warn_on_swap(source: str | None, target: str | None) -> None:
    if target is None or source == target or (source is None and target == "relu"):
        return
    if source is None:
        message = (
            f"the weights file does not record its activation (torchvision/timm ResNets use "
            f"relu); running them with {target} changes what every layer computes, so fine-tune "
            "(--epochs > 0) before trusting the accuracy"
        )
    else:
        message = (
            f"the weights were trained with {source} and are now used with {target}; fine-tune "
            "(--epochs > 0) before trusting the accuracy"
        )
    warnings.warn(message, ActivationSwapWarning, stacklevel=3)


def save_weights(
    model: nn.Module, path: Path, *, activation: str, extra: Mapping[str, str] | None = None
) -> None:
    """Write ``model``'s state dict as .safetensors, recording its activation in the metadata."""
    from safetensors.torch import save_file

    metadata = {ACTIVATION_METADATA_KEY: activation, **(extra or {})}
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)
