"""One run of the suite: every measurement side by side, then the ratios and the targets."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import inprocess
from bench.agreement import trained_agreement
from bench.config import BENCH_DIR, SERVICE_BATCH, SERVICE_BATCH_OFF, Profile
from bench.images import SMALL_SIZE, bits_per_pixel, photo_jpegs, reference_photo_density
from bench.interleaved import (
    InterleavedBatching,
    InterleavedC1,
    InterleavedThroughput,
    interleaved_batching,
    interleaved_c1,
    interleaved_throughput,
)
from bench.load import http_result, write_bodies
from bench.machine import describe_machine
from bench.models import load_validation, prepare_models
from bench.servers import start_server
from bench.stats import Result
from bench.targets import evaluate_targets

ACTIVATION_TAX_JSON = BENCH_DIR / "results" / "activation_tax.json"
ACTIVATION_TAX_MD = BENCH_DIR / "results" / "activation_tax.md"

Log = Callable[[str], None]


def run_suite(profile: Profile, command: str, log: Log = print) -> dict[str, Any]:
    started = time.perf_counter()
    machine = describe_machine()
    models = prepare_models(profile, log)
    photos = photo_jpegs(profile.photos, profile.photo_size, seed=100)
    small = photo_jpegs(profile.photos, SMALL_SIZE, seed=200)
    photo_mp = profile.photo_size[0] * profile.photo_size[1] / 1e6
    os.environ["BENCH_NAIVE_MODEL"] = str(models.fp32_path)
    results: list[Result] = []

    log("in-process: (a) session.run on ready tensors")
    runtime = inprocess.load_runtime(models.fp32_path, models.name)
    a = inprocess.session_results(
        runtime, photos[0], profile.batch_sizes, profile.inprocess_runs,
        group="a", prefix="a", label="(a) session.run, ready tensor",
    )  # fmt: skip
    results += a
    best = max(a, key=lambda r: r.throughput).batch
    callers = machine["cpus_usable"]
    if callers > 1:
        results.append(inprocess.parallel_session_result(
            models.fp32_path, models.name, photos[0], profile.inprocess_runs, callers,
        ))  # fmt: skip
    log(f"in-process: best batch size {best}; (b) the service pipeline")
    results += inprocess.pipeline_results(runtime, photos, small, profile.inprocess_runs, photo_mp)
    results += inprocess.decode_results(runtime, photos, profile.inprocess_runs, photo_mp)

    log("in-process: INT8")
    runtime8 = inprocess.load_runtime(models.int8_path, f"{models.name}-int8")
    results += inprocess.session_results(
        runtime8, photos[0], tuple(sorted({1, best})), profile.inprocess_runs,
        group="int8", prefix="int8", label="INT8 QDQ session.run, ready tensor",
    )  # fmt: skip
    val = load_validation(models, runtime.card)
    from bench.int8 import top1_agreement

    agreement = top1_agreement(models.fp32_path, models.int8_path, val)

    log("in-process: (e) PyTorch eager")
    tensor_1 = inprocess.ready_tensor(runtime, photos[0], 1)
    num_classes = len(runtime.card.labels)
    results += inprocess.torch_results(
        models.weights_path, profile.arch, num_classes, tensor_1, tuple(sorted({1, best})),
        profile.torch_runs,
    )  # fmt: skip
    torch_diff = inprocess.torch_parity(
        models.weights_path, profile.arch, num_classes, runtime, val[:4]
    )
    del runtime8
    gc.collect()

    cold_starts: dict[str, float] = {}
    interleaved: InterleavedC1 | None = None
    throughput: InterleavedThroughput | None = None
    batching: InterleavedBatching | None = None
    loadgen: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        photo_bodies = write_bodies(photos, Path(tmp) / "photo")
        small_bodies = write_bodies(small, Path(tmp) / "small")
        for config in profile.servers:
            log(f"http: {config.label}")
            group = "d" if config.kind == "naive" else "c"
            group += "8" if config.model == "int8" else ""
            repo, path = (
                (models.int8_repo, models.int8_path)
                if config.model == "int8"
                else (models.fp32_repo, models.fp32_path)
            )
            with start_server(config, repo, path) as server:
                cold_starts[config.key] = server.cold_start_s
                levels = [(c, photo_bodies, "photo") for c in profile.concurrencies]
                if config.key in ("service", "naive"):
                    levels.append((1, small_bodies, "224"))
                for concurrency, bodies, kind in levels:
                    requests = max(profile.min_requests, profile.requests_per_client * concurrency)
                    size = f"{photo_mp:.1f} MP" if kind == "photo" else "224×224"
                    result, cost = http_result(
                        server, bodies, concurrency, requests, group=group,
                        key=f"{config.key}-{kind}-c{concurrency}",
                        label=f"{config.label}, {size}, c={concurrency}",
                    )  # fmt: skip
                    results.append(result)
                    loadgen.append(cost.__dict__)
                if config.key == "service":
                    log("http: the c=1 ratio to (b), interleaved rounds")
                    interleaved = interleaved_c1(
                        server, runtime, photos, photo_bodies,
                        rounds=profile.interleaved_rounds, requests=profile.interleaved_requests,
                    )  # fmt: skip
        throughput = _interleaved_throughput(profile, models.fp32_repo, models.fp32_path,
                                             photo_bodies, log)  # fmt: skip
        batching = _interleaved_batching(profile, models.fp32_repo, models.fp32_path,
                                         photo_bodies, log)  # fmt: skip
    del runtime
    gc.collect()

    trained = trained_agreement(profile, log)  # last: a first run trains it (cached after)
    tax = _activation_tax()
    report: dict[str, Any] = {
        "profile": profile.name,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "machine_after": describe_machine(load_only=True),
        "models": {**models.info, "name": models.name, "int8_agreement_now": agreement,
                   "torch_vs_onnxruntime_max_abs_logit_diff": torch_diff},
        "photo_size": list(profile.photo_size),
        "photo_bytes": [len(p) for p in photos],
        "photo_bits_per_pixel": [bits_per_pixel(p) for p in photos],
        "reference_photos_bits_per_pixel": reference_photo_density(),
        "small_bytes": [len(s) for s in small],
        "best_batch": best,
        "results": [r.as_json() for r in results],
        "cold_start_s": cold_starts,
        "loadgen": loadgen,
        "activation_tax": tax,
        "agreement": trained.__dict__,
        "interleaved_c1": interleaved.as_json() if interleaved else None,
        "interleaved_throughput": throughput.as_json() if throughput else None,
        "interleaved_batching": batching.as_json() if batching else None,
        "servers": [c.__dict__ for c in profile.servers],
    }  # fmt: skip
    report["ratios"] = ratios(results)
    report["targets"] = evaluate_targets(report)
    report["duration_s"] = round(time.perf_counter() - started, 1)
    return report


def _interleaved_throughput(
    profile: Profile, repo: Path, path: Path, bodies: Path, log: Log
) -> InterleavedThroughput | None:
    """The service (defaults) and the naive reference, both up, measured in alternating rounds
    at the top concurrency, on the fp32 model and the photo JPEGs."""
    configs = {config.key: config for config in profile.servers}
    if "service" not in configs or "naive" not in configs:
        return None
    top = max(profile.concurrencies)
    log(f"http: throughput at c={top}, service ÷ naive, interleaved rounds")
    with (
        start_server(configs["service"], repo, path) as service,
        start_server(configs["naive"], repo, path) as naive,
    ):
        return interleaved_throughput(
            service, naive, bodies, concurrency=top, rounds=profile.throughput_rounds,
            requests=profile.throughput_requests,
        )  # fmt: skip


def _interleaved_batching(
    profile: Profile, repo: Path, path: Path, bodies: Path, log: Log
) -> InterleavedBatching | None:
    """The service with batching off and with batching 8 / 0 ms, both up, in
    alternating rounds of p50 at c=1 and images/s at the top concurrency (fp32, photo JPEGs):
    the measurement the batching default follows (bench/findings.py)."""
    if profile.batching_rounds < 1:
        return None
    top = max(profile.concurrencies)
    log(f"http: batching off vs 8 / 0 ms, p50 at c=1 and throughput at c={top}, interleaved")
    with (
        start_server(SERVICE_BATCH_OFF, repo, path) as off,
        start_server(SERVICE_BATCH, repo, path) as on,
    ):
        return interleaved_batching(
            off, on, bodies, concurrency=top, rounds=profile.batching_rounds,
            c1_requests=profile.batching_c1_requests, top_requests=profile.batching_top_requests,
        )  # fmt: skip


def ratios(results: list[Result]) -> dict[str, dict[str, float | None]]:
    """Per row: p50 ÷ (a) batch 1, p50 ÷ (b) at the photo size, and vs (d) at the same load."""
    by_key = {r.key: r for r in results}
    out: dict[str, dict[str, float | None]] = {}
    for r in results:
        int8 = r.group in ("c8", "d8")
        # INT8 servers compare with the INT8 limit and the naive reference on the INT8 file;
        # there is no in-process INT8 pipeline row, so their ÷ (b) stays empty.
        limit = by_key.get("int8-b1" if int8 else "a-b1")
        pipeline = None if int8 else by_key.get("b-photo")
        naive = None
        if r.group in ("c", "d", "c8", "d8"):
            kind = r.key.split("-")[-2]
            naive = by_key.get(f"naive{'-int8' if int8 else ''}-{kind}-c{r.concurrency}")
        out[r.key] = {
            "p50_vs_a": r.p50_ms / limit.p50_ms if limit else None,
            "p50_vs_b": r.p50_ms / pipeline.p50_ms if pipeline else None,
            "p50_vs_d": r.p50_ms / naive.p50_ms if naive else None,
            "throughput_vs_d": r.throughput / naive.throughput if naive else None,
            "p99_vs_d": r.p99_ms / naive.p99_ms if naive else None,
        }
    return out


def _activation_tax() -> dict[str, Any] | None:
    """The activation fast-path results (``python -m bench.activation_tax``), if it has run."""
    found: dict[str, Any] = {}
    if ACTIVATION_TAX_JSON.exists():
        with contextlib.suppress(ValueError):
            found["json"] = json.loads(ACTIVATION_TAX_JSON.read_text())
    if ACTIVATION_TAX_MD.exists():
        found["markdown"] = ACTIVATION_TAX_MD.read_text()
    return found or None
