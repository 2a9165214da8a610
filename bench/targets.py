"""Issue 6's targets, each as a ratio measured in the same run: met or missed, and by how much."""

from __future__ import annotations

from typing import Any

COLD_START_LIMIT_S = 3.0


def _row(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in report["results"] if r["key"] == key), None)


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}×"


def _target(name: str, value: float | None, limit: float, *, at_most: bool, unit: str,
            detail: str) -> dict[str, Any]:  # fmt: skip
    if value is None:
        return {"name": name, "value": None, "limit": limit, "met": False, "unit": unit,
                "detail": detail + " (not measured in this run)", "margin": None}  # fmt: skip
    met = value <= limit if at_most else value >= limit
    margin = (value / limit - 1.0) if at_most else (1.0 - value / limit)
    return {"name": name, "value": value, "limit": limit, "met": met, "unit": unit,
            "detail": detail, "margin": margin}  # fmt: skip


def evaluate_targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """``margin`` > 0 means missed by that fraction of the limit."""
    targets = []
    svc1, b = _row(report, "service-photo-c1"), _row(report, "b-photo")
    rows_ratio = svc1["p50_ms"] / b["p50_ms"] if svc1 and b else None
    interleaved = report.get("interleaved_c1")
    if interleaved:
        c1_ratio: float | None = interleaved["ratio"]
        c1_detail = (
            f"the HTTP layer adds at most 10 %; median of {interleaved['rounds']} interleaved "
            f"rounds of {interleaved['requests_per_round']} requests (per-round ratios "
            f"{min(interleaved['ratios']):.3f}–{max(interleaved['ratios']):.3f}); the two rows "
            f"below, taken a minute apart, give {_fmt(rows_ratio)}"
        )
    else:
        c1_ratio, c1_detail = rows_ratio, "the HTTP layer adds at most 10 %"
    targets.append(_target(
        "service p50 at c=1 ÷ (b) in-process pipeline p50", c1_ratio, 1.10, at_most=True,
        unit="×", detail=c1_detail,
    ))  # fmt: skip
    top = max(c for c in (r["concurrency"] for r in report["results"] if r["group"] == "c"))
    svc16, naive16 = _row(report, f"service-photo-c{top}"), _row(report, f"naive-photo-c{top}")
    rows_throughput = svc16["throughput"] / naive16["throughput"] if svc16 and naive16 else None
    rounds = report.get("interleaved_throughput")
    if rounds and rounds["concurrency"] == top:
        throughput_ratio: float | None = rounds["ratio"]
        throughput_detail = (
            f"at least 1.5× the naive reference; median of {rounds['rounds']} interleaved "
            f"rounds of {rounds['requests_per_round']} requests per server (per-round ratios "
            f"{min(rounds['ratios']):.3f}–{max(rounds['ratios']):.3f}); the two c={top} rows "
            f"below, taken minutes apart, give {_fmt(rows_throughput)}"
        )
    else:
        throughput_ratio, throughput_detail = rows_throughput, "at least 1.5× the naive reference"
    targets.append(_target(
        f"service throughput ÷ naive (d) throughput at c={top}", throughput_ratio, 1.5,
        at_most=False, unit="×", detail=throughput_detail,
    ))  # fmt: skip
    targets.append(_target(
        f"service p99 ÷ naive (d) p99 at c={top}",
        svc16["p99_ms"] / naive16["p99_ms"] if svc16 and naive16 else None, 1.0,
        at_most=True, unit="×", detail="lower p99 than the naive reference",
    ))  # fmt: skip
    dec, naive_dec = _row(report, "decode-service"), _row(report, "decode-naive")
    targets.append(_target(
        "decode + preprocess ÷ naive full decode (+ resize), photo JPEG",
        dec["p50_ms"] / naive_dec["p50_ms"] if dec and naive_dec else None, 0.25,
        at_most=True, unit="×", detail="reduced-scale JPEG decode",
    ))  # fmt: skip
    fp32, int8 = _row(report, "a-b1"), _row(report, "int8-b1")
    targets.append(_target(
        "INT8 speed-up over fp32 (batch 1 p50)",
        fp32["p50_ms"] / int8["p50_ms"] if fp32 and int8 else None, 2.0, at_most=False,
        unit="×", detail="static QDQ, per-channel weights",
    ))  # fmt: skip
    trained = report["agreement"]
    targets.append(_target(
        "INT8 top-1 agreement with fp32 on validation images",
        trained["agreement"], 0.99, at_most=False, unit="",
        detail=f"trained {trained['arch']}, {trained['val_images']} shapes validation images; "
        f"same recipe as the ResNet-50 INT8",
    ))  # fmt: skip
    cold = report["cold_start_s"].get("service")
    targets.append(_target(
        "cold start: process start → /health/ready 200", cold, COLD_START_LIMIT_S,
        at_most=True, unit="s", detail="the service with the benchmark model in its repository",
    ))  # fmt: skip
    worst = _worst_tax(report.get("activation_tax"))
    source = "bench/results/activation_tax.json (python -m bench.activation_tax)"
    targets.append(_target(
        "activation tax: slowest catalogue activation ÷ ReLU (ResNet-50)",
        worst[0] if worst else None, 1.3, at_most=True, unit="×",
        detail=f"{worst[1]}; from {source}" if worst else f"from {source}",
    ))  # fmt: skip
    return targets


def _worst_tax(tax: dict[str, Any] | None) -> tuple[float, str] | None:
    """(largest ratio to ReLU, its activation) from bench/results/activation_tax.json's rows."""
    if not tax or "json" not in tax:
        return None
    rows = [r for r in tax["json"].get("rows", []) if r.get("activation") != "maxout"]
    ratios = [(float(r["final_ratio"]), str(r["activation"])) for r in rows if "final_ratio" in r]
    return max(ratios) if ratios else None
