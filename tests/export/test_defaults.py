"""The default model set: what models/ ships, its README, and the command that rebuilds it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import export.defaults as defaults
from export.__main__ import main
from export.errors import ExportError
from export.publish import existing_versions
from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME, ModelCard
from service.repository import scan_repository, verify_model_file
from service.runtime import ModelRuntime

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
RECIPE = defaults.DefaultsRecipe()
SHIPPED = defaults.default_names(defaults.DEFAULT_MODELS, RECIPE)
REQUIRED = [
    "resnet20-relu-digits",
    "resnet20-gelu-digits",
    "resnet20-mish-digits",
    "resnet20-identity-digits",
    "resnet20-relu-digits-int8",
]


def _card(path: Path) -> ModelCard:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)


def _newest(name: str) -> Path:
    version = existing_versions(MODELS_DIR, name)[-1]
    return MODELS_DIR / name / str(version) / MODEL_FILENAME


# --- what models/ ships ------------------------------------------------------------------


def test_the_default_set_names() -> None:
    assert set(REQUIRED) <= set(SHIPPED)
    assert SHIPPED[0] == "resnet20-relu-digits"  # the service's default model


def test_every_default_model_is_present_and_nothing_else() -> None:
    found = scan_repository(MODELS_DIR)
    assert sorted(found) == sorted(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_is_verified_and_carded(name: str) -> None:
    path = _newest(name)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert path.with_name(MODEL_FILENAME + DIGEST_SUFFIX).read_text() == (
        f"{expected}  {MODEL_FILENAME}\n"
    )
    card = _card(path)
    assert (card.name, card.version) == (name, int(path.parent.name))
    assert card.architecture == "resnet20" and card.dataset == "digits"
    assert card.labels == [str(i) for i in range(10)]
    assert card.input_size == (RECIPE.image_size, RECIPE.image_size)
    model = next(m for m in defaults.DEFAULT_MODELS if m.name(RECIPE) == name.removesuffix("-int8"))
    assert card.epochs == model.epochs_for(RECIPE) and card.seed == RECIPE.seed
    assert card.val_accuracy is not None
    if card.activation == "identity":
        assert card.val_accuracy >= 0.75  # a linear model: far behind the others
    else:
        assert card.val_accuracy >= 0.95
    if name.endswith("-int8"):
        source = name.removesuffix("-int8")
        assert card.quantization == "int8_qdq"
        source_version = existing_versions(MODELS_DIR, source)[-1]
        assert card.source_model == f"{source}/{source_version}"
        assert card.top1_agreement is not None and card.top1_agreement >= 0.97
    else:
        assert card.quantization == "none" and card.source_model is None
    # The exact build command is recorded (an int8 variant carries its source's command).
    # Since thread counts are recorded, the command ends with the build's "--threads N".
    recorded = re.sub(r" --threads [0-9]+$", "", card.command)
    assert recorded == defaults.build_request(model, RECIPE, Path("models")).command
    assert card.command.startswith(
        f"python -m export build --arch resnet20 --activation {model.activation} --dataset digits"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_serves_and_classifies_its_validation_images(name: str) -> None:
    """Independent check of the recorded accuracy: the service runtime on the same val split."""
    from export.data import load_dataset, stratified_split

    path = _newest(name)
    runtime = ModelRuntime.load(
        path,
        name=name,
        version=int(path.parent.name),
        digest=verify_model_file_for(path),
        intra_op_threads=1,
    )
    card = runtime.card
    dataset = load_dataset("digits", image_size=card.input_size[0])
    split = stratified_split(dataset.targets, float(card.split["val_fraction"]), card.seed)
    assert len(split.val) == card.split["val"]
    images = dataset.images[split.val].numpy().astype(np.float32) / 255.0
    mean = np.array(card.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(card.std, np.float32).reshape(1, 3, 1, 1)
    logits, probabilities = runtime.run(((images - mean) / std).astype(np.float32))
    accuracy = float(np.mean(logits.argmax(1) == dataset.targets[split.val].numpy()))
    assert accuracy == pytest.approx(card.val_accuracy, abs=1.5 / len(split.val))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def verify_model_file_for(path: Path) -> str:
    from service.repository import ModelFile

    return verify_model_file(ModelFile(path.parent.parent.name, int(path.parent.name), path))


def test_the_set_stays_under_ten_megabytes() -> None:
    """The default set (newest version of each model, what the service serves) fits 10 MB.

    Older versions a local `make models` leaves behind are the user's history, not the set."""
    newest_dirs = [_newest(name).parent for name in SHIPPED]
    total = sum(p.stat().st_size for d in newest_dirs for p in d.iterdir() if p.is_file())
    assert 0 < total <= defaults.SIZE_BUDGET_BYTES


