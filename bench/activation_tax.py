"""``python -m bench.activation_tax``: ResNet-50 latency per catalogue activation, relative to ReLU.

Every network activation except maxout (which widens the network) is exported twice from the same
seeded ResNet-50 (fp32, 224×224, batch 1, 1000 classes): as torch writes it (``torch ops``) and
through the exporter's fast path (export/onnx_rewrite.py), only where the two differ. All
sessions (onnxruntime, ``ORT_ENABLE_ALL``, ``--threads`` intra-op threads) are measured in one
run, in interleaved rounds (every model once per round, in a shuffled order); each round's
median latency is divided by ReLU's in the same round, and the table reports medians over
rounds, so load from other processes shifts numerator and denominator alike.

Sessions are built with the service's own options (service.runtime.session_options), so the
table is the tax the service pays: intra-op threads sleep between operators instead of
spinning. onnxruntime's default (spinning) was measured too and is not used: on a 2-core AMD EPYC
VM it was bimodal, the same Mish model measuring 1.26× or 1.78× ReLU in consecutive identical
runs, while without spinning the ratios repeat within a few hundredths; on a 2-core Xeon
(AVX-512, 2026-12-04, 4 interleaved rounds) spinning brought Mish from 1.65× to 1.51×, ELU from
1.54× to 1.40× (both still over the limit) and torch's Softsign from 1.45× to 1.28×. Sleeping
threads cost a wake-up per parallel operator, which weighs on activations onnxruntime runs as
several element-wise operators.

Keeping the element-wise ops in onnxruntime's blocked NCHWc layout was measured too and is not
used: on the Xeon (2026-12-05, 5 interleaved rounds), the graphs onnxruntime optimizes
(``optimized_model_filepath``) with every single-source element-wise region's ReorderOutput /
ReorderInput pair dropped (identical outputs) ran elu 1.52× → 1.43× (torch's Elu op),
gaussian 1.45× → 1.36×, mish 1.58× → 1.50×, selu 1.67× → 1.63×, softsign 1.27× → 1.17× ReLU's
latency, at the price of a second, hardware-specific session build at every load. The passes
themselves are the cost: on a [1, 256, 56, 56] tensor, single-threaded, Relu, Exp, Mul, Neg,
Softsign and Reciprocal take ≈0.29 ms, Sigmoid and Tanh ≈0.33, Gelu 0.58, Elu and Selu 1.4, Celu
1.7, Log 1.4, Softplus 8.5 and Mish 9.3 ms; one pass over ResNet-50's 49 activation tensors is
≈0.1× ReLU's latency.

A second pass runs single-threaded sessions and times each run in thread CPU time: the work
itself, insensitive to being descheduled on a shared machine (``cpu ×``).

``--int8`` also measures the relu ResNet-50 against its static INT8 QDQ variant
(export/quantize.py, calibrated on random tensors: latency only, this model is untrained).

Writes bench/results/activation_tax.json and bench/results/activation_tax.md (a Markdown
fragment for BENCHMARKS.md). Exports are cached in the temp directory, never in the repository.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bench.machine import describe_machine
from service.activations import NETWORK_ACTIVATIONS
from service.modelcard import INPUT_NAME, LOGITS_NAME
from service.runtime import session_options

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_RATIO = 1.3
ACTIVATIONS = tuple(a for a in NETWORK_ACTIVATIONS if a != "maxout")

AS_EXPORTED = {
    "relu": "Relu, fused into the Conv (and Conv+Add) in NCHWc",
    "relu6": "Clip, fused into the Conv except after a residual Add",
    "leaky_relu": "LeakyRelu, fused into the Conv except after a residual Add",
    "gelu": "Gelu (opset 20); onnxruntime's Gelu kernel stays in NCHWc",
    "silu": "x·Sigmoid(x), fused by onnxruntime into QuickGelu (stays in NCHWc)",
    "softsign": "x / (1 + abs(x)): Abs, Add, Div (vectorised kernels)",
    "tanh": "Tanh, fused into the Conv",
    "sigmoid": "Sigmoid, fused into the Conv",
    "hardsigmoid": "HardSigmoid, fused into the Conv",
    "hardswish": "HardSwish, fused into the Conv",
    "gaussian": "exp(-x²): Clip, Mul, Neg, Exp (vectorised kernels)",
    "identity": "nothing (no activation op)",
}
"""How onnxruntime runs the activations the fast path leaves as torch exported them."""

FAST_PATH = {
    "softplus": "relu(x) + z·P(z²), z = sigmoid(−abs(x) − ln 2) = t/(2+t), t = exp(−abs(x)); "
    "log1p(t) = 2·atanh(z), P quadratic (2.5e-6; cubic for β < 1): Relu, Sigmoid, Mul, "
    "depthwise 1×1, all in NCHWc (no Log)",
    "mish": "x − 2x/((1 + eˣ)² + 1): Exp, Add, Mul, Add, Div, depthwise 1×1 (sum fused)",
    "elu": "relu(x) + depthwise-1×1(exp(min(x, 0))) (α·e − α, sum fused)",
    "selu": "relu(λx) + depthwise-1×1(exp(min(x, 0))) (λα·e − λα, sum fused)",
    "celu": "relu(x) + depthwise-1×1(exp(min(x, 0)/α)) (α·e − α, sum fused)",
    "prelu": "x + depthwise-1×1((1−a)·relu(−x)): two NCHWc depthwise convs",
    "softsign": "Softsign: one element-wise kernel instead of Abs, Add, Div",
    "binary_step": "HardSigmoid(2¹²⁷·x) twice (first fused into the Conv)",
}


@dataclass
class Row:
    activation: str
    formulation: str
    torch_ms: float
    torch_ratio: float
    torch_cpu_ratio: float
    fast_ms: float | None
    fast_ratio: float | None
    fast_cpu_ratio: float | None

    @property
    def final_ratio(self) -> float:
        return self.torch_ratio if self.fast_ratio is None else self.fast_ratio

    @property
    def final_cpu_ratio(self) -> float:
        return self.torch_cpu_ratio if self.fast_cpu_ratio is None else self.fast_cpu_ratio

    @property
    def worst_ratio(self) -> float:
        """The verdict is conservative: the larger of the wall-clock and CPU-time ratios."""
        cpu = self.final_cpu_ratio
        return self.final_ratio if math.isnan(cpu) else max(self.final_ratio, cpu)


EXPORT_SOURCES = ("activations.py", "exporter.py", "onnx_rewrite.py", "resnet.py")
"""The export modules an exported file depends on: editing one (a new fast formulation) must
not let the benchmark time a stale cached export."""


def _cache_dir() -> Path:
    import onnx
    import torch

    import export

    sources = hashlib.sha256()
    for name in EXPORT_SOURCES:
        sources.update((Path(export.__file__).parent / name).read_bytes())
    versions = f"torch{torch.__version__}-onnx{onnx.__version__}-ort{ort.__version__}"
    tag = f"{versions}-src{sources.hexdigest()[:12]}"
    return Path(tempfile.gettempdir()) / "actlab-activation-tax" / tag


def export_resnet50(activation: str, fast: bool, cache: Path) -> Path:
    """The cached ONNX file of a seeded ResNet-50 with ``activation`` (written atomically)."""
    path = cache / f"resnet50-{activation}-{'fast' if fast else 'torch'}.onnx"
    if path.exists():
        return path
    import torch

    from export.exporter import export_onnx
    from export.resnet import build_resnet

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    model = build_resnet("resnet50", activation, num_classes=1000, seed=0).eval()
    proto = export_onnx(model, (224, 224), fast_activations=fast).proto
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(proto.SerializeToString())
    os.replace(partial, path)
    return path


def make_session(path: Path, threads: int) -> ort.InferenceSession:
    """A session with the service's options and ``threads`` (> 0) intra-op threads."""
    options = session_options(threads, 1)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


