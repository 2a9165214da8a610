"""POST /v1/classify and /v1/models/{name}/classify: encodings, numbers, options, versions."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from service_images import gradient_rgb, halves, jpeg, jpeg_with_orientation, png
from service_reference import reference_preprocess, run_reference, softmax64

from service.imaging import MAX_RESIZED_PIXELS
from service.modelcard import ModelCard
from service.schemas import ClassifyResponse


def card_of(client: TestClient, name: str) -> ModelCard:
    return ModelCard.model_validate(client.get(f"/v1/models/{name}").json()["card"])


def expected_probabilities(
    repo: Path, name: str, version: int, images: list[Image.Image], card: ModelCard
) -> tuple[np.ndarray, np.ndarray]:
    batch = np.concatenate([reference_preprocess(image.convert("RGB"), card) for image in images])
    logits, probabilities = run_reference(repo / name / str(version) / "model.onnx", batch)
    return softmax64(logits), probabilities


def test_multipart_batch_matches_a_direct_onnxruntime_run(
    client: TestClient, model_repo: Path
) -> None:
    images = [gradient_rgb(64, 48, seed=1), gradient_rgb(40, 90, seed=2), gradient_rgb(33, 33)]
    files = [("file", (f"{i}.png", png(image), "image/png")) for i, image in enumerate(images)]
    response = client.post(
        "/v1/models/tiny-relu/classify", files=files, params={"include_probabilities": "true"}
    )
    assert response.status_code == 200
    body = response.json()
    ClassifyResponse.model_validate(body)
    assert body["model"] == "tiny-relu" and body["version"] == 2
    assert set(body["timings_ms"]) == {"decode", "preprocess", "inference", "total"}
    card = card_of(client, "tiny-relu")
    softmax, graph_probabilities = expected_probabilities(model_repo, "tiny-relu", 2, images, card)
    assert len(body["predictions"]) == 3
    for row, prediction in enumerate(body["predictions"]):
        vector = np.array(prediction["probabilities"])
        assert abs(vector.sum() - 1.0) <= 1e-5
        assert np.abs(vector - softmax[row]).max() <= 1e-5
        assert np.abs(vector - graph_probabilities[row]).max() <= 1e-5
        order = np.argsort(-softmax[row], kind="stable")[:5]
        assert [entry["index"] for entry in prediction["top_k"]] == order.tolist()
        assert [entry["label"] for entry in prediction["top_k"]] == [card.labels[i] for i in order]
        probabilities = [entry["probability"] for entry in prediction["top_k"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert np.allclose(probabilities, softmax[row][order], atol=1e-5)


def test_raw_body_json_base64_and_data_url_agree_with_multipart(client: TestClient) -> None:
    data = jpeg(gradient_rgb(80, 60, seed=5))
    encoded = base64.b64encode(data).decode()
    responses = [
        client.post(
            "/v1/models/tiny-tanh/classify", files=[("file", ("x.jpg", data, "image/jpeg"))]
        ),
        client.post(
            "/v1/models/tiny-tanh/classify", content=data, headers={"content-type": "image/jpeg"}
        ),
        client.post("/v1/models/tiny-tanh/classify", json={"images": [encoded]}),
        client.post(
            "/v1/models/tiny-tanh/classify",
            json={"images": [f"data:image/jpeg;base64,{encoded}"]},
        ),
        client.post(  # URL-safe alphabet, no padding, line breaks
            "/v1/models/tiny-tanh/classify",
            json={
                "images": [
                    base64.urlsafe_b64encode(data).decode().rstrip("=")[:40]
                    + "\n"
                    + base64.urlsafe_b64encode(data).decode().rstrip("=")[40:]
                ]
            },
        ),
    ]
    assert [r.status_code for r in responses] == [200] * 5
    tops = [r.json()["predictions"][0]["top_k"] for r in responses]
    assert all(top == tops[0] for top in tops)


def test_content_type_does_not_decide_the_format(client: TestClient) -> None:
    data = png(gradient_rgb(50, 50))
    response = client.post(
        "/v1/models/tiny-relu/classify", content=data, headers={"content-type": "image/jpeg"}
    )
    assert response.status_code == 200


def test_a_one_pixel_high_strip_is_classified_without_a_giant_resize(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1 000 000 × 1 (a 1 KB PNG) is within the pixel limit; resized whole it would be gigabytes."""
    sizes: list[tuple[int, int]] = []
    real_resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *args: Any, **kwargs: Any) -> Image.Image:
        sizes.append(size)
        return real_resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    strip = Image.fromarray((np.arange(1_000_000) % 251).astype(np.uint8)[None, :], "L")
    response = client.post("/v1/classify", files={"file": ("strip.png", png(strip), "image/png")})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    assert 0.0 < prediction["top_k"][0]["probability"] <= 1.0
    assert sizes and max(w * h for w, h in sizes) <= MAX_RESIZED_PIXELS


