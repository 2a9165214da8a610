"""One onnxruntime session per model: explicit threads, full graph optimisation, warm-up, run.

``ModelRuntime.run(batch)`` is the single entry point for inference (a dynamic batcher can sit
behind it). It is thread-safe: onnxruntime's ``InferenceSession.run`` may be called from many
threads at once. ``path`` and ``card`` are public so the inspection code can build its own session
on the same file.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from service.batching import DynamicBatcher
from service.errors import DeadlineExceeded
from service.modelcard import INPUT_NAME, LOGITS_NAME, PROBABILITIES_NAME, CardError, ModelCard

log = logging.getLogger("actlab.runtime")

Batch = NDArray[np.float32]


class ModelLoadError(Exception):
    """A model file could not be turned into a serving session; the message says why."""


def cpu_quota(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: min of the affinity mask and the cgroup (v2 or v1) CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_limit(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def parallel_runs_for(intra_op_threads: int) -> int:
    """How many batched runs keep every usable CPU busy: CPUs ÷ intra-op threads (0 = the CPU
    quota, so one run)."""
    cpus = cpu_quota()
    return max(1, cpus // (intra_op_threads if intra_op_threads > 0 else cpus))


def _cgroup_cpu_limit(root: Path) -> float | None:
    try:
        text = (root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def session_options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    """Options shared by every serving session (built once per model, never per request)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads if intra_op_threads > 0 else cpu_quota()
    options.inter_op_num_threads = max(1, inter_op_threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Several requests share few cores: spinning worker threads would steal CPU from each other.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, int, int]
    dtype: str = "float32"


@dataclass
class ModelRuntime:
    """A loaded, verified, warmed model."""

    name: str
    version: int
    path: Path
    digest: str
    card: ModelCard
    session: ort.InferenceSession = field(repr=False)
    batcher: DynamicBatcher | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        name: str,
        version: int,
        digest: str,
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
    ) -> ModelRuntime:
        try:
            session = ort.InferenceSession(
                str(path),
                sess_options=session_options(intra_op_threads, inter_op_threads),
                providers=["CPUExecutionProvider"],
            )
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelLoadError(f"onnxruntime cannot load the file: {exc}") from exc
        try:
            card = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)
        except CardError as exc:
            raise ModelLoadError(str(exc)) from exc
        if card.name != name or card.version != version:
            raise ModelLoadError(
                f"the card says {card.name}/{card.version} but the file is at {name}/{version}"
            )
        _check_io(session, card)
        return cls(name=name, version=version, path=path, digest=digest, card=card, session=session)

    @property
    def input_spec(self) -> InputSpec:
        height, width = self.card.input_size
        return InputSpec(name=INPUT_NAME, shape=(3, height, width))

    def warm_up(self, runs: int = 2) -> None:
        """Run a blank batch so the first request does not pay for lazy allocations."""
        height, width = self.card.input_size
        blank = np.zeros((1, 3, height, width), dtype=np.float32)
        for _ in range(runs):
            self.run(blank)

    def enable_batching(
        self, max_batch_size: int, max_wait_s: float, max_parallel_runs: int = 1
    ) -> None:
        """Group concurrent ``run`` calls into shared runs (``service.batching``); 1 = off."""
        if max_batch_size > 1:
            self.batcher = DynamicBatcher(
                self._run_session,
                max_batch_size=max_batch_size,
                max_wait_s=max_wait_s,
                max_parallel_runs=max_parallel_runs,
                name=self.name,
            )

    def run(
        self, batch: Batch, run_options: ort.RunOptions | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """float32 [N, 3, H, W] → (logits [N, C], probabilities [N, C]); thread-safe."""
        if self.batcher is not None:
            options = run_options
            stop = (lambda: bool(options.terminate)) if options is not None else None
            return self.batcher.run(batch, stop)
        return self._run_session(batch, run_options)

    def _run_session(
        self, batch: Batch, run_options: ort.RunOptions | None = None
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        try:
            logits, probabilities = self.session.run(
                [LOGITS_NAME, PROBABILITIES_NAME], {INPUT_NAME: batch}, run_options
            )
        except Exception as exc:
            if run_options is not None and run_options.terminate:
                raise DeadlineExceeded("inference was stopped at the deadline") from exc
            raise
        return logits, probabilities


def _check_io(session: ort.InferenceSession, card: ModelCard) -> None:
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs:
        raise ModelLoadError(f"the graph has no input named {INPUT_NAME!r}")
    missing = {LOGITS_NAME, PROBABILITIES_NAME} - outputs
    if missing:
        raise ModelLoadError(f"the graph lacks the outputs {sorted(missing)}")
    shape = inputs[INPUT_NAME].shape
    expected = [3, *card.input_size]
    fixed_mismatch = any(
        isinstance(d, int) and d != e for d, e in zip(shape[1:], expected, strict=False)
    )
    if len(shape) != 4 or fixed_mismatch:
        raise ModelLoadError(f"the input shape {shape} does not match the card ([N, {expected}])")
