"""Atomic publishing: versions increase, never overwrite, nothing loadable after an interruption;
readable by other users whatever the umask; staging left by dead publishers is cleaned up."""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import onnx
import onnxruntime as ort
import pytest

import export.publish as publish
from export.errors import PublishError
from export.exporter import with_card
from export.publish import digest_line, existing_versions, publish_model
from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME, ModelCard
from service.repository import scan_repository


def tiny_graph() -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 2])
    y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y]
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 20)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    return model


def card(name: str = "demo") -> ModelCard:
    return ModelCard(
        name=name,
        version=1,
        architecture="resnet8",
        activation="relu",
        labels=["a", "b"],
        input_size=(32, 32),
        resize_size=36,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        dataset="test",
        opset=20,
        created_at="2026-01-01T00:00:00+00:00",
        parameters=0,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_publish_writes_model_digest_and_card(tmp_path: Path) -> None:
    published = publish_model(tmp_path, tiny_graph(), card())
    assert published.version == 1
    assert published.path == tmp_path / "demo" / "1" / MODEL_FILENAME
    data = published.path.read_bytes()
    assert published.sha256 == hashlib.sha256(data).hexdigest()
    digest_file = published.path.with_name(MODEL_FILENAME + DIGEST_SUFFIX)
    assert digest_file.read_text() == f"{hashlib.sha256(data).hexdigest()}  model.onnx\n"
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    read_back = ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert read_back == published.card
    assert read_back.version == 1 and read_back.name == "demo"
    assert tree(tmp_path) == ["demo", "demo/1", "demo/1/model.onnx", "demo/1/model.onnx.sha256"]


def test_versions_increase_and_card_carries_each_version(tmp_path: Path) -> None:
    versions = [publish_model(tmp_path, tiny_graph(), card()).version for _ in range(3)]
    assert versions == [1, 2, 3]
    for version in versions:
        data = (tmp_path / "demo" / str(version) / MODEL_FILENAME).read_bytes()
        meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        assert meta["actlab.version"] == str(version)
    assert existing_versions(tmp_path, "demo") == [1, 2, 3]


def test_next_version_follows_the_highest_even_with_gaps(tmp_path: Path) -> None:
    publish_model(tmp_path, tiny_graph(), card(), version=5)
    assert publish_model(tmp_path, tiny_graph(), card()).version == 6


def test_existing_version_is_never_overwritten(tmp_path: Path) -> None:
    first = publish_model(tmp_path, tiny_graph(), card())
    before = first.path.read_bytes()
    with pytest.raises(
        PublishError,
        match="demo version 1 already exists; versions are never "
        r"overwritten \(the next free version is 2\)",
    ):
        publish_model(tmp_path, tiny_graph(), card(), version=1)
    assert first.path.read_bytes() == before
    assert tree(tmp_path) == ["demo", "demo/1", "demo/1/model.onnx", "demo/1/model.onnx.sha256"]


def test_stale_version_guess_takes_the_next_free_version(tmp_path: Path, monkeypatch) -> None:
    """A concurrent publisher that guessed a taken version moves on instead of overwriting."""
    first = publish_model(tmp_path, tiny_graph(), card())
    before = first.path.read_bytes()
    monkeypatch.setattr(publish, "next_version", lambda repository, name: 1)
    published = publish_model(tmp_path, tiny_graph(), card())
    assert published.version == 2
    assert published.card.version == 2
    assert first.path.read_bytes() == before


def test_interrupted_write_leaves_nothing_loadable(tmp_path: Path, monkeypatch) -> None:
    real_write = publish._write_synced

    def write_half_then_die(path: Path, data: bytes) -> None:
        if path.name == MODEL_FILENAME:
            with open(path, "xb") as handle:
                handle.write(data[: len(data) // 2])
            raise KeyboardInterrupt  # the process is stopped mid-write
        real_write(path, data)

    monkeypatch.setattr(publish, "_write_synced", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        publish_model(tmp_path, tiny_graph(), card())
    assert tree(tmp_path) == ["demo"]
    assert existing_versions(tmp_path, "demo") == []


def test_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def no_space(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(publish.os, "rename", no_space)
    with pytest.raises(PublishError, match=r"cannot write to .*No space left on device"):
        publish_model(tmp_path, tiny_graph(), card())
    assert tree(tmp_path) == ["demo"]


def test_digest_line_format() -> None:
    assert digest_line("ab" * 32) == "ab" * 32 + "  model.onnx\n"


@pytest.mark.parametrize("name", ["", "Demo", "../evil", "a/b", ".hidden", "x" * 65, "sp ace"])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    bad = card().model_copy(update={"name": name})
    with pytest.raises(PublishError, match=r"invalid model name .*lowercase letters, digits"):
        publish_model(tmp_path, tiny_graph(), bad)
    assert tree(tmp_path) == []


def test_version_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="version must be a positive integer, got 0"):
        publish_model(tmp_path, tiny_graph(), card(), version=0)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_published_directories_are_0755_and_files_0644_whatever_the_umask(tmp_path: Path) -> None:
    """The api container runs as another user: it must read what an export job publishes."""
    repository = tmp_path / "shared" / "models"
    old_umask = os.umask(0o077)
    try:
        published = publish_model(repository, tiny_graph(), card())
    finally:
        os.umask(old_umask)
    for folder in (tmp_path / "shared", repository, repository / "demo", published.path.parent):
        assert mode(folder) == 0o755, folder
    assert mode(published.path) == 0o644
    assert mode(published.path.with_name(MODEL_FILENAME + DIGEST_SUFFIX)) == 0o644


def test_an_existing_folder_keeps_its_mode(tmp_path: Path) -> None:
    (tmp_path / "demo").mkdir(mode=0o750)
    os.chmod(tmp_path / "demo", 0o750)
    publish_model(tmp_path, tiny_graph(), card())
    assert mode(tmp_path / "demo") == 0o750 and mode(tmp_path / "demo" / "1") == 0o755


def leftover(folder: Path, name: str, *, age_s: float) -> Path:
    """A staging directory as a killed publisher leaves it: a partial model.onnx, ``age_s`` old."""
    staging = folder / name
    staging.mkdir(parents=True)
    (staging / MODEL_FILENAME).write_bytes(b"\x08\x0a partial")
    then = time.time() - age_s
    os.utime(staging, (then, then))
    return staging


def test_publish_removes_staging_left_by_dead_publishers_only(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    dead = leftover(folder, ".staging-dead", age_s=publish.STALE_STAGING_SECONDS + 5)
    fresh = leftover(folder, ".staging-fresh", age_s=0)  # may be a publisher about to lock it
    live = leftover(folder, ".staging-live", age_s=3600)
    (folder / ".staging-link").symlink_to(live, target_is_directory=True)
    holder = os.open(live, os.O_RDONLY)  # a live publisher holds its lock
    try:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert publish_model(tmp_path, tiny_graph(), card()).version == 1
        assert not dead.exists()
        assert fresh.exists() and live.exists() and (live / MODEL_FILENAME).exists()
        assert publish.remove_stale_staging(folder, min_age_s=0) == [fresh]
    finally:
        os.close(holder)  # the holder dies: its lock is gone
    assert publish.remove_stale_staging(folder, min_age_s=0) == [live]
    assert tree(tmp_path) == [
        "demo",
        "demo/.staging-link",
        "demo/1",
        "demo/1/model.onnx",
        "demo/1/model.onnx.sha256",
    ]


def test_a_publisher_holds_its_staging_directory_while_writing(tmp_path: Path, monkeypatch) -> None:
    real_write = publish._write_synced
    seen: list[list[Path]] = []

    def write_and_let_a_cleaner_run(path: Path, data: bytes) -> None:
        real_write(path, data)
        os.utime(path.parent, (0, 0))  # as old as can be: only the lock protects it
        seen.append(publish.remove_stale_staging(path.parent.parent, min_age_s=0))

    monkeypatch.setattr(publish, "_write_synced", write_and_let_a_cleaner_run)
    published = publish_model(tmp_path, tiny_graph(), card())
    assert seen == [[], []]
    assert (
        published.path.read_bytes() == with_card(tiny_graph(), published.card).SerializeToString()
    )


KILLED_PUBLISHER = """
import sys, time
from pathlib import Path
import onnx
import export.publish as publish
from service.modelcard import ModelCard

x = onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 2])
y = onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 2])
graph = onnx.helper.make_model(onnx.helper.make_graph(
    [onnx.helper.make_node("Identity", ["input"], ["logits"])], "g", [x], [y]))
card = ModelCard(name="demo", version=1, architecture="resnet8", activation="relu",
    labels=["a", "b"], input_size=(32, 32), resize_size=36, mean=(0.5,) * 3, std=(0.25,) * 3,
    dataset="test", opset=20, created_at="2026-01-01T00:00:00+00:00", parameters=0)

def write_half_and_hang(path, data):
    with open(path, "xb") as handle:
        handle.write(data[: len(data) // 2])
    print("half written", flush=True)
    time.sleep(600)

publish._write_synced = write_half_and_hang
publish.publish_model(Path(sys.argv[1]), graph, card)
"""


def test_a_sigkilled_publisher_leaves_nothing_loadable_and_the_next_publish_cleans_up(
    tmp_path: Path,
) -> None:
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISHER, str(tmp_path)],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "half written\n"
        [staging] = (tmp_path / "demo").glob(".staging-*")
        assert publish.remove_stale_staging(tmp_path / "demo", min_age_s=0) == []  # alive
    finally:
        process.kill()
        process.wait(timeout=60)
        process.stdout.close()  # type: ignore[union-attr]
    assert process.returncode == -signal.SIGKILL
    assert (staging / MODEL_FILENAME).is_file()  # the partial file the kill left behind
    assert existing_versions(tmp_path, "demo") == []
    assert scan_repository(tmp_path) == {}  # the service sees nothing to load
    old = time.time() - publish.STALE_STAGING_SECONDS - 5
    os.utime(staging, (old, old))
    assert publish_model(tmp_path, tiny_graph(), card()).version == 1
    assert tree(tmp_path) == ["demo", "demo/1", "demo/1/model.onnx", "demo/1/model.onnx.sha256"]


def test_three_concurrent_publishers_get_three_versions(tmp_path: Path) -> None:
    leftover(tmp_path / "demo", ".staging-dead", age_s=3600)
    barrier = threading.Barrier(3)

    def publish_one(_: int) -> int:
        barrier.wait()
        return publish_model(tmp_path, tiny_graph(), card()).version

    with ThreadPoolExecutor(3) as pool:
        versions = sorted(pool.map(publish_one, range(3)))
    assert versions == [1, 2, 3]
    for version in versions:
        data = (tmp_path / "demo" / str(version) / MODEL_FILENAME).read_bytes()
        meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
        assert meta["actlab.version"] == str(version)
    assert [p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".")] == []


def test_only_plain_positive_integers_are_versions(tmp_path: Path) -> None:
    for name in ("1", "07", "0", "²", "١", ".staging-x", "3"):
        (tmp_path / "demo" / name).mkdir(parents=True)
    (tmp_path / "demo" / "9").write_text("a file, not a version")
    assert existing_versions(tmp_path, "demo") == [1, 3]
    assert publish_model(tmp_path, tiny_graph(), card()).version == 4
