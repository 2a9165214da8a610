"""Dynamic batching: grouping, per-caller results, deadlines, failures, and the service wiring."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from conftest import make_settings, running_app
from service_images import gradient_rgb, jpeg

from service.batching import DynamicBatcher
from service.errors import DeadlineExceeded
from service.imaging import DecodeLimits, decode_image, draft_size, preprocess
from service.modelcard import INPUT_NAME, PROBABILITIES_NAME


def _affine(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in model: per-image sums (logits) and their doubles (probabilities)."""
    sums = batch.reshape(len(batch), -1).sum(axis=1, keepdims=True).astype(np.float32)
    return sums, 2 * sums


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.delay_s = delay_s
        self.fail = fail
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.entered.set()
        self.gate.wait(5)
        self.sizes.append(len(batch))
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("the model failed")
        return _affine(batch)


def _inputs(n: int, images: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.standard_normal((images, 3, 2, 2)).astype(np.float32) for _ in range(n)]


def _run_all(batcher: DynamicBatcher, inputs: list[np.ndarray]) -> list[object]:
    results: list[object] = [None] * len(inputs)

    def call(i: int) -> None:
        try:
            results[i] = batcher.run(inputs[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


def test_a_lone_request_runs_alone_and_gets_its_own_result() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=8, max_wait_s=0.0)
    (x,) = _inputs(1, images=2)
    logits, probabilities = batcher.run(x)
    expected, _ = _affine(x)
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_array_equal(probabilities, 2 * expected)
    assert model.sizes == [2]


def test_waiting_requests_are_grouped_up_to_the_limit_and_each_gets_its_rows() -> None:
    model = Recorder()
    model.gate.clear()  # hold the first run so the others queue behind it
    batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.0)
    first, *rest = _inputs(9)
    holder = threading.Thread(target=batcher.run, args=(first,))
    holder.start()
    assert model.entered.wait(5)
    results: list[object] = []
    runner = threading.Thread(target=lambda: results.extend(_run_all(batcher, rest)))
    runner.start()
    deadline = time.monotonic() + 5
    while len(batcher._queue) < 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    model.gate.set()
    runner.join(10)
    holder.join(5)
    assert model.sizes == [1, 4, 4]
    assert (batcher.batches_run, batcher.images_run) == (3, 9)
    for x, result in zip(rest, results, strict=True):
        assert isinstance(result, tuple)
        np.testing.assert_array_equal(result[0], _affine(x)[0])
        np.testing.assert_array_equal(result[1], _affine(x)[1])


def test_max_wait_collects_requests_that_arrive_shortly_after() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=3, max_wait_s=2.0)
    results = _run_all(batcher, _inputs(3))
    assert all(isinstance(r, tuple) for r in results)
    assert model.sizes == [3]  # full before the wait ran out: flushed at once


def test_a_request_larger_than_the_limit_runs_on_its_own() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=2, max_wait_s=0.0)
    (x,) = _inputs(1, images=5)
    logits, _ = batcher.run(x)
    assert model.sizes == [5]
    np.testing.assert_array_equal(logits, _affine(x)[0])


def test_a_failing_run_fails_every_caller_in_the_group() -> None:
    model = Recorder(fail=True)
    batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.05)
    results = _run_all(batcher, _inputs(3))
    assert all(isinstance(r, RuntimeError) and str(r) == "the model failed" for r in results)


def test_a_caller_past_its_deadline_gets_deadline_exceeded_and_is_not_run() -> None:
    model = Recorder()
    model.gate.clear()
    batcher = DynamicBatcher(model, max_batch_size=1, max_wait_s=0.0)
    first, second = _inputs(2)
    holder = threading.Thread(target=batcher.run, args=(first,))
    holder.start()
    time.sleep(0.1)
    with pytest.raises(DeadlineExceeded) as info:
        batcher.run(second, should_stop=lambda: True)
    assert info.value.status == 504
    model.gate.set()
    holder.join(5)
    assert model.sizes == [1]  # only the first one ran


def test_a_caller_already_past_its_deadline_is_refused_without_queueing() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=8, max_wait_s=0.0)
    (x,) = _inputs(1)
    with pytest.raises(DeadlineExceeded):
        batcher.run(x, should_stop=lambda: True)
    assert model.sizes == [] and not batcher._queue and batcher._collectors == 0


def test_the_collector_thread_exits_when_idle_and_restarts_on_demand() -> None:
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.0, idle_exit_s=0.05)
    (x,) = _inputs(1)
    batcher.run(x)
    deadline = time.monotonic() + 5
    while batcher._collectors and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batcher._collectors == 0
    np.testing.assert_array_equal(batcher.run(x)[0], _affine(x)[0])


