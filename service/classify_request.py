"""Turn a classify request into image bytes and options, whatever way the client sent it.

Three encodings, chosen by ``Content-Type``:

- ``multipart/form-data``: one or more ``file`` parts (one batch, in order), optional fields
  ``top_k``, ``include_probabilities``, ``version``;
- ``image/*``: the raw body is one image (its real format is sniffed from the bytes);
- ``application/json``: ``{"images": ["<base64 or data: URL>", ...], "top_k": 5, ...}``.

Options may also come from the query string; a value in the body wins over the query. Only the
body bytes are read on the event loop; JSON and base64 are parsed by ``decode_payload`` in the
worker thread.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from service.errors import BadRequest, Unprocessable, UnsupportedMediaType

_MULTIPART_OPTIONS = ("top_k", "include_probabilities", "version")
_WHITESPACE = re.compile(rb"\s+")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


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
    top_k: int | None = Field(default=None, ge=1, le=100_000)
    include_probabilities: bool | None = None
    version: int | None = Field(default=None, ge=1)


async def read_payload(request: Request, max_images: int) -> RawPayload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, max_images)
    if content_type.startswith("image/"):
        return RawPayload(images=[await request.body()])
    if content_type == "application/json" or content_type.endswith("+json"):
        return RawPayload(json_body=await request.body())
    raise UnsupportedMediaType(
        "send multipart/form-data with 'file' parts, a raw image with an image/* content type, "
        'or application/json {"images": [...]}',
        code="unsupported_content_type",
    )


async def _read_multipart(request: Request, max_images: int) -> RawPayload:
    try:
        form = await request.form(max_files=max_images, max_fields=len(_MULTIPART_OPTIONS))
    except MultiPartException as exc:
        raise BadRequest(f"the multipart body could not be parsed: {exc.message}") from exc
    except Exception as exc:  # Starlette raises HTTPException for too many parts
        detail = getattr(exc, "detail", "")
        if "Too many" in str(detail):
            raise Unprocessable(
                f"too many parts: send at most {max_images} 'file' parts and only the fields "
                f"{', '.join(_MULTIPART_OPTIONS)}",
                code="too_many_images",
            ) from exc
        raise
    images: list[bytes] = []
    fields: dict[str, str] = {}
    try:
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "file":
                    raise Unprocessable(
                        f"unexpected file part {key!r}; send images as 'file' parts"
                    )
                images.append(await value.read())
            elif key in _MULTIPART_OPTIONS:
                fields[key] = value
            else:
                raise Unprocessable(
                    f"unexpected form field {key!r}; allowed: file, {', '.join(_MULTIPART_OPTIONS)}"
                )
    finally:
        await form.close()
    if not images:
        raise Unprocessable("the multipart body has no 'file' part", code="no_images")
    return RawPayload(images=images, options=_parse_fields(fields))


def _parse_fields(fields: dict[str, str]) -> ClassifyOptions:
    options = ClassifyOptions()
    if "top_k" in fields:
        options.top_k = _positive_int("top_k", fields["top_k"])
    if "version" in fields:
        options.version = _positive_int("version", fields["version"])
    if "include_probabilities" in fields:
        flag = fields["include_probabilities"].strip().lower()
        if flag not in _TRUE + _FALSE:
            raise Unprocessable("include_probabilities must be true or false")
        options.include_probabilities = flag in _TRUE
    return options


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise Unprocessable(f"{name} must be an integer ≥ 1") from None
    if value < 1:
        raise Unprocessable(f"{name} must be an integer ≥ 1")
    return value


def decode_payload(payload: RawPayload, max_images: int) -> tuple[list[bytes], ClassifyOptions]:
    """Image bytes and body options; parses JSON and base64 (call off the event loop)."""
    if payload.json_body is None:
        images, options = payload.images, payload.options
    else:
        try:
            document = ClassifyJSON.model_validate_json(payload.json_body)
        except ValidationError as exc:
            raise Unprocessable(_describe(exc)) from None
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


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(p) for p in err.get("loc", ())) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)