def test_top_k_default_clamp_and_body_over_query(client: TestClient) -> None:
    data = png(gradient_rgb())
    headers = {"content-type": "image/png"}
    default = client.post("/v1/models/tiny-relu/classify", content=data, headers=headers)
    assert len(default.json()["predictions"][0]["top_k"]) == 5
    assert "probabilities" not in default.json()["predictions"][0]
    clamped = client.post(
        "/v1/models/tiny-relu/classify?top_k=50", content=data, headers=headers
    ).json()
    assert len(clamped["predictions"][0]["top_k"]) == 10
    assert sorted(e["index"] for e in clamped["predictions"][0]["top_k"]) == list(range(10))
    encoded = base64.b64encode(data).decode()
    body_wins = client.post(
        "/v1/models/tiny-relu/classify?top_k=4", json={"images": [encoded], "top_k": 2}
    ).json()
    assert len(body_wins["predictions"][0]["top_k"]) == 2
    multipart = client.post(
        "/v1/models/tiny-relu/classify",
        files=[("file", ("a.png", data, "image/png"))],
        data={"top_k": "3", "include_probabilities": "true"},
    ).json()
    assert len(multipart["predictions"][0]["top_k"]) == 3
    assert len(multipart["predictions"][0]["probabilities"]) == 10


def test_version_pin_per_request(client: TestClient, model_repo: Path) -> None:
    image = gradient_rgb(48, 48, seed=9)
    data = png(image)
    headers = {"content-type": "image/png"}
    v1 = client.post(
        "/v1/models/tiny-relu/classify?version=1&include_probabilities=true",
        content=data,
        headers=headers,
    )
    v2 = client.post(
        "/v1/models/tiny-relu/classify?include_probabilities=true", content=data, headers=headers
    )
    assert (v1.status_code, v1.json()["version"]) == (200, 1)
    assert v2.json()["version"] == 2
    card = card_of(client, "tiny-relu")
    for version, response in ((1, v1), (2, v2)):
        softmax, _ = expected_probabilities(model_repo, "tiny-relu", version, [image], card)
        got = np.array(response.json()["predictions"][0]["probabilities"])
        assert np.abs(got - softmax[0]).max() <= 1e-5
    missing = client.post("/v1/models/tiny-relu/classify?version=7", content=data, headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "code": "version_not_found",
            "message": "version 7 of model 'tiny-relu' is not available; available versions: 1, 2",
        }
    }


def test_default_model_is_the_alphabetically_first_when_unset(client: TestClient) -> None:
    data = png(gradient_rgb())
    response = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 200
    assert response.json()["model"] == "tiny-identity"
    assert client.get("/v1/models").json()["default_model"] == "tiny-identity"


def test_configured_default_model(model_repo: Path) -> None:
    from conftest import make_settings, running_app

    with running_app(make_settings(model_repo, default_model="tiny-sigmoid")) as client:
        data = png(gradient_rgb())
        response = client.post("/v1/classify", content=data, headers={"content-type": "image/png"})
        assert response.json()["model"] == "tiny-sigmoid"


