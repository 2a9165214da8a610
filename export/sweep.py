"""Activation sweep: the same recipe for every catalogue activation over several seeds.

Each run builds the architecture with one activation and trains it with a fixed recipe and seed on
one shared stratified split. The first seed's model of every activation is exported
(``onnx.checker`` + onnxruntime-vs-torch parity on validation images) and its graph timed in
onnxruntime (batch 1, one thread, median of many runs); other seeds differ only in weights, so they
are trained but not exported again.
An activation that cannot be trained (``binary_step``) is still exported and timed and is reported
as "not trainable". A failing run is recorded with its message; the sweep goes on.

Every finished run is appended to ``<out>/runs.jsonl`` at once, so an interrupted sweep resumes
where it stopped (runs are ordered seed by seed, so a partial sweep covers every activation).
At the end the latency of every activation exported in this process is measured again, round-robin,
so that background load affects them all alike; ``export.sweep_report`` then writes the report.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.data import ImageDataset, channel_stats, load_dataset, stratified_split
from export.errors import ExportError, TrainingError
from export.pipeline import export_verified
from export.resnet import ARCHITECTURES, build_resnet, count_parameters
from export.train import Normalisation, TrainConfig, train_model
from service.activations import NETWORK_ACTIVATIONS, get_network_activation
from service.modelcard import INPUT_NAME, LOGITS_NAME

RUNS_FILE = "runs.jsonl"
CONFIG_FILE = "sweep.json"
LATENCY_FILE = "latency.json"
NOT_TRAINABLE = "not trainable"


@dataclass(frozen=True)
class SweepConfig:
    arch: str = "resnet20"
    dataset: str = "digits"
    activations: tuple[str, ...] = NETWORK_ACTIVATIONS
    seeds: int = 3
    epochs: int = 6
    image_size: int = 16
    width: int | None = None
    batch_size: int = 128
    lr: float = 0.1
    val_fraction: float = 0.2
    split_seed: int = 0
    latency_runs: int = 200
    threads: int = 1

    def validate(self) -> None:
        problems = []
        if self.arch not in ARCHITECTURES:
            problems.append(
                f"unknown architecture {self.arch!r}; choose one of: " + ", ".join(ARCHITECTURES)
            )
        if not self.activations:
            problems.append("no activations chosen")
        if self.seeds < 1:
            problems.append(f"seeds must be ≥ 1, got {self.seeds}")
        if self.epochs < 1:
            problems.append(f"a sweep needs at least 1 epoch, got {self.epochs}")
        if self.image_size < 8:
            problems.append(f"image size must be ≥ 8 pixels, got {self.image_size}")
        if self.latency_runs < 1:
            problems.append(f"latency runs must be ≥ 1, got {self.latency_runs}")
        if problems:
            raise ExportError("; ".join(problems))


def resolve_activations(spec: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list (aliases and any case allowed) → canonical names."""
    if spec.strip().lower() == "all":
        return NETWORK_ACTIVATIONS
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise ExportError("--activations needs 'all' or a comma-separated list of names")
    canonical = [get_network_activation(name).name for name in names]
    return tuple(dict.fromkeys(canonical))


@dataclass(frozen=True)
class RunResult:
    activation: str
    seed: int
    status: str
    """'ok', 'not trainable' or 'failed'."""
    val_accuracy: list[float] = field(default_factory=list)
    """Validation accuracy after each epoch."""
    train_seconds: float = 0.0
    parameters: int = 0
    latency_ms: float | None = None
    """Median onnxruntime latency per image (batch 1, one thread) right after export."""
    message: str = ""

    def epochs_to(self, threshold: float) -> int | None:
        """First epoch whose validation accuracy reaches ``threshold`` (None if never)."""
        return next((i + 1 for i, acc in enumerate(self.val_accuracy) if acc >= threshold), None)


