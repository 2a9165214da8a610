"""The report: BENCHMARKS.md (machine, command, date, tables, targets), a PNG chart and the JSON.

Files are written atomically (temporary file + rename), so an interrupted run never leaves a
half-written report.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

GROUP_TITLES = {
    "a": "(a) the limit: in-process session.run on ready tensors",
    "int8": "INT8 variant: in-process session.run on ready tensors",
    "b": "(b) in-process decode + preprocess + run, exactly as the service does it",
    "decode": "Decode + preprocess only (no inference)",
    "e": "(e) PyTorch eager, same network and weights",
    "c": "(c) the service over HTTP (uvicorn, 127.0.0.1, separate process)",
    "d": "(d) the naive reference service over HTTP, same load",
    "c8": "INT8 model over HTTP: the service (÷ (a) is against INT8 session.run at batch 1)",
    "d8": "INT8 model over HTTP: the naive reference serving the same INT8 file, same load",
}

HTTP_GROUPS = ("c", "d", "c8", "d8")


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "–" if value is None else f"{value:.{digits}f}{suffix}"


def results_table(report: dict[str, Any], group: str) -> str:
    rows = [r for r in report["results"] if r["group"] == group]
    if not rows:
        return ""
    ratios = report["ratios"]
    http = group in HTTP_GROUPS
    head = "| configuration | p50 ms | p95 ms | p99 ms | images/s | CPU % | peak RSS MB |"
    head += " p50 ÷ (a) | p50 ÷ (b) |"
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    if http:
        head += " p50 ÷ (d) | img/s ÷ (d) | p99 ÷ (d) | errors |"
        sep += "---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        q = ratios[r["key"]]
        line = (
            f"| {r['label']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['throughput']:.1f} | {r['cpu_percent']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{_fmt(q['p50_vs_a'])} | {_fmt(q['p50_vs_b'])} |"
        )
        if http:
            line += (
                f" {_fmt(q['p50_vs_d'])} | {_fmt(q['throughput_vs_d'])} | {_fmt(q['p99_vs_d'])} |"
                f" {r['errors']} |"
            )
        lines.append(line)
    return "\n".join(lines)


def targets_table(report: dict[str, Any]) -> str:
    lines = ["| target | measured | limit | verdict |", "|---|---:|---:|---|"]
    for t in report["targets"]:
        value = t["value"]
        unit = t["unit"]
        shown = "not measured" if value is None else f"{value:.3f}{unit}"
        if value is None:
            verdict = "**not measured**"
        elif t["met"]:
            verdict = "met"
        else:
            verdict = f"**missed by {100 * t['margin']:.0f} %**"
        bound = (
            "≤"
            if t["name"].startswith(("service p50", "service p99", "decode", "cold"))
            or ("tax" in t["name"])
            else "≥"
        )
        lines.append(f"| {t['name']} ({t['detail']}) | {shown} | {bound} {t['limit']}{unit} | "
                     f"{verdict} |")  # fmt: skip
    return "\n".join(lines)


def machine_section(report: dict[str, Any]) -> str:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return "\n".join([
        f"- CPU: {m['cpu_model']}; {m['cpus_usable']} usable CPUs "
        f"({m['cpus_logical']} logical); flags: {', '.join(m['cpu_flags']) or 'none of interest'}",
        f"- memory: {m['memory_gib']} GiB; OS: {m['os']}; Python {m['python']}",
        f"- versions: {versions}",
        "- other work before the start: the CPUs were "
        f"{_fmt(m.get('other_cpu_busy_percent'), 0)} % busy over the 3 s before the suite "
        f"ran (≥ {NOISY_BUSY_PERCENT:.0f} % means the numbers are noisy); load average "
        "(1, 5, 15 min) at start "
        f"{m['load_average']} (it lags: `make bench` runs the activation-tax benchmark just "
        f"before), at end {report['machine_after']['load_average']} (the suite's own load)",
    ])  # fmt: skip


def write_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["key"]: r for r in report["results"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    best = report["best_batch"]
    bars = [
        ("(a) limit b1", "a-b1"), (f"(a) limit b{best}", f"a-b{best}"), ("INT8 b1", "int8-b1"),
        ("(e) torch b1", "e-b1"), ("(b) pipeline photo", "b-photo"), ("(b) pipeline 224", "b-224"),
        ("(c) service c=1", "service-photo-c1"), ("(d) naive c=1", "naive-photo-c1"),
    ]  # fmt: skip
    present = [(label, rows[k]) for label, k in bars if k in rows]
    per_image = [r["p50_ms"] / r["batch"] for _, r in present]
    palette = {"a": "#4c72b0", "int8": "#4c72b0", "e": "#dd8452", "b": "#55a868", "c": "#55a868"}
    colours = [palette.get(r["group"], "#c44e52") for _, r in present]
    left.barh([label for label, _ in present], per_image, color=colours)
    left.invert_yaxis()
    left.set_xlabel("p50 latency per image, ms (lower is better)")
    left.set_title(f"{report['models'].get('arch', '')} at the network's input size")
    for y, value in enumerate(per_image):
        left.text(value, y, f" {value:.1f}", va="center", fontsize=8)
    for server in report["servers"]:
        points = sorted(
            (r["concurrency"], r["throughput"]) for r in report["results"]
            if r["key"].startswith(f"{server['key']}-photo-c")
        )  # fmt: skip
        if points:
            style = "--" if server["kind"] == "naive" else "-"
            right.plot(*zip(*points, strict=True), style, marker="o", label=server["label"])
    if "a-b1" in rows:
        right.axhline(max(r["throughput"] for r in report["results"] if r["group"] == "a"),
                      color="grey", linestyle=":", label="(a) fp32 limit")  # fmt: skip
    right.set_xscale("log", base=2)
    levels = sorted({r["concurrency"] for r in report["results"] if r["group"] in HTTP_GROUPS})
    right.set_xticks(levels, [str(c) for c in levels])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("images / s (higher is better)")
    right.set_title("HTTP throughput, photo JPEGs")
    right.legend(fontsize=8)
    load = report["machine"]["load_average"][0]
    fig.suptitle(
        f"actlab benchmarks — {report['date']} — {report['machine']['cpu_model']}, "
        f"{report['machine']['cpus_usable']} CPUs — load average at start {load}"
    )
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png", dir=path.parent, delete=False) as handle:
        tmp = Path(handle.name)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)


def write_report(report: dict[str, Any], markdown: Path, chart: Path, data: Path,
                 narrative: str = "") -> None:  # fmt: skip
    chart.parent.mkdir(parents=True, exist_ok=True)
    write_chart(report, chart)
    write_atomic(data, json.dumps(report, indent=1).encode())
    write_atomic(markdown, render_markdown(report, markdown, chart, narrative).encode())


def render_markdown(report: dict[str, Any], markdown: Path, chart: Path, narrative: str) -> str:
    rel_chart = os.path.relpath(chart, markdown.parent)
    m = report["models"]
    a = report["agreement"]
    sections = [
        "# actlab benchmarks",
        "",
        *_noise_warning(report),
        f"Generated by `{report['command']}` on {report['date']} (profile `{report['profile']}`, "
        f"{report['duration_s']:.0f} s). Regenerate with `make bench`; every number below comes "
        "from that one run, so ratios compare like with like.",
        "",
        "## Machine",
        machine_section(report),
        "",
        "## What was measured",
        f"- Model: `{m.get('name')}` — {m.get('arch')} fp32, ReLU, at the card's input size. "
        "No pretrained weights exist offline, so the convolutions are random (seed 0); batch-norm "
        "statistics are re-estimated on shapes images (so activations have a realistic scale) "
        "and the `fc` head is a linear probe on its pooled features. That probe reaches only "
        f"{_fmt(m.get('val_accuracy'), 3)} shapes validation accuracy (chance 0.125): random "
        f"deep features carry little shape information. It is timed as {m.get('arch')}, not judged "
        "as a classifier.",
        f"- INT8: onnxruntime static QDQ quantization of that file (per-channel int8 weights "
        f"within ±64, uint8 activations, MinMax calibration on "
        f"{m.get('calibration_images')} images). "
        f"Because the {m.get('arch')}'s classes are near-ties, the **agreement target is "
        "measured on a trained classifier** quantized with the same recipe: "
        f"{a['arch']} trained {a['epochs']} epochs on shapes, val accuracy "
        f"{a['val_accuracy']:.3f} (INT8: {a['int8_val_accuracy']:.3f}), top-1 agreement "
        f"{a['agreement']:.4f} on {a['val_images']} validation images. For the record, the "
        f"random-feature {m.get('arch')}'s agreement is "
        f"{_fmt(m.get('int8_agreement_now'), 4)} on {m.get('val_images')} images.",
        f"- Images: {len(report['photo_bytes'])} generated photo-like JPEGs of "
        f"{report['photo_size'][0]}×{report['photo_size'][1]} "
        f"({min(report['photo_bytes']) // 1000}–{max(report['photo_bytes']) // 1000} kB) and "
        f"{len(report['small_bytes'])} of 224×224, quality 90, cycled through every measurement.",
        "- HTTP: a closed-loop load generator (separate process, asyncio streams, HTTP/1.1 "
        "keep-alive) sends the same prebuilt multipart bodies to every server; CPU % and peak "
        "RSS are sampled with psutil on the server process and its workers (100 % = one core "
        "busy). The service runs with `ACTLAB_MAX_CONCURRENCY=32` so c=16 is admitted, not shed.",
        f"- (e) PyTorch eager loads the same state dict that was exported; max |torch − "
        "onnxruntime| logit difference "
        f"{_fmt(m.get('torch_vs_onnxruntime_max_abs_logit_diff'), 6)}.",
        "",
        "![benchmark chart](" + rel_chart + ")",
        "",
        "## Targets (issue 6)",
        targets_table(report),
        "",
    ]  # fmt: skip
    if narrative:
        sections += [narrative, ""]
    for group in ("a", "int8", "b", "decode", "e", "c", "d", "c8", "d8"):
        table = results_table(report, group)
        if table:
            sections += [f"## {GROUP_TITLES[group]}", table, ""]
    sections += ["## Cold start (process start → ready)", "| server | seconds |", "|---|---:|"]
    sections += [f"| {k} | {v:.2f} |" for k, v in report["cold_start_s"].items()]
    sections += ["", "## Load generator overhead", _loadgen_table(report), ""]
    sections += ["## Activation tax (from bench/activation_tax.py)", _tax_section(report), ""]
    return "\n".join(sections)


NOISY_BUSY_PERCENT = 20.0


def is_noisy(start_load: float, cpus: int, busy_percent: float | None = None) -> bool:
    """Was other work running when the suite started? Judged by how busy the CPUs were just
    before it (``busy_percent``, of all CPUs) when measured; older reports only have the load
    average, a lagging one-minute mean. Only the start counts: the load at the end is the
    suite's own (its servers and load generator keep every core busy)."""
    if busy_percent is not None:
        return busy_percent >= NOISY_BUSY_PERCENT
    return start_load >= 0.5 * cpus


