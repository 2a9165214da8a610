"""Dynamic batching: concurrent requests for one model share a single onnxruntime run.

Callers (inference worker threads) hand their ready batch to ``DynamicBatcher.run`` and block.
A collector thread takes the oldest waiting batch, then keeps collecting until the combined
batch holds ``max_batch_size`` images or ``max_wait_s`` has passed since it took the first one;
it runs them as one ``[N, 3, H, W]`` tensor and hands each caller its own rows. With
``max_wait_s = 0`` only requests that are *already* waiting are grouped (no added latency when
the server is idle; batching happens exactly when requests queue behind a running batch).

Up to ``max_parallel_runs`` groups run at once, one collector thread each, and one group is
collected at a time. One run uses the session's intra-op threads; with fewer intra-op threads
than CPUs (several uvicorn workers × 1 thread), a single collector would cap the process at
that many cores, where unbatched requests run side by side on all of them (measured: 2 workers
× 1 thread on 2 cores fell from 24 to 15 images/s in some rounds). ``parallel_runs_for`` gives
CPUs ÷ intra-op threads.

A caller whose deadline has passed is refused before it queues; one whose deadline passes while
it waits is answered with ``DeadlineExceeded`` at once, and its rows are dropped if they have not
started running. Collector threads start on demand (another only while every one is running a
group) and exit after ``idle_exit_s`` without work, so a replaced model leaves no thread behind.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from service.errors import DeadlineExceeded

Array = NDArray[np.float32]
RunBatch = Callable[[Array], tuple[Array, Array]]
ShouldStop = Callable[[], bool]

_POLL_S = 0.05


@dataclass
class _Pending:
    batch: Array
    should_stop: ShouldStop | None
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    result: tuple[Array, Array] | None = None
    error: BaseException | None = None
    abandoned: bool = False


class DynamicBatcher:
    """Groups concurrent ``run`` calls into one call of ``run_batch`` (see the module docstring)."""

    def __init__(
        self,
        run_batch: RunBatch,
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_parallel_runs: int = 1,
        idle_exit_s: float = 5.0,
        name: str = "model",
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_s < 0:
            raise ValueError(f"max_wait_s must be 0 or more seconds, got {max_wait_s}")
        if max_parallel_runs < 1:
            raise ValueError(f"max_parallel_runs must be at least 1, got {max_parallel_runs}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_parallel_runs = max_parallel_runs
        self.idle_exit_s = idle_exit_s
        self.name = name
        self.batches_run = 0
        self.images_run = 0
        self._queue: collections.deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._collectors = 0  # threads alive
        self._running = 0  # of those, the ones running a group now
        self._collecting = False  # one collector is gathering a group

    # -- caller side -------------------------------------------------------------------------
    def run(self, batch: Array, should_stop: ShouldStop | None = None) -> tuple[Array, Array]:
        """Run ``batch`` (float32 [N, 3, H, W]) together with whatever else is waiting."""
        if should_stop is not None and should_stop():
            raise DeadlineExceeded("inference was stopped at the deadline")
        item = _Pending(batch, should_stop)
        with self._cond:
            self._queue.append(item)
            every_one_busy = self._running == self._collectors
            if every_one_busy and self._collectors < self.max_parallel_runs:
                self._collectors += 1
                threading.Thread(
                    target=self._collect,
                    name=f"batch-{self.name}-{self._collectors}",
                    daemon=True,
                ).start()
            self._cond.notify_all()
        while not item.done.wait(_POLL_S if should_stop is not None else None):
            if should_stop is not None and should_stop():
                with self._cond:
                    item.abandoned = True  # a group being gathered drops it
                    if item in self._queue:
                        self._queue.remove(item)
                raise DeadlineExceeded("inference was stopped at the deadline")
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    # -- collector thread --------------------------------------------------------------------
    def _collect(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            try:
                self._run_group(group)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()

    def _next_group(self) -> list[_Pending] | None:
        with self._cond:
            idle_until = time.monotonic() + self.idle_exit_s
            while True:
                while not self._queue or self._collecting:
                    remaining = idle_until - time.monotonic()
                    if remaining <= 0:
                        self._collectors -= 1
                        return None
                    self._cond.wait(remaining)
                self._collecting = True
                try:
                    group = self._gather()
                finally:
                    self._collecting = False
                    self._cond.notify_all()
                if group:  # empty if every caller gave up while it was being gathered
                    self._running += 1
                    return group

    def _gather(self) -> list[_Pending]:
        """The oldest waiting batch and what joins it (called holding the condition, which
        ``max_wait_s`` releases while it waits)."""
        group = [self._queue.popleft()]
        size = len(group[0].batch)
        flush_at = time.monotonic() + self.max_wait_s
        while size < self.max_batch_size:
            if self._queue:
                if size + len(self._queue[0].batch) > self.max_batch_size:
                    break
                nxt = self._queue.popleft()
                group.append(nxt)
                size += len(nxt.batch)
                continue
            remaining = flush_at - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        group = [item for item in group if not item.abandoned]
        for item in group:
            item.started = True
        return group

    def _run_group(self, group: list[_Pending]) -> None:
        try:
            if len(group) == 1:
                results = [self.run_batch(group[0].batch)]
            else:
                logits, probabilities = self.run_batch(
                    np.concatenate([item.batch for item in group], axis=0)
                )
                results, start = [], 0
                for item in group:
                    end = start + len(item.batch)
                    results.append((logits[start:end], probabilities[start:end]))
                    start = end
            self.batches_run += 1
            self.images_run += sum(len(item.batch) for item in group)
            for item, result in zip(group, results, strict=True):
                item.result = result
                item.done.set()
        except BaseException as exc:  # every waiting caller gets the failure, none hangs
            for item in group:
                item.error = exc
                item.done.set()