def test_exif_rotation_changes_what_the_model_sees(client: TestClient, model_repo: Path) -> None:
    source = halves(64, 32, (255, 0, 0), (0, 0, 255))
    rotated = jpeg_with_orientation(source, 6)
    response = client.post(
        "/v1/models/tiny-relu/classify?include_probabilities=true",
        content=rotated,
        headers={"content-type": "image/jpeg"},
    )
    upright = Image.open(io.BytesIO(rotated)).convert("RGB").transpose(Image.Transpose.ROTATE_270)
    card = card_of(client, "tiny-relu")
    softmax, _ = expected_probabilities(model_repo, "tiny-relu", 2, [upright], card)
    got = np.array(response.json()["predictions"][0]["probabilities"])
    assert np.abs(got - softmax[0]).max() <= 1e-5


@pytest.mark.parametrize(
    "name", ["tiny-relu", "tiny-sigmoid", "tiny-tanh", "tiny-identity", "tiny-maxout"]
)
def test_every_tiny_model_classifies_with_a_softmax(client: TestClient, name: str) -> None:
    data = png(gradient_rgb(seed=11))
    response = client.post(
        f"/v1/models/{name}/classify?include_probabilities=true&top_k=10",
        content=data,
        headers={"content-type": "image/png"},
    )
    assert response.status_code == 200
    prediction = response.json()["predictions"][0]
    vector = np.array(prediction["probabilities"])
    assert vector.shape == (10,) and (vector >= 0).all()
    assert abs(vector.sum() - 1.0) <= 1e-5
    assert [e["probability"] for e in prediction["top_k"]] == sorted(vector.tolist(), reverse=True)


# --------------------------------------------------------------------------- request parsing