def _noise_warning(report: dict[str, Any]) -> list[str]:
    machine = report["machine"]
    start = machine["load_average"][0]
    cpus = machine["cpus_usable"]
    busy = machine.get("other_cpu_busy_percent")
    if not is_noisy(start, cpus, busy):
        return []
    measured = (
        f"the CPUs were {busy:.0f} % busy with other work in the seconds before it started"
        if busy is not None
        else f"1-minute load average {start} at the start, on {cpus} CPUs"
    )
    return [
        f"> **Warning: this run was not taken on a quiet machine** ({measured}). Other "
        "processes took CPU, so absolute numbers are inflated and ratios between rows measured "
        "at different moments are unreliable. Re-run `make bench` on an otherwise idle machine "
        "before drawing conclusions.",
        "",
    ]


def _loadgen_table(report: dict[str, Any]) -> str:
    costs = report["loadgen"]
    if not costs:
        return "not measured"
    worst = max(costs, key=lambda c: c["cpu_percent"])
    per_request = sorted(c["cpu_ms_per_request"] for c in costs)
    return (
        f"The load generator used {per_request[len(per_request) // 2]:.2f} ms of CPU per request "
        f"(median over levels; max {per_request[-1]:.2f} ms) and at most "
        f"{worst['cpu_percent']:.0f} %"
        f" of one core (`{worst['key']}`), against tens of ms of server CPU per request: "
        "it is not the bottleneck, though it does share the two cores with the server."
    )


def _tax_section(report: dict[str, Any]) -> str:
    tax = report.get("activation_tax")
    if not tax:
        return (
            "No results yet: `bench/results/activation_tax.json` was not found. Run "
            "`python -m bench.activation_tax` (it exports a ResNet-50 per activation, so it is a "
            "separate command) and then `make bench` again."
        )
    header = ""
    if "json" in tax:
        j = tax["json"]
        header = (
            f"Measured by `{j.get('command', 'python -m bench.activation_tax')}` on "
            f"{j.get('date', '?')} (a separate run from the tables above).\n\n"
        )
    if "markdown" in tax:
        return header + str(tax["markdown"]).strip()
    return header + "```json\n" + json.dumps(tax["json"].get("rows", []), indent=1) + "\n```"