def measure_latency_ms(model_bytes: bytes, input_size: tuple[int, int], runs: int) -> float:
    """Median wall time (ms) of one single-image onnxruntime run, one intra-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal((1, 3, *input_size)).astype(np.float32)
    for _ in range(max(3, runs // 10)):
        session.run([LOGITS_NAME], {INPUT_NAME: image})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run([LOGITS_NAME], {INPUT_NAME: image})
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


@dataclass(frozen=True)
class SweepData:
    dataset: ImageDataset
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    norm: Normalisation


def prepare_data(config: SweepConfig) -> SweepData:
    dataset = load_dataset(config.dataset, image_size=config.image_size, seed=config.split_seed)
    split = stratified_split(dataset.targets, config.val_fraction, config.split_seed)
    mean, std = channel_stats(dataset.images[split.train])
    return SweepData(
        dataset,
        (dataset.images[split.train], dataset.targets[split.train]),
        (dataset.images[split.val], dataset.targets[split.val]),
        Normalisation(mean, std),
    )


def run_one(
    config: SweepConfig, data: SweepData, activation: str, seed: int, *, export: bool = True
) -> tuple[RunResult, bytes | None]:
    """Train, export and time one (activation, seed); returns the result and the ONNX bytes.

    With ``export=False`` the run is only trained (its latency would repeat the first seed's:
    the graph is the same, only the weights differ).
    """
    model = build_resnet(
        config.arch, activation, num_classes=len(data.dataset.labels), width=config.width, seed=seed
    )
    parameters = count_parameters(model)
    train_config = TrainConfig(
        epochs=config.epochs, batch_size=config.batch_size, lr=config.lr, seed=seed
    )
    status, message, history, seconds = "ok", "", [], 0.0
    try:
        result = train_model(
            model,
            data.train,
            data.val,
            data.norm,
            train_config,
            flips=data.dataset.flips,
            progress=False,
        )
        history, seconds = [s.val_accuracy for s in result.history], result.seconds
    except TrainingError as exc:
        if model.activation.trainable:
            return RunResult(
                activation, seed, "failed", parameters=parameters, message=str(exc)
            ), None
        status, message = NOT_TRAINABLE, str(exc)
    model.eval()
    if not export:
        return RunResult(
            activation, seed, status, history, seconds, parameters, message=message
        ), None
    parity = [data.norm(data.val[0][:64]), data.norm(data.val[0][64:65])]
    try:
        graph = export_verified(model, data.dataset.input_size, parity)
    except ExportError as exc:
        return RunResult(
            activation,
            seed,
            "failed",
            history,
            seconds,
            parameters,
            message=f"export failed: {exc}",
        ), None
    model_bytes = graph.proto.SerializeToString()
    latency = measure_latency_ms(model_bytes, data.dataset.input_size, config.latency_runs)
    return RunResult(
        activation, seed, status, history, seconds, parameters, latency, message
    ), model_bytes


def load_runs(out: Path) -> list[RunResult]:
    path = out / RUNS_FILE
    if not path.is_file():
        return []
    return [RunResult(**json.loads(line)) for line in path.read_text().splitlines() if line]


def _append_run(out: Path, run: RunResult) -> None:
    with open(out / RUNS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(dataclasses.asdict(run)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_NOT_RECIPE = ("activations", "seeds", "latency_runs", "threads")
"""Settings that may change when a sweep is resumed: they do not change any run's numbers."""


def _recipe(settings: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in settings.items() if k not in _NOT_RECIPE}


