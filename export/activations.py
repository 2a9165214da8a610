"""Torch modules for every hidden-layer activation in the catalogue (``service.activations``).

The catalogue owns the names, parameters, defaults and bounds; this module only maps each name to a
small torch module. ``torch_activation(name, params)`` validates through the catalogue and returns a
``TorchActivation``: a factory that makes a fresh module for each call site (``make(channels)``),
plus what the network builder needs to know (``widen`` for maxout, ``trainable`` for binary_step).

Each module is kept small and separate so a formulation can be tuned for onnxruntime speed without
touching the others; most export as one native ONNX op (Relu, LeakyRelu, PRelu, Elu, Selu, Celu,
Gelu, Softplus, Softsign, Tanh, Sigmoid, HardSigmoid, HardSwish, Mish).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from service.activations import (
    NETWORK_ACTIVATIONS,
    Activation,
    ParamValue,
    get_network_activation,
)

Resolved = dict[str, ParamValue]


class Swish(nn.Module):
    """x * sigmoid(beta * x); ``nn.SiLU`` is used instead when beta == 1."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


class Gaussian(nn.Module):
    """exp(-x²): a radial bump (x is clamped so x² stays finite in float32 for any input)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clamped = torch.clamp(x, -1e3, 1e3)
        return torch.exp(-(clamped * clamped))


class BinaryStep(nn.Module):
    """Heaviside step, 1 where x > 0 else 0. Its gradient is zero almost everywhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).to(x.dtype)


class Maxout(nn.Module):
    """Max over groups of ``k`` consecutive channels: [N, C·k, H, W] -> [N, C, H, W]."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (-1, self.k)).amax(dim=2)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def _num(p: Resolved, name: str) -> float:
    return float(p[name])


ModuleBuilder = Callable[[Resolved, int], nn.Module]
"""(resolved params, channels at the site) -> a new module."""

_BUILDERS: dict[str, ModuleBuilder] = {
    "relu": lambda p, c: nn.ReLU(),
    "relu6": lambda p, c: nn.ReLU6(),
    "leaky_relu": lambda p, c: nn.LeakyReLU(_num(p, "negative_slope")),
    "prelu": lambda p, c: nn.PReLU(c if p["mode"] == "channel" else 1, init=_num(p, "init")),
    "elu": lambda p, c: nn.ELU(_num(p, "alpha")),
    "selu": lambda p, c: nn.SELU(),
    "celu": lambda p, c: nn.CELU(_num(p, "alpha")),
    "gelu": lambda p, c: nn.GELU(approximate=str(p["approximate"])),
    "silu": lambda p, c: nn.SiLU() if _num(p, "beta") == 1.0 else Swish(_num(p, "beta")),
    "mish": lambda p, c: nn.Mish(),
    "softplus": lambda p, c: nn.Softplus(_num(p, "beta"), _num(p, "threshold")),
    "softsign": lambda p, c: nn.Softsign(),
    "tanh": lambda p, c: nn.Tanh(),
    "sigmoid": lambda p, c: nn.Sigmoid(),
    "hardsigmoid": lambda p, c: nn.Hardsigmoid(),
    "hardswish": lambda p, c: nn.Hardswish(),
    "gaussian": lambda p, c: Gaussian(),
    "identity": lambda p, c: nn.Identity(),
    "binary_step": lambda p, c: BinaryStep(),
    "maxout": lambda p, c: Maxout(int(p["k"])),
}

TORCH_ACTIVATIONS: tuple[str, ...] = tuple(_BUILDERS)
"""Every name this module can build; a test asserts it equals the catalogue's network names."""

_missing = set(NETWORK_ACTIVATIONS) ^ set(_BUILDERS)
if _missing:  # pragma: no cover - guarded by a test as well
    raise ImportError(f"torch activations out of sync with the catalogue: {sorted(_missing)}")


@dataclass(frozen=True)
class TorchActivation:
    """A resolved catalogue activation, ready to be placed at any number of sites."""

    spec: Activation
    params: Resolved = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def trainable(self) -> bool:
        return self.spec.trainable

    @property
    def widen(self) -> int:
        """How many times wider the convolution before each site must be (k for maxout)."""
        return int(self.params["k"]) if self.spec.kind == "grouped" else 1

    def make(self, channels: int) -> nn.Module:
        """A new module for one site whose output has ``channels`` channels."""
        return _BUILDERS[self.spec.name](self.params, channels)


def torch_activation(name: str, params: Mapping[str, ParamValue] | None = None) -> TorchActivation:
    """Resolve ``name`` (aliases, any case) and ``params`` through the catalogue.

    Raises ``service.activations.CatalogueError`` (a ``ValueError``) listing what is allowed.
    """
    spec = get_network_activation(name)
    return TorchActivation(spec, spec.resolve_params(params))