def test_models_readme_is_current() -> None:
    """README.md equals what the generator writes from the files: sizes, sha256s, accuracy."""
    readme = (MODELS_DIR / defaults.README_FILE).read_text()
    entries = [defaults.read_entry(MODELS_DIR, name) for name in SHIPPED]
    assert readme == defaults.render_readme(entries)
    for entry in entries:
        digest = hashlib.sha256(entry.path.read_bytes()).hexdigest()
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{entry.name}` |"))
        assert f"`{digest}`" in row
        assert f"{entry.path.stat().st_size / 1000:.1f} kB" in row
        assert f"{entry.card.val_accuracy:.2%}" in row
        base = entry.name.removesuffix("-int8")
        assert f"- rebuild: `python -m export defaults --only {base}`" in readme


# --- building the set (a tiny recipe) ----------------------------------------------------

TINY_RECIPE = defaults.DefaultsRecipe(arch="resnet8", width=4, image_size=8, epochs=1)
TINY_SET = (defaults.DefaultModel("relu", int8=True), defaults.DefaultModel("identity"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    repository = tmp_path_factory.mktemp("defaults_repo")
    patch = pytest.MonkeyPatch()
    patch.setattr(defaults, "DEFAULT_MODELS", TINY_SET)
    patch.setattr(defaults, "MIN_INT8_AGREEMENT", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        defaults.build_defaults(
            repository, TINY_SET, TINY_RECIPE, progress=False, log=lambda _: None
        )
        yield repository
    finally:
        torch.set_num_threads(threads)
        patch.undo()


def test_build_defaults_publishes_every_model_and_the_readme(built: Path) -> None:
    names = ["resnet8-relu-digits", "resnet8-relu-digits-int8", "resnet8-identity-digits"]
    assert sorted(scan_repository(built)) == sorted(names)
    readme = (built / "README.md").read_text()
    for name in names:
        assert existing_versions(built, name) == [1]
        entry = defaults.read_entry(built, name)
        assert f"| `{name}` | 1 | " in readme and f"`{entry.sha256}`" in readme
    relu = defaults.read_entry(built, "resnet8-relu-digits").card
    expected = (
        "python -m export build --arch resnet8 --activation relu --dataset digits "
        f"--image-size 8 --width 4 --epochs 1 --batch-size 64 --lr 0.05 --seed 0 "
        f"--name resnet8-relu-digits --models-dir {built} --quantize int8 "
        "--min-int8-agreement 0.0 "  # the fixture lowers the bound
        "--threads 1"  # the thread count the build ran with (it changes the weights)
    )
    assert relu.command == expected
    int8 = defaults.read_entry(built, "resnet8-relu-digits-int8").card
    assert int8.source_model == "resnet8-relu-digits/1"


def test_recorded_build_command_reproduces_the_model(built: Path, tmp_path: Path) -> None:
    """The card's command, run through the CLI, trains the same weights (same seed)."""
    card = defaults.read_entry(built, "resnet8-identity-digits").card
    argv = card.command.split()[3:]  # drop "python -m export"
    argv[argv.index("--models-dir") + 1] = str(tmp_path)
    assert main([*argv, "--quiet", "--threads", "1"]) == 0
    rebuilt = defaults.read_entry(tmp_path, "resnet8-identity-digits").card
    assert rebuilt.val_accuracy == card.val_accuracy


def test_rebuilding_one_model_adds_a_version_and_keeps_the_readme_whole(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    repository = tmp_path / "models"
    shutil.copytree(built, repository)
    monkeypatch.setattr(defaults, "DEFAULT_MODELS", TINY_SET)
    chosen = defaults.select(["resnet8-identity-digits"], TINY_RECIPE, TINY_SET)
    defaults.build_defaults(repository, chosen, TINY_RECIPE, progress=False, log=lambda _: None)
    assert existing_versions(repository, "resnet8-identity-digits") == [1, 2]
    assert existing_versions(repository, "resnet8-relu-digits") == [1]
    readme = (repository / "README.md").read_text()
    assert "| `resnet8-identity-digits` | 2 | " in readme
    assert "| `resnet8-relu-digits` | 1 | " in readme
    assert "| `resnet8-relu-digits-int8` | 1 | " in readme


def test_select_maps_int8_names_to_their_source_and_rejects_unknown_ones() -> None:
    assert defaults.select(["resnet8-relu-digits-int8"], TINY_RECIPE, TINY_SET) == [TINY_SET[0]]
    assert defaults.select([], TINY_RECIPE, TINY_SET) == list(TINY_SET)
    with pytest.raises(
        ExportError,
        match=re.escape("not a default model: nope; choose from: resnet8-relu-digits, "),
    ):
        defaults.select(["nope"], TINY_RECIPE, TINY_SET)


def test_cli_unknown_default_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["defaults", "--only", "resnet20-softmax-digits", "--models-dir", str(tmp_path)]) == 1
    )
    err = capsys.readouterr().err
    assert err.startswith("error: not a default model: resnet20-softmax-digits")
    assert "resnet20-relu-digits" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_readme_only_regenerates_from_the_files(
    built: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    repository = tmp_path / "models"
    shutil.copytree(built, repository)
    (repository / "README.md").write_text("stale\n")
    monkeypatch.setattr(defaults, "DEFAULT_MODELS", TINY_SET)
    import export.commands.defaults as command

    monkeypatch.setattr(command, "DEFAULT_MODELS", TINY_SET)
    monkeypatch.setattr(command, "DefaultsRecipe", lambda: TINY_RECIPE)
    assert main(["defaults", "--readme-only", "--models-dir", str(repository)]) == 0
    assert (repository / "README.md").read_text() == (built / "README.md").read_text()