def _start(out: Path, config: SweepConfig) -> None:
    """Create ``out``; a resumed sweep must have the same recipe (else the numbers would mix)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, a read-only parent, …
        raise ExportError(
            f"cannot create the --out directory {out}: {exc.strerror or exc}"
        ) from exc
    recipe = _recipe(dataclasses.asdict(config))
    path = out / CONFIG_FILE
    if path.is_file() and _recipe(json.loads(path.read_text())) != recipe:
        raise ExportError(
            f"{out} holds a sweep with a different recipe ({path.name}); "
            "choose another --out directory"
        )
    _write_atomic(path, json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def remeasure_latency(
    exported: dict[str, bytes], input_size: tuple[int, int], runs: int, rounds: int = 5
) -> dict[str, float]:
    """Median latency (ms) per activation, measured round-robin in ``rounds`` passes."""
    samples: dict[str, list[float]] = {name: [] for name in exported}
    for _ in range(rounds):
        for name, model_bytes in exported.items():
            samples[name].append(
                measure_latency_ms(model_bytes, input_size, max(1, runs // rounds))
            )
    return {name: statistics.median(values) for name, values in samples.items()}


def run_sweep(
    config: SweepConfig, out: Path, *, log: Callable[[str], None] | None = None
) -> list[RunResult]:
    """Run every (seed, activation) not yet in ``out/runs.jsonl``; returns all runs."""
    config.validate()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    _start(out, config)
    torch.set_num_threads(config.threads)
    done = {(r.activation, r.seed) for r in load_runs(out)}
    data = prepare_data(config)
    exported: dict[str, bytes] = {}
    plan = [(a, s) for s in range(config.seeds) for a in config.activations]
    for index, (activation, seed) in enumerate(plan, start=1):
        if (activation, seed) in done:
            continue
        started = time.perf_counter()
        run, model_bytes = run_one(config, data, activation, seed, export=seed == 0)
        _append_run(out, run)
        if model_bytes is not None and activation not in exported:
            exported[activation] = model_bytes
        final = f"{run.val_accuracy[-1]:.4f}" if run.val_accuracy else "-"
        failure = f" — {run.message}" if run.status == "failed" else ""
        timing = f"{run.latency_ms:.3f} ms/image, " if run.latency_ms is not None else ""
        say(
            f"[{index}/{len(plan)}] {activation} seed {seed}: {run.status}, val acc {final}, "
            f"{timing}"
            f"{time.perf_counter() - started:.0f}s{failure}"
        )
    if exported:
        _record_latency(
            out, remeasure_latency(exported, data.dataset.input_size, config.latency_runs)
        )
    return load_runs(out)


def _record_latency(out: Path, latency: dict[str, float]) -> None:
    path = out / LATENCY_FILE
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update({name: round(ms, 5) for name, ms in latency.items()})
    _write_atomic(path, json.dumps(merged, indent=2, sort_keys=True) + "\n")


def retime_sweep(
    config: SweepConfig, out: Path, *, log: Callable[[str], None] | None = None
) -> list[RunResult]:
    """Re-export every activation of an existing sweep and measure its latency again.

    Latency depends on the graph, not on the weights, so each activation is rebuilt untrained
    (seed 0) and exported through the current exporter (checked, parity included); use this after
    the exporter's ONNX formulations change. Training results are kept as they are.
    """
    config.validate()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    if not (out / CONFIG_FILE).is_file():
        raise ExportError(f"{out} holds no sweep to re-time (no {CONFIG_FILE}); run it first")
    _start(out, config)
    torch.set_num_threads(config.threads)
    data = prepare_data(config)
    exported: dict[str, bytes] = {}
    for activation in config.activations:
        model = build_resnet(
            config.arch,
            activation,
            num_classes=len(data.dataset.labels),
            width=config.width,
            seed=0,
        ).eval()
        parity = [data.norm(data.val[0][:64]), data.norm(data.val[0][64:65])]
        try:
            graph = export_verified(model, data.dataset.input_size, parity)
        except ExportError as exc:
            say(f"{activation}: export failed, latency not measured: {exc}")
            continue
        exported[activation] = graph.proto.SerializeToString()
    _record_latency(out, remeasure_latency(exported, data.dataset.input_size, config.latency_runs))
    say(f"re-timed {len(exported)} activations")
    return load_runs(out)


def selected(runs: Sequence[RunResult], config: SweepConfig) -> list[RunResult]:
    """The runs that belong to ``config`` (its activations and seeds)."""
    wanted = set(config.activations)
    return [r for r in runs if r.activation in wanted and r.seed < config.seeds]
