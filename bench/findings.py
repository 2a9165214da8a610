"""The decisions the numbers support (batching, threads) and why a missed target was missed.

Generated from the run's own numbers so BENCHMARKS.md stays true whenever ``make bench`` runs.
"""

from __future__ import annotations

from statistics import median
from typing import Any

from service.settings import Settings

WHY_MISSED = {
    "service p50": (
        "The HTTP path adds multipart parsing of a several-hundred-kB body, JSON rendering, a "
        "thread hop to the inference executor and the load generator's own CPU on the same two "
        "cores; at ResNet-50's tens of ms per image the fixed cost is a few ms."
    ),
    "service throughput": (
        "On two cores one fp32 ResNet-50 run already uses both cores (intra-op threads = 2), so "
        "the service's advantage over the naive reference comes only from the cheaper decode and "
        "from batching; the naive service's event-loop-blocking design costs it latency, not "
        "much throughput, when the model dominates."
    ),
    "service p99": "Tail latency under c=16 is dominated by queueing behind inference runs.",
    "decode": (
        "DCT scaling only shortens the inverse DCT and colour conversion; the entropy (Huffman) "
        "decoding of every coefficient costs the same at any scale, and on photo-like JPEGs "
        "(several hundred kB for 2.5 MP, i.e. ~2 bits per pixel, like real photos) it is most "
        "of the decode: compare the 'decode only at 1/2, 1/4, 1/8 scale' rows with the full "
        "decode in the decode table. The service already decodes at the smallest scale its "
        "resize allows (1/4 for a 256-pixel resize of a 1920×1280 photo; 1/8 would be smaller "
        "than the resize needs)."
    ),
    "INT8 speed-up": (
        "onnxruntime's QDQ int8 kernels on this CPU gain less than 2× over fp32 for this graph."
    ),
    "INT8 top-1": (
        "The INT8 file is not worse — compare the trained model's INT8 and fp32 validation "
        "accuracy above — but a small CPU-trained model has many validation images whose top "
        "two logits are nearly tied, and quantization noise flips some of them. During "
        "development the calibration variants MinMax on 64 or 256 images, keeping the fc layer "
        "and the first convolution in fp32, 99.999th-percentile and entropy calibration all "
        "landed between 97.5 % and 98.3 % on the same model: the limit is the model's margins, "
        "not the recipe. A longer-trained model (larger margins) is the fix."
    ),
    "cold start": (
        "Importing onnxruntime, numpy, FastAPI and pydantic and optimising the ResNet-50 graph "
        "at session creation take most of the time."
    ),
    "activation tax": (
        "Each of these takes several element-wise passes over the activation tensor at every one "
        "of ResNet-50's 49 activation sites (the formulation column). onnxruntime keeps its "
        "blocked NCHWc layout only through convolutions (with a fused Relu, LeakyRelu, Clip, "
        "HardSigmoid, HardSwish, Tanh or Sigmoid), Gelu, QuickGelu and tensor-by-tensor Add and "
        "Mul; Exp, Div, Min, Abs, Log and the Elu, Selu, Celu, Softplus and Softsign kernels "
        "cost two more passes to leave that layout and come back. The exact-enough (1e-5) "
        "formulations found either leave it or, like Softplus's polynomial, take seven passes "
        "inside it. The faster the convolutions, the more each pass weighs. With two intra-op "
        "threads that sleep between operators, as the service runs them, every parallel "
        "operator also pays a thread wake-up, which the wall clock counts and the single-thread "
        "CPU time does not. Spinning threads shrink that part (the docstring of "
        "bench/activation_tax.py has the numbers) but take CPU from concurrent requests, so the "
        "service does not spin. Removing the layout changes does not close the gap either: "
        "running these graphs with every element-wise region kept in NCHWc (onnxruntime's "
        "optimized graph with its reorders dropped) saved only 0.04–0.09× ReLU's latency (measured "
        "on elu, gaussian, mish and selu). On "
        "its own, one element-wise pass over the 49 tensors costs ≈0.1× ReLU's latency, so "
        "1.3× leaves room for about two passes, and none of these six functions has a 1e-5 "
        "formulation in two passes of onnxruntime's fast kernels (Relu, Exp, Mul, Min, Sigmoid, "
        "Tanh, Softsign run at memory speed; its Elu, Selu and Celu kernels take ≈5× that, "
        "Softplus and Mish ≈30×)."
    ),
}


