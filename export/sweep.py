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
At the end every activation of the sweep is exported again (untrained: latency depends on the graph,
not the weights) and timed round-robin, so that all latencies in a report share one method and
background load affects them all alike; the per-round medians are kept (``latency_rounds.json``)
so the report can compare differences with the measured spread. ``export.sweep_report`` then
writes the report. Each run records the machine it ran on (CPU model, torch's CPU capability, git
commit, date): the instruction set changes trained weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from export.data import ImageDataset, channel_stats, load_dataset, stratified_split
from export.errors import ExportError, Interrupted, TrainingError
from export.pipeline import export_verified
from export.resnet import ARCHITECTURES, build_resnet, count_parameters
from export.train import Normalisation, TrainConfig, train_model
from service.activations import NETWORK_ACTIVATIONS, CatalogueError, get_network_activation
from service.modelcard import INPUT_NAME, LOGITS_NAME

RUNS_FILE = "runs.jsonl"
CONFIG_FILE = "sweep.json"
LATENCY_FILE = "latency.json"
LATENCY_ROUNDS_FILE = "latency_rounds.json"
"""Per activation, the median latency (ms) of each round-robin round: the measured spread."""
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
    canonical = []
    for name in names:
        try:
            canonical.append(get_network_activation(name).name)
        except CatalogueError as exc:
            # The catalogue's message lists every activation, softmax included; a sweep takes
            # only hidden-layer ones.
            raise ExportError(
                f"unknown or unusable activation {name!r} for a sweep; choose 'all' or any of: "
                + ", ".join(NETWORK_ACTIVATIONS)
            ) from exc
    return tuple(dict.fromkeys(canonical))


