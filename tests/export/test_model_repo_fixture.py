"""The shared ``model_repo`` fixture holds exactly what teammates' tests rely on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.modelcard import (
    DIGEST_SUFFIX,
    INPUT_NAME,
    LOGITS_NAME,
    MODEL_FILENAME,
    PROBABILITIES_NAME,
    ModelCard,
)


def load(path: Path) -> tuple[ort.InferenceSession, ModelCard]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)


def test_model_repo_layout_and_cards(model_repo: Path) -> None:
    files = sorted(str(p.relative_to(model_repo)) for p in model_repo.rglob("*") if p.is_file())
    expected = []
    for name, versions in {
        "tiny-identity": [1],
        "tiny-maxout": [1],
        "tiny-relu": [1, 2],
        "tiny-sigmoid": [1],
        "tiny-tanh": [1],
    }.items():
        for version in versions:
            expected += [f"{name}/{version}/model.onnx", f"{name}/{version}/model.onnx.sha256"]
    assert files == expected
    for onnx_path in model_repo.rglob(MODEL_FILENAME):
        digest = onnx_path.with_name(MODEL_FILENAME + DIGEST_SUFFIX).read_text()
        assert digest == hashlib.sha256(onnx_path.read_bytes()).hexdigest() + "  model.onnx\n"
        _, card = load(onnx_path)
        assert card.name == onnx_path.parent.parent.name
        assert card.version == int(onnx_path.parent.name)
        assert card.architecture == "resnet8"
        assert card.labels == [f"digit-{i}" for i in range(10)]
        assert card.input_size == (32, 32) and card.resize_size == 36
        assert card.resize_policy == "shorter_side_then_center_crop"
        assert card.mean == (0.485, 0.456, 0.406) and card.std == (0.229, 0.224, 0.225)
        assert card.activation == card.name.removeprefix("tiny-")
        assert len(card.activation_sites) == 7


def test_relu_versions_differ(model_repo: Path) -> None:
    x = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    outs = []
    for version in (1, 2):
        session, card = load(model_repo / "tiny-relu" / str(version) / MODEL_FILENAME)
        assert card.seed == version - 1
        logits, probabilities = session.run([LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: x})
        assert logits.shape == (2, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
        outs.append(logits)
    assert not np.allclose(outs[0], outs[1])


def test_make_model_publishes_into_a_chosen_repository(make_model, tmp_path: Path) -> None:
    published = make_model(tmp_path, "extra-gelu", "gelu", 3, seed=4)
    assert published.path == tmp_path / "extra-gelu" / "3" / MODEL_FILENAME
    _, card = load(published.path)
    assert (card.activation, card.version, card.seed) == ("gelu", 3, 4)
