"""Loading and saving ResNet weights: torchvision/timm state dicts, strict, with clear errors.

- ``.pth``/``.pt``: ``torch.load(weights_only=True)`` (no arbitrary pickles); a checkpoint that
  wraps the weights under ``state_dict``/``model`` and DDP's ``module.`` prefix are unwrapped.
- ``.safetensors``: ``safetensors.torch.load_file``; metadata ``actlab.activation`` and
  ``actlab.activation_params`` (JSON), written by ``save_weights``, record the activation the
  weights were trained with. A file that records nothing but holds PReLU slopes was trained with
  prelu (``Checkpoint.trained_activation``).

``load_weights`` is strict, like ``load_state_dict(strict=True)``: missing keys, unexpected keys and
shape mismatches are all listed in one ``WeightsError``. BatchNorm's ``num_batches_tracked``
counters may be missing, as torch itself allows (files saved before PyTorch 0.4.1 and
torchvision's classic ResNet files lack them). Two deliberate exceptions: the classifier head
(``fc``) is replaced when the class count differs, and an activation's own parameters (PReLU
slopes) may be absent or extra when the activation is swapped. Swapping the activation emits an
``ActivationSwapWarning``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from export.errors import WeightsError
from service.activations import ParamValue

WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")
ACTIVATION_METADATA_KEY = "actlab.activation"
PARAMS_METADATA_KEY = "actlab.activation_params"
_OPTIONAL_KEY_SUFFIX = ".num_batches_tracked"
_CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "weights")
_LIST_LIMIT = 8


class WeightsWarning(UserWarning):
    """Something about the weights the user should know before trusting the result."""


class ActivationSwapWarning(WeightsWarning):
    """Weights trained with one activation are used with another."""


class HeadReplacedWarning(WeightsWarning):
    """The weights' classifier head does not fit the labels and is newly initialised."""


@dataclass(frozen=True)
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    activation: str | None
    """The activation the weights were trained with, when the file records it."""
    activation_params: dict[str, ParamValue] = field(default_factory=dict)
    """Its parameters, when the file records them."""

    def trained_activation(self) -> tuple[str | None, dict[str, ParamValue]]:
        """The activation the weights were trained with: the one the file records, else prelu
        (with the mode its slopes' shapes show) when the file holds activation weights, else
        None (torchvision/timm ResNets: relu, but the file does not say so)."""
        if self.activation is not None:
            return self.activation, dict(self.activation_params)
        slopes = [v for k, v in self.state_dict.items() if _is_activation_key(k)]
        if not slopes:
            return None, {}
        # prelu is the only catalogue activation with weights of its own.
        return "prelu", {"mode": "single" if all(v.numel() == 1 for v in slopes) else "channel"}


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
        return Checkpoint(
            _as_state_dict(state, path),
            metadata.get(ACTIVATION_METADATA_KEY),
            _params(metadata.get(PARAMS_METADATA_KEY), path),
        )
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
    params = obj.get("activation_params") if isinstance(obj, Mapping) else None
    return Checkpoint(
        _as_state_dict(obj, path),
        activation if isinstance(activation, str) else None,
        _params(json.dumps(params) if isinstance(params, Mapping) else None, path),
    )


def _params(text: str | None, path: Path) -> dict[str, ParamValue]:
    """Recorded activation parameters (a JSON object of numbers and strings), or {}."""
    if text is None:
        return {}
    try:
        params = json.loads(text)
    except ValueError:
        params = None
    if not isinstance(params, dict) or not all(
        isinstance(v, str) or (isinstance(v, int | float) and not isinstance(v, bool))
        for v in params.values()
    ):
        raise WeightsError(
            f"cannot read {path.name}: its recorded activation parameters are not a JSON object "
            f"of numbers and strings: {str(text)[:80]!r}"
        )
    return {str(k): v for k, v in params.items()}


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
    missing = sorted(
        k
        for k in own
        if k not in given and k not in skipped and not k.endswith(_OPTIONAL_KEY_SUFFIX)
    )
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
    source, _ = checkpoint.trained_activation()
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


def check_weights_path(path: Path, option: str = "--save-weights") -> Path:
    """Refuse, before anything is built, a path ``save_weights`` could not write."""
    path = path.expanduser()
    if path.suffix != ".safetensors" or not path.parent.is_dir():
        raise WeightsError(f"{option} needs a .safetensors path in an existing folder, got {path}")
    if path.is_dir():
        raise WeightsError(f"{option}: {path} is a folder; give a file name ending .safetensors")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise WeightsError(
            f"{option}: cannot write to {path.parent} (read-only or permission denied)"
        )
    return path


def save_weights(
    model: nn.Module,
    path: Path,
    *,
    activation: str,
    activation_params: Mapping[str, ParamValue] | None = None,
    extra: Mapping[str, str] | None = None,
) -> None:
    """Write ``model``'s state dict as .safetensors, recording its activation (and parameters) in
    the metadata. Raises ``WeightsError`` (one line) if the file cannot be written."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    metadata = {
        ACTIVATION_METADATA_KEY: activation,
        PARAMS_METADATA_KEY: json.dumps(dict(activation_params or {})),
        **(extra or {}),
    }
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".partial")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        tmp.replace(path)
    except (SafetensorError, OSError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise WeightsError(f"cannot write weights to {path}: {reason}") from exc
