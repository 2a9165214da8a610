"""What the numbers were measured on: CPU model and flags that matter, cores, memory, versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

FLAGS_OF_INTEREST = (
    "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip
PACKAGES = (
    "onnxruntime", "onnx", "numpy", "pillow", "fastapi", "starlette", "uvicorn", "pydantic",
    "httpx", "torch",
)  # fmt: skip


def _cpuinfo() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown", []
    model, flags = "unknown", []
    for line in text.splitlines():
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = line.split(":", 1)[1].split()
    return model, [f for f in FLAGS_OF_INTEREST if f in flags]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def other_cpu_busy_percent(seconds: float = 3.0) -> float:
    """How busy the CPUs are right now, in % of all of them, sampled over ``seconds``.

    Taken before the suite starts, while this process sleeps, so it is other work. Unlike the
    load average (a one-minute moving average) it does not still count work that just ended,
    such as the activation-tax run ``make bench`` does first."""
    return round(float(psutil.cpu_percent(interval=seconds)), 1)


def describe_machine(load_only: bool = False) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    if load_only:
        return {"load_average": load}
    busy = other_cpu_busy_percent()
    model, flags = _cpuinfo()
    return {
        "cpu_model": model,
        "cpu_flags": flags,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpus_logical": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {p: _version(p) for p in PACKAGES},
        "load_average": load,
        "other_cpu_busy_percent": busy,
    }
