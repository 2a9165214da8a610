"""CPU training with good defaults: deterministic for a seed, progress bar, val accuracy per epoch.

Defaults (CIFAR-ResNet recipe): SGD with Nesterov momentum 0.9, weight decay 5e-4 (not on
BatchNorm/bias/PReLU slopes), one-cycle learning-rate schedule peaking at 0.1, batch 128, random
translations (± input/8 px) and horizontal flips where the dataset allows them. ``train_model``
returns the history per epoch; ``on_epoch`` lets a caller (e.g. a sweep) watch progress.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from export.errors import TrainingError

Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["onecycle", "cosine", "constant"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Schedule = "onecycle"
    label_smoothing: float = 0.0
    augment: bool = True
    seed: int = 0

    def validate(self) -> None:
        problems = []
        if self.epochs < 0:
            problems.append(f"epochs must be ≥ 0, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch size must be ≥ 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"learning rate must be a positive number, got {self.lr}")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            problems.append(f"weight decay must be a finite number ≥ 0, got {self.weight_decay}")
        if not 0.0 <= self.label_smoothing < 1.0:
            problems.append(f"label smoothing must be in [0, 1), got {self.label_smoothing}")
        if problems:
            raise TrainingError("; ".join(problems))


@dataclass(frozen=True)
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochStats, ...]
    seconds: float

    @property
    def val_accuracy(self) -> float | None:
        return self.history[-1].val_accuracy if self.history else None


@dataclass(frozen=True)
class Normalisation:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> normalised float32 (what the service feeds the ONNX input)."""
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std


def _augment(x: torch.Tensor, flips: bool, generator: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))  # zeros = the dataset mean after normalisation
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    out = torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )
    if flips:
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_conv_or_fc_weight = param.ndim > 1 and "act" not in name.rsplit(".", 2)[-2]
        (decay if is_conv_or_fc_weight else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = _parameter_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def _scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.25
        )
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    norm: Normalisation,
    batch_size: int = 256,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` in eval mode."""
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(targets), batch_size):
        logits = model(norm(images[start : start + batch_size]))
        y = targets[start : start + batch_size]
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(1, len(targets))
    return total_loss / n, correct / n


def train_model(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    norm: Normalisation,
    config: TrainConfig,
    *,
    flips: bool = False,
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place on (uint8 images, targets); validate after every epoch."""
    config.validate()
    activation = getattr(model, "activation", None)
    if config.epochs > 0 and activation is not None and not activation.trainable:
        raise TrainingError(
            f"{activation.name} cannot be trained: its gradient is zero almost everywhere, so "
            "backpropagation cannot update anything before it; use --epochs 0 to export it as "
            "is, or choose a trainable activation (e.g. relu)"
        )
    if config.epochs == 0:
        return TrainResult((), 0.0)
    images, targets = train
    if len(targets) == 0:
        raise TrainingError("the training split is empty")
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(targets) / config.batch_size)
    optimizer = _optimizer(model, config)
    scheduler = _scheduler(optimizer, config, steps_per_epoch * config.epochs)
    history: list[EpochStats] = []
    started = time.perf_counter()
    bar = tqdm(
        total=steps_per_epoch * config.epochs,
        disable=not progress,
        file=sys.stderr,
        unit="step",
        dynamic_ncols=True,
    )
    try:
        for epoch in range(1, config.epochs + 1):
            epoch_start = time.perf_counter()
            model.train()
            order = torch.randperm(len(targets), generator=generator)
            seen, loss_sum, correct = 0, 0.0, 0
            bar.set_description(f"epoch {epoch}/{config.epochs}")
            for start in range(0, len(order), config.batch_size):
                idx = order[start : start + config.batch_size]
                x, y = norm(images[idx]), targets[idx]
                if config.augment:
                    x = _augment(x, flips, generator)
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                batch_loss = float(loss.detach())
                if not math.isfinite(batch_loss):
                    raise TrainingError(
                        f"training diverged at epoch {epoch} (loss is {batch_loss}); "
                        "lower the learning rate (--lr)"
                    )
                seen += len(y)
                loss_sum += batch_loss * len(y)
                correct += int((logits.argmax(1) == y).sum())
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
            val_loss, val_acc = evaluate(model, *val, norm)
            stats = EpochStats(
                epoch,
                loss_sum / seen,
                correct / seen,
                val_loss,
                val_acc,
                optimizer.param_groups[0]["lr"],
                time.perf_counter() - epoch_start,
            )
            history.append(stats)
            if progress:
                bar.write(
                    f"epoch {epoch}/{config.epochs}: train loss {stats.train_loss:.4f} "
                    f"acc {stats.train_accuracy:.4f} | val loss {val_loss:.4f} "
                    f"acc {val_acc:.4f} | {stats.seconds:.1f}s",
                    file=sys.stderr,
                )
            if on_epoch is not None:
                on_epoch(stats)
    finally:
        bar.close()
    model.eval()
    return TrainResult(tuple(history), time.perf_counter() - started)
