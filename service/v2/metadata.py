"""Server and model metadata, and the Triton model configuration, derived from the model card."""

from __future__ import annotations

from collections.abc import Sequence

from service.modelcard import INPUT_NAME, MODEL_FILENAME, OUTPUT_NAMES
from service.runtime import ModelRuntime
from service.v2.tensors import IMAGE_INPUT

SERVER_NAME = "actlab"
PLATFORM = "onnx_onnxv1"  # the protocol's name for an ONNX model run by ONNX Runtime
TRITON_PLATFORM = "onnxruntime_onnx"  # Triton's name for the same, in its model configuration
BACKEND = "onnxruntime"
EXTENSIONS = ("binary_tensor_data", "classification", "model_configuration", "statistics")


def server_metadata(version: str) -> dict[str, object]:
    return {"name": SERVER_NAME, "version": version, "extensions": list(EXTENSIONS)}


def model_metadata(model: ModelRuntime, versions: Sequence[int]) -> dict[str, object]:
    """Inputs: ``input`` (FP32 [-1, 3, H, W]) or, instead of it, ``image`` (BYTES [-1])."""
    channels, height, width = model.input_spec.shape
    classes = model.card.num_classes
    return {
        "name": model.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [
            {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, channels, height, width]},
            {"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": name, "datatype": "FP32", "shape": [-1, classes]} for name in OUTPUT_NAMES
        ],
    }


def model_config(
    model: ModelRuntime, max_batch_size: int, batching_delay_us: int | None = None
) -> dict[str, object]:
    """Triton's model configuration (JSON form), as perf_analyzer and tritonclient read it.

    ``image`` is marked optional (a client sends ``input`` or ``image``), and reshaped to the
    batch axis alone, as Triton writes a per-row scalar. ``batching_delay_us`` (dynamic batching
    on) adds ``dynamic_batching``, which perf_analyzer reads to know the scheduler.
    """
    channels, height, width = model.input_spec.shape
    classes = model.card.num_classes
    config: dict[str, object] = {
        "name": model.name,
        "platform": TRITON_PLATFORM,
        "backend": BACKEND,
        "version_policy": {"specific": {"versions": [model.version]}},
        "max_batch_size": max_batch_size,
        "input": [
            {
                "name": INPUT_NAME,
                "data_type": "TYPE_FP32",
                "format": "FORMAT_NCHW",
                "dims": [channels, height, width],
                "is_shape_tensor": False,
                "optional": False,
            },
            {
                "name": IMAGE_INPUT,
                "data_type": "TYPE_STRING",
                "format": "FORMAT_NONE",
                "dims": [1],
                "reshape": {"shape": []},
                "is_shape_tensor": False,
                "optional": True,
            },
        ],
        "output": [
            {
                "name": name,
                "data_type": "TYPE_FP32",
                "dims": [classes],
                "label_filename": "",
                "is_shape_tensor": False,
            }
            for name in OUTPUT_NAMES
        ],
        "instance_group": [{"name": model.name, "kind": "KIND_CPU", "count": 1}],
        "default_model_filename": MODEL_FILENAME,
        "model_transaction_policy": {"decoupled": False},
        "parameters": {},
    }
    if batching_delay_us is not None:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": batching_delay_us}
    return config
