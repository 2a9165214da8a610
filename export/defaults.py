"""The default model set shipped in models/, and the models/README.md that describes it.

``DEFAULT_MODELS`` lists the activations; ``DefaultsRecipe`` is the one recipe they all share
(ResNet-20 on the built-in digits, 16×16 input — the digits are 8×8, so nothing is lost — SGD
one-cycle, seed 0). ``build_defaults`` builds each through the same path as ``python -m export
build`` (train → export → check → parity → atomic publish) and records that exact command in the
card; ``write_models_readme`` lists what the repository really holds (card, size, SHA-256 read
from the files, never typed in by hand).
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from export.build import BuildRequest, build_model
from export.errors import ExportError
from export.publish import PublishedModel, existing_versions
from export.quantize import int8_name, quantize_build
from export.train import TrainConfig
from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME, ModelCard

README_FILE = "README.md"
SIZE_BUDGET_BYTES = 10 * 1000 * 1000
"""The whole default set must stay under 10 MB."""
MIN_INT8_AGREEMENT = 0.97


@dataclass(frozen=True)
class DefaultsRecipe:
    arch: str = "resnet20"
    dataset: str = "digits"
    image_size: int = 16
    width: int | None = None
    epochs: int = 12
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    threads: int = 2
    """torch threads: the count changes the trained weights (the shipped models used 2)."""


@dataclass(frozen=True)
class DefaultModel:
    activation: str
    int8: bool = False
    """Also publish ``<name>-int8``."""
    epochs: int | None = None
    """Overrides the recipe's epochs (sigmoid saturates and needs longer to become useful)."""

    def epochs_for(self, recipe: DefaultsRecipe) -> int:
        return self.epochs if self.epochs is not None else recipe.epochs

    def name(self, recipe: DefaultsRecipe) -> str:
        return f"{recipe.arch}-{self.activation}-{recipe.dataset}"


DEFAULT_MODELS: tuple[DefaultModel, ...] = (
    DefaultModel("relu", int8=True),
    DefaultModel("gelu"),
    DefaultModel("mish"),
    DefaultModel("identity"),
    DefaultModel("sigmoid", epochs=30),
    DefaultModel("tanh"),
)


def build_arguments(model: DefaultModel, recipe: DefaultsRecipe, models_dir: Path) -> list[str]:
    """The ``python -m export build`` command line that builds ``model`` (what the card records)."""
    args = [
        "python",
        "-m",
        "export",
        "build",
        "--arch",
        recipe.arch,
        "--activation",
        model.activation,
        "--dataset",
        recipe.dataset,
        "--image-size",
        str(recipe.image_size),
    ]
    if recipe.width is not None:
        args += ["--width", str(recipe.width)]
    args += [
        "--epochs",
        str(model.epochs_for(recipe)),
        "--batch-size",
        str(recipe.batch_size),
        "--lr",
        str(recipe.lr),
        "--seed",
        str(recipe.seed),
        "--name",
        model.name(recipe),
        "--models-dir",
        str(models_dir),
    ]
    if model.int8:
        args += ["--quantize", "int8", "--min-int8-agreement", str(MIN_INT8_AGREEMENT)]
    return args


def build_request(
    model: DefaultModel, recipe: DefaultsRecipe, models_dir: Path, progress: bool = True
) -> BuildRequest:
    return BuildRequest(
        arch=recipe.arch,
        activation=model.activation,
        dataset=recipe.dataset,
        image_size=recipe.image_size,
        width=recipe.width,
        train=TrainConfig(
            epochs=model.epochs_for(recipe),
            batch_size=recipe.batch_size,
            lr=recipe.lr,
            seed=recipe.seed,
        ),
        name=model.name(recipe),
        repository=models_dir,
        progress=progress,
        command=shlex.join(build_arguments(model, recipe, models_dir)),
    )


def select(
    names: Sequence[str], recipe: DefaultsRecipe, models: Sequence[DefaultModel] = DEFAULT_MODELS
) -> list[DefaultModel]:
    """The default models called ``names`` (fp32 or ``-int8`` names); all when empty."""
    if not names:
        return list(models)
    known = {m.name(recipe): m for m in models}
    known |= {int8_name(m.name(recipe)): m for m in models if m.int8}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ExportError(
            f"not a default model: {', '.join(unknown)}; choose from: " + ", ".join(known)
        )
    return list(dict.fromkeys(known[n] for n in names))


