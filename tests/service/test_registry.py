"""Repository scan and verification, the registry's version policy and reload, the runtime."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest
from service_reference import softmax64

from service.classify import Deadline
from service.errors import DeadlineExceeded, NotFound
from service.registry import ModelRegistry
from service.repository import (
    ModelFile,
    VerificationError,
    scan_repository,
    verify_model_file,
)
from service.runtime import ModelRuntime, cpu_quota
from service.settings import Settings


def write_digest(model_path: Path) -> None:
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    model_path.with_name("model.onnx.sha256").write_text(f"{digest}  model.onnx\n")


def set_card_field(model_path: Path, key: str, value: str) -> None:
    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save(model, str(model_path))
    write_digest(model_path)


def registry_for(models_dir: Path, **overrides: object) -> ModelRegistry:
    registry = ModelRegistry(Settings(models_dir=models_dir, warmup_runs=1, **overrides))
    registry.load_startup_models()
    return registry


def test_scan_finds_versions_and_ignores_junk(model_repo_copy: Path) -> None:
    (model_repo_copy / "tiny-relu" / "latest").mkdir()
    (model_repo_copy / "tiny-relu" / "0").mkdir()
    (model_repo_copy / "tiny-relu" / "5").mkdir()  # no model.onnx inside
    for odd in ("²", "٣", "1.0", " 3"):  # not ASCII digits: never versions, never a crash
        (model_repo_copy / "tiny-relu" / odd).mkdir()
        (model_repo_copy / "tiny-relu" / odd / "model.onnx").write_bytes(b"x")
    (model_repo_copy / ".hidden" / "1").mkdir(parents=True)
    (model_repo_copy / "README.md").write_text("notes")
    found = scan_repository(model_repo_copy)
    assert sorted(found) == [
        "tiny-identity",
        "tiny-maxout",
        "tiny-relu",
        "tiny-sigmoid",
        "tiny-tanh",
    ]
    assert [f.version for f in found["tiny-relu"]] == [1, 2]
    assert scan_repository(model_repo_copy / "missing") == {}


def test_verification_accepts_a_good_file_and_says_why_it_rejects(model_repo_copy: Path) -> None:
    path = model_repo_copy / "tiny-tanh" / "1" / "model.onnx"
    model = ModelFile("tiny-tanh", 1, path)
    assert verify_model_file(model) == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(VerificationError, match="SHA-256 mismatch"):
        verify_model_file(model)
    model.digest_path.write_text("xyz  model.onnx\n")
    with pytest.raises(VerificationError, match=r"must read '<sha256 hex>  model\.onnx'"):
        verify_model_file(model)
    model.digest_path.unlink()
    with pytest.raises(VerificationError, match=r"no digest file model\.onnx\.sha256"):
        verify_model_file(model)


def test_bad_models_are_skipped_with_a_logged_reason(
    model_repo_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = model_repo_copy / "tiny-sigmoid" / "1" / "model.onnx"
    corrupt.write_bytes(b"this is not an onnx file")
    write_digest(corrupt)
    mismatch = model_repo_copy / "tiny-tanh" / "1" / "model.onnx"
    mismatch.write_bytes(mismatch.read_bytes()[:-1])
    set_card_field(
        model_repo_copy / "tiny-maxout" / "1" / "model.onnx", "actlab.card_version", "99"
    )
    with caplog.at_level(logging.ERROR, logger="actlab.registry"):
        registry = registry_for(model_repo_copy)
    assert registry.ready
    assert registry.names() == ["tiny-identity", "tiny-relu"]
    reasons = {s.name: s.reason for s in registry.skipped}
    assert set(reasons) == {"tiny-sigmoid", "tiny-tanh", "tiny-maxout"}
    assert reasons["tiny-sigmoid"].startswith("onnxruntime cannot load the file")
    assert reasons["tiny-tanh"].startswith("SHA-256 mismatch")
    assert reasons["tiny-maxout"] == "unknown card version 99; this service reads version 1"
    logged = caplog.text
    for name, reason in reasons.items():
        assert f"model {name} version 1 skipped: {reason}" in logged


def test_card_that_disagrees_with_its_directory_is_skipped(model_repo_copy: Path) -> None:
    target = model_repo_copy / "tiny-tanh" / "3"
    shutil.copytree(model_repo_copy / "tiny-tanh" / "1", target)
    registry = registry_for(model_repo_copy)
    assert registry.get("tiny-tanh").version == 1  # v3 skipped, v1 serves
    [skipped] = registry.skipped
    assert skipped.reason == "the card says tiny-tanh/1 but the file is at tiny-tanh/3"


def test_latest_valid_version_serves_and_a_broken_latest_falls_back(model_repo_copy: Path) -> None:
    assert registry_for(model_repo_copy).get("tiny-relu").version == 2
    latest = model_repo_copy / "tiny-relu" / "2" / "model.onnx"
    latest.write_bytes(latest.read_bytes() + b"!")
    registry = registry_for(model_repo_copy)
    assert registry.get("tiny-relu").version == 1
    assert registry.available_versions("tiny-relu") == (1,)  # version 2 cannot be requested
    with pytest.raises(NotFound, match="version 2 of model 'tiny-relu' is not available"):
        registry.get("tiny-relu", 2)


def test_an_older_version_that_fails_on_demand_stops_being_listed(model_repo_copy: Path) -> None:
    older = model_repo_copy / "tiny-relu" / "1" / "model.onnx"
    older.write_bytes(older.read_bytes() + b"!")
    registry = registry_for(model_repo_copy)
    assert registry.available_versions("tiny-relu") == (1, 2)  # not verified until asked for
    with pytest.raises(NotFound) as caught:
        registry.get("tiny-relu", 1)
    message = str(caught.value)
    assert message.startswith(
        "version 1 of model 'tiny-relu' is in the repository but cannot be served (SHA-256 mismatch"
    )
    assert message.endswith("); available versions: 2")
    assert registry.available_versions("tiny-relu") == (2,)


def test_pinned_versions(model_repo: Path) -> None:
    registry = registry_for(model_repo, model_versions="tiny-relu=1")
    assert registry.get("tiny-relu").version == 1
    registry = registry_for(model_repo, model_versions="tiny-relu=9")
    assert "tiny-relu" not in registry.names()
    assert [s.reason for s in registry.skipped] == ["pinned version 9 is not in the repository"]


def test_reload_swaps_in_a_new_version_and_keeps_the_rest(
    model_repo_copy: Path, make_model: object
) -> None:
    registry = registry_for(model_repo_copy)
    before = dict(registry.serving())
    make_model(model_repo_copy, "tiny-relu", "relu", 3, seed=5)  # type: ignore[operator]
    report = registry.reload()
    assert report.loaded == ["tiny-relu/3"]
    assert sorted(report.unchanged) == ["tiny-identity", "tiny-maxout", "tiny-sigmoid", "tiny-tanh"]
    assert registry.get("tiny-relu").version == 3
    assert registry.get("tiny-tanh") is before["tiny-tanh"]  # untouched sessions are reused
    assert before["tiny-relu"].version == 2  # the old runtime object is still whole


def test_a_failed_reload_keeps_the_old_version(model_repo_copy: Path) -> None:
    registry = registry_for(model_repo_copy)
    broken = model_repo_copy / "tiny-relu" / "3"
    broken.mkdir()
    (broken / "model.onnx").write_bytes(b"garbage")
    write_digest(broken / "model.onnx")
    report = registry.reload()
    assert report.loaded == []
    assert [(s.name, s.version) for s in report.skipped] == [("tiny-relu", 3)]
    assert registry.get("tiny-relu").version == 2
    shutil.rmtree(model_repo_copy / "tiny-tanh")
    report = registry.reload()
    assert report.removed == ["tiny-tanh"]
    with pytest.raises(NotFound):
        registry.get("tiny-tanh")


def test_runtime_threads_and_probabilities(model_repo: Path) -> None:
    registry = registry_for(model_repo, intra_op_threads=1)
    runtime = registry.get("tiny-sigmoid")
    assert runtime.session.get_session_options().intra_op_num_threads == 1
    auto = registry_for(model_repo).get("tiny-sigmoid")
    assert auto.session.get_session_options().intra_op_num_threads == cpu_quota()
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(4, 3, 32, 32)).astype(np.float32)
    logits, probabilities = runtime.run(batch)
    assert logits.shape == probabilities.shape == (4, 10)
    assert np.abs(probabilities - softmax64(logits)).max() <= 1e-6
    assert np.abs(probabilities.sum(axis=1) - 1).max() <= 1e-5


def test_runtime_run_is_thread_safe(model_repo: Path) -> None:
    runtime = registry_for(model_repo).get("tiny-relu")
    rng = np.random.default_rng(1)
    batches = [rng.normal(size=(2, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    expected = [runtime.run(b)[1] for b in batches]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(4)}

    def worker(i: int) -> None:
        for _ in range(20):
            results[i].append(runtime.run(batches[i])[1])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        assert all(np.array_equal(r, expected[i]) for r in results[i])


def test_an_expired_deadline_stops_inference(model_repo: Path) -> None:
    runtime: ModelRuntime = registry_for(model_repo).get("tiny-relu")
    deadline = Deadline(60)
    deadline.expire()
    with pytest.raises(DeadlineExceeded):
        runtime.run(np.zeros((1, 3, 32, 32), np.float32), deadline.run_options)


@pytest.mark.parametrize(
    ("files", "expected_cap"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cpu_quota_from_cgroups(
    tmp_path: Path, files: dict[str, str], expected_cap: int | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    import os

    affinity = len(os.sched_getaffinity(0))
    expected = affinity if expected_cap is None else min(affinity, expected_cap)
    assert cpu_quota(tmp_path) == expected