def describe_machine() -> dict[str, str]:
    """CPU model, torch's CPU capability (instruction set), git commit and date (UTC)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "software": f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}",
        "git_commit": commit or "unknown",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


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
    machine: dict[str, str] = field(default_factory=dict)
    """Where the run was trained (``describe_machine``); empty for runs recorded before."""
    train_loss: list[float] = field(default_factory=list)
    """Mean training loss of each epoch (empty for runs recorded before it was kept)."""
    val_loss: list[float] = field(default_factory=list)
    """Validation loss after each epoch."""

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
    train_loss: list[float] = []
    val_loss: list[float] = []
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
        train_loss = [s.train_loss for s in result.history]
        val_loss = [s.val_loss for s in result.history]
    except TrainingError as exc:
        if model.activation.trainable:
            return RunResult(
                activation, seed, "failed", parameters=parameters, message=str(exc)
            ), None
        status, message = NOT_TRAINABLE, str(exc)
    model.eval()
    trained = RunResult(
        activation,
        seed,
        status,
        history,
        seconds,
        parameters,
        message=message,
        train_loss=train_loss,
        val_loss=val_loss,
    )
    if not export:
        return trained, None
    parity = [data.norm(data.val[0][:64]), data.norm(data.val[0][64:65])]
    try:
        graph = export_verified(model, data.dataset.input_size, parity)
    except ExportError as exc:
        return dataclasses.replace(trained, status="failed", message=f"export failed: {exc}"), None
    model_bytes = graph.proto.SerializeToString()
    latency = measure_latency_ms(model_bytes, data.dataset.input_size, config.latency_runs)
    return dataclasses.replace(trained, latency_ms=latency), model_bytes


def load_runs(out: Path) -> list[RunResult]:
    """The runs in ``out/runs.jsonl``. A truncated last line (the sweep was killed while writing
    it) is dropped with a warning; a bad line anywhere else is an error naming file and line."""
    path = out / RUNS_FILE
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    runs = []
    for number, line in enumerate(lines, start=1):
        if not line:
            continue
        try:
            runs.append(RunResult(**json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines) and not text.endswith("\n"):
                warnings.warn(
                    f"{path}: dropped the unfinished last line {number} (the sweep was stopped "
                    "while writing it); that run will be trained again",
                    stacklevel=2,
                )
                continue
            raise ExportError(f"{path}, line {number}: not a sweep run ({exc})") from exc
    return runs


def _repair_runs(out: Path, runs: Sequence[RunResult]) -> None:
    """Rewrite ``runs.jsonl`` without an unfinished last line, so new runs append cleanly."""
    path = out / RUNS_FILE
    if path.is_file() and (text := path.read_text(encoding="utf-8")) and not text.endswith("\n"):
        _write_atomic(path, "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in runs))


def _append_run(out: Path, run: RunResult) -> None:
    with open(out / RUNS_FILE, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(dataclasses.asdict(run)) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:  # not writable, a directory in the way, disk full, …
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc


_NOT_RECIPE = ("activations", "seeds", "latency_runs")
"""Settings that may change when a sweep is resumed: they do not change any run's numbers.
``threads`` is part of the recipe: the thread count changes the trained weights."""


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
    path = out / CONFIG_FILE
    if not path.is_file() and any(out.iterdir()):
        raise ExportError(
            f"{out} is not empty and holds no sweep ({path.name}); choose a new or empty "
            "--out directory, or the directory of an earlier sweep to resume it"
        )
    check_recipe(out, config)
    _write_atomic(path, json.dumps(dataclasses.asdict(config), indent=2) + "\n")


def check_recipe(out: Path, config: SweepConfig) -> None:
    """Refuse ``config`` if ``out`` holds a sweep with another recipe, naming what differs."""
    recipe = _recipe(dataclasses.asdict(config))
    path = out / CONFIG_FILE
    if path.is_file():
        try:
            stored = _recipe(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as exc:
            raise ExportError(f"{path} is not a sweep configuration ({exc})") from exc
        if stored != recipe:
            changed = "; ".join(
                f"{key}: {stored.get(key)!r} there, {recipe.get(key)!r} now"
                for key in sorted(set(stored) | set(recipe))
                if stored.get(key) != recipe.get(key)
            )
            raise ExportError(
                f"{out} holds a sweep with a different recipe ({path.name}: {changed}); "
                "rerun with its settings to resume it, or choose another --out directory"
            )


def remeasure_latency(
    exported: dict[str, bytes], input_size: tuple[int, int], runs: int, rounds: int = 5
) -> dict[str, list[float]]:
    """Per activation, the median latency (ms) of each of ``rounds`` round-robin passes.

    The median of the list is the reported latency; its range is the measured run-to-run spread.
    """
    samples: dict[str, list[float]] = {name: [] for name in exported}
    for _ in range(rounds):
        for name, model_bytes in exported.items():
            samples[name].append(
                measure_latency_ms(model_bytes, input_size, max(1, runs // rounds))
            )
    return samples


def _export_untrained(
    config: SweepConfig, data: SweepData, say: Callable[[str], None]
) -> dict[str, bytes]:
    """Every activation of ``config`` built untrained (seed 0) and exported (checked)."""
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
    return exported


def run_sweep(
    config: SweepConfig, out: Path, *, log: Callable[[str], None] | None = None
) -> list[RunResult]:
    """Run every (seed, activation) not yet in ``out/runs.jsonl``; returns all runs."""
    config.validate()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    data = prepare_data(config)  # a bad --dataset fails before anything is written
    _start(out, config)
    torch.set_num_threads(config.threads)
    runs = load_runs(out)
    _repair_runs(out, runs)
    done = {(r.activation, r.seed) for r in runs}
    machine = describe_machine()
    plan = [(a, s) for s in range(config.seeds) for a in config.activations]
    try:
        _train_plan(config, data, out, plan, done, machine, say)
        # One method for every latency in the report, whether or not the sweep was resumed.
        exported = _export_untrained(config, data, say)
        if exported:
            _record_latency(
                out, remeasure_latency(exported, data.dataset.input_size, config.latency_runs)
            )
    except KeyboardInterrupt as exc:
        saved = len(load_runs(out)) if (out / RUNS_FILE).is_file() else 0
        raise Interrupted(
            f"{saved} runs are saved in {out / RUNS_FILE}; rerun the same command to resume"
        ) from exc
    return load_runs(out)


def _train_plan(
    config: SweepConfig,
    data: SweepData,
    out: Path,
    plan: Sequence[tuple[str, int]],
    done: set[tuple[str, int]],
    machine: dict[str, str],
    say: Callable[[str], None],
) -> None:
    for index, (activation, seed) in enumerate(plan, start=1):
        if (activation, seed) in done:
            continue
        started = time.perf_counter()
        run, _ = run_one(config, data, activation, seed, export=seed == 0)
        run = dataclasses.replace(run, machine=machine)
        _append_run(out, run)
        final = f"{run.val_accuracy[-1]:.4f}" if run.val_accuracy else "-"
        failure = f" — {run.message}" if run.status == "failed" else ""
        timing = f"{run.latency_ms:.3f} ms/image, " if run.latency_ms is not None else ""
        say(
            f"[{index}/{len(plan)}] {activation} seed {seed}: {run.status}, val acc {final}, "
            f"{timing}"
            f"{time.perf_counter() - started:.0f}s{failure}"
        )


def _record_latency(out: Path, rounds: dict[str, list[float]]) -> None:
    """Merge medians into ``latency.json`` and the per-round samples into its sibling."""
    for name, values in (
        (LATENCY_FILE, {k: round(statistics.median(v), 5) for k, v in rounds.items()}),
        (LATENCY_ROUNDS_FILE, {k: [round(ms, 5) for ms in v] for k, v in rounds.items()}),
    ):
        path = out / name
        merged = json.loads(path.read_text()) if path.is_file() else {}
        merged.update(values)
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
    data = prepare_data(config)
    _start(out, config)
    torch.set_num_threads(config.threads)
    exported = _export_untrained(config, data, say)
    _record_latency(out, remeasure_latency(exported, data.dataset.input_size, config.latency_runs))
    say(f"re-timed {len(exported)} activations")
    return load_runs(out)


def selected(runs: Sequence[RunResult], config: SweepConfig) -> list[RunResult]:
    """The runs that belong to ``config`` (its activations and seeds)."""
    wanted = set(config.activations)
    return [r for r in runs if r.activation in wanted and r.seed < config.seeds]
