"""The sweep report on few seeds: speed ranking, ranges over seeds and latency noise."""

from __future__ import annotations

import pytest

import export.sweep as sweep_module
from export.sweep import RunResult, SweepConfig, remeasure_latency
from export.sweep_report import (
    SPEED_RULE,
    Prediction,
    check_predictions,
    markdown_table,
    render_markdown,
    summarise,
)


def _run(name: str, seed: int, curve: list[float], latency: float | None = None) -> RunResult:
    return RunResult(name, seed, "ok", curve, 1.0, 100, latency)


def _predictions(
    runs: list[RunResult],
    latency: dict[str, float] | None = None,
    rounds: dict[str, list[float]] | None = None,
) -> dict[str, Prediction]:
    return {p.claim.split()[0]: p for p in check_predictions(summarise(runs, latency, rounds))}


def test_one_lucky_seed_does_not_make_an_activation_fast() -> None:
    # tanh: 1 of 3 seeds reached 90 %, at epoch 2; sigmoid: all 3 seeds, at epoch 3.
    runs = [
        *(_run("relu", s, [0.95, 0.97, 0.98]) for s in range(3)),
        _run("tanh", 0, [0.5, 0.91, 0.93]),
        _run("tanh", 1, [0.5, 0.7, 0.8]),
        _run("tanh", 2, [0.5, 0.7, 0.8]),
        *(_run("sigmoid", s, [0.2, 0.5, 0.92]) for s in range(3)),
    ]
    (_, sigmoid, _) = check_predictions(summarise(runs))
    assert sigmoid.held is False
    assert "slowest: tanh (2.0 (1/3 seeds)" in sigmoid.evidence
    assert "sigmoid is #2 slowest of 3" in sigmoid.evidence


def test_the_speed_rule_is_stated_in_the_report() -> None:
    text = render_markdown(SweepConfig(), summarise([_run("relu", 0, [0.9])]), "cmd")
    assert SPEED_RULE in text and "share of seeds that reached 90 %" in SPEED_RULE


def test_rows_whose_range_overlaps_the_best_are_within_noise() -> None:
    runs = [
        _run("elu", 0, [0.96]),
        _run("elu", 1, [0.92]),  # best: mean 94 %, range 92–96 %
        _run("relu", 0, [0.93]),
        _run("relu", 1, [0.90]),  # mean 91.5 %, max 93 % ≥ 92 %: overlaps
        _run("tanh", 0, [0.91]),
        _run("tanh", 1, [0.85]),  # max 91 % < 92 %: measurably worse
    ]
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split("|")]
        for line in markdown_table(summarise(runs)).splitlines()[2:]
    }
    assert rows["elu"][2:4] == ["92.00%–96.00%", "best"]
    assert rows["relu"][2:4] == ["90.00%–93.00%", "within noise of the best"]
    assert rows["tanh"][2:4] == ["85.00%–91.00%", ""]


def _timed(relu_ms: float) -> list[RunResult]:
    return [
        _run("identity", 0, [0.8], 0.0491),
        _run("relu", 0, [0.9], relu_ms),
        _run("gelu", 0, [0.9], 0.0600),
        _run("mish", 0, [0.9], 0.0700),
        _run("elu", 0, [0.9], 0.0800),
        _run("selu", 0, [0.9], 0.0900),
    ]


def test_a_latency_difference_inside_the_measured_spread_is_within_noise() -> None:
    # 6 timed: the fastest third is #1–#2; relu is #2, gelu (#3) is 0.0001 ms slower.
    rounds = {n: [0.0, 0.0005] for n in ("identity", "relu", "gelu", "mish", "elu", "selu")}
    latency = {r.activation: r.latency_ms or 0.0 for r in _timed(0.0599)}
    relu = _predictions(_timed(0.0599), latency=latency, rounds=rounds)["ReLU"]
    assert relu.within_noise is True
    assert "less than the measured run-to-run spread 0.0005 ms" in relu.evidence
    text = render_markdown(SweepConfig(), summarise(_timed(0.0599), latency, rounds), "cmd")
    assert "- **ReLU is among the cheapest to run**: within noise — " in text


def test_a_latency_difference_beyond_the_spread_keeps_its_verdict() -> None:
    rounds = {n: [0.0, 0.0005] for n in ("identity", "relu", "gelu", "mish", "elu", "selu")}
    relu = _predictions(_timed(0.0650), rounds=rounds)["ReLU"]  # #3, 0.005 ms past gelu
    assert relu.held is False and relu.within_noise is False
    assert "more than the measured run-to-run spread" in relu.evidence
    unmeasured = _predictions(_timed(0.0650))["ReLU"]
    assert "spread was not recorded" in unmeasured.evidence


def test_remeasure_latency_keeps_every_round(monkeypatch: pytest.MonkeyPatch) -> None:
    values = iter([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    monkeypatch.setattr(sweep_module, "measure_latency_ms", lambda *_: next(values))
    rounds = remeasure_latency({"relu": b"", "gelu": b""}, (8, 8), runs=10, rounds=3)
    assert rounds == {"relu": [1.0, 3.0, 5.0], "gelu": [2.0, 4.0, 6.0]}
