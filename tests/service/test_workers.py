"""The inference executor: shutdown stops running work instead of waiting out its deadline."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.classify import Deadline
from service.errors import DeadlineExceeded
from service.workers import InferenceExecutor


def test_shutdown_stops_running_work_at_once_and_frees_its_slot() -> None:
    executor = InferenceExecutor(max_concurrency=2, timeout_s=600)
    started = threading.Event()

    def long_work(deadline: Deadline) -> str:  # like a decode loop: checks between steps
        started.set()
        while True:
            deadline.check()
            time.sleep(0.01)

    async def scenario() -> None:
        request = asyncio.ensure_future(executor.submit(long_work))
        assert await asyncio.to_thread(started.wait, 30)
        stopper = asyncio.ensure_future(asyncio.to_thread(executor.shutdown))
        with pytest.raises(DeadlineExceeded):
            await asyncio.wait_for(request, timeout=30)  # not the 600 s deadline
        await asyncio.wait_for(stopper, timeout=30)

    asyncio.run(scenario())
    assert executor.limiter.in_use == 0
