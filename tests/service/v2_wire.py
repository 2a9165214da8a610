"""Test-side framing of the binary tensor data extension, written from the spec with ``struct``
(independent of ``service.v2.binary``): request bodies, response parsing, BYTES elements."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

HEADER = "Inference-Header-Content-Length"


def bytes_elements(items: list[bytes]) -> bytes:
    """BYTES tensor data: each element a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def split_bytes_elements(data: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        items.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return items


def fp32_bytes(values: np.ndarray) -> bytes:
    flat = [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]
    return struct.pack(f"<{len(flat)}f", *flat)


def unpack_fp32(data: bytes) -> np.ndarray:
    return np.array(struct.unpack(f"<{len(data) // 4}f", data), dtype=np.float32)


def binary_request(header: dict[str, Any], tensors: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for a request whose inputs carry ``binary_data_size``."""
    json_part = json.dumps(header).encode()
    return json_part + b"".join(tensors), {
        HEADER: str(len(json_part)),
        "content-type": "application/octet-stream",
    }


def parse_binary_response(
    body: bytes, header_length: int
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(JSON header, {output name: its binary bytes}) following the outputs' order."""
    header = json.loads(body[:header_length])
    offset = header_length
    tensors: dict[str, bytes] = {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            tensors[output["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body), "binary tensors do not add up to the body length"
    return header, tensors
