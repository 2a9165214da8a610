"""Request ``Content-Encoding`` (Triton clients can gzip or deflate the body), bounded: the
decompressed body may not exceed the same byte limit as an uncompressed one."""

from __future__ import annotations

import zlib

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {name!r} is not supported; send gzip, deflate or identity",
            code="unsupported_content_encoding",
        )
    inflater = zlib.decompressobj(_WBITS[name])
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error:
        raise BadRequest(f"the body is not valid {name} data") from None
    if len(data) > max_bytes or inflater.unconsumed_tail:
        raise PayloadTooLarge(
            f"the decompressed request body is over the limit of {max_bytes} bytes"
        )
    if not inflater.eof:
        raise BadRequest(f"the {name} body is truncated")
    return data
