"""What one run measures: the full profile (``make bench``) and the smoke profile (CI, seconds)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from service.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"


@dataclass(frozen=True)
class ServerConfig:
    """One HTTP server under test: the service with given settings, or the naive reference."""

    key: str
    label: str
    kind: str  # "service" | "naive"
    workers: int = 1
    intra_op_threads: int = 0  # 0 = the service's default (the CPU quota)
    batch_max_size: int = Settings.model_fields["batch_max_size"].default  # the service's
    batch_max_wait_ms: float = Settings.model_fields["batch_max_wait_ms"].default  # defaults
    model: str = "fp32"  # "fp32" | "int8": which of the benchmark's model files it serves


@dataclass(frozen=True)
class Profile:
    name: str
    arch: str
    input_size: int
    resize_size: int
    photo_size: tuple[int, int]
    photos: int
    inprocess_runs: int
    batch_sizes: tuple[int, ...]
    torch_runs: int
    concurrencies: tuple[int, ...]
    requests_per_client: int
    min_requests: int
    interleaved_rounds: int  # the c=1 HTTP-vs-(b) ratio: rounds of back-to-back measurements
    interleaved_requests: int  # requests per side per round
    throughput_rounds: int  # the top-concurrency service ÷ naive throughput: interleaved rounds
    throughput_requests: int  # requests per server per round
    batching_rounds: int  # batching off vs 8 / 0 ms: interleaved rounds (c=1 p50, top images/s)
    batching_c1_requests: int  # c=1 requests per server per round
    batching_top_requests: int  # top-concurrency requests per server per round
    servers: tuple[ServerConfig, ...]
    probe_per_class: int  # shapes images per class for BN statistics + the linear-probe head
    val_per_class: int  # shapes images per class for accuracy and INT8 agreement
    calibration_images: int
    agreement_arch: str  # the trained classifier the INT8 agreement is measured on
    agreement_per_class: int
    agreement_epochs: int


SERVICE = ServerConfig("service", "service (defaults)", "service")
SERVICE_BATCH_OFF = ServerConfig(
    "service-nobatch", "service, batching off", "service", batch_max_size=1, batch_max_wait_ms=0.0
)
SERVICE_BATCH = ServerConfig(
    "service-batch8", "service, batching 8 / 0 ms", "service", batch_max_size=8,
    batch_max_wait_ms=0.0,
)  # fmt: skip
SERVICE_BATCH_WAIT = ServerConfig(
    "service-batch8-5ms",
    "service, batching 8 / 5 ms",
    "service",
    batch_max_size=8,
    batch_max_wait_ms=5.0,
)
SERVICE_2W = ServerConfig(
    "service-2w1t", "service, 2 workers × 1 thread", "service", workers=2, intra_op_threads=1
)


def _settings(config: ServerConfig) -> ServerConfig:
    return replace(config, key="", label="")


def unlike_defaults(*configs: ServerConfig) -> tuple[ServerConfig, ...]:
    """The configurations that would not run the service exactly as ``SERVICE`` (its defaults)
    does: batching off and batching 8 / 0 ms are both candidates, and whichever is the default
    is measured once, as ``SERVICE``."""
    return tuple(c for c in configs if _settings(c) != _settings(SERVICE))


NAIVE = ServerConfig("naive", "naive reference (d)", "naive")
# The same two servers on the INT8 file: where inference is cheap, decode and HTTP cost more.
SERVICE_INT8 = ServerConfig(
    "service-int8", "service (defaults), INT8 model", "service", model="int8"
)
NAIVE_INT8 = ServerConfig("naive-int8", "naive reference (d), INT8 model", "naive", model="int8")

FULL = Profile(
    name="full",
    arch="resnet50",
    input_size=224,
    resize_size=256,
    photo_size=(1920, 1280),
    photos=8,
    inprocess_runs=40,
    batch_sizes=(1, 2, 4, 8, 16),
    torch_runs=20,
    concurrencies=(1, 4, 16),
    requests_per_client=12,
    min_requests=100,
    interleaved_rounds=7,
    interleaved_requests=20,
    throughput_rounds=5,
    throughput_requests=96,
    batching_rounds=7,
    batching_c1_requests=20,
    batching_top_requests=96,
    servers=(
        SERVICE,
        *unlike_defaults(SERVICE_BATCH_OFF, SERVICE_BATCH, SERVICE_BATCH_WAIT),
        SERVICE_2W,
        NAIVE,
        SERVICE_INT8,
        NAIVE_INT8,
    ),
    probe_per_class=40,
    val_per_class=40,
    calibration_images=64,
    agreement_arch="resnet20",
    agreement_per_class=500,  # 4000 images: enough training for real margins
    agreement_epochs=30,  # (8 epochs on 2000 gave 78 % accuracy, 98.3 % agreement)
)

SMOKE = Profile(
    name="smoke",
    arch="resnet8",
    input_size=32,
    resize_size=36,
    photo_size=(320, 240),
    photos=2,
    inprocess_runs=3,
    batch_sizes=(1, 2),
    torch_runs=2,
    concurrencies=(1, 2),
    requests_per_client=2,
    min_requests=3,
    interleaved_rounds=2,
    interleaved_requests=3,
    throughput_rounds=2,
    throughput_requests=4,
    batching_rounds=2,
    batching_c1_requests=3,
    batching_top_requests=4,
    servers=(
        SERVICE,
        *unlike_defaults(SERVICE_BATCH_OFF, SERVICE_BATCH),
        NAIVE,
        SERVICE_INT8,
        NAIVE_INT8,
    ),
    probe_per_class=4,
    val_per_class=3,
    calibration_images=4,
    agreement_arch="resnet8",
    agreement_per_class=5,
    agreement_epochs=1,
)
