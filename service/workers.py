"""Run CPU-bound work (decode, onnxruntime) off the event loop, bounded and with a deadline.

``InferenceExecutor.submit(fn)`` admits the call through the ``ConcurrencyLimiter`` (503 +
Retry-After when full), runs ``fn(deadline)`` on a dedicated thread pool sized to the limit, and
answers 504 when the deadline passes; the deadline also stops onnxruntime mid-run. The slot is
released only when the work really ends, so abandoned work still counts against the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from service.classify import Deadline
from service.errors import DeadlineExceeded
from service.limits import ConcurrencyLimiter

T = TypeVar("T")


class InferenceExecutor:
    def __init__(self, max_concurrency: int, timeout_s: float) -> None:
        self.limiter = ConcurrencyLimiter(max_concurrency)
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="infer")

    async def submit(self, work: Callable[[Deadline], T]) -> T:
        self.limiter.acquire()
        deadline = Deadline(self.timeout_s)
        try:
            future: Future[T] = self._pool.submit(work, deadline)
        except BaseException:
            self.limiter.release()
            raise
        future.add_done_callback(lambda _: self.limiter.release())
        wrapped = asyncio.wrap_future(future)
        try:
            return await asyncio.wait_for(asyncio.shield(wrapped), timeout=self.timeout_s)
        except TimeoutError:
            deadline.expire()
            raise DeadlineExceeded(
                f"the request took longer than the {self.timeout_s:g} s inference deadline"
            ) from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
