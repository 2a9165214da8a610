"""ResNet with any catalogue activation: torchvision's parameter names, timm's activation injection.

ImageNet-style ``resnet18/34/50/101/152`` (7×7 stem + max-pool, four stages) and CIFAR-style
``resnet8/20/32/44/56`` (3×3 stem, three stages of 16/32/64 channels, no max-pool; ``resnet8`` is
a tiny n=1 variant for tests). Parameter names and shapes match ``torchvision.models.resnet``
(``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so a torchvision or
timm checkpoint loads with ``strict=True``.

Every activation site is its own module (``act1``, ``layer2.1.act2``, ...). With maxout(k) the
convolution (and batch norm) before each site is widened k×, and the shortcut is repeated k× per
channel before the residual addition, so each maxout group compares k complete pre-activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from export.activations import TorchActivation, torch_activation
from service.activations import ParamValue


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def _widen_shortcut(identity: torch.Tensor, widen: int) -> torch.Tensor:
    return identity if widen == 1 else identity.repeat_interleave(widen, dim=1)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        act: TorchActivation,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        k = act.widen
        self.widen = k
        self.conv1 = _conv3x3(inplanes, planes * k, stride)
        self.bn1 = nn.BatchNorm2d(planes * k)
        self.act1 = act.make(planes)
        self.conv2 = _conv3x3(planes, planes * k)
        self.bn2 = nn.BatchNorm2d(planes * k)
        self.act2 = act.make(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + _widen_shortcut(identity, self.widen))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        act: TorchActivation,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        k = act.widen
        self.widen = k
        out_planes = planes * self.expansion
        self.conv1 = _conv1x1(inplanes, planes * k)
        self.bn1 = nn.BatchNorm2d(planes * k)
        self.act1 = act.make(planes)
        self.conv2 = _conv3x3(planes, planes * k, stride)
        self.bn2 = nn.BatchNorm2d(planes * k)
        self.act2 = act.make(planes)
        self.conv3 = _conv1x1(planes, out_planes * k)
        self.bn3 = nn.BatchNorm2d(out_planes * k)
        self.act3 = act.make(out_planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act3(out + _widen_shortcut(identity, self.widen))


Block = type[BasicBlock] | type[Bottleneck]


@dataclass(frozen=True)
class _ArchSpec:
    block: Block
    layers: tuple[int, ...]
    style: str  # "imagenet" | "cifar"
    base_width: int


_ARCHS: dict[str, _ArchSpec] = {
    "resnet18": _ArchSpec(BasicBlock, (2, 2, 2, 2), "imagenet", 64),
    "resnet34": _ArchSpec(BasicBlock, (3, 4, 6, 3), "imagenet", 64),
    "resnet50": _ArchSpec(Bottleneck, (3, 4, 6, 3), "imagenet", 64),
    "resnet101": _ArchSpec(Bottleneck, (3, 4, 23, 3), "imagenet", 64),
    "resnet152": _ArchSpec(Bottleneck, (3, 8, 36, 3), "imagenet", 64),
    "resnet8": _ArchSpec(BasicBlock, (1, 1, 1), "cifar", 16),
    "resnet20": _ArchSpec(BasicBlock, (3, 3, 3), "cifar", 16),
    "resnet32": _ArchSpec(BasicBlock, (5, 5, 5), "cifar", 16),
    "resnet44": _ArchSpec(BasicBlock, (7, 7, 7), "cifar", 16),
    "resnet56": _ArchSpec(BasicBlock, (9, 9, 9), "cifar", 16),
}

ARCHITECTURES: tuple[str, ...] = tuple(_ARCHS)


def arch_style(arch: str) -> str:
    """'imagenet' (7×7 stem + max-pool, for ≥ 64 px inputs) or 'cifar' (3×3 stem, small inputs)."""
    return _spec(arch).style


def _spec(arch: str) -> _ArchSpec:
    key = arch.strip().lower()
    if key not in _ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(_ARCHS)}")
    return _ARCHS[key]


class ResNet(nn.Module):
    def __init__(
        self,
        block: Block,
        layers: tuple[int, ...],
        act: TorchActivation,
        *,
        num_classes: int,
        style: str,
        base_width: int,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        k = act.widen
        self.activation = act
        self.inplanes = base_width
        if style == "imagenet":
            self.conv1 = nn.Conv2d(3, base_width * k, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = _conv3x3(3, base_width * k)
        self.bn1 = nn.BatchNorm2d(base_width * k)
        self.act1 = act.make(base_width)
        self.maxpool: nn.Module | None = (
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if style == "imagenet" else None
        )
        for index, blocks in enumerate(layers):
            stage = self._make_layer(
                block, base_width * 2**index, blocks, act, stride=1 if index == 0 else 2
            )
            self.add_module(f"layer{index + 1}", stage)
        self.num_stages = len(layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(base_width * 2 ** (len(layers) - 1) * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, act: TorchActivation, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        modules: list[nn.Module] = [block(self.inplanes, planes, act, stride, downsample)]
        self.inplanes = planes * block.expansion
        modules += [block(self.inplanes, planes, act) for _ in range(1, blocks)]
        return nn.Sequential(*modules)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (``fc``) with a freshly initialised one for ``num_classes``."""
        self.fc = nn.Linear(self.fc.in_features, num_classes)


def build_resnet(
    arch: str,
    activation: str | TorchActivation = "relu",
    *,
    num_classes: int,
    activation_params: Mapping[str, ParamValue] | None = None,
    width: int | None = None,
    zero_init_residual: bool = False,
    seed: int | None = None,
) -> ResNet:
    """Build ``arch`` with ``activation`` at every site, randomly initialised.

    ``width`` overrides the first stage's channel count (64 for ImageNet-style, 16 for CIFAR-style);
    later stages double it. ``seed`` makes the initialisation reproducible without touching the
    global RNG. Unknown names or bad parameters raise ``ValueError`` listing what is allowed.
    """
    spec = _spec(arch)
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    if width is not None and width < 1:
        raise ValueError(f"width must be a positive number of channels, got {width}")
    if isinstance(activation, str):
        act = torch_activation(activation, activation_params)
    elif activation_params is not None:
        raise ValueError("pass activation_params only with an activation name")
    else:
        act = activation

    def make() -> ResNet:
        return ResNet(
            spec.block,
            spec.layers,
            act,
            num_classes=num_classes,
            style=spec.style,
            base_width=width or spec.base_width,
            zero_init_residual=zero_init_residual,
        )

    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def activation_sites(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(module path, module) of every activation site, in the order the forward pass runs them."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1].startswith("act") and name.rsplit(".", 1)[-1][3:].isdigit()
    ]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the model card records)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
