"""Request inputs → what the model runs on, validated before onnxruntime sees anything.

Two inputs are accepted, exactly one per request:

- ``input`` (FP32, shape ``[N, 3, H, W]`` with H, W from the model card): an already
  preprocessed batch, as JSON numbers (nested or flat, row-major) or binary little-endian float32.
- ``image`` (BYTES, shape ``[N]`` or ``[N, 1]``): encoded image files (JPEG, PNG, WebP, BMP, GIF)
  that go through the same decoding and preprocessing as ``/v1/classify``. In JSON each element
  is base64 (``parameters.content_type`` may say ``"base64"``), in an array nested exactly as
  ``shape`` or flat; with the binary extension each element is the raw file (or base64 text when
  ``content_type`` is ``"base64"``).

In both cases ``1 <= N <= max_batch_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from service.classify_request import decode_base64
from service.errors import BadRequest, quoted
from service.modelcard import INPUT_NAME
from service.runtime import ModelRuntime
from service.v2.binary import (
    BINARY_DATA_SIZE,
    HEADER_LENGTH,
    BinaryReader,
    decode_bytes_elements,
    decode_fp32,
)
from service.v2.schemas import RequestInput

IMAGE_INPUT = "image"
INPUT_NAMES = (INPUT_NAME, IMAGE_INPUT)
BASE64 = "base64"
FP32_RANGE = "±3.4028235e38"  # the largest float32 (np.finfo(np.float32).max), shortest form


@dataclass(frozen=True)
class ModelInputs:
    """Either a float32 batch [N, 3, H, W] or N encoded images."""

    batch: NDArray[np.float32] | None = None
    images: list[bytes] | None = None

    @property
    def size(self) -> int:
        if self.batch is not None:
            return int(self.batch.shape[0])
        return len(self.images or [])


def read_inputs(
    inputs: list[RequestInput],
    binary: BinaryReader | None,
    model: ModelRuntime,
    max_batch_size: int,
) -> ModelInputs:
    names = [item.name for item in inputs]
    unknown = [name for name in names if name not in INPUT_NAMES]
    if unknown:
        channels, height, width = model.input_spec.shape
        raise BadRequest(
            f"unknown input {quoted(unknown[0])}; model {model.name!r} accepts exactly one of the "
            f"inputs {INPUT_NAME!r} (FP32 [N, {channels}, {height}, {width}]) or "
            f"{IMAGE_INPUT!r} (BYTES [N])"
        )
    if len(inputs) != 1:
        raise BadRequest(
            f"send exactly one input, {INPUT_NAME!r} or {IMAGE_INPUT!r}; got {len(inputs)}: "
            f"{', '.join(repr(n) for n in names)}"
        )
    item = inputs[0]
    raw = _binary_data(item, binary)
    if item.name == INPUT_NAME:
        return ModelInputs(batch=_read_tensor(item, raw, model, max_batch_size))
    return ModelInputs(images=_read_images(item, raw, max_batch_size))


def _binary_data(item: RequestInput, binary: BinaryReader | None) -> bytes | None:
    size = item.parameters.get(BINARY_DATA_SIZE)
    if size is None:
        if item.data is None:
            raise BadRequest(
                f"input {item.name!r} has no data: send 'data' or the binary extension's "
                f"parameters.{BINARY_DATA_SIZE}"
            )
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {item.name!r}: {BINARY_DATA_SIZE} must be an integer >= 0")
    if item.data is not None:
        raise BadRequest(
            f"input {item.name!r} has both 'data' and {BINARY_DATA_SIZE}; send one of them"
        )
    if binary is None:
        raise BadRequest(
            f"input {item.name!r} uses {BINARY_DATA_SIZE} but the request has no "
            f"{HEADER_LENGTH} header giving the length of the JSON part"
        )
    return binary.take(size, item.name)


def _check_batch(name: str, batch: int, max_batch_size: int) -> None:
    if not 1 <= batch <= max_batch_size:
        raise BadRequest(
            f"input {name!r}: batch size {batch} is not allowed; send 1 to {max_batch_size}"
        )


def _read_tensor(
    item: RequestInput, raw: bytes | None, model: ModelRuntime, max_batch_size: int
) -> NDArray[np.float32]:
    channels, height, width = model.input_spec.shape
    expected = f"[N, {channels}, {height}, {width}]"
    if item.datatype != "FP32":
        raise BadRequest(f"input {INPUT_NAME!r} must have datatype FP32, not {item.datatype!r}")
    shape = item.shape
    if len(shape) != 4 or shape[1:] != [channels, height, width]:
        raise BadRequest(
            f"input {INPUT_NAME!r} has shape {shape}; model {model.name!r} needs {expected}"
        )
    _check_batch(INPUT_NAME, shape[0], max_batch_size)
    count = math.prod(shape)
    if raw is not None:
        flat = decode_fp32(raw, INPUT_NAME)
        if flat.size != count:
            raise BadRequest(
                f"input {INPUT_NAME!r} has {flat.size} FP32 values in its binary data but shape "
                f"{shape} needs {count} ({count * 4} bytes)"
            )
        array = flat.reshape(shape)
    else:
        array = _json_numbers(item.data, shape, count)
    if not np.isfinite(array).all():
        raise BadRequest(f"input {INPUT_NAME!r} contains NaN or infinite values")
    return np.ascontiguousarray(array, dtype=np.float32)


def _out_of_fp32_range() -> BadRequest:
    return BadRequest(
        f"input {INPUT_NAME!r} contains values outside the FP32 range {FP32_RANGE}; "
        "send numbers within it"
    )


def _json_numbers(data: object, shape: list[int], count: int) -> NDArray[np.float32]:
    try:
        values = np.asarray(data)
    except (ValueError, TypeError):
        values = np.asarray([], dtype=object)  # ragged nesting: reported below
    if values.dtype == object and values.size and _all_plain_numbers(values):
        try:  # integers beyond int64 (e.g. 2**64) are still numbers
            values = values.astype(np.float64)
        except OverflowError:  # an integer beyond float64 (e.g. 10**400)
            raise _out_of_fp32_range() from None
    if values.dtype.kind not in "iuf":
        raise BadRequest(
            f"input {INPUT_NAME!r}: 'data' must be an array of numbers, nested with shape "
            f"{shape} or flat with {count} values (row-major)"
        )
    if values.shape != tuple(shape):
        if values.ndim > 1 or values.size != count:
            raise BadRequest(
                f"input {INPUT_NAME!r}: 'data' has shape {list(values.shape)} "
                f"({values.size} values) but the declared shape {shape} needs {count} values, "
                "nested with that shape or flat"
            )
        values = values.reshape(shape)
    with np.errstate(over="ignore"):  # a finite number beyond FP32 becomes inf: reported here
        array = values.astype(np.float32)
    if (np.isinf(array) & np.isfinite(values)).any():
        raise _out_of_fp32_range()
    return array


def _all_plain_numbers(values: NDArray[np.object_]) -> bool:
    return all(type(v) in (int, float) for v in values.flat)


def _read_images(item: RequestInput, raw: bytes | None, max_batch_size: int) -> list[bytes]:
    if item.datatype != "BYTES":
        raise BadRequest(f"input {IMAGE_INPUT!r} must have datatype BYTES, not {item.datatype!r}")
    shape = item.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise BadRequest(
            f"input {IMAGE_INPUT!r} has shape {shape}; send [N] or [N, 1] (one image per row)"
        )
    _check_batch(IMAGE_INPUT, shape[0], max_batch_size)
    content_type = item.parameters.get("content_type")
    if content_type is not None and content_type != BASE64:
        raise BadRequest(
            f"input {IMAGE_INPUT!r}: content_type {content_type!r} is not supported; use "
            f"'{BASE64}' in JSON, or raw image bytes with the binary extension"
        )
    elements: list[bytes | str]
    if raw is not None:
        elements = list(decode_bytes_elements(raw, IMAGE_INPUT))
        encoded = content_type == BASE64
    else:
        elements = list(_json_strings(item.data, shape))
        encoded = True
    count = math.prod(shape)
    if len(elements) != count:
        raise BadRequest(
            f"input {IMAGE_INPUT!r} has {len(elements)} elements but its shape {shape} needs "
            f"{count}"
        )
    if not encoded:
        return [element for element in elements if isinstance(element, bytes)]
    return [_unbase64(element, index) for index, element in enumerate(elements)]


def _json_strings(data: object, shape: list[int]) -> list[str]:
    """The strings of ``data``, row-major: a flat array (its length is checked by the caller),
    or arrays nested exactly as ``shape``, as for FP32 data."""
    if isinstance(data, list):
        flat = [element for element in data if isinstance(element, str)]
        if len(flat) == len(data):
            return flat
    level: list[object] = [data]
    for size in shape:
        rows = [node for node in level if isinstance(node, list) and len(node) == size]
        if len(rows) != len(level):
            raise _not_strings(shape)
        level = [element for row in rows for element in row]
    strings = [element for element in level if isinstance(element, str)]
    if len(strings) != len(level):
        raise _not_strings(shape)
    return strings


def _not_strings(shape: list[int]) -> BadRequest:
    return BadRequest(
        f"input {IMAGE_INPUT!r}: 'data' must be an array of base64 strings, one per image: "
        f"flat (length {math.prod(shape)}) or nested exactly as the shape {shape}"
    )


def _unbase64(element: bytes | str, index: int) -> bytes:
    text = element if isinstance(element, str) else element.decode("ascii", errors="replace")
    try:
        return decode_base64(text, index)
    except BadRequest:
        raise BadRequest(
            f"input {IMAGE_INPUT!r}: element {index} is not valid base64 "
            "(standard or URL-safe alphabet)"
        ) from None
