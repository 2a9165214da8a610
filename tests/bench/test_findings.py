"""The batching and thread verdicts follow the numbers they are given."""

from __future__ import annotations

from typing import Any

import pytest

from bench.findings import batching_verdict, missed_explanations, threads_verdict

SERVERS = [
    {"key": "service", "label": "service (defaults)", "kind": "service", "workers": 1,
     "intra_op_threads": 0, "batch_max_size": 1, "batch_max_wait_ms": 0.0},
    {"key": "service-batch8", "label": "service, batching 8 / 0 ms", "kind": "service",
     "workers": 1, "intra_op_threads": 0, "batch_max_size": 8, "batch_max_wait_ms": 0.0},
    {"key": "service-2w1t", "label": "service, 2 workers × 1 thread", "kind": "service",
     "workers": 2, "intra_op_threads": 1, "batch_max_size": 1, "batch_max_wait_ms": 0.0},
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


def _interleaved(gains: list[float], costs: list[float]) -> dict[str, Any]:
    """An interleaved batching result whose rounds have these throughput and p50 ratios."""
    from bench.interleaved import InterleavedBatching

    result = InterleavedBatching(
        label="service, batching 8 / 0 ms", batch_max_size=8, batch_max_wait_ms=0.0,
        rounds=len(gains), concurrency=16, c1_requests_per_round=20, top_requests_per_round=96,
        off_p50_ms=[40.0] * len(costs), on_p50_ms=[40.0 * c for c in costs],
        off_images_per_s=[25.0] * len(gains), on_images_per_s=[25.0 * g for g in gains],
    )  # fmt: skip
    return result.as_json()


def test_batching_pays_only_when_every_interleaved_round_agrees() -> None:
    pays = _interleaved([1.06, 1.05, 1.07], [0.99, 1.02, 1.00])
    assert pays["raises_throughput"] and not pays["hurts_p50"] and pays["worth_on"]
    assert pays["throughput_ratio"] == pytest.approx(1.06)
    one_round_lost = _interleaved([1.12, 0.99, 1.10], [1.0, 1.0, 1.0])
    assert not one_round_lost["raises_throughput"] and not one_round_lost["worth_on"]
    slower_everywhere = _interleaved([1.10, 1.10, 1.10], [1.02, 1.03, 1.05])
    assert slower_everywhere["hurts_p50"] and not slower_everywhere["worth_on"]
    within_tolerance = _interleaved([1.10, 1.10, 1.10], [1.005, 1.02, 1.03])
    assert not within_tolerance["hurts_p50"] and within_tolerance["worth_on"]


def test_the_batching_verdict_follows_the_interleaved_rounds_not_the_rows() -> None:
    # the rows say +10 % at no p50 cost, the interleaved rounds disagree among themselves
    report = {**_report(50.5, 27.5), "interleaved_batching": _interleaved([1.1, 0.98], [1, 1])}
    text = batching_verdict(report)
    assert "| service, batching 8 / 0 ms | 50.5 | 27.5 | 600.0 | 1.10 | 1.01 |" in text
    assert "per round 0.980–1.100" in text and "**batching does not pay**" in text
    report["interleaved_batching"] = _interleaved([1.04, 1.06], [1.0, 0.99])
    assert "**batching pays on this CPU**" in batching_verdict(report)
    report["interleaved_batching"] = _interleaved([1.2, 1.2], [1.05, 1.1])
    assert "more than 1 % slower" in batching_verdict(report)
    del report["interleaved_batching"]
    assert "decides nothing" in batching_verdict(report)


def test_the_verdict_states_the_default_and_whether_it_follows() -> None:
    from service.settings import Settings

    on = Settings.model_fields["batch_max_size"].default > 1
    report = {**_report(50.0, 25.0), "interleaved_batching": _interleaved([1.05, 1.06], [1, 1])}
    text = batching_verdict(report)
    assert ("as this measurement says it should be" in text) == on
    assert ("**this run says it should be on**" in text) == (not on)
    report["interleaved_batching"] = _interleaved([0.97, 1.06], [1, 1])
    text = batching_verdict(report)
    assert ("**this run says it should be off**" in text) == on


def test_with_batching_on_by_default_the_table_compares_with_batching_off() -> None:
    servers = [
        {**SERVERS[0], "batch_max_size": 8, "batch_max_wait_ms": 0.0},
        {"key": "service-nobatch", "label": "service, batching off", "kind": "service",
         "workers": 1, "intra_op_threads": 0, "batch_max_size": 1, "batch_max_wait_ms": 0.0},
        {**SERVERS[2], "batch_max_size": 8, "batch_max_wait_ms": 0.0},
    ]  # fmt: skip
    report = {
        "servers": servers, "machine": {"cpus_usable": 2}, "targets": [],
        "results": [
            _row("service-photo-c1", 1, 50.0, 20.0), _row("service-photo-c16", 16, 300.0, 27.0),
            _row("service-nobatch-photo-c1", 1, 50.0, 20.0),
            _row("service-nobatch-photo-c16", 16, 400.0, 25.0),
            _row("service-2w1t-photo-c1", 1, 70.0, 14.0),
            _row("service-2w1t-photo-c16", 16, 380.0, 26.0),
        ],
    }  # fmt: skip
    text = batching_verdict(report)
    assert "| service (defaults: batching 8 / 0 ms) | 50.0 | 27.0 | 600.0 | 1.08 | 1.00 |" in text
    assert "| service, batching off | 50.0 | 25.0 | 800.0 | 1.00 | 1.00 |" in text
    # the thread table compares configurations that batch alike: the defaults and 2 × 1
    threads = threads_verdict(report)
    assert "| 1 × 2 | 50.0 | 27.0 | 300 |" in threads and "| 2 × 1 | 70.0 | 26.0 | 300 |" in threads
    assert "25.0" not in threads


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


INT8_SERVERS = [
    {"key": "service-int8", "label": "service (defaults), INT8 model", "kind": "service",
     "workers": 1, "intra_op_threads": 0, "batch_max_size": 1, "batch_max_wait_ms": 0.0,
     "model": "int8"},
    {"key": "naive-int8", "label": "naive reference (d), INT8 model", "kind": "naive",
     "workers": 1, "intra_op_threads": 0, "batch_max_size": 1, "batch_max_wait_ms": 0.0,
     "model": "int8"},
]  # fmt: skip


def _with_int8(report: dict[str, Any]) -> dict[str, Any]:
    report["servers"] = SERVERS + INT8_SERVERS
    report["results"] += [
        {**_row("service-int8-photo-c1", 1, 20.0, 45.0), "group": "c8"},
        {**_row("service-int8-photo-c16", 16, 300.0, 60.0), "group": "c8"},
        {**_row("naive-int8-photo-c1", 1, 33.0, 30.0), "group": "d8"},
        {**_row("naive-int8-photo-c16", 16, 500.0, 31.0), "group": "d8"},
    ]
    return report


def test_int8_servers_stay_out_of_the_fp32_batching_and_thread_tables() -> None:
    report = _with_int8(_report(50.0, 25.0))
    assert "INT8" not in batching_verdict(report)
    threads = threads_verdict(report)
    assert "INT8" not in threads and threads.count("| 1 × 2 |") == 1


def test_the_int8_finding_pairs_each_level_with_the_naive_reference_on_int8() -> None:
    from bench.findings import int8_http_finding

    text = int8_http_finding(_with_int8(_report(50.0, 25.0)))
    assert "| 1 | 20.0 | 33.0 | 45.0 | 30.0 | 1.50 | 40.0 | 66.0 |" in text
    assert "| 16 | 300.0 | 500.0 | 60.0 | 31.0 | 1.94 | 600.0 | 1000.0 |" in text
    assert "not measured" in int8_http_finding(_report(50.0, 25.0))


def _missed_throughput_report(limit_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A report whose c=16 throughput target is missed, with ``limit_rows`` as its (a) rows, 8 ms
    of service decode and a naive reference at 16.0 images/s."""
    report = _with_int8(_report(50.0, 25.0))
    report["targets"] = [
        {"name": "service throughput ÷ naive (d) throughput at c=16", "value": 1.3, "limit": 1.5,
         "met": False, "margin": 0.13},
    ]  # fmt: skip
    report["results"] += [
        *limit_rows,
        {"key": "decode-service", "group": "decode", "p50_ms": 8.0},
        {"key": "naive-photo-c16", "group": "d", "concurrency": 16, "throughput": 16.0,
         "p99_ms": 900.0},
    ]  # fmt: skip
    return report


def test_the_throughput_bound_uses_the_fastest_limit_row_and_measured_int8_numbers() -> None:
    report = _missed_throughput_report([
        {"key": "a-b1", "group": "a", "concurrency": 1, "batch": 1, "throughput": 24.0,
         "label": "(a) batch 1"},
        {"key": "a-parallel", "group": "a", "concurrency": 2, "batch": 1, "throughput": 26.0,
         "label": "(a) 2 parallel callers"},
    ])  # fmt: skip
    text = missed_explanations(report)
    # 2 cores: 2000 / (2000 / 26 + 8) = 23.55 images/s, 1.47× the naive 16.0
    assert "at most 26.0 images/s" in text and "(a) 2 parallel callers" in text
    assert "about 23.6 images/s = 1.47× the naive reference's 16.0" in text
    # the INT8 comparison: service 60.0 / naive 31.0 = 1.94 against fp32 25.0 / 16.0 = 1.56
    assert "the naive reference's on the INT8 file, against 1.56× on fp32." in text
    assert "At c=16 the service's throughput is 1.94×" in text


def test_the_throughput_bound_quotes_the_interleaved_medians_when_they_were_measured() -> None:
    report = _missed_throughput_report([
        {"key": "a-b1", "group": "a", "concurrency": 1, "batch": 1, "throughput": 26.0,
         "label": "(a) batch 1"},
    ])  # fmt: skip
    report["interleaved_throughput"] = {
        "concurrency": 16, "service_images_per_s": [21.0, 22.0, 20.0],
        "naive_images_per_s": [15.0, 14.0, 17.0],
    }  # fmt: skip
    text = missed_explanations(report)
    # the bound is 23.55 images/s; against the naive median 15.0 that is 1.57×
    assert "= 1.57× the naive reference's 15.0 (medians of the interleaved rounds)" in text
    assert "The service reaches 21.0 (89 % of that bound)" in text


def test_the_int8_finding_compares_the_int8_and_fp32_advantage_at_the_top_level() -> None:
    from bench.findings import int8_http_finding

    report = _with_int8(_report(50.0, 25.0))
    report["results"].append(
        {**_row("naive-photo-c16", 16, 800.0, 20.0), "group": "d"},
    )
    text = int8_http_finding(report)
    # INT8: 60 / 31 = 1.94; fp32: service 25.0 / naive 20.0 = 1.25
    assert (
        "At c=16 the service's throughput is 1.94× the naive reference's on the INT8 file, " in text
    )
    assert "against 1.25× on fp32." in text


def test_cpu_busy_before_the_start_decides_noise_when_it_was_measured() -> None:
    from bench.report import is_noisy

    # the load average lags (the activation-tax run just before leaves it at ~1.5 for a
    # minute); the CPU busy share sampled before the start is what counts when present
    assert not is_noisy(1.5, 2, busy_percent=2.0)
    assert is_noisy(0.1, 2, busy_percent=35.0)
    assert is_noisy(1.5, 2, busy_percent=None)


def test_a_missed_activation_tax_names_each_activation_with_wall_and_cpu_ratios() -> None:
    report = {
        "targets": [
            {"name": "activation tax: slowest catalogue activation ÷ ReLU (ResNet-50)",
             "value": 1.36, "limit": 1.3, "met": False, "margin": 0.046},
        ],
        "activation_tax": {"json": {"rows": [
            {"activation": "relu", "final_ratio": 1.0, "final_cpu_ratio": 1.0, "met": True,
             "torch_ms": 31.34},
            {"activation": "mish", "final_ratio": 1.36, "final_cpu_ratio": 1.21, "met": False},
        ]}},
    }  # fmt: skip
    text = missed_explanations(report)
    assert "Over the limit: mish 1.36× wall clock, 1.21× CPU time. " in text
    assert "ReLU's ResNet-50 takes 31.3 ms here." in text
    assert "every one of them is within 1.3× (the most, mish, 1.21×)" in text
    report["activation_tax"]["json"]["rows"][1]["final_cpu_ratio"] = 1.31
    assert "every one of them" not in missed_explanations(report)
    assert "relu" not in text and "thread wake-up" in text


def test_a_missed_decode_target_is_measured_against_the_cheapest_decode() -> None:
    def decode(key: str, p50: float) -> dict[str, Any]:
        return {"key": key, "group": "decode", "p50_ms": p50}

    report = {
        "targets": [
            {"name": "decode + preprocess ÷ naive full decode (+ resize), photo JPEG",
             "value": 0.42, "limit": 0.25, "met": False, "margin": 0.66},
        ],
        "results": [decode("decode-naive", 20.0), decode("decode-1/8", 6.0),
                    decode("decode-1/4", 7.5), decode("decode-service", 8.4)],
        "photo_bits_per_pixel": [2.2, 2.3, 2.2],
        "reference_photos_bits_per_pixel": {"china.jpg": 5.76, "flower.jpg": 4.19},
    }  # fmt: skip
    text = missed_explanations(report)
    assert "takes 6.0 ms = 0.30× the naive full decode + preprocess (20.0 ms), already over" in text
    assert "2.2 bits per pixel, against china.jpg 5.8, flower.jpg 4.2" in text
    assert "1920×1280 photo: 7.5 ms" in text and "8.4 ms in all" in text
    report["results"][1] = decode("decode-1/8", 4.0)
    assert "0.20× the naive full decode + preprocess (20.0 ms), under the 0.25× limit" in (
        missed_explanations(report)
    )
