"""Turn a classify request into image bytes and options, whatever way the client sent it.

Three encodings, chosen by ``Content-Type``:

- ``multipart/form-data``: one or more ``file`` parts (one batch, in order), optional fields
  ``top_k``, ``include_probabilities``, ``version`` (each at most once; a route may allow fewer);
- ``image/*``: the raw body is one image (its real format is sniffed from the bytes);
- ``application/json``: ``{"images": ["<base64 or data: URL>", ...], "top_k": 5, ...}``.

Any of them may be sent with ``Content-Encoding: gzip`` or ``deflate``; the decompressed body
may not exceed the same byte limit as an uncompressed one.

Every byte read, and every byte inflated, is first reserved in the request's share of the
process-wide body budget (``service.body_budget``): 503 when the server already holds too much.

Options may also come from the query string; a value in the body wins over the query. Option
values are validated by the same bounds and messages in the query, JSON and multipart forms.
Only the body bytes are read on the event loop (a compressed body is inflated in a thread);
JSON and base64 are parsed by ``decode_payload`` in the worker thread.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Annotated, Final

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.body_budget import BodyReservation, read_reserved, reserved_stream
from service.content_encoding import decode_content
from service.errors import BadRequest, Unprocessable, UnsupportedMediaType, invalid_body, quoted

MAX_TOP_K: Final = 100_000
MULTIPART_FIELDS: Final = ("top_k", "include_probabilities", "version")
# One bound per option, shared by the JSON body and the multipart fields (the query uses MAX_TOP_K).
_TopK = Annotated[int, Field(ge=1, le=MAX_TOP_K)]
_Version = Annotated[int, Field(ge=1)]
_WHITESPACE = re.compile(rb"\s+")


@dataclass
class ClassifyOptions:
    top_k: int | None = None
    include_probabilities: bool | None = None
    version: int | None = None

    def merged_over(self, query: ClassifyOptions) -> ClassifyOptions:
        return ClassifyOptions(
            top_k=self.top_k if self.top_k is not None else query.top_k,
            include_probabilities=(
                self.include_probabilities
                if self.include_probabilities is not None
                else query.include_probabilities
            ),
            version=self.version if self.version is not None else query.version,
        )


@dataclass
class RawPayload:
    """What was read from the wire: image bytes already (multipart, raw) or a JSON document."""

    images: list[bytes] = field(default_factory=list)
    json_body: bytes | None = None
    options: ClassifyOptions = field(default_factory=ClassifyOptions)


class ClassifyJSON(BaseModel):
    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(
        min_length=1,
        description="Base64 image bytes, or data: URLs ('data:image/png;base64,...').",
    )
    top_k: _TopK | None = None
    include_probabilities: bool | None = None
    version: _Version | None = None


class _FormOptions(BaseModel):
    """Multipart option fields: the same bounds (and so the same messages) as ``ClassifyJSON``."""

    top_k: _TopK | None = None
    include_probabilities: bool | None = None
    version: _Version | None = None


class _MultipartParser(MultiPartParser):
    """Starlette's parser that keeps file parts in memory and rejects a body ending before its
    closing boundary line.

    Starlette spools a file part over 1 MB to a temporary file. The body limit already bounds
    every part (``max_body_bytes``), as it bounds a raw ``image/*`` body read into memory, so
    parts stay in memory: no disk writes per upload, and no 500 when a small ``/tmp`` (the
    containers' tmpfs) fills up under parallel uploads.

    python-multipart calls ``on_end`` only at ``--boundary--`` and accepts a body cut short; the
    check raises from inside the stream, so Starlette's error path closes any spooled file.
    """

    def __init__(
        self,
        headers: Headers,
        stream: AsyncGenerator[bytes, None],
        max_files: int,
        max_fields: int,
        max_body_bytes: int,
    ) -> None:
        self._closed = False
        super().__init__(
            headers, self._until_closed(stream), max_files=max_files, max_fields=max_fields
        )
        self.spool_max_size = max_body_bytes + 1  # never rolls over: no part exceeds the body

    def on_end(self) -> None:
        self._closed = True

    async def _until_closed(
        self, stream: AsyncGenerator[bytes, None]
    ) -> AsyncGenerator[bytes, None]:
        async for chunk in stream:
            yield chunk
        if not self._closed:
            raise MultiPartException("it ends without the closing boundary line ('--<boundary>--')")


async def read_payload(
    request: Request,
    max_images: int,
    max_body_bytes: int,
    fields: tuple[str, ...] = MULTIPART_FIELDS,
    *,
    reservation: BodyReservation,
) -> RawPayload:
    """The body as sent, its bytes reserved in ``reservation`` (which the caller releases);
    ``fields`` are the multipart option fields this route accepts."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_images, max_body_bytes, fields, reservation)
    if content_type.startswith("image/"):
        return RawPayload(images=[await _read_body(request, max_body_bytes, reservation)])
    if content_type == "application/json" or content_type.endswith("+json"):
        return RawPayload(json_body=await _read_body(request, max_body_bytes, reservation))
    raise UnsupportedMediaType(
        "send multipart/form-data with 'file' parts, a raw image with an image/* content type, "
        'or application/json {"images": [...]}',
        code="unsupported_content_type",
    )


async def _read_body(request: Request, max_body_bytes: int, reservation: BodyReservation) -> bytes:
    """The body with its Content-Encoding (gzip, deflate, identity) undone, bounded; once
    inflated, only the inflated bytes stay reserved (the compressed ones are dropped)."""
    body = await read_reserved(request, reservation)
    encoding = request.headers.get("content-encoding")
    if encoding is None:
        return body
    inflated = await run_in_threadpool(
        decode_content, body, encoding, max_body_bytes, reservation.add
    )
    if inflated is not body:
        reservation.give_back(len(body))
    return inflated


async def _one_chunk(data: bytes) -> AsyncGenerator[bytes, None]:
    yield data


async def _read_multipart(
    request: Request,
    max_images: int,
    max_body_bytes: int,
    fields: tuple[str, ...],
    reservation: BodyReservation,
) -> RawPayload:
    _, params = parse_options_header(request.headers["content-type"])
    if not params.get(b"boundary"):
        raise BadRequest(
            "the multipart body could not be parsed: its Content-Type has no boundary or an "
            "empty one (send 'multipart/form-data; boundary=<the boundary the body uses>')"
        )
    if request.headers.get("content-encoding") is None:
        stream = reserved_stream(request, reservation)
    else:
        stream = _one_chunk(await _read_body(request, max_body_bytes, reservation))
    # One field more than allowed, so a stray or repeated field is named rather than counted.
    parser = _MultipartParser(request.headers, stream, max_images, len(fields) + 1, max_body_bytes)
    try:
        async with aclosing(stream):
            form = await parser.parse()
    except MultiPartException as exc:
        raise _multipart_error(exc.message, max_images, fields) from None
    try:
        images, values = await _sort_parts(form, fields)
    finally:
        await form.close()
    if not images:
        raise Unprocessable("the multipart body has no 'file' part", code="no_images")
    return RawPayload(images=images, options=_parse_fields(values))


def _multipart_error(message: str, max_images: int, fields: tuple[str, ...]) -> Exception:
    """A parser message (Starlette's fixed text or ours, no client input) as our error."""
    if message.startswith("Too many files"):
        return Unprocessable(
            f"too many images: send at most {max_images} 'file' {_files(max_images)}",
            code="too_many_images",
        )
    if message.startswith("Too many fields"):
        return Unprocessable(
            f"too many form fields: besides the 'file' {_files(max_images)}, send only "
            f"{', '.join(fields)}, each at most once",
            code="too_many_fields",
        )
    return BadRequest(f"the multipart body could not be parsed: {message.rstrip('.')}")


def _files(max_images: int) -> str:
    return "part" if max_images == 1 else "parts"


async def _sort_parts(
    form: FormData, fields: tuple[str, ...]
) -> tuple[list[bytes], dict[str, str]]:
    """(image bytes of the 'file' parts in order, option fields by name), or what is wrong."""
    allowed = ", ".join(fields)
    images: list[bytes] = []
    values: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "file":
                raise Unprocessable(
                    f"unexpected file part {quoted(key)}; send images as 'file' parts"
                )
            images.append(await value.read())
        elif key == "file":
            raise Unprocessable(
                "the 'file' part must be a file upload with a filename "
                "(e.g. curl -F file=@digit.png), not a plain form field"
            )
        elif key not in fields:
            raise Unprocessable(f"unexpected form field {quoted(key)}; allowed: file, {allowed}")
        elif key in values:
            raise Unprocessable(
                f"form field {key!r} was sent more than once; send each of {allowed} at most once"
            )
        else:
            values[key] = value
    return images, values


def _parse_fields(values: dict[str, str]) -> ClassifyOptions:
    try:
        options = _FormOptions.model_validate(values)
    except ValidationError as exc:
        raise invalid_body(exc) from None
    return ClassifyOptions(options.top_k, options.include_probabilities, options.version)


def decode_payload(payload: RawPayload, max_images: int) -> tuple[list[bytes], ClassifyOptions]:
    """Image bytes and body options; parses JSON and base64 (call off the event loop)."""
    if payload.json_body is None:
        images, options = payload.images, payload.options
    else:
        try:
            document = ClassifyJSON.model_validate_json(payload.json_body)
        except ValidationError as exc:
            raise invalid_body(exc) from None
        images = [decode_base64(item, index) for index, item in enumerate(document.images)]
        options = ClassifyOptions(document.top_k, document.include_probabilities, document.version)
    if len(images) > max_images:
        raise Unprocessable(
            f"{len(images)} images in one request; the limit is {max_images}",
            code="too_many_images",
        )
    return images, options


def decode_base64(item: str, index: int) -> bytes:
    text = item
    if text.startswith("data:"):
        header, comma, text = text.partition(",")
        if not comma or not header.endswith(";base64"):
            raise BadRequest(
                f"images[{index}] is a data: URL without base64 data "
                "(expected 'data:<type>;base64,<data>')",
                code="invalid_base64",
            )
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
        raw = raw.replace(b"-", b"+").replace(b"_", b"/")  # URL-safe alphabet too
        return base64.b64decode(_pad(raw), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise BadRequest(
            f"images[{index}] is not valid base64 (standard or URL-safe alphabet)",
            code="invalid_base64",
        ) from None


def _pad(raw: bytes) -> bytes:
    return raw + b"=" * (-len(raw) % 4)