def _row(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((r for r in report["results"] if r["key"] == key), None)


def _fp32_services(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The service configurations serving the fp32 model (the batching and threads tables)."""
    return [
        s for s in report["servers"]
        if s["kind"] == "service" and s.get("model", "fp32") == "fp32"
    ]  # fmt: skip


def _batch_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """(a) at each batch size, one caller (not the parallel-callers row)."""
    return [r for r in report["results"] if r["group"] == "a" and r["concurrency"] == 1]


def _batching_off_row_key(report: dict[str, Any], top: int) -> str | None:
    """The server key of the fp32 service run with batching off (the batching table's base)."""
    for server in _fp32_services(report):
        off = server["batch_max_size"] == 1 and server["workers"] == 1
        if off and _row(report, f"{server['key']}-photo-c{top}"):
            return str(server["key"])
    return None


def batching_verdict(report: dict[str, Any]) -> str:
    top = max(report["results"], key=lambda r: r["concurrency"])["concurrency"]
    lines = ["### Dynamic batching (ACTLAB_BATCH_MAX_SIZE / ACTLAB_BATCH_MAX_WAIT_MS)"]
    base_key = _batching_off_row_key(report, top)
    interleaved = report.get("interleaved_batching")
    if base_key is None and not interleaved:
        return "\n".join([*lines, "not measured"])
    if base_key is not None:
        lines += _batching_table(report, base_key, top)
    if interleaved:
        lines.append("\n" + _interleaved_batching_verdict(interleaved, report))
    else:
        lines.append(
            "\n**Verdict:** not measured in interleaved rounds in this run, so it decides "
            "nothing; the rows above were measured minutes apart. " + _batch_default_note(None)
        )
    return "\n".join(lines)


def _batching_table(report: dict[str, Any], base_key: str, top: int) -> list[str]:
    """Each one-worker fp32 service configuration, measured minutes apart, against batching
    off."""
    base1, base_top = _row(report, f"{base_key}-photo-c1"), _row(report, f"{base_key}-photo-c{top}")
    assert base1 is not None and base_top is not None
    lines = [
        f"| configuration | p50 c=1 ms | images/s at c={top} | p99 at c={top} ms | "
        "throughput ÷ off | p50 c=1 ÷ off |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for server in _fp32_services(report):
        if server["workers"] != 1:
            continue
        one = _row(report, f"{server['key']}-photo-c1")
        many = _row(report, f"{server['key']}-photo-c{top}")
        if not one or not many:
            continue
        batching = (
            f"{server['batch_max_size']} / {server['batch_max_wait_ms']:g} ms"
            if server["batch_max_size"] > 1
            else "off"
        )
        label = server["label"]
        if server["key"] == "service":  # "service (defaults)" → "service (defaults: batching off)"
            label = f"{label.removesuffix(')')}: batching {batching})"
        lines.append(
            f"| {label} | {one['p50_ms']:.1f} | {many['throughput']:.1f} | "
            f"{many['p99_ms']:.1f} | {many['throughput'] / base_top['throughput']:.2f} | "
            f"{one['p50_ms'] / base1['p50_ms']:.2f} |"
        )
    lines.append(
        "\nThese rows were measured minutes apart, each server on its own: they show the "
        "shape, not the decision. The decision follows the interleaved rounds below."
    )
    return lines


def _interleaved_batching_verdict(result: dict[str, Any], report: dict[str, Any]) -> str:
    """The batching decision: both servers up, rounds alternating, every round must agree."""
    gains = result["throughput_ratios"]
    costs = result["p50_ratios"]
    top = result["concurrency"]
    measured = (
        f"**Interleaved rounds** (the decision): batching off and {result['label']} both up, "
        f"{result['rounds']} rounds in alternating order, each measuring p50 at c=1 "
        f"({result['c1_requests_per_round']} requests) and images/s at c={top} "
        f"({result['top_requests_per_round']} requests) on both. Throughput with batching "
        f"÷ without: median {result['throughput_ratio']:.3f}, per round "
        f"{min(gains):.3f}–{max(gains):.3f}; p50 at c=1 with ÷ without: median "
        f"{result['p50_ratio']:.3f}, per round {min(costs):.3f}–{max(costs):.3f}."
    )
    if result["worth_on"]:
        decision = (
            f"Every round saw more throughput at c={top} with batching and p50 at c=1 was not "
            "consistently slower: **batching pays on this CPU**."
        )
    elif result["hurts_p50"]:
        decision = (
            "Every round saw p50 at c=1 more than 1 % slower with batching: **batching does "
            "not pay** (the target allows no p50 cost)."
        )
    else:
        decision = (
            f"Not every round saw more throughput at c={top} with batching: the gain is within "
            "the round-to-round noise, so **batching does not pay** on this CPU."
        )
    headroom = "" if result["worth_on"] else _batch_headroom(report)
    return f"{measured} {decision} {_batch_default_note(bool(result['worth_on']))}{headroom}"


def _batch_headroom(report: dict[str, Any]) -> str:
    """What (a) says about batching on this CPU: images/s at the best batch vs batch 1."""
    limit = _batch_rows(report)
    one = next((r for r in limit if r["batch"] == 1), None)
    if not one or len(limit) < 2:
        return ""
    best = max(limit, key=lambda r: r["throughput"])
    gain = best["throughput"] / one["throughput"]
    return (
        f" The limit rows (a) explain why: onnxruntime itself gets {one['throughput']:.1f} "
        f"images/s at batch 1 and {best['throughput']:.1f} at its best batch ({best['batch']}), "
        f"{100 * (gain - 1):+.0f} % — a batch-1 run already keeps both cores busy, so grouping "
        "requests has almost no compute to win, while it adds a hand-off to one collector "
        "thread and makes each request wait for the whole batch. (On a machine shared with "
        "other work, one inference thread also gets a smaller share of the CPU than many.)"
    )


def _same_batching(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(
        a["batch_max_size"] == b["batch_max_size"]
        and a["batch_max_wait_ms"] == b["batch_max_wait_ms"]
    )


def threads_verdict(report: dict[str, Any]) -> str:
    top = max(report["results"], key=lambda r: r["concurrency"])["concurrency"]
    rows = []
    services = _fp32_services(report)
    defaults = next((s for s in services if s["key"] == "service"), None)
    for server in services:
        if defaults is None or not _same_batching(server, defaults):
            continue
        one, many = (
            _row(report, f"{server['key']}-photo-c1"),
            _row(report, f"{server['key']}-photo-c{top}"),
        )
        if one and many:
            threads = server["intra_op_threads"] or report["machine"]["cpus_usable"]
            rows.append((server, threads, one, many))
    lines = ["### Threads: onnxruntime intra-op threads × uvicorn workers"]
    if len(rows) < 2:
        return "\n".join([*lines, "only one configuration measured in this profile"])
    lines += ["| workers × intra-op threads | p50 c=1 ms | images/s at c=" + str(top)
              + " | peak RSS MB at c=" + str(top) + " |", "|---|---:|---:|---:|"]  # fmt: skip
    for server, threads, one, many in rows:
        lines.append(
            f"| {server['workers']} × {threads} | {one['p50_ms']:.1f} | {many['throughput']:.1f} |"
            f" {many['peak_rss_mb']:.0f} |"
        )
    default = rows[0]
    best_latency = min(rows, key=lambda r: r[2]["p50_ms"])
    best_throughput = max(rows, key=lambda r: r[3]["throughput"])
    lines.append(
        f"\n**Verdict:** lowest p50 at c=1: {best_latency[0]['workers']} × {best_latency[1]}; "
        f"highest throughput at c={top}: {best_throughput[0]['workers']} × {best_throughput[1]} "
        f"({best_throughput[3]['throughput'] / default[3]['throughput']:.2f}× the default). "
        "The default stays 1 worker × intra-op threads = the CPU quota unless another "
        "configuration wins on both (it would double memory for ≤ a few % here)."
    )
    return "\n".join(lines)


def _throughput_ceiling(report: dict[str, Any]) -> str:
    """How close the service and the naive reference get to the in-process limit (a)."""
    rows = report.get("results", [])
    limit = [r for r in rows if r["group"] == "a"]
    top = max((r["concurrency"] for r in rows if r["group"] == "c"), default=0)
    service, naive = _row(report, f"service-photo-c{top}"), _row(report, f"naive-photo-c{top}")
    decode = _row(report, "decode-service")
    cpus = report.get("machine", {}).get("cpus_usable", 1)
    if not limit or not service or not naive or not decode:
        return ""
    fastest = max(limit, key=lambda r: r["throughput"])
    best = fastest["throughput"]
    # CPU-ms per image: inference at the limit, plus the service's own decode + preprocess
    bound = 1000 * cpus / (1000 * cpus / best + decode["p50_ms"])
    service_rate, naive_rate, source = service["throughput"], naive["throughput"], ""
    rounds = report.get("interleaved_throughput")
    if rounds and rounds["concurrency"] == top:
        service_rate = median(rounds["service_images_per_s"])
        naive_rate = median(rounds["naive_images_per_s"])
        source = " (medians of the interleaved rounds)"
    return (
        f"The ceiling is the model: onnxruntime alone, on ready tensors, does at most {best:.1f} "
        f"images/s on these {cpus} cores (the fastest (a) row: {fastest['label']}); adding only "
        f"the service's decode + preprocess ({decode['p50_ms']:.1f} ms of one core per image) "
        f"bounds any server to about {bound:.1f} images/s = {bound / naive_rate:.2f}× "
        f"the naive reference's {naive_rate:.1f}{source}, before any HTTP cost. The service "
        f"reaches {service_rate:.1f} ({100 * service_rate / bound:.0f} % of "
        "that bound). The naive reference is not far behind in throughput because its extra "
        "cost, a full-size decode, is small next to a ResNet-50 fp32 run; what the service wins "
        "at this load is latency (the p99 target and the p50 ÷ (d) column)."
        + _int8_vs_fp32(report, top)
    )


def int8_http_finding(report: dict[str, Any]) -> str:
    """The service vs the naive reference when both serve the INT8 file."""
    levels = sorted({r["concurrency"] for r in report["results"] if r["group"] == "c8"})
    lines = ["### The service vs the naive reference on the INT8 model"]
    table = []
    for c in levels:
        service, naive = (
            _row(report, f"service-int8-photo-c{c}"),
            _row(report, f"naive-int8-photo-c{c}"),
        )
        if service and naive:
            table.append(
                f"| {c} | {service['p50_ms']:.1f} | {naive['p50_ms']:.1f} | "
                f"{service['throughput']:.1f} | {naive['throughput']:.1f} | "
                f"{service['throughput'] / naive['throughput']:.2f} | "
                f"{service['p99_ms']:.1f} | {naive['p99_ms']:.1f} |"
            )
    if not table:
        return "\n".join([*lines, "not measured in this profile"])
    lines += [
        "| clients | service p50 ms | naive p50 ms | service img/s | naive img/s | "
        "throughput ÷ naive | service p99 ms | naive p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table,
        "",
        "Same photo JPEGs and load generator as the fp32 rows, both servers serving the INT8 "
        "file. With inference at INT8 cost, the naive reference's full-size decode, run on the "
        "event loop between inferences, is a larger share of each request, while the service "
        "decodes at reduced scale on its executor (one request's decode overlaps another's "
        "inference)." + _int8_vs_fp32(report, levels[-1]),
    ]
    return "\n".join(lines)


def _int8_vs_fp32(report: dict[str, Any], top: int) -> str:
    ratios = []
    for model in ("-int8", ""):
        service = _row(report, f"service{model}-photo-c{top}")
        naive = _row(report, f"naive{model}-photo-c{top}")
        if not service or not naive:
            return ""
        ratios.append(service["throughput"] / naive["throughput"])
    return (
        f" At c={top} the service's throughput is {ratios[0]:.2f}× the naive reference's on "
        f"the INT8 file, against {ratios[1]:.2f}× on fp32."
    )


def _tax_split(report: dict[str, Any]) -> str:
    """Wall clock against CPU time for each activation over the limit."""
    tax = report.get("activation_tax") or {}
    rows = (tax.get("json") or {}).get("rows", [])
    over = [r for r in rows if not r.get("met", True)]
    if not over:
        return ""
    parts = [
        f"{r['activation']} {r['final_ratio']:.2f}× wall clock, "
        f"{r['final_cpu_ratio']:.2f}× CPU time"
        for r in over
    ]
    relu = next((r for r in rows if r.get("activation") == "relu"), None)
    relu_ms = relu.get("torch_ms") if relu else None
    speed = f"ReLU's ResNet-50 takes {relu_ms:.1f} ms here. " if relu_ms else ""
    limit = float(tax["json"].get("target_ratio", 1.3))
    worst_cpu = max(over, key=lambda r: r["final_cpu_ratio"])
    work = (
        f"In single-thread CPU time every one of them is within {limit}× (the most, "
        f"{worst_cpu['activation']}, {worst_cpu['final_cpu_ratio']:.2f}×): the work is in "
        "budget, the excess is the two threads meeting between operators. "
        if worst_cpu["final_cpu_ratio"] <= limit
        else ""
    )
    return "Over the limit: " + "; ".join(parts) + ". " + speed + work


def _decode_floor(report: dict[str, Any], limit: float) -> str:
    """The decode target against the cheapest decode there is: 1/8 scale and nothing else."""
    naive, eighth = _row(report, "decode-naive"), _row(report, "decode-1/8")
    service, quarter = _row(report, "decode-service"), _row(report, "decode-1/4")
    if not naive or not eighth or not service or not quarter:
        return ""
    floor = eighth["p50_ms"] / naive["p50_ms"]
    over = "already over" if floor > limit else "under"
    density = report.get("photo_bits_per_pixel") or []
    references = report.get("reference_photos_bits_per_pixel") or {}
    compared = ""
    if density and references:
        named = ", ".join(f"{name} {bpp:.1f}" for name, bpp in references.items())
        compared = (
            f" These test photos are not unusually dense: {median(density):.1f} bits per pixel, "
            f"against {named} for the real photographs scikit-learn ships."
        )
    return (
        f"Decoding alone at the smallest DCT scale (1/8), with no resize or normalisation, takes "
        f"{eighth['p50_ms']:.1f} ms = {floor:.2f}× the naive full decode + preprocess "
        f"({naive['p50_ms']:.1f} ms), {over} the {limit}× limit. DCT scaling shortens only the "
        "inverse DCT and the colour conversion; the entropy (Huffman) decoding of every "
        "coefficient costs the same at any scale, so no decoder built on libjpeg-turbo "
        "(Pillow's and that of the common Python JPEG packages) can meet the target here."
        f"{compared} The service decodes at the smallest scale its resize allows (1/4 for a "
        "256-pixel resize of a 1920×1280 photo: "
        f"{quarter['p50_ms']:.1f} ms; 1/8 would be smaller than the resize needs), then resizes "
        f"and normalises: {service['p50_ms']:.1f} ms in all."
    )


def missed_explanations(report: dict[str, Any]) -> str:
    lines = []
    for target in report["targets"]:
        if target["met"] or target["value"] is None:
            continue
        reason = next((v for k, v in WHY_MISSED.items() if target["name"].startswith(k)), "")
        if target["name"].startswith("service throughput"):
            reason = _throughput_ceiling(report) or reason
        if target["name"].startswith("decode"):
            reason = _decode_floor(report, target["limit"]) or reason
        if target["name"].startswith("activation tax"):
            reason = _tax_split(report) + reason
        lines.append(
            f"- **{target['name']}**: {target['value']:.3f} against {target['limit']} — missed by "
            f"{100 * target['margin']:.0f} %. {reason}"
        )
    if not lines:
        return ""
    return "### Where a target is missed, and why\n" + "\n".join(lines)


def findings(report: dict[str, Any]) -> str:
    parts = ["## Findings", batching_verdict(report), threads_verdict(report),
             int8_http_finding(report)]  # fmt: skip
    missed = missed_explanations(report)
    if missed:
        parts.append(missed)
    return "\n\n".join(parts)


def _batch_default_note(worth_on: bool | None) -> str:
    """The service's batching default, and whether it follows this run's decision."""
    size = Settings.model_fields["batch_max_size"].default
    wait = Settings.model_fields["batch_max_wait_ms"].default
    on = size > 1
    state = f"**on** ({size} / {wait:g} ms)" if on else "**off**"
    default = (
        f"The service's default is {state} (ACTLAB_BATCH_MAX_SIZE={size}, "
        f"ACTLAB_BATCH_MAX_WAIT_MS={wait:g})"
    )
    if worth_on is None:
        return default + "."
    if worth_on == on:
        return default + ", as this measurement says it should be."
    return (
        default + f": **this run says it should be {'on' if worth_on else 'off'}** — a run that "
        "disagrees with the default is reported here and the default changes only when runs "
        "agree (README, Benchmarks)."
    )