def test_a_caller_giving_up_while_its_group_is_gathered_is_not_run() -> None:
    """max_wait_s > 0: the collector holds the lone caller's batch while it waits for more; the
    caller's deadline passes meanwhile: a 504 for it, and the emptied group never runs."""
    model = Recorder()
    batcher = DynamicBatcher(model, max_batch_size=4, max_wait_s=0.5)
    (x,) = _inputs(1)
    gives_up_at = time.monotonic() + 0.1
    with pytest.raises(DeadlineExceeded):
        batcher.run(x, should_stop=lambda: time.monotonic() > gives_up_at)
    deadline = time.monotonic() + 5
    while batcher._collecting and time.monotonic() < deadline:
        time.sleep(0.01)
    assert model.sizes == [] and batcher.batches_run == 0
    np.testing.assert_array_equal(batcher.run(x)[0], _affine(x)[0])  # and it still serves


class Overlap:
    """A stand-in model held at a gate that records how many runs were inside it at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most_inside = 0
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.two_inside = threading.Event()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
            if self.inside == 2:
                self.two_inside.set()
        self.gate.wait(10)
        with self.lock:
            self.inside -= 1
        return _affine(batch)


@pytest.mark.parametrize("parallel", [1, 2])
def test_groups_run_side_by_side_up_to_max_parallel_runs(parallel: int) -> None:
    model = Overlap()
    batcher = DynamicBatcher(model, max_batch_size=2, max_wait_s=0.0, max_parallel_runs=parallel)
    inputs = _inputs(5)
    threads = [threading.Thread(target=batcher.run, args=(x,)) for x in inputs]
    for thread in threads:
        thread.start()
    # with two runs allowed, a second group starts while the first is held at the gate
    assert model.two_inside.wait(0.5 if parallel == 1 else 10) == (parallel == 2)
    model.gate.set()
    for thread in threads:
        thread.join(10)
    assert model.most_inside == parallel
    assert batcher.images_run == 5 and batcher._collectors <= parallel


def test_parallel_runs_fill_the_cpus_with_the_intra_op_threads() -> None:
    from service.runtime import cpu_quota, parallel_runs_for

    assert parallel_runs_for(0) == 1  # intra-op threads = the CPU quota: one run fills it
    assert parallel_runs_for(1) == cpu_quota()
    assert parallel_runs_for(10 * cpu_quota()) == 1


def test_one_intra_op_thread_per_worker_batches_in_parallel_runs(model_repo: Path) -> None:
    from service.runtime import cpu_quota

    with running_app(make_settings(model_repo, intra_op_threads=1)) as client:
        batcher = client.app.state.registry.get("tiny-relu").batcher  # type: ignore[attr-defined]
        assert batcher is not None and batcher.max_parallel_runs == cpu_quota()


@pytest.mark.parametrize(
    ("size", "wait", "parallel", "message"),
    [
        (0, 0.0, 1, "max_batch_size must be at least 1, got 0"),
        (2, -1.0, 1, "max_wait_s must be 0"),
        (2, 0.0, 0, "max_parallel_runs must be at least 1, got 0"),
    ],
)
def test_bad_batcher_settings_are_rejected(
    size: int, wait: float, parallel: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DynamicBatcher(_affine, max_batch_size=size, max_wait_s=wait, max_parallel_runs=parallel)


def test_the_service_with_batching_answers_concurrent_requests_like_a_direct_run(
    model_repo: Path,
) -> None:
    """Batching on: 12 concurrent classify calls; each answer equals its own direct session run."""
    settings = make_settings(
        model_repo, batch_max_size=8, batch_max_wait_ms=20.0, max_concurrency=16
    )
    images = [jpeg(gradient_rgb(64 + 8 * i, 48 + 4 * i, seed=i)) for i in range(12)]
    with running_app(settings) as client:
        model = client.app.state.registry.get("tiny-relu")  # type: ignore[attr-defined]
        assert model.batcher is not None and model.batcher.max_batch_size == 8
        session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
        limits = DecodeLimits()
        answers: list[Any] = [None] * len(images)

        def call(i: int) -> None:
            answers[i] = client.post(
                "/v1/models/tiny-relu/classify?include_probabilities=true",
                files={"file": ("x.jpg", images[i], "image/jpeg")},
            )

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for data, response in zip(images, answers, strict=True):
            assert response is not None
            assert response.status_code == 200, response.text
            image = decode_image(data, limits, min_size=draft_size(model.card))
            (expected,) = session.run(
                [PROBABILITIES_NAME], {INPUT_NAME: preprocess(image, model.card)}
            )
            got = np.asarray(response.json()["predictions"][0]["probabilities"], dtype=np.float32)
            np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-6)
        assert model.batcher.images_run >= len(images)


def test_batching_is_off_when_the_max_size_is_one(model_repo: Path) -> None:
    with running_app(make_settings(model_repo, batch_max_size=1)) as client:
        assert client.app.state.registry.get("tiny-relu").batcher is None  # type: ignore[attr-defined]