Clock = Callable[[], float]


def interleaved(
    paths: dict[str, Path],
    baseline: str,
    *,
    threads: int,
    rounds: int,
    reps: int,
    clock: Clock,
    log: Callable[[str], None],
) -> dict[str, tuple[float, float]]:
    """key -> (median ms, median ratio to ``baseline``) over interleaved rounds."""
    sessions = {key: make_session(path, threads) for key, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    for session in sessions.values():
        for _ in range(2):
            session.run([LOGITS_NAME], {INPUT_NAME: x})
    per_round: dict[str, list[float]] = {key: [] for key in sessions}
    order = list(sessions)
    shuffler = random.Random(0)
    for index in range(rounds):
        shuffler.shuffle(order)
        for key in order:
            session = sessions[key]
            times = []
            for _ in range(reps):
                start = clock()
                session.run([LOGITS_NAME], {INPUT_NAME: x})
                times.append(clock() - start)
            per_round[key].append(statistics.median(times) * 1e3)
        log(f"round {index + 1}/{rounds}: relu {per_round[baseline][-1]:.1f} ms")
    base = per_round[baseline]
    return {
        key: (
            statistics.median(values),
            statistics.median(v / b for v, b in zip(values, base, strict=True)),
        )
        for key, values in per_round.items()
    }


def measure_int8(
    fp32: Path, cache: Path, threads: int, rounds: int, reps: int, log: Callable[[str], None]
) -> dict[str, float]:
    int8 = cache / "resnet50-relu-int8.onnx"
    if not int8.exists():
        from export.quantize import quantize_int8

        log("quantizing the relu ResNet-50 (static QDQ, 32 random calibration tensors)")
        calibration = np.random.default_rng(1).standard_normal((32, 3, 224, 224))
        proto = quantize_int8(fp32.read_bytes(), calibration.astype(np.float32))
        partial = int8.with_suffix(f".{os.getpid()}.partial")
        partial.write_bytes(proto.SerializeToString())
        os.replace(partial, int8)
    result = interleaved(
        {"fp32": fp32, "int8": int8},
        "fp32",
        threads=threads,
        rounds=rounds,
        reps=reps,
        clock=time.perf_counter,
        log=log,
    )
    return {
        "fp32_ms": round(result["fp32"][0], 2),
        "int8_ms": round(result["int8"][0], 2),
        "int8_over_fp32": round(result["int8"][1], 3),
        "speedup": round(1.0 / result["int8"][1], 2),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def render_markdown(report: dict) -> str:
    cfg = report["settings"]
    lines = [
        "### Activation tax: ResNet-50 latency per activation, relative to ReLU",
        "",
        f"fp32, 224×224, batch 1, onnxruntime {report['machine']['versions']['onnxruntime']}, "
        f"{cfg['threads']} intra-op threads with the service's session options (no spinning), "
        f"{cfg['rounds']} interleaved rounds × {cfg['reps']} "
        f"runs (median of per-round ratios); `cpu ×` = single-thread CPU-time ratio "
        f"(insensitive to other load); ≤ 1.3× judges the larger of the two. "
        f"Command: `{report['command']}`, {report['date']}, "
        f"load average at start {report['machine']['load_average']}: absolute milliseconds "
        "include whatever else the machine runs; the ratios are the result.",
        "",
        "| activation | torch ops: ms | × ReLU | cpu × | fast path: ms | × ReLU | cpu × | "
        "≤ 1.3× | formulation onnxruntime runs |",
        "|---|---:|---:|---:|---:|---:|---:|:---:|---|",
    ]
    for row in report["rows"]:
        cell = row["formulation"].replace("|", "\\|")  # a bare | would split the cell
        lines.append(
            f"| {row['activation']} | {row['torch_ms']:.1f} | {row['torch_ratio']:.2f} | "
            f"{row['torch_cpu_ratio']:.2f} | {_fmt(row['fast_ms'], '.1f')} | "
            f"{_fmt(row['fast_ratio'], '.2f')} | {_fmt(row['fast_cpu_ratio'], '.2f')} | "
            f"{'yes' if row['met'] else '**no**'} | {cell} |"
        )
    missed = [r for r in report["rows"] if not r["met"]]
    lines.append("")
    if missed:
        lines.append(
            "Missed: "
            + "; ".join(
                f"{r['activation']} {r['worst_ratio']:.2f}× "
                f"({r['worst_ratio'] / TARGET_RATIO - 1:+.0%} over the 1.3× target)"
                for r in missed
            )
            + "."
        )
    else:
        lines.append("Every activation (maxout excepted) is within 1.3× of ReLU.")
    if report.get("int8"):
        q = report["int8"]
        lines += [
            "",
            f"INT8 (static QDQ, relu ResNet-50, same threads): fp32 {q['fp32_ms']:.1f} ms, "
            f"int8 {q['int8_ms']:.1f} ms: **{q['speedup']:.2f}× faster** "
            "(latency only; agreement is measured on real images by the main suite).",
        ]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + f".{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.activation_tax", description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu-rounds", type=int, default=3, help="0 skips the CPU-time pass")
    parser.add_argument("--activations", nargs="*", default=list(ACTIVATIONS))
    parser.add_argument("--int8", action="store_true", help="also measure fp32 vs INT8 QDQ")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    from export.onnx_rewrite import has_fast_formulation

    names = ["relu", *(a for a in args.activations if a != "relu")]
    cache = _cache_dir()
    machine = describe_machine()
    paths: dict[str, Path] = {}
    for name in names:
        log(f"exporting resnet50-{name} (cached in {cache})")
        paths[name] = export_resnet50(name, fast=False, cache=cache)
        if has_fast_formulation(name):
            paths[f"{name}+fast"] = export_resnet50(name, fast=True, cache=cache)

    log(f"wall clock, {args.threads} threads")
    wall = interleaved(
        paths,
        "relu",
        threads=args.threads,
        rounds=args.rounds,
        reps=args.reps,
        clock=time.perf_counter,
        log=log,
    )
    cpu: dict[str, tuple[float, float]] = {}
    if args.cpu_rounds > 0:
        log("thread CPU time, 1 thread")
        cpu = interleaved(
            paths,
            "relu",
            threads=1,
            rounds=args.cpu_rounds,
            reps=max(2, args.reps // 2),
            clock=time.thread_time,
            log=log,
        )
    rows = []
    for name in names:
        fast = f"{name}+fast" in paths
        rows.append(
            Row(
                activation=name,
                formulation=FAST_PATH[name] if fast else AS_EXPORTED.get(name, "as exported"),
                torch_ms=round(wall[name][0], 2),
                torch_ratio=round(wall[name][1], 3),
                torch_cpu_ratio=round(cpu.get(name, (0.0, float("nan")))[1], 3),
                fast_ms=round(wall[f"{name}+fast"][0], 2) if fast else None,
                fast_ratio=round(wall[f"{name}+fast"][1], 3) if fast else None,
                fast_cpu_ratio=round(cpu[f"{name}+fast"][1], 3) if fast and cpu else None,
            )
        )
    int8 = (
        measure_int8(paths["relu"], cache, args.threads, args.rounds, args.reps, log)
        if args.int8
        else None
    )
    command = "python -m bench.activation_tax " + " ".join(argv or sys.argv[1:])
    report = {
        "command": command.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {"threads": args.threads, "rounds": args.rounds, "reps": args.reps},
        "target_ratio": TARGET_RATIO,
        "rows": [
            {
                **asdict(r),
                "final_ratio": r.final_ratio,
                "final_cpu_ratio": r.final_cpu_ratio,
                "worst_ratio": r.worst_ratio,
                "met": r.worst_ratio <= TARGET_RATIO,
            }
            for r in rows
        ],
        "int8": int8,
    }
    _write_atomic(args.out / "activation_tax.json", json.dumps(report, indent=2) + "\n")
    markdown = render_markdown(report)
    _write_atomic(args.out / "activation_tax.md", markdown)
    print(markdown)
    log(f"wrote {args.out / 'activation_tax.json'} and {args.out / 'activation_tax.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