def build_defaults(
    models_dir: Path,
    models: Sequence[DefaultModel] = DEFAULT_MODELS,
    recipe: DefaultsRecipe = DefaultsRecipe(),
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[PublishedModel]:
    """Build and publish every model in ``models`` (each as its next version), then rewrite the
    README for every default model present in ``models_dir`` (not only the ones just built)."""
    published = []
    for model in models:
        result = build_model(build_request(model, recipe, models_dir, progress))
        published.append(result.published)
        log(
            f"published {result.published.name} v{result.published.version} "
            f"(val accuracy {result.published.card.val_accuracy:.4f})"
        )
        if model.int8:
            int8 = quantize_build(
                result, models_dir, min_agreement=MIN_INT8_AGREEMENT, seed=recipe.seed
            )
            published.append(int8.published)
            log(
                f"published {int8.published.name} v{int8.published.version} "
                f"(top-1 agreement {int8.top1_agreement:.4f})"
            )
    write_models_readme(models_dir, present_names(models_dir, DEFAULT_MODELS, recipe))
    return published


def default_names(models: Sequence[DefaultModel], recipe: DefaultsRecipe) -> list[str]:
    """Every name the set publishes, fp32 then its int8 variant."""
    names = []
    for model in models:
        names.append(model.name(recipe))
        if model.int8:
            names.append(int8_name(model.name(recipe)))
    return names


def present_names(
    models_dir: Path, models: Sequence[DefaultModel], recipe: DefaultsRecipe
) -> list[str]:
    """The default names that have at least one version in ``models_dir``."""
    return [n for n in default_names(models, recipe) if existing_versions(models_dir, n)]


@dataclass(frozen=True)
class RepositoryEntry:
    name: str
    version: int
    card: ModelCard
    size: int
    sha256: str
    path: Path = field(repr=False)


def read_entry(models_dir: Path, name: str, version: int | None = None) -> RepositoryEntry:
    """The newest (or given) version of ``name``: its card, file size and recorded SHA-256."""
    versions = existing_versions(models_dir, name)
    if not versions:
        raise ExportError(f"{name} is not in {models_dir}")
    chosen = version or versions[-1]
    path = models_dir / name / str(chosen) / MODEL_FILENAME
    proto = onnx.load(str(path), load_external_data=False)
    card = ModelCard.from_metadata({p.key: p.value for p in proto.metadata_props})
    digest = path.with_name(MODEL_FILENAME + DIGEST_SUFFIX).read_text().split()[0]
    return RepositoryEntry(name, chosen, card, path.stat().st_size, digest, path)


def rebuild_command(entry: RepositoryEntry) -> str:
    base = entry.name.removesuffix("-int8")
    return f"python -m export defaults --only {base}"


def render_readme(entries: Sequence[RepositoryEntry]) -> str:
    total = sum(e.size for e in entries)
    lines = [
        "# models/ — the default model repository",
        "",
        "The service serves this directory by default (`make run`); the default model for "
        "`/v1/classify` is `resnet20-relu-digits` (`ACTLAB_DEFAULT_MODEL` chooses another). "
        "Layout: `<name>/<version>/model.onnx` with "
        "`model.onnx.sha256` beside it; the model card (architecture, activation, labels, "
        "preprocessing, accuracy, the exact build command, versions) is inside each ONNX file's "
        "metadata.",
        "",
        "Rebuild the whole set with `make models` (= `python -m export defaults`); each model is "
        "published as its next version, never overwriting one. `python -m export defaults "
        "--only NAME` rebuilds one (with its int8 variant, if it has one). This file is "
        "generated from the files themselves (`python -m export defaults --readme-only`).",
        "",
        "| model | version | activation | val accuracy | int8 agreement | size | sha256 |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        acc = f"{e.card.val_accuracy:.2%}" if e.card.val_accuracy is not None else "—"
        agree = f"{e.card.top1_agreement:.2%}" if e.card.top1_agreement is not None else "—"
        lines.append(
            f"| `{e.name}` | {e.version} | {e.card.activation} | {acc} | {agree} "
            f"| {e.size / 1000:.1f} kB | `{e.sha256}` |"
        )
    lines += [
        "",
        f"Total: {total / 1e6:.2f} MB (budget {SIZE_BUDGET_BYTES / 1e6:.0f} MB).",
        "",
        "## How each model was built",
        "",
    ]
    for e in entries:
        lines += [
            f"### {e.name} (version {e.version})",
            "",
            f"- rebuild: `{rebuild_command(e)}`",
            f"- equivalent command (recorded in its card): `{e.card.command}`",
        ]
        if e.card.quantization != "none":
            lines.append(
                f"- {e.card.quantization} variant of `{e.card.source_model}`, top-1 "
                f"agreement {e.card.top1_agreement:.2%} on the validation split"
            )
        lines += [
            f"- {e.card.architecture}, {e.card.parameters:,} parameters, input "
            f"{e.card.input_size[0]}×{e.card.input_size[1]}, {e.card.epochs} epochs in "
            f"{e.card.train_seconds:.0f} s, seed {e.card.seed}, dataset {e.card.dataset} "
            f"(split {e.card.split}), torch {e.card.torch_version}, opset {e.card.opset}",
            "",
        ]
    return "\n".join(lines)


def write_models_readme(models_dir: Path, names: Sequence[str]) -> Path:
    """Write models/README.md for the newest version of each of ``names`` (atomically)."""
    if not models_dir.is_dir():
        raise ExportError(f"--models-dir {models_dir} does not exist or is not a directory")
    entries = [read_entry(models_dir, name) for name in names]
    target = models_dir / README_FILE
    tmp = models_dir / f".{README_FILE}.tmp"
    try:
        tmp.write_text(render_readme(entries), encoding="utf-8")
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return target