IMAGE_ROUTES = [
    "/v1/classify",
    "/v1/models/tiny-relu/classify",
    "/v1/compare",
    "/v1/models/tiny-relu/activations",
]
# An animated GIF cut inside its second frame's descriptor (Pillow: IndexError) and, six bytes
# shorter, inside its first frame's data (Pillow: struct.error).
TRUNCATED_ANIMATED_GIF = (
    b"GIF89a\x08\x00\x08\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    b"\x21\xf9\x04\x04\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02\x44\x01\x00"
    b"\x21\xf9\x04\x04\x00\x00\x00\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
)


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    """One multipart part with boundary ``B`` (a file part when ``filename`` is given)."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


def multipart(*parts: bytes) -> dict[str, Any]:
    """Request kwargs for a well-formed multipart body with boundary ``B``."""
    return {
        "content": b"".join(parts) + b"--B--\r\n",
        "headers": {"content-type": "multipart/form-data; boundary=B"},
    }


def error_of(response: Any) -> tuple[int, str, str]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["message"]


@pytest.mark.parametrize("route", IMAGE_ROUTES)
@pytest.mark.parametrize(
    "data",
    [TRUNCATED_ANIMATED_GIF, TRUNCATED_ANIMATED_GIF[:-6]],
    ids=["frame-2-cut", "frame-1-cut"],
)
def test_truncated_animated_gif_is_400_on_every_image_route(
    client: TestClient, route: str, data: bytes
) -> None:
    response = client.post(route, content=data, headers={"content-type": "image/gif"})
    assert error_of(response) == (
        400, "invalid_image", "the animated GIF image is truncated or corrupt"
    )  # fmt: skip


_PNG = png(gradient_rgb(20, 20))
_FILE = part("file", _PNG, "a.png")
_MULTIPART = "multipart/form-data; boundary=B"
_NOT_PARSED = "the multipart body could not be parsed: "
# python-multipart's syntax errors, all worded so by Starlette
_INVALID = _NOT_PARSED + "Invalid multipart data"
_NO_BOUNDARY = (
    _NOT_PARSED + "its Content-Type has no boundary or an empty one "
    "(send 'multipart/form-data; boundary=<the boundary the body uses>')"
)


@pytest.mark.parametrize("route", IMAGE_ROUTES)
@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("multipart/form-data", b"x", _NO_BOUNDARY),
        ("multipart/form-data; boundary=", _FILE + b"--B--\r\n", _NO_BOUNDARY),
        ("multipart/form-data; boundary=C", _FILE + b"--B--\r\n", _INVALID),
        (_MULTIPART, b"not a multipart body", _INVALID),
        (_MULTIPART, b"--B\r\nContent-Type: image/png\r\n\r\n" + _PNG + b"\r\n--B--\r\n",
         _NOT_PARSED + 'The Content-Disposition header field "name" must be provided'),
        (_MULTIPART, b"--B\r\nX-Padding: " + b"x" * 5000 + b"\r\n" + _FILE[4:] + b"--B--\r\n",
         _INVALID),
        (_MULTIPART, _FILE + part("top_k", b"1" * (1024 * 1024 + 1)) + b"--B--\r\n",
         _NOT_PARSED + "Part exceeded maximum size of 1024KB"),
        (_MULTIPART, _FILE,
         _NOT_PARSED + "it ends without the closing boundary line ('--<boundary>--')"),
    ],
    ids=["no-boundary", "empty-boundary", "wrong-boundary", "garbage", "no-disposition",
         "header-too-large", "field-over-1mb", "unclosed"],
)  # fmt: skip
def test_malformed_multipart_is_400_saying_what_is_wrong(
    client: TestClient, route: str, content_type: str, body: bytes, message: str
) -> None:
    response = client.post(route, content=body, headers={"content-type": content_type})
    assert error_of(response) == (400, "bad_request", message)


@pytest.mark.parametrize("route", IMAGE_ROUTES)
def test_file_sent_as_a_plain_field_says_to_upload_it(client: TestClient, route: str) -> None:
    response = client.post(route, **multipart(part("file", _PNG)))
    assert error_of(response) == (
        422,
        "invalid_request",
        "the 'file' part must be a file upload with a filename (e.g. curl -F file=@digit.png), "
        "not a plain form field",
    )


@pytest.mark.parametrize(
    ("fields", "code", "message"),
    [
        ([("top_k", b"3"), ("version", b"1"), ("include_probabilities", b"1"), ("foo", b"x")],
         "invalid_request",
         "unexpected form field 'foo'; allowed: file, top_k, include_probabilities, version"),
        ([("top_k", b"3")] * 4, "invalid_request",
         "form field 'top_k' was sent more than once; "
         "send each of top_k, include_probabilities, version at most once"),
        ([("top_k", b"3")] * 5, "too_many_fields",
         "too many form fields: besides the 'file' parts, send only "
         "top_k, include_probabilities, version, each at most once"),
    ],
    ids=["unknown-field", "repeated-field", "over-the-field-limit"],
)  # fmt: skip
def test_too_many_fields_is_not_too_many_images(
    client: TestClient, fields: list[tuple[str, bytes]], code: str, message: str
) -> None:
    body = multipart(_FILE, *(part(name, value) for name, value in fields))
    response = client.post("/v1/models/tiny-relu/classify", **body)
    assert error_of(response) == (422, code, message)


def test_too_many_file_parts_is_too_many_images(model_repo: Path) -> None:
    from conftest import make_settings, running_app

    with running_app(make_settings(model_repo, max_images_per_request=2)) as client:
        response = client.post("/v1/classify", **multipart(_FILE, _FILE, _FILE))
    assert error_of(response) == (
        422, "too_many_images", "too many images: send at most 2 'file' parts"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("top_k", 1_000_000_000, "top_k: Input should be less than or equal to 100000"),
        ("top_k", 0, "top_k: Input should be greater than or equal to 1"),
        ("version", 0, "version: Input should be greater than or equal to 1"),
    ],
)
def test_option_bounds_are_the_same_in_query_json_and_multipart(
    client: TestClient, name: str, value: int, problem: str
) -> None:
    route = "/v1/models/tiny-relu/classify"
    in_query = client.post(
        route, params={name: value}, content=_PNG, headers={"content-type": "image/png"}
    )
    in_json = client.post(route, json={"images": [base64.b64encode(_PNG).decode()], name: value})
    in_multipart = client.post(route, **multipart(_FILE, part(name, str(value).encode())))
    assert error_of(in_query) == (422, "invalid_request", f"invalid request: query.{problem}")
    assert error_of(in_json) == (422, "invalid_request", f"invalid request: {problem}")
    assert error_of(in_multipart) == (422, "invalid_request", f"invalid request: {problem}")


@pytest.mark.parametrize("version", ["0", "-1"])
def test_describe_model_rejects_a_version_below_one(client: TestClient, version: str) -> None:
    response = client.get("/v1/models/tiny-relu", params={"version": version})
    assert error_of(response) == (
        422,
        "invalid_request",
        "invalid request: query.version: Input should be greater than or equal to 1",
    )
    assert client.get("/v1/models/tiny-relu", params={"version": "1"}).json()["version"] == 1


def _compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    return zlib.compress(data)  # deflate: the zlib format, as HTTP defines it


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_bodies_are_decoded_in_every_form(client: TestClient, encoding: str) -> None:
    route = "/v1/models/tiny-relu/classify"
    plain = client.post(route, content=_PNG, headers={"content-type": "image/png"})
    as_json = json.dumps({"images": [base64.b64encode(_PNG).decode()]}).encode()
    forms = [
        (_PNG, "image/png"),
        (as_json, "application/json"),
        (multipart(_FILE)["content"], _MULTIPART),
    ]
    for body, content_type in forms:
        response = client.post(
            route,
            content=_compress(body, encoding),
            headers={"content-type": content_type, "content-encoding": encoding},
        )
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == plain.json()["predictions"]


def test_unknown_content_encoding_is_415(client: TestClient) -> None:
    response = client.post(
        "/v1/classify",
        content=_PNG,
        headers={"content-type": "image/png", "content-encoding": "br"},
    )
    assert error_of(response) == (
        415,
        "unsupported_content_encoding",
        "Content-Encoding 'br' is not supported; send gzip, deflate or identity",
    )


def test_decompressed_body_over_the_body_limit_is_413(model_repo: Path) -> None:
    from conftest import make_settings, running_app

    bomb = gzip.compress(b"\x89PNG" + b"\x00" * 300_000)  # about 300 bytes on the wire
    with running_app(make_settings(model_repo, max_body_bytes=200_000)) as client:
        for content_type, body in (("image/png", bomb), (_MULTIPART, bomb)):
            response = client.post(
                "/v1/classify",
                content=body,
                headers={"content-type": content_type, "content-encoding": "gzip"},
            )
            assert error_of(response) == (
                413,
                "payload_too_large",
                "the decompressed request body is over the limit of 200000 bytes",
            )
        truncated = client.post(
            "/v1/classify",
            content=gzip.compress(_PNG)[:-10],
            headers={"content-type": "image/png", "content-encoding": "gzip"},
        )
        assert error_of(truncated) == (400, "bad_request", "the gzip body is truncated")


def test_a_batch_holds_one_decoded_image_at_a_time(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image is preprocessed and dropped before the next is decoded (bounded memory)."""
    import weakref

    import service.classify as classify

    alive: list[weakref.ref[Image.Image]] = []
    most_alive = 0
    real_decode, real_preprocess = classify.decode_image, classify.preprocess_into

    def decode(*args: Any, **kwargs: Any) -> Image.Image:
        image = real_decode(*args, **kwargs)
        alive.append(weakref.ref(image))
        return image

    def preprocess(*args: Any, **kwargs: Any) -> None:
        nonlocal most_alive
        most_alive = max(most_alive, sum(ref() is not None for ref in alive))
        real_preprocess(*args, **kwargs)

    monkeypatch.setattr(classify, "decode_image", decode)
    monkeypatch.setattr(classify, "preprocess_into", preprocess)
    images = [png(gradient_rgb(60, 40, seed=i)) for i in range(6)]
    files = [("file", (f"{i}.png", image, "image/png")) for i, image in enumerate(images)]
    response = client.post("/v1/models/tiny-relu/classify", files=files)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 6
    assert (len(alive), most_alive) == (6, 1)


def test_large_multipart_parts_stay_in_memory(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 MB file part is not spooled to a temporary file: a full (or tiny) /tmp, as in the
    containers' tmpfs under parallel uploads, cannot turn an upload into a 500."""
    import tempfile

    def no_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    big = png(Image.fromarray(noise))
    assert len(big) > 3_000_000
    monkeypatch.setattr(tempfile, "TemporaryFile", no_disk)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_disk)
    response = client.post(
        "/v1/models/tiny-relu/classify", files={"file": ("big.png", big, "image/png")}
    )
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["top_k"]
