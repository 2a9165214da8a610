"""Triton's binary tensor data extension: split a request body, read and write tensor bytes.

A body with binary tensors is the JSON object followed by each binary tensor's bytes, in the
order the tensors appear in the JSON; the ``Inference-Header-Content-Length`` header gives the
JSON length. Numbers are little-endian and row-major; a BYTES element is a 4-byte little-endian
unsigned length followed by that many bytes.
"""

from __future__ import annotations

import struct

import numpy as np
from numpy.typing import NDArray

from service.errors import BadRequest

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
OCTET_STREAM = "application/octet-stream"

_LENGTH_PREFIX = struct.Struct("<I")


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """(JSON part, binary part); without the header the whole body is JSON."""
    if header_length is None:
        return body, b""
    try:
        length = int(header_length.strip())
    except ValueError:
        raise BadRequest(
            f"the {HEADER_LENGTH} header must be a whole number of bytes (the JSON length)"
        ) from None
    if not 0 < length <= len(body):
        raise BadRequest(
            f"the {HEADER_LENGTH} header says the JSON is {length} bytes but the body has "
            f"{len(body)} bytes; it must be between 1 and the body length"
        )
    return body[:length], body[length:]


class BinaryReader:
    """Hands out consecutive slices of the binary part; ``finish`` insists all were used."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._offset = 0

    def take(self, size: int, tensor: str) -> bytes:
        remaining = len(self._data) - self._offset
        if size > remaining:
            raise BadRequest(
                f"input {tensor!r} declares {BINARY_DATA_SIZE} {size} but only {remaining} "
                "bytes of binary data are left in the body"
            )
        chunk = self._data[self._offset : self._offset + size].tobytes()
        self._offset += size
        return chunk

    def finish(self) -> None:
        left = len(self._data) - self._offset
        if left:
            raise BadRequest(
                f"the body has {left} bytes of binary data after the last tensor; the "
                f"{BINARY_DATA_SIZE} of the inputs must add up to the bytes after the JSON"
            )


def decode_fp32(chunk: bytes, tensor: str) -> NDArray[np.float32]:
    if len(chunk) % 4:
        raise BadRequest(
            f"input {tensor!r} has {len(chunk)} bytes of FP32 data; FP32 elements are 4 bytes"
        )
    return np.frombuffer(chunk, dtype="<f4").astype(np.float32, copy=False)


def decode_bytes_elements(chunk: bytes, tensor: str) -> list[bytes]:
    """BYTES tensor data → its elements (each a 4-byte length prefix and the bytes)."""
    items: list[bytes] = []
    offset = 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise BadRequest(
                f"input {tensor!r}: BYTES element {len(items)} has a truncated 4-byte length"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise BadRequest(
                f"input {tensor!r}: BYTES element {len(items)} says it is {length} bytes but "
                f"only {len(chunk) - offset} remain"
            )
        items.append(chunk[offset : offset + length])
        offset += length
    return items


def encode_bytes_elements(items: list[bytes]) -> bytes:
    return b"".join(_LENGTH_PREFIX.pack(len(item)) + item for item in items)


def encode_fp32(array: NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(array, dtype="<f4").tobytes()
