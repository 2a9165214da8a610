"""CI runs the benchmark suite's smoke profile: structure and arithmetic, never time thresholds."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from bench.config import SMOKE
from bench.loadgen import check_local, multipart_body
from bench.stats import percentiles
from bench.targets import evaluate_targets

REPO = Path(__file__).resolve().parents[2]
GROUPS = {"a", "b", "c", "d", "c8", "d8", "e", "int8", "decode"}
HTTP_GROUPS = ("c", "d", "c8", "d8")
TARGET_NAMES = (
    "service p50 at c=1",
    "service throughput",
    "service p99",
    "decode + preprocess",
    "INT8 speed-up",
    "INT8 top-1 agreement",
    "cold start",
    "activation tax",
)

pytestmark = [pytest.mark.slow, pytest.mark.network]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads((out / "benchmarks.json").read_text())


def test_every_measurement_group_is_present_with_sane_numbers(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    _, report = smoke
    rows = report["results"]
    assert {r["group"] for r in rows} == GROUPS
    for r in rows:
        for field in ("p50_ms", "p95_ms", "p99_ms", "throughput", "peak_rss_mb"):
            assert math.isfinite(r[field]) and r[field] > 0, (r["key"], field)
        assert r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], r["key"]
        assert r["cpu_percent"] >= 0
        assert r["errors"] == 0, (r["key"], r["note"])
    keys = {r["key"] for r in rows}
    assert {"a-b1", "b-photo", "b-224", "decode-service", "decode-naive", "e-b1", "int8-b1"} <= keys
    for server in SMOKE.servers:
        for c in SMOKE.concurrencies:
            row = next(r for r in rows if r["key"] == f"{server.key}-photo-c{c}")
            expected = max(SMOKE.min_requests, SMOKE.requests_per_client * c)
            assert (row["concurrency"], row["requests"]) == (c, expected)
            group = ("d" if server.kind == "naive" else "c") + (
                "8" if server.model == "int8" else ""
            )
            assert row["group"] == group
    assert report["best_batch"] in SMOKE.batch_sizes
    # the limit also tries one single-thread session run by every core at once
    cpus = report["machine"]["cpus_usable"]
    parallel = [r for r in rows if r["key"] == "a-parallel"]
    assert len(parallel) == (1 if cpus > 1 else 0)  # one caller per core; none on one core
    for row in parallel:
        assert (row["group"], row["batch"], row["concurrency"]) == ("a", 1, cpus)


def test_ratios_are_the_row_values_divided_by_the_references(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    _, report = smoke
    rows = {r["key"]: r for r in report["results"]}
    ratios = report["ratios"]
    assert set(ratios) == set(rows)
    a, b = rows["a-b1"]["p50_ms"], rows["b-photo"]["p50_ms"]
    a8 = rows["int8-b1"]["p50_ms"]
    for key, r in rows.items():
        if r["group"] in ("c8", "d8"):  # INT8 servers: against the INT8 limit; no INT8 (b) row
            assert ratios[key]["p50_vs_a"] == pytest.approx(r["p50_ms"] / a8, rel=1e-12)
            assert ratios[key]["p50_vs_b"] is None
            continue
        assert ratios[key]["p50_vs_a"] == pytest.approx(r["p50_ms"] / a, rel=1e-12)
        assert ratios[key]["p50_vs_b"] == pytest.approx(r["p50_ms"] / b, rel=1e-12)
    assert ratios["a-b1"]["p50_vs_a"] == 1.0 and ratios["b-photo"]["p50_vs_b"] == 1.0
    for c in SMOKE.concurrencies:
        for server, naive_key in (("service", "naive"), ("service-int8", "naive-int8")):
            svc, naive = rows[f"{server}-photo-c{c}"], rows[f"{naive_key}-photo-c{c}"]
            q = ratios[f"{server}-photo-c{c}"]
            assert q["throughput_vs_d"] == pytest.approx(svc["throughput"] / naive["throughput"])
            assert q["p99_vs_d"] == pytest.approx(svc["p99_ms"] / naive["p99_ms"])
            assert ratios[f"{naive_key}-photo-c{c}"]["throughput_vs_d"] == 1.0
    assert ratios["e-b1"]["p50_vs_d"] is None  # in-process rows have no HTTP counterpart


def test_targets_cold_start_and_model_facts_are_reported(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    _, report = smoke
    names = [t["name"] for t in report["targets"]]
    assert [next(n for n in names if n.startswith(p)) for p in TARGET_NAMES]
    assert len(names) == len(TARGET_NAMES)
    assert report["targets"] == evaluate_targets(report)
    rows = {r["key"]: r for r in report["results"]}
    speedup = next(t for t in report["targets"] if t["name"].startswith("INT8 speed-up"))
    assert speedup["value"] == pytest.approx(rows["a-b1"]["p50_ms"] / rows["int8-b1"]["p50_ms"])
    assert speedup["met"] == (speedup["value"] >= 2.0)
    assert set(report["cold_start_s"]) == {s.key for s in SMOKE.servers}
    assert all(0 < v < 120 for v in report["cold_start_s"].values())
    models = report["models"]
    assert 0.0 <= models["int8_agreement_now"] <= 1.0
    trained = report["agreement"]
    assert trained["arch"] == SMOKE.agreement_arch and trained["epochs"] == SMOKE.agreement_epochs
    assert 0.0 <= trained["agreement"] <= 1.0 and trained["val_images"] > 0
    agreement = next(t for t in report["targets"] if t["name"].startswith("INT8 top-1"))
    assert agreement["value"] == trained["agreement"]
    assert agreement["met"] == (trained["agreement"] >= 0.99)
    assert models["torch_vs_onnxruntime_max_abs_logit_diff"] < 1e-3  # (e) is the same network
    machine = report["machine"]
    assert machine["cpus_usable"] >= 1 and machine["versions"]["onnxruntime"] != "not installed"
    assert len(report["loadgen"]) == sum(1 for r in report["results"] if r["group"] in HTTP_GROUPS)


def test_markdown_and_chart_are_written(smoke: tuple[Path, dict[str, Any]]) -> None:
    out, report = smoke
    text = (out / "BENCHMARKS.md").read_text()
    for heading in ("## Machine", "## Targets (issue 6)", "## Findings", "## Cold start",
                    "## Load generator overhead", "## Activation tax",
                    "### The service vs the naive reference on the INT8 model"):  # fmt: skip
        assert heading in text
    assert "`python -m bench --smoke`" in text and report["date"] in text
    for r in report["results"]:
        assert f"| {r['label']} | {r['p50_ms']:.1f} |" in text
    assert "![benchmark chart](benchmarks.png)" in text
    with Image.open(out / "benchmarks.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 800
    assert not list(out.glob("*.partial"))


def test_percentiles_match_numpy_on_a_known_sample() -> None:
    sample = [i / 1000 for i in range(1, 101)]  # 1 … 100 ms
    p50, p95, p99 = percentiles(sample)
    assert (p50, p95, p99) == pytest.approx((50.5, 95.05, 99.01))


def test_the_load_generator_refuses_anything_but_localhost() -> None:
    check_local("http://127.0.0.1:8000/v1/classify")
    with pytest.raises(SystemExit) as info:
        check_local("http://example.com/v1/classify")
    assert str(info.value) == "the load generator only targets 127.0.0.1, not 'example.com'"


def test_multipart_bodies_carry_the_image_bytes_unchanged() -> None:
    image = bytes(range(256)) * 3
    body = multipart_body(image)
    head, rest = body.split(b"\r\n\r\n", 1)
    assert b'name="file"' in head and b"Content-Type: image/jpeg" in head
    assert rest.endswith(b"--\r\n") and rest[: len(image)] == image


def test_the_c1_target_is_the_median_of_interleaved_rounds(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    from statistics import median

    _, report = smoke
    rounds = report["interleaved_c1"]
    assert rounds["rounds"] == SMOKE.interleaved_rounds
    assert len(rounds["http_p50_ms"]) == len(rounds["pipeline_p50_ms"]) == SMOKE.interleaved_rounds
    ratios = [h / b for h, b in zip(rounds["http_p50_ms"], rounds["pipeline_p50_ms"], strict=True)]
    assert rounds["ratio"] == pytest.approx(median(ratios))
    target = next(t for t in report["targets"] if t["name"].startswith("service p50 at c=1"))
    assert target["value"] == pytest.approx(median(ratios))
    assert f"median of {SMOKE.interleaved_rounds} interleaved rounds" in target["detail"]
    busy = report["machine"]["other_cpu_busy_percent"]
    assert 0.0 <= busy <= 100.0


def test_the_throughput_target_is_the_median_of_interleaved_rounds(
    smoke: tuple[Path, dict[str, Any]],
) -> None:
    from statistics import median

    _, report = smoke
    rounds = report["interleaved_throughput"]
    top = max(SMOKE.concurrencies)
    assert rounds["rounds"] == SMOKE.throughput_rounds and rounds["concurrency"] == top
    service, naive = rounds["service_images_per_s"], rounds["naive_images_per_s"]
    assert len(service) == len(naive) == SMOKE.throughput_rounds
    assert all(v > 0 for v in service + naive)
    ratios = [s / n for s, n in zip(service, naive, strict=True)]
    assert rounds["ratio"] == pytest.approx(median(ratios))
    target = next(t for t in report["targets"] if t["name"].startswith("service throughput"))
    assert target["name"].endswith(f"c={top}")
    assert target["value"] == pytest.approx(median(ratios))
    assert f"median of {SMOKE.throughput_rounds} interleaved rounds" in target["detail"]
    assert f"the two c={top} rows" in target["detail"]
