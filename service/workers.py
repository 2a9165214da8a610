"""Run CPU-bound work (decode, onnxruntime) off the event loop, bounded and with a deadline.

``InferenceExecutor.submit(fn)`` admits the call through the ``ConcurrencyLimiter`` (503 +
Retry-After when full), runs ``fn(deadline)`` on a dedicated thread pool sized to the limit, and
answers 504 when the deadline passes; the deadline also stops onnxruntime mid-run. The slot is
released only when the work really ends, so abandoned work still counts against the limit.

``shutdown`` (after uvicorn's graceful period) expires every running request's deadline, so
onnxruntime stops mid-run and decoding stops at the next image, cancels what has not started, and
waits for the threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from service.classify import Deadline
from service.errors import DeadlineExceeded
from service.limits import ConcurrencyLimiter

T = TypeVar("T")


class InferenceExecutor:
    def __init__(self, max_concurrency: int, timeout_s: float) -> None:
        self.limiter = ConcurrencyLimiter(max_concurrency)
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="infer")
        self._running: set[Deadline] = set()
        self._running_lock = threading.Lock()

    async def submit(self, work: Callable[[Deadline], T]) -> T:
        self.limiter.acquire()
        deadline = Deadline(self.timeout_s)
        with self._running_lock:
            self._running.add(deadline)
        try:
            future: Future[T] = self._pool.submit(work, deadline)
        except BaseException:
            self._finished(deadline)
            raise
        future.add_done_callback(lambda _: self._finished(deadline))
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout=self.timeout_s)
        except TimeoutError:
            deadline.expire()
            wrapped.add_done_callback(_retrieve)  # its DeadlineExceeded is expected, not lost
            raise DeadlineExceeded(
                f"the request took longer than the {self.timeout_s:g} s inference deadline"
            ) from None

    def _finished(self, deadline: Deadline) -> None:
        with self._running_lock:
            self._running.discard(deadline)
        self.limiter.release()

    def shutdown(self) -> None:
        """Stop running work at once (its requests are past uvicorn's grace period) and wait."""
        with self._running_lock:
            running = list(self._running)
        for deadline in running:
            deadline.expire()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
