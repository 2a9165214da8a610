"""The batching and thread verdicts follow the numbers they are given."""

from __future__ import annotations

from typing import Any

from bench.findings import batching_verdict, missed_explanations, threads_verdict

SERVERS = [
    {"key": "service", "label": "service (defaults)", "kind": "service", "workers": 1,
     "intra_op_threads": 0, "batch_max_size": 1},
    {"key": "service-batch8", "label": "service, batching 8 / 0 ms", "kind": "service",
     "workers": 1, "intra_op_threads": 0, "batch_max_size": 8},
    {"key": "service-2w1t", "label": "service, 2 workers × 1 thread", "kind": "service",
     "workers": 2, "intra_op_threads": 1, "batch_max_size": 1},
]  # fmt: skip


def _row(key: str, concurrency: int, p50: float, throughput: float) -> dict[str, Any]:
    return {"key": key, "group": "c", "concurrency": concurrency, "p50_ms": p50,
            "p99_ms": 2 * p50, "throughput": throughput, "peak_rss_mb": 300.0}  # fmt: skip


def _report(batch_c1: float, batch_tp: float) -> dict[str, Any]:
    return {
        "servers": SERVERS,
        "machine": {"cpus_usable": 2},
        "targets": [],
        "results": [
            _row("service-photo-c1", 1, 50.0, 20.0),
            _row("service-photo-c16", 16, 400.0, 25.0),
            _row("service-batch8-photo-c1", 1, batch_c1, 19.0),
            _row("service-batch8-photo-c16", 16, 300.0, batch_tp),
            _row("service-2w1t-photo-c1", 1, 70.0, 14.0),
            _row("service-2w1t-photo-c16", 16, 380.0, 26.0),
        ],
    }


def test_batching_is_recommended_only_when_it_pays_and_costs_nothing_at_c1() -> None:
    assert "worth turning on" in batching_verdict(_report(50.5, 27.5))  # +10 %, p50 ×1.01
    assert "raises throughput at c=16 by 10 %" in batching_verdict(_report(50.5, 27.5))
    assert "stays **off**" in batching_verdict(_report(50.5, 26.0))  # +4 % only
    assert "stays **off**" in batching_verdict(_report(55.0, 30.0))  # p50 at c=1 ×1.10


def test_the_thread_table_lists_each_unbatched_configuration() -> None:
    text = threads_verdict(_report(50.0, 25.0))
    assert "| 1 × 2 | 50.0 | 25.0 | 300 |" in text
    assert "| 2 × 1 | 70.0 | 26.0 | 300 |" in text
    assert "lowest p50 at c=1: 1 × 2; highest throughput at c=16: 2 × 1 (1.04× the default)" in text


def test_missed_targets_are_explained_with_their_margin() -> None:
    report = {"targets": [
        {"name": "cold start: process start → /health/ready 200", "value": 3.3, "limit": 3.0,
         "met": False, "margin": 0.1},
        {"name": "INT8 speed-up over fp32 (batch 1 p50)", "value": 2.4, "limit": 2.0,
         "met": True, "margin": -0.2},
    ]}  # fmt: skip
    text = missed_explanations(report)
    assert (
        "**cold start: process start → /health/ready 200**: 3.300 against 3.0 — missed by 10 %"
        in text
    )
    assert "INT8" not in text


def test_only_the_load_before_the_suite_marks_a_run_noisy() -> None:
    from bench.report import is_noisy

    # 2 CPUs: other work at the start (≥ 1.0) is noise; a quiet start is not, whatever the
    # suite's own servers push the load to by the end.
    assert is_noisy(1.2, 2)
    assert is_noisy(1.0, 2)
    assert not is_noisy(0.27, 2)
    assert not is_noisy(0.0, 2)
