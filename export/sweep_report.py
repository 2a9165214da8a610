"""The sweep report: a Markdown table, the theory's predictions checked, and two PNG plots.

``summarise`` turns runs into one row per activation (mean ± sample std and min–max of the final
validation accuracy over seeds, epochs to reach 90 %, parameters, latency and its measured spread);
``write_report`` writes ``README.md``, ``accuracy_per_epoch.png`` and ``latency.png`` into the
sweep directory. With 2–3 seeds a difference is only reported as one when the ranges do not
overlap; a latency difference smaller than the measured run-to-run spread is "within noise".
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

from export.sweep import (
    LATENCY_FILE,
    LATENCY_ROUNDS_FILE,
    NOT_TRAINABLE,
    RunResult,
    SweepConfig,
)
from export.train import TrainConfig

REPORT_FILE = "README.md"
DISCUSSION_FILE = "discussion.md"
"""Optional hand-written notes in the sweep directory, included in the report under Discussion."""
ACCURACY_PLOT = "accuracy_per_epoch.png"
LATENCY_PLOT = "latency.png"
THRESHOLD = 0.90
FAR_WORSE_POINTS = 0.05
"""'Far worse': at least 5 accuracy points below the median of the other activations."""


@dataclass(frozen=True)
class Summary:
    activation: str
    status: str
    """'ok' (≥ 1 trained run), 'not trainable' or 'failed'."""
    seeds: int
    accuracy_mean: float | None
    accuracy_std: float | None
    curve: list[float]
    """Mean validation accuracy per epoch over the seeds."""
    epochs_to_90: float | None
    """Mean over the seeds that reached 90 %; None if none did."""
    reached_90: int
    parameters: int
    latency_ms: float | None
    message: str = ""
    accuracy_min: float | None = None
    accuracy_max: float | None = None
    latency_spread: float | None = None
    """Max − min of the per-round latency medians (ms); None if the rounds were not kept."""


def summarise(
    runs: Sequence[RunResult],
    latency: dict[str, float] | None = None,
    rounds: dict[str, list[float]] | None = None,
) -> list[Summary]:
    """One summary per activation, in first-seen order of ``runs``; ``rounds`` holds the
    per-round latency medians, whose range is the spread."""
    latency = latency or {}
    rounds = rounds or {}
    by_activation: dict[str, list[RunResult]] = {}
    for run in runs:
        by_activation.setdefault(run.activation, []).append(run)
    result = []
    for name, group in by_activation.items():
        # A run whose training finished counts for accuracy even if its export then failed.
        trained = [r for r in group if r.status in ("ok", "failed") and r.val_accuracy]
        timed = [r.latency_ms for r in group if r.latency_ms is not None]
        lat = latency.get(name, statistics.median(timed) if timed else None)
        samples = rounds.get(name) or []
        spread = max(samples) - min(samples) if len(samples) > 1 else None
        params = max(r.parameters for r in group)
        if not trained:
            status = NOT_TRAINABLE if any(r.status == NOT_TRAINABLE for r in group) else "failed"
            message = next((r.message for r in group if r.message), "")
            result.append(
                Summary(
                    name,
                    status,
                    len(group),
                    None,
                    None,
                    [],
                    None,
                    0,
                    params,
                    lat,
                    message,
                    latency_spread=spread,
                )
            )
            continue
        finals = [r.val_accuracy[-1] for r in trained]
        epochs = min(len(r.val_accuracy) for r in trained)
        curve = [statistics.fmean(r.val_accuracy[i] for r in trained) for i in range(epochs)]
        reached = [e for r in trained if (e := r.epochs_to(THRESHOLD)) is not None]
        result.append(
            Summary(
                name,
                "ok",
                len(trained),
                statistics.fmean(finals),
                statistics.stdev(finals) if len(finals) > 1 else 0.0,
                curve,
                statistics.fmean(reached) if reached else None,
                len(reached),
                params,
                lat,
                "; ".join(f"seed {r.seed}: {r.message}" for r in group if r.status == "failed"),
                min(finals),
                max(finals),
                spread,
            )
        )
    return result


@dataclass(frozen=True)
class Prediction:
    claim: str
    held: bool | None
    """None: not enough data to say."""
    evidence: str
    within_noise: bool = False
    """The measured difference is smaller than the measured run-to-run spread."""


SPEED_RULE = (
    "Training speed is ranked by the share of seeds that reached 90 % (more is faster), then by "
    "the mean epochs to 90 % over those seeds, then by the mean accuracy over the epochs."
)


def _speed_key(s: Summary) -> tuple[float, float, float]:
    """Slower training sorts later: see ``SPEED_RULE`` (a mean over the few seeds that reached
    90 % must not beat an activation whose every seed did)."""
    return (
        -(s.reached_90 / s.seeds) if s.seeds else 0.0,
        s.epochs_to_90 if s.epochs_to_90 is not None else math.inf,
        -_curve_mean(s),
    )


def _curve_mean(s: Summary) -> float:
    return statistics.fmean(s.curve) if s.curve else 0.0


def check_predictions(summaries: Sequence[Summary]) -> list[Prediction]:
    trained = {s.activation: s for s in summaries if s.status == "ok"}
    timed = sorted(
        (s for s in summaries if s.latency_ms is not None), key=lambda s: s.latency_ms or 0
    )
    out = []
    identity, others = trained.get("identity"), [s for n, s in trained.items() if n != "identity"]
    if identity is not None and others and identity.accuracy_mean is not None:
        median = statistics.median(s.accuracy_mean or 0.0 for s in others)
        gap = median - identity.accuracy_mean
        out.append(
            Prediction(
                "identity collapses to a linear model and does far worse",
                gap >= FAR_WORSE_POINTS,
                f"identity {identity.accuracy_mean:.2%} vs median of the others {median:.2%} "
                f"({gap * 100:+.1f} points; 'far worse' means ≥ {FAR_WORSE_POINTS * 100:.0f})",
            )
        )
    else:
        out.append(Prediction("identity does far worse", None, "identity was not trained"))
    sigmoid = trained.get("sigmoid")
    nonlinear = [s for n, s in trained.items() if n != "identity"]
    if sigmoid is not None and len(nonlinear) > 1:
        ranking = sorted(nonlinear, key=_speed_key, reverse=True)
        rank = [s.activation for s in ranking].index("sigmoid") + 1
        slowest = ranking[0]
        out.append(
            Prediction(
                "sigmoid trains slowest",
                rank == 1,
                f"sigmoid is #{rank} slowest of {len(ranking)} nonlinear activations "
                f"(epochs to 90 %: {_fmt_epochs(sigmoid)}, "
                f"mean accuracy over the epochs {_curve_mean(sigmoid):.2%}); "
                f"slowest: {slowest.activation} ({_fmt_epochs(slowest)}, mean "
                f"{_curve_mean(slowest):.2%})",
            )
        )
    else:
        out.append(Prediction("sigmoid trains slowest", None, "sigmoid was not trained"))
    names = [s.activation for s in timed]
    if "relu" in names and len(names) > 1:
        rank = names.index("relu") + 1
        cutoff = max(1, math.ceil(len(names) / 3))
        fastest = timed[0]
        relu = timed[rank - 1]
        held = rank <= cutoff
        # The activation on the other side of the fastest-third line from relu.
        edge = (timed[cutoff] if cutoff < len(timed) else None) if held else timed[cutoff - 1]
        noise = "; the run-to-run spread was not recorded, so noise cannot be judged"
        within = False
        if edge is not None and relu.latency_spread is not None and edge.latency_spread is not None:
            gap = abs((relu.latency_ms or 0.0) - (edge.latency_ms or 0.0))
            spread = max(relu.latency_spread, edge.latency_spread)
            within = gap < spread
            noise = (
                f"; relu and {edge.activation} differ by {gap:.4f} ms, "
                f"{'less' if within else 'more'} than the measured run-to-run spread "
                f"{spread:.4f} ms"
            )
        out.append(
            Prediction(
                "ReLU is among the cheapest to run",
                held,
                f"relu is #{rank} of {len(names)} by latency ({relu.latency_ms:.4f} ms vs fastest "
                f"{fastest.activation} {fastest.latency_ms:.4f} ms); 'among the cheapest' means "
                f"the fastest third (#1–#{cutoff}){noise}",
                within,
            )
        )
    else:
        out.append(Prediction("ReLU is among the cheapest", None, "relu was not timed"))
    return out


def _fmt_epochs(s: Summary) -> str:
    if s.epochs_to_90 is None:
        return "never"
    suffix = "" if s.reached_90 == s.seeds else f" ({s.reached_90}/{s.seeds} seeds)"
    return f"{s.epochs_to_90:.1f}{suffix}"


def _versus_best(s: Summary, best: Summary | None) -> str:
    """'best', 'within noise of the best' (the min–max ranges overlap) or ''."""
    if best is None or s.accuracy_max is None or best.accuracy_min is None:
        return ""
    if s is best:
        return "best"
    return "within noise of the best" if s.accuracy_max >= best.accuracy_min else ""


def markdown_table(summaries: Sequence[Summary]) -> str:
    rows = sorted(summaries, key=lambda s: (s.accuracy_mean is None, -(s.accuracy_mean or 0.0)))
    best = rows[0] if rows and rows[0].accuracy_mean is not None else None
    lines = [
        "| activation | val accuracy (mean ± std) | min–max over seeds | vs best | seeds "
        "| epochs to 90 % | parameters | latency ms/image |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in rows:
        acc = (
            f"{s.accuracy_mean:.2%} ± {s.accuracy_std:.2%}"
            if s.accuracy_mean is not None
            else s.status
        )
        span = (
            f"{s.accuracy_min:.2%}–{s.accuracy_max:.2%}"
            if s.accuracy_min is not None and s.accuracy_max is not None
            else "—"
        )
        epochs = _fmt_epochs(s) if s.status == "ok" else "—"
        latency = f"{s.latency_ms:.4f}" if s.latency_ms is not None else "—"
        lines.append(
            f"| {s.activation} | {acc} | {span} | {_versus_best(s, best)} | {s.seeds} | {epochs} "
            f"| {s.parameters:,} | {latency} |"
        )
    return "\n".join(lines)


_HIGHLIGHT = {"relu": "black", "identity": "tab:red", "sigmoid": "tab:blue"}


def plot_accuracy(summaries: Sequence[Summary], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 6), dpi=110)
    cmap = plt.get_cmap("tab20")
    for i, s in enumerate(s for s in summaries if s.curve):
        epochs = range(1, len(s.curve) + 1)
        bold = s.activation in _HIGHLIGHT
        ax.plot(
            epochs,
            [100 * a for a in s.curve],
            marker="o",
            markersize=3,
            linewidth=2.8 if bold else 1.1,
            color=_HIGHLIGHT.get(s.activation, cmap(i % 20)),
            label=s.activation,
            zorder=3 if bold else 2,
        )
    ax.axhline(100 * THRESHOLD, color="grey", linestyle="--", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%), mean over seeds")
    ax.set_title("Validation accuracy per epoch per activation")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_latency(summaries: Sequence[Summary], path: Path) -> None:
    timed = sorted(
        (s for s in summaries if s.latency_ms is not None), key=lambda s: s.latency_ms or 0.0
    )
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(timed) + 1.5), dpi=110)
    colours = [_HIGHLIGHT.get(s.activation, "tab:grey") for s in timed]
    values = [1000 * (s.latency_ms or 0.0) for s in timed]
    ax.barh([s.activation for s in timed], values, color=colours)
    for y, value in enumerate(values):
        ax.text(value, y, f" {value:.0f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("onnxruntime latency per image (µs, batch 1, one thread, median)")
    ax.set_title("Inference cost per activation")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


_SCHEDULES = {"onecycle": "one-cycle"}


def recipe_text(config: SweepConfig) -> str:
    """The recipe as trained: the sweep's settings plus ``TrainConfig``'s defaults it keeps."""
    train = TrainConfig()
    width = f", width {config.width}" if config.width else ""
    shift = max(1, config.image_size // 8)  # export.train._augment: ± input/8 px, at least 1
    return (
        f"{config.arch}{width}, {config.image_size}×{config.image_size} input, "
        f"{config.epochs} epochs, batch {config.batch_size}, SGD (Nesterov, momentum "
        f"{train.momentum}) with weight decay {train.weight_decay:g} (not on BatchNorm, biases "
        f"or PReLU slopes), {_SCHEDULES.get(train.schedule, train.schedule)} lr {config.lr}, "
        f"label smoothing {train.label_smoothing:g}, augmentation: random translations of "
        f"± {shift} px "
        "(zero padding) and horizontal flips where the dataset allows them; init: Kaiming-normal "
        "(fan_out) convolutions, BatchNorm weight 1 and bias 0, PyTorch's default for the "
        f"classifier; stratified {1 - config.val_fraction:.0%}/{config.val_fraction:.0%} "
        f"train/val split (split seed {config.split_seed}), seeds 0…{config.seeds - 1}, "
        f"{config.threads} torch thread(s)"
    )


def _machines_text(machines: Sequence[dict[str, str]]) -> str:
    distinct = {tuple(sorted(m.items())) for m in machines if m}
    if not distinct:
        return "The runs did not record the machine they were trained on."
    described = sorted(
        f"{d.get('cpu', '?')} (torch CPU capability {d.get('cpu_capability', '?')}, "
        f"{d.get('software', '?')}, git commit {d.get('git_commit', '?')}, {d.get('date', '?')})"
        for d in (dict(t) for t in distinct)
    )
    return "Runs trained on: " + "; ".join(described) + "."


def render_markdown(
    config: SweepConfig,
    summaries: Sequence[Summary],
    command: str,
    environment: str = "",
    discussion: str = "",
    machines: Sequence[dict[str, str]] = (),
) -> str:
    predictions = check_predictions(summaries)
    verdict = {True: "held", False: "did NOT hold", None: "not tested"}
    lines = [
        f"# Activation sweep: {config.arch} on {config.dataset}",
        "",
        f"Command: `{command}`",
        "",
        f"Recipe: {recipe_text(config)}. "
        "Accuracy is the validation accuracy after the last epoch; latency is the median "
        "onnxruntime time for one image on one thread, measured on the exported ONNX file.",
        "",
        "How to read the table: with a few seeds a mean ± std says little, so the min–max over "
        "seeds is shown too, and a row whose range overlaps the best row's is marked \"within "
        'noise of the best": it is not measurably worse. Epochs to 90 % is the mean over the '
        f"seeds that reached 90 % (their count is shown when not all did). {SPEED_RULE}",
        "",
        markdown_table(summaries),
        "",
        "## What theory predicts, as measured",
        "",
        *[
            f"- **{p.claim}**: "
            f"{'within noise' if p.within_noise else verdict[p.held]} — {p.evidence}"
            for p in predictions
        ],
        "",
        f"![accuracy per epoch]({ACCURACY_PLOT})",
        "",
        f"![latency per activation]({LATENCY_PLOT})",
    ]
    problems = [s for s in summaries if s.message]
    if problems:
        lines += ["", "## Not trained or not exported", ""]
        lines += [f"- **{s.activation}** ({s.status}): {s.message}" for s in problems]
    if discussion.strip():
        lines += ["", "## Discussion", "", discussion.strip()]
    lines += [
        "",
        "## Environment",
        "",
        *([environment, ""] if environment else []),
        _machines_text(machines),
        "Results may differ on another CPU, the ReLU family's especially: torch picks its CPU "
        "kernels by instruction set (torch's CPU capability), which changes rounding and so "
        "the trained weights (the same command has moved one relu seed's accuracy by 2.5 "
        "points between two CPUs).",
    ]
    return "\n".join(lines) + "\n"


def write_report(
    out: Path, config: SweepConfig, runs: Sequence[RunResult], command: str, environment: str = ""
) -> list[Summary]:
    """Write README.md and the two plots into ``out``; returns the summaries."""
    latency_path = out / LATENCY_FILE
    latency = json.loads(latency_path.read_text()) if latency_path.is_file() else {}
    latency = {k: v for k, v in latency.items() if k in config.activations}
    rounds_path = out / LATENCY_ROUNDS_FILE
    rounds = json.loads(rounds_path.read_text()) if rounds_path.is_file() else {}
    summaries = summarise(runs, latency, rounds)
    plot_accuracy(summaries, out / ACCURACY_PLOT)
    plot_latency(summaries, out / LATENCY_PLOT)
    notes = out / DISCUSSION_FILE
    discussion = notes.read_text(encoding="utf-8") if notes.is_file() else ""
    machines = [r.machine for r in runs]
    text = render_markdown(config, summaries, command, environment, discussion, machines)
    tmp = out / f".{REPORT_FILE}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out / REPORT_FILE)
    return summaries
