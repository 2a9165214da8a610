"""Atomic publishing: versions increase, never overwrite, nothing loadable after an interruption."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import export.publish as publish
from export.errors import PublishError
from export.publish import digest_line, existing_versions, publish_model
from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME, ModelCard


def tiny_graph() -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 2])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    return model


def card(name: str = "demo") -> ModelCard:
    return ModelCard(
        name=name,
        version=1,
        architecture="resnet8",
        activation="relu",
        labels=["a", "b"],
        input_size=(32, 32),
        resize_size=36,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        dataset="test",
        opset=20,
        created_at="2026-01-01T00:00:00+00:00",
        parameters=0,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_publish_writes_model_digest_and_card(tmp_path: Path) -> None:
    published = publish_model(tmp_path, tiny_graph(), card())
    assert published.version == 1
    assert published.path == tmp_path / "demo" / "1" / MODEL_FILENAME
    data = published.path.read_bytes()
    assert published.sha256 == hashlib.sha256(data).hexdigest()
    digest_file = published.path.with_name(MODEL_FILENAME + DIGEST_SUFFIX)
    assert digest_file.read_text() == f"{hashlib.sha256(data).hexdigest()}  model.onnx\n"
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    read_back = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert read_back == published.card
    assert read_back.version == 1 and read_back.name == "demo"
    assert tree(tmp_path) == ["demo", "demo/1", "demo/1/model.onnx", "demo/1/model.onnx.sha256"]


def test_versions_increase_and_card_carries_each_version(tmp_path: Path) -> None:
    versions = [publish_model(tmp_path, tiny_graph(), card()).version for _ in range(3)]
    assert versions == [1, 2, 3]
    for version in versions:
        data = (tmp_path / "demo" / str(version) / MODEL_FILENAME).read_bytes()
        meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        assert meta["actlab.version"] == str(version)
    assert existing_versions(tmp_path, "demo") == [1, 2, 3]


def test_next_version_follows_the_highest_even_with_gaps(tmp_path: Path) -> None:
    publish_model(tmp_path, tiny_graph(), card(), version=5)
    assert publish_model(tmp_path, tiny_graph(), card()).version == 6


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    first = publish_model(tmp_path, tiny_graph(), card())
    before = first.path.read_bytes()
    with pytest.raises(
        PublishError,
        match="demo version 1 already exists; versions are never "
        r"overwritten \(the next free version is 2\)",
    ):
        publish_model(tmp_path, tiny_graph(), card(), version=1)
    assert first.path.read_bytes() == before
    assert tree(tmp_path) == ["demo", "demo/1", "demo/1/model.onnx", "demo/1/model.onnx.sha256"]


def test_stale_version_guess_takes_the_next_free_version(tmp_path: Path, monkeypatch) -> None:
    """A concurrent publisher that guessed a taken version moves on instead of overwriting."""
    first = publish_model(tmp_path, tiny_graph(), card())
    before = first.path.read_bytes()
    monkeypatch.setattr(publish, "next_version", lambda repository, name: 1)
    published = publish_model(tmp_path, tiny_graph(), card())
    assert published.version == 2
    assert published.card.version == 2
    assert first.path.read_bytes() == before


def test_interrupted_write_leaves_nothing_loadable(tmp_path: Path, monkeypatch) -> None:
    real_write = publish._write_synced

    def write_half_then_die(path: Path, data: bytes) -> None:
        if path.name == MODEL_FILENAME:
            with open(path, "xb") as handle:
                handle.write(data[: len(data) // 2])
            raise KeyboardInterrupt  # the process is stopped mid-write
        real_write(path, data)

    monkeypatch.setattr(publish, "_write_synced", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        publish_model(tmp_path, tiny_graph(), card())
    assert tree(tmp_path) == ["demo"]
    assert existing_versions(tmp_path, "demo") == []


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish.os, "rename", no_space)
    with pytest.raises(PublishError, match=r"cannot write to .*No space left on device"):
        publish_model(tmp_path, tiny_graph(), card())
    assert tree(tmp_path) == ["demo"]


def test_digest_line_format() -> None:
    assert digest_line("ab" * 32) == "ab" * 32 + "  model.onnx\n"


@pytest.mark.parametrize("name", ["", "Demo", "../evil", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    bad = card().model_copy(update={"name": name})
    with pytest.raises(PublishError, match=r"invalid model name .*lowercase letters, digits"):
        publish_model(tmp_path, tiny_graph(), bad)
    assert tree(tmp_path) == []


def test_version_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="version must be a positive integer, got 0"):
        publish_model(tmp_path, tiny_graph(), card(), version=0)
