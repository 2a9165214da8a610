"""Export → check → parity → publish, the one path every published model takes.

``export_verified`` returns a graph that passed ``onnx.checker`` and onnxruntime-vs-torch parity on
the given batches; ``export_and_publish`` also writes the card and publishes atomically. Training,
data and the CLI sit above this; quantization and sweeps can call either function.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from export.exporter import ExportedGraph, check_onnx, check_parity, export_onnx, make_card
from export.publish import PublishedModel, publish_model, validate_model_name


def export_verified(
    model: nn.Module, input_size: tuple[int, int], parity_batches: Sequence[torch.Tensor]
) -> ExportedGraph:
    """Export ``model``, run the full ONNX check and parity on ``parity_batches``."""
    graph = export_onnx(model, input_size)
    model_bytes = graph.proto.SerializeToString()
    check_onnx(model_bytes)
    check_parity(model, model_bytes, parity_batches)
    return graph


def export_and_publish(
    model: nn.Module,
    repository: Path,
    *,
    name: str,
    input_size: tuple[int, int],
    parity_batches: Sequence[torch.Tensor],
    version: int | None = None,
    **card_fields: Any,
) -> PublishedModel:
    """Export, verify and publish ``model`` as ``name``; ``card_fields`` go to ``make_card``."""
    validate_model_name(name)
    graph = export_verified(model, input_size, parity_batches)
    card = make_card(model, graph, name=name, input_size=input_size, **card_fields)
    return publish_model(repository, graph.proto, card, version=version)
