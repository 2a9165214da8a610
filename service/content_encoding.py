"""Request ``Content-Encoding`` (gzip or deflate; Triton clients send it) on /v1 and /v2, bounded:
the decompressed body may not exceed the same byte limit as an uncompressed one."""

from __future__ import annotations

import zlib

from service.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, quoted

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return body
    if name not in _WBITS:
        raise UnsupportedMediaType(
            f"Content-Encoding {quoted(name)} is not supported; send gzip, deflate or identity",
            code="unsupported_content_encoding",
        )
    # gzip allows several members one after another (RFC 1952 §2.2): their data concatenates.
    parts: list[bytes] = []
    total, remaining = 0, body
    while True:
        inflater = zlib.decompressobj(_WBITS[name])
        try:
            data = inflater.decompress(remaining, max_bytes - total + 1)
        except zlib.error:
            raise BadRequest(f"the body is not valid {name} data") from None
        total += len(data)
        parts.append(data)
        if total > max_bytes or inflater.unconsumed_tail:
            raise PayloadTooLarge(
                f"the decompressed request body is over the limit of {max_bytes} bytes"
            )
        if not inflater.eof:
            raise BadRequest(f"the {name} body is truncated")
        remaining = inflater.unused_data
        if not remaining:
            return b"".join(parts)
        if name != "gzip":
            raise BadRequest(
                f"the body has {len(remaining)} bytes after the end of its deflate stream"
            )
