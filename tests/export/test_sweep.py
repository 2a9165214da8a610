"""The activation sweep: a tiny real sweep through the CLI, and the report's arithmetic."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from export.__main__ import main
from export.resnet import build_resnet, count_parameters
from export.sweep import RunResult, SweepConfig, load_runs, resolve_activations
from export.sweep_report import (
    check_predictions,
    markdown_table,
    render_markdown,
    summarise,
)

TINY_SWEEP = [
    "sweep",
    "--arch",
    "resnet8",
    "--width",
    "4",
    "--image-size",
    "8",
    "--epochs",
    "2",
    "--seeds",
    "2",
    "--activations",
    "relu,Swish,binary_step",
    "--latency-runs",
    "20",
    "--batch-size",
    "64",
    "--lr",
    "0.05",
]
ACTIVATIONS = ("relu", "silu", "binary_step")


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("sweep") / "report"
    threads = torch.get_num_threads()
    try:
        assert main([*TINY_SWEEP, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    yield out


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in ACTIVATIONS:
            rows[cells[0]] = cells
    return rows


def test_runs_are_recorded_for_every_activation_and_seed(sweep_dir: Path) -> None:
    runs = load_runs(sweep_dir)
    assert sorted((r.activation, r.seed) for r in runs) == sorted(
        (a, s) for a in ACTIVATIONS for s in (0, 1)
    )
    for run in runs:
        if run.activation == "binary_step":
            assert run.status == "not trainable" and run.val_accuracy == []
            assert "binary_step cannot be trained" in run.message
        else:
            assert run.status == "ok"
            assert len(run.val_accuracy) == 2
            assert all(0.0 <= a <= 1.0 for a in run.val_accuracy)
            assert run.train_seconds > 0
            # The per-epoch losses are kept for later analysis (finite, one per epoch).
            assert len(run.train_loss) == len(run.val_loss) == 2
            assert all(math.isfinite(x) and x > 0 for x in run.train_loss + run.val_loss)
        assert run.machine["git_commit"] and run.machine["cpu_capability"]
        # Only the first seed is exported and timed (same graph for every seed).
        assert (run.latency_ms is not None) == (run.seed == 0)
        if run.latency_ms is not None:
            assert 0.0 < run.latency_ms < 1000.0


def test_report_table_matches_an_independent_summary(sweep_dir: Path) -> None:
    runs = load_runs(sweep_dir)
    text = (sweep_dir / "README.md").read_text()
    rows = _table_rows(text)
    assert set(rows) == set(ACTIVATIONS)
    latency = json.loads((sweep_dir / "latency.json").read_text())
    assert set(latency) == set(ACTIVATIONS)  # binary_step is still exported and timed
    for name in ("relu", "silu"):
        finals = [r.val_accuracy[-1] for r in runs if r.activation == name]
        mean, std = statistics.fmean(finals), statistics.stdev(finals)
        assert rows[name][1] == f"{mean:.2%} ± {std:.2%}"
        assert rows[name][2] == f"{min(finals):.2%}–{max(finals):.2%}"
        assert rows[name][4] == "2"
        params = count_parameters(build_resnet("resnet8", name, num_classes=10, width=4))
        assert rows[name][6] == f"{params:,}"
        assert rows[name][7] == f"{latency[name]:.4f}"
    assert rows["binary_step"][1] == "not trainable"
    assert rows["binary_step"][7] == f"{latency['binary_step']:.4f}"
    assert "python -m export sweep --arch resnet8" in text
    assert "## What theory predicts, as measured" in text
    assert "**binary_step** (not trainable)" in text


def test_plots_are_real_pngs(sweep_dir: Path) -> None:
    for name in ("accuracy_per_epoch.png", "latency.png"):
        with Image.open(sweep_dir / name) as image:
            assert image.format == "PNG"
            assert image.width >= 600 and image.height >= 200
            grey = np.asarray(image.convert("L"))
            assert len(np.unique(grey)) > 10  # not a blank canvas


def test_rerunning_resumes_without_training_again(
    sweep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (sweep_dir / "runs.jsonl").read_text()
    assert main([*TINY_SWEEP, "--out", str(sweep_dir)]) == 0
    assert (sweep_dir / "runs.jsonl").read_text() == before
    assert "3 activations" in capsys.readouterr().out


def test_retime_measures_latency_again_without_training(
    sweep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = (sweep_dir / "runs.jsonl").read_text()
    latency_file = sweep_dir / "latency.json"
    latency_file.write_text(json.dumps({name: 123.0 for name in ACTIVATIONS}))
    assert main([*TINY_SWEEP, "--out", str(sweep_dir), "--retime"]) == 0
    assert (sweep_dir / "runs.jsonl").read_text() == runs_before
    latency = json.loads(latency_file.read_text())
    assert set(latency) == set(ACTIVATIONS)
    assert all(0.0 < ms < 123.0 for ms in latency.values())
    rows = _table_rows((sweep_dir / "README.md").read_text())
    assert rows["relu"][7] == f"{latency['relu']:.4f}"
    assert "re-timed 3 activations" in capsys.readouterr().err


def test_retime_needs_an_existing_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY_SWEEP, "--out", str(tmp_path / "none"), "--retime"]) == 1
    assert "holds no sweep to re-time" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_different_recipe_in_the_same_directory_is_refused(
    sweep_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*TINY_SWEEP, "--out", str(sweep_dir)]
    argv[argv.index("--epochs") + 1] = "3"
    before = (sweep_dir / "runs.jsonl").read_text()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "different recipe" in err and err.count("\n") == 1
    assert (sweep_dir / "runs.jsonl").read_text() == before


def test_unknown_activation_fails_cleanly_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    assert main(["sweep", "--activations", "relu,nonsense", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nonsense" in err and "relu" in err and "Traceback" not in err
    assert not out.exists()


def test_resolve_activations() -> None:
    assert resolve_activations("all") == SweepConfig().activations
    assert "softmax" not in resolve_activations("all")
    assert resolve_activations("ReLU, swish,relu") == ("relu", "silu")


# --- report arithmetic on synthetic runs --------------------------------------------------


def _run(name: str, seed: int, curve: list[float], latency: float | None = 1.0) -> RunResult:
    return RunResult(name, seed, "ok", curve, 1.0, 100, latency)


def _synthetic(
    identity_final: float, sigmoid_curve: list[float], relu_latency: float
) -> list[RunResult]:
    return [
        _run("relu", 0, [0.80, 0.95, 0.97], relu_latency),
        _run("relu", 1, [0.85, 0.93, 0.99], None),
        _run("gelu", 0, [0.70, 0.91, 0.975], 2.0),
        _run("tanh", 0, [0.60, 0.85, 0.96], 1.5),
        _run("sigmoid", 0, sigmoid_curve, 1.8),
        _run("identity", 0, [0.50, 0.70, identity_final], 0.9),
        RunResult("binary_step", 0, "not trainable", [], 0.0, 100, 0.95, "cannot train"),
    ]


def test_summary_numbers() -> None:
    runs = _synthetic(0.80, [0.2, 0.5, 0.92], 0.92)
    by_name = {s.activation: s for s in summarise(runs)}
    relu = by_name["relu"]
    assert relu.accuracy_mean == pytest.approx(0.98)
    assert relu.accuracy_std == pytest.approx(statistics.stdev([0.97, 0.99]))
    assert relu.curve == pytest.approx([0.825, 0.94, 0.98])
    assert relu.epochs_to_90 == 2.0 and relu.reached_90 == 2
    assert relu.latency_ms == 0.92  # only seed 0 is timed
    assert by_name["identity"].epochs_to_90 is None
    assert by_name["sigmoid"].epochs_to_90 == 3.0
    assert by_name["binary_step"].status == "not trainable"
    assert by_name["binary_step"].accuracy_mean is None


def test_predictions_hold_when_the_numbers_say_so() -> None:
    runs = _synthetic(0.80, [0.2, 0.5, 0.92], 0.92)
    held = {p.claim.split()[0]: p for p in check_predictions(summarise(runs))}
    assert held["identity"].held is True
    others = statistics.median([0.98, 0.975, 0.96, 0.92])
    assert f"{(others - 0.80) * 100:+.1f} points" in held["identity"].evidence
    # tanh also needs 3 epochs to reach 90 %, but learns faster on the way (mean 80 % vs 54 %).
    assert held["sigmoid"].held is True
    assert "sigmoid is #1 slowest of 4 nonlinear activations" in held["sigmoid"].evidence
    assert held["ReLU"].held is True  # #2 of 6 by latency; the fastest third is #1–#2


def test_predictions_fail_when_the_numbers_say_so() -> None:
    runs = _synthetic(0.95, [0.95, 0.97, 0.98], 3.0)
    held = {p.claim.split()[0]: p for p in check_predictions(summarise(runs))}
    assert held["identity"].held is False
    assert held["sigmoid"].held is False
    assert "slowest: tanh" in held["sigmoid"].evidence
    assert held["ReLU"].held is False
    assert "relu is #6 of 6" in held["ReLU"].evidence


def test_among_activations_that_never_reach_90_the_lower_curve_is_slower() -> None:
    runs = [
        _run("relu", 0, [0.8, 0.95], 1.0),
        _run("sigmoid", 0, [0.1, 0.4], 1.0),
        _run("hardsigmoid", 0, [0.12, 0.1], 1.0),  # starts higher, never learns
    ]
    (_, sigmoid, _) = check_predictions(summarise(runs))
    assert sigmoid.held is False
    assert "sigmoid is #2 slowest of 3 nonlinear activations" in sigmoid.evidence
    assert "slowest: hardsigmoid (never, mean 11.00%)" in sigmoid.evidence


def test_a_run_whose_export_failed_still_counts_for_accuracy() -> None:
    runs = [
        RunResult("gaussian", 0, "failed", [0.2, 0.4], 1.0, 100, None, "export failed: parity"),
        _run("gaussian", 1, [0.3, 0.6], None),
    ]
    (summary,) = summarise(runs)
    assert summary.status == "ok" and summary.seeds == 2
    assert summary.accuracy_mean == pytest.approx(0.5)
    assert summary.latency_ms is None
    assert summary.message == "seed 0: export failed: parity"
    text = render_markdown(SweepConfig(), [summary], "cmd")
    assert "- **gaussian** (ok): seed 0: export failed: parity" in text
    assert "| gaussian | 50.00% ± 14.14% | 40.00%–60.00% | best | 2 | never | 100 | — |" in text


def test_latency_file_overrides_per_run_latency_and_table_orders_by_accuracy() -> None:
    runs = _synthetic(0.80, [0.2, 0.5, 0.92], 0.92)
    summaries = summarise(runs, {"relu": 0.5})
    table = markdown_table(summaries)
    names = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert names == ["relu", "gelu", "tanh", "sigmoid", "identity", "binary_step"]
    assert "| relu | 98.00% ± 1.41% | 97.00%–99.00% | best | 2 | 2.0 | 100 | 0.5000 |" in table
    text = render_markdown(SweepConfig(), summaries, "cmd", discussion="Measured on a toaster.")
    assert "## Discussion\n\nMeasured on a toaster." in text
    assert math.isfinite(summaries[0].accuracy_mean or math.nan)
