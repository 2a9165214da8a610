"""The sweep's --out directory: what it refuses, what it keeps, and how it resumes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import export.sweep as sweep_module
from export.__main__ import main
from export.errors import ExportError
from export.sweep import RunResult, SweepConfig, load_runs, resolve_activations, run_sweep

TINY = [
    "sweep",
    "--arch",
    "resnet8",
    "--width",
    "4",
    "--image-size",
    "8",
    "--epochs",
    "1",
    "--seeds",
    "1",
    "--latency-runs",
    "5",
    "--batch-size",
    "64",
]
TINY_CONFIG = SweepConfig(
    arch="resnet8",
    width=4,
    image_size=8,
    epochs=1,
    seeds=1,
    latency_runs=5,
    batch_size=64,
    activations=("relu",),
)


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _write_config(out: Path, config: SweepConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(dataclasses.asdict(config)))


def _fake_run(activation: str, seed: int) -> RunResult:
    return RunResult(activation, seed, "ok", [0.5], 1.0, 10, None)


def test_a_different_thread_count_is_a_different_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(tmp_path, TINY_CONFIG)
    argv = [*TINY, "--activations", "relu", "--threads", "2", "--out", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "threads: 1 there, 2 now" in err
    assert not (tmp_path / "runs.jsonl").exists()


def test_a_mistyped_dataset_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    assert main([*TINY, "--dataset", "digitz", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset 'digitz'" in err and "digits" in err
    assert not out.exists()


def test_a_non_sweep_directory_is_refused_and_left_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text("mine")
    (tmp_path / "discussion.md").write_text("notes")
    assert main([*TINY, "--activations", "relu", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "is not empty and holds no sweep (sweep.json)" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "discussion.md"]
    assert (tmp_path / "README.md").read_text() == "mine"


def test_an_unwritable_out_directory_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_config(tmp_path, TINY_CONFIG)
    (tmp_path / ".sweep.json.tmp").mkdir()  # writing the config there fails, even as root
    assert main([*TINY, "--activations", "relu", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and "sweep.json" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_ctrl_c_says_how_many_runs_are_saved_and_how_to_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []

    def run_one(config: SweepConfig, data: object, activation: str, seed: int, **_: object):
        calls.append(activation)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return _fake_run(activation, seed), None

    monkeypatch.setattr(sweep_module, "run_one", run_one)
    out = tmp_path / "report"
    assert main([*TINY, "--activations", "relu,silu", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"1 runs are saved in {out / 'runs.jsonl'}" in err
    assert "rerun the same command to resume" in err
    assert [r.activation for r in load_runs(out)] == ["relu"]


def test_a_truncated_last_line_is_dropped_with_a_warning(tmp_path: Path) -> None:
    good = json.dumps(dataclasses.asdict(_fake_run("relu", 0)))
    (tmp_path / "runs.jsonl").write_text(good + "\n" + '{"activation": "si')
    with pytest.warns(UserWarning, match=r"runs\.jsonl: dropped the unfinished last line 2"):
        runs = load_runs(tmp_path)
    assert runs == [_fake_run("relu", 0)]


def test_a_bad_line_elsewhere_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    good = json.dumps(dataclasses.asdict(_fake_run("relu", 0)))
    (tmp_path / "runs.jsonl").write_text('{"activation": "si\n' + good + "\n")
    with pytest.raises(ExportError, match=r"runs\.jsonl, line 1: not a sweep run"):
        load_runs(tmp_path)


def test_a_sweep_killed_mid_write_resumes_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_config(tmp_path, TINY_CONFIG)
    good = json.dumps(dataclasses.asdict(_fake_run("relu", 0)))
    (tmp_path / "runs.jsonl").write_text(good + "\n" + '{"activation": "si')
    monkeypatch.setattr(sweep_module, "run_one", lambda c, d, a, s, **_: (_fake_run(a, s), None))
    monkeypatch.setattr(sweep_module, "_export_untrained", lambda *_: {})
    config = dataclasses.replace(TINY_CONFIG, activations=("relu", "silu"))
    with pytest.warns(UserWarning, match="unfinished last line"):
        run_sweep(config, tmp_path, log=lambda _: None)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line)["activation"] for line in lines] == ["relu", "silu"]


def test_unknown_activation_lists_only_hidden_layer_activations() -> None:
    for name in ("nonsense", "softmax"):
        with pytest.raises(ExportError) as info:
            resolve_activations(f"relu,{name}")
        message = str(info.value)
        assert repr(name) in message and "relu" in message and "gelu" in message
        assert "choose 'all' or any of:" in message
        assert "softmax" not in message.split("any of:")[1]


@pytest.fixture(scope="module")
def resumed_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """relu trained in a first invocation, silu added in a second one (a resumed sweep)."""
    out = tmp_path_factory.mktemp("resumed") / "report"
    threads = torch.get_num_threads()
    try:
        assert main([*TINY, "--activations", "relu", "--out", str(out)]) == 0
        for name in ("latency.json", "latency_rounds.json"):
            (out / name).unlink(missing_ok=True)  # as if the first invocation had been interrupted
        assert main([*TINY, "--activations", "relu,silu", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    yield out


def test_after_a_resume_every_latency_comes_from_the_final_round_robin(resumed_dir: Path) -> None:
    latency = json.loads((resumed_dir / "latency.json").read_text())
    assert set(latency) == {"relu", "silu"}  # relu was trained before the "interrupt"
    rounds = json.loads((resumed_dir / "latency_rounds.json").read_text())
    assert set(rounds) == {"relu", "silu"}
    for name in ("relu", "silu"):
        assert len(rounds[name]) == 5 and all(ms > 0 for ms in rounds[name])
        assert latency[name] == pytest.approx(sorted(rounds[name])[2], abs=1e-5)


def test_runs_and_report_record_the_machine(resumed_dir: Path) -> None:
    capability = torch.backends.cpu.get_cpu_capability()
    for run in load_runs(resumed_dir):
        assert set(run.machine) == {"cpu", "cpu_capability", "software", "git_commit", "date"}
        assert run.machine["cpu_capability"] == capability
        assert run.machine["date"].endswith("Z")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file() and "model name" in cpuinfo.read_text():
        model = next(
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        )
        assert load_runs(resumed_dir)[0].machine["cpu"] == model
    text = (resumed_dir / "README.md").read_text()
    assert f"torch CPU capability {capability}" in text
    assert "Results may differ on another CPU" in text


def test_the_recipe_line_lists_what_training_actually_used(resumed_dir: Path) -> None:
    text = (resumed_dir / "README.md").read_text()
    assert "momentum 0.9) with weight decay 0.0005" in text
    assert "random translations of ± 1 px" in text  # 8 px input: max(1, 8 // 8)
    assert "Kaiming-normal (fan_out)" in text
    assert "1 torch thread(s)" in text


def test_report_only_rewrites_the_report_without_training(
    resumed_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = (resumed_dir / "runs.jsonl").read_text()
    latency_before = (resumed_dir / "latency.json").read_text()
    environment = (resumed_dir / "README.md").read_text().split("## Environment\n\n")[1]
    (resumed_dir / "README.md").write_text("stale\n\n## Environment\n\n" + environment)
    argv = [*TINY, "--activations", "relu,silu", "--out", str(resumed_dir), "--report-only"]
    assert main(argv) == 0
    assert (resumed_dir / "runs.jsonl").read_text() == runs_before
    assert (resumed_dir / "latency.json").read_text() == latency_before
    text = (resumed_dir / "README.md").read_text()
    assert text.startswith("# Activation sweep: resnet8 on digits")
    assert "--report-only" not in text
    assert text.split("## Environment\n\n")[1].split("\n\n")[0] == environment.split("\n\n")[0]
    assert "2 runs" in capsys.readouterr().out


def test_report_only_needs_an_existing_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY, "--out", str(tmp_path), "--report-only"]) == 1
    assert "holds no sweep to report on" in capsys.readouterr().err
