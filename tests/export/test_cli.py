"""The CLI: builds publish verified models; errors are one line, exit ≠ 0 and write nothing."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from export.__main__ import main, make_parser
from export.data import load_dataset, stratified_split
from export.resnet import build_resnet
from service.activations import CATALOGUE
from service.modelcard import INPUT_NAME, LOGITS_NAME, ModelCard

SMALL = ["--arch", "resnet8", "--width", "4", "--quiet", "--threads", "2"]


def load(path: Path) -> tuple[ort.InferenceSession, ModelCard]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)


def test_build_trains_exports_and_records_everything(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "models"
    argv = [
        "build",
        *SMALL,
        "--activation",
        "elu",
        "--act-param",
        "alpha=0.5",
        "--dataset",
        "shapes",
        "--image-size",
        "16",
        "--shapes-per-class",
        "10",
        "--epochs",
        "2",
        "--seed",
        "7",
        "--models-dir",
        str(repo),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("published resnet8-elu-alpha0.5-shapes version 1: ")
    path = repo / "resnet8-elu-alpha0.5-shapes" / "1" / "model.onnx"
    session, card = load(path)
    assert (card.architecture, card.activation, card.activation_params) == (
        "resnet8",
        "elu",
        {"alpha": 0.5},
    )
    assert card.dataset == "shapes" and card.epochs == 2 and card.seed == 7
    assert card.labels[:3] == ["circle", "ring", "triangle"] and len(card.labels) == 8
    assert card.input_size == (16, 16) and card.resize_size == 16
    assert card.split == {
        "train": 64,
        "val": 16,
        "val_fraction": 0.2,
        "seed": 7,
        "method": "stratified",
    }
    assert card.train_seconds > 0 and "--act-param alpha=0.5" in card.command
    assert card.parameters == sum(
        p.numel() for p in build_resnet("resnet8", "elu", num_classes=8, width=4).parameters()
    )
    # The recorded val accuracy is what the ONNX model scores on the same split (recomputed).
    ds = load_dataset("shapes", image_size=16, per_class=10, seed=7)
    split = stratified_split(ds.targets, 0.2, seed=7)
    x = ds.images[split.val].numpy().astype(np.float32) / 255.0
    x = (x - np.array(card.mean, np.float32)[:, None, None]) / np.array(card.std, np.float32)[
        :, None, None
    ]
    logits = session.run([LOGITS_NAME], {INPUT_NAME: x.astype(np.float32)})[0]
    accuracy = float(np.mean(logits.argmax(1) == ds.targets[split.val].numpy()))
    assert card.val_accuracy == pytest.approx(accuracy, abs=1e-9)


def test_epochs_zero_with_weights_and_label_file(tmp_path: Path, capsys) -> None:
    source = build_resnet("resnet8", "relu", num_classes=1000, width=4, seed=11).eval()
    weights = tmp_path / "w.pth"
    torch.save(source.state_dict(), weights)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class {i}" for i in range(1000)) + "\n")
    repo = tmp_path / "models"
    argv = [
        "build",
        *SMALL,
        "--weights",
        str(weights),
        "--labels",
        str(labels),
        "--epochs",
        "0",
        "--image-size",
        "32",
        "--name",
        "from-weights",
        "--models-dir",
        str(repo),
    ]
    assert main(argv) == 0
    session, card = load(repo / "from-weights" / "1" / "model.onnx")
    assert card.dataset == "none" and card.epochs == 0 and card.val_accuracy is None
    assert card.labels[999] == "class 999" and card.split == {}
    assert card.mean == (0.485, 0.456, 0.406) and card.resize_size == round(32 * 256 / 224)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = source(x).numpy()
    got = session.run([LOGITS_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_versions_increase_across_builds(tmp_path: Path) -> None:
    argv = [
        "build",
        *SMALL,
        "--dataset",
        "shapes",
        "--image-size",
        "8",
        "--shapes-per-class",
        "2",
        "--epochs",
        "0",
        "--name",
        "v",
        "--models-dir",
        str(tmp_path),
    ]
    assert main(argv) == 0 and main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["1", "2"]
    assert main([*argv, "--version", "2"]) == 1  # never overwritten


def failing(tmp_path: Path) -> list[tuple[list[str], str]]:
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"garbage" * 100)
    return [
        (["--arch", "resnet19"], "error: unknown architecture 'resnet19'; choose one of: resnet18"),
        (
            ["--activation", "swoosh"],
            "error: --activation: unknown activation 'swoosh'; choose one of: relu",
        ),
        (["--dataset", "mnist"], "error: unknown dataset 'mnist'; choose one of: digits, shapes"),
        (["--weights", str(corrupt)], "error: cannot read corrupt.pth: not a valid PyTorch"),
        (["--weights", str(tmp_path / "absent.pth")], "error: weights file "),
        (["--dataset", f"imagefolder:{empty}"], "error: no images found in "),
        (["--activation", "binary_step", "--epochs", "1"], "error: binary_step cannot be trained"),
        (
            ["--activation", "elu", "--act-param", "alpha=99"],
            "error: --act-param: parameter 'alpha' of 'elu' must be a number in [0.01, 10.0]",
        ),
        (["--name", "Bad Name"], "error: invalid model name 'Bad Name'"),
        (["--labels", "imagenet", "--dataset", "shapes"], "error: --labels gives 1000 labels"),
        (
            [
                "--dataset",
                "none",
                "--epochs",
                "0",
                "--labels",
                "imagenet",
                "--normalise",
                "dataset",
            ],
            "error: --normalise dataset needs a dataset",
        ),
        (["--dataset", "none"], "error: training needs a dataset (--dataset)"),
    ]


def test_errors_are_one_line_exit_1_and_write_nothing(tmp_path: Path, capsys) -> None:
    repo = tmp_path / "models"
    for extra, message in failing(tmp_path):
        argv = [
            "build",
            "--arch",
            "resnet8",
            "--width",
            "4",
            "--quiet",
            "--image-size",
            "8",
            "--shapes-per-class",
            "2",
            "--models-dir",
            str(repo),
            *extra,
        ]
        assert main(argv) == 1, extra
        captured = capsys.readouterr()
        assert captured.out == ""
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (extra, captured.err)
        assert "Traceback" not in captured.err
        assert not repo.exists(), extra


def test_other_commands_report_unusable_folders_in_one_line(tmp_path: Path, capsys) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    cases = [
        (["sweep", "--out", str(a_file / "sweep")], "error: cannot create the --out directory "),
        (["defaults", "--readme-only", "--models-dir", str(tmp_path / "absent")],
         f"error: --models-dir {tmp_path / 'absent'} does not exist or is not a directory"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith(message) and err.count("\n") == 1, err


def test_usage_errors_are_one_line_exit_2(capsys) -> None:
    for argv in (["build", "--epochs", "-1"], ["build", "--frobnicate"], ["nope"], []):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err


def test_real_process_prints_no_traceback(tmp_path: Path) -> None:
    empty = tmp_path / "imgs"
    (empty / "x").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(empty / "x" / "note.tiff")  # not a format the service takes
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "build",
            "--dataset",
            f"imagefolder:{empty}",
            "--models-dir",
            str(tmp_path / "models"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: no images found in ") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "models").exists()


def test_activations_lists_the_catalogue_one_line_each(capsys) -> None:
    assert main(["activations"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(CATALOGUE)
    assert any("binary_step" in line and "cannot be trained" in line for line in lines)
    assert "alpha=1.0 (a number in [0.01, 10.0])" in lines[list(CATALOGUE).index("elu")]


def test_help_explains_every_option() -> None:
    parser = make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("build", "activations"):
        sub = subparsers.choices[name]
        assert sub.description, name
        for action in sub._actions:
            assert action.help and len(action.help) > 10, (name, action.dest)


def test_help_gives_one_default_per_option() -> None:
    """argparse's "(default: None)" would contradict options whose default depends on others."""
    parser = make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("build", "sweep", "defaults"):
        text = " ".join(subparsers.choices[name].format_help().split())
        assert "(default: None)" not in text, name
        assert "(default: digits, or none with --weights)" in text or name != "build"
        assert "(default: resnet20)" in text or name != "build"  # fixed defaults are still shown


def test_saved_weights_record_their_activation_and_warn_on_swap(tmp_path: Path, capsys) -> None:
    saved = tmp_path / "trained.safetensors"
    common = [
        "build",
        *SMALL,
        "--dataset",
        "shapes",
        "--image-size",
        "8",
        "--shapes-per-class",
        "2",
        "--models-dir",
        str(tmp_path / "models"),
    ]
    assert main([*common, "--epochs", "0", "--save-weights", str(saved)]) == 0
    assert "saved weights to" in capsys.readouterr().out
    assert main([*common, "--epochs", "0", "--activation", "gelu", "--weights", str(saved)]) == 0
    err = capsys.readouterr().err
    assert err == (
        "warning: the weights were trained with relu and are now used with gelu; fine-tune "
        "(--epochs > 0) before trusting the accuracy\n"
    )


def test_a_build_from_saved_weights_uses_their_activation_unless_told_otherwise(
    tmp_path: Path, capsys
) -> None:
    saved = tmp_path / "tanh.safetensors"
    models = tmp_path / "models"
    common = [
        "build", *SMALL, "--dataset", "shapes", "--image-size", "8", "--shapes-per-class", "2",
        "--epochs", "0", "--models-dir", str(models),
    ]  # fmt: skip
    assert main([*common, "--activation", "tanh", "--save-weights", str(saved)]) == 0
    capsys.readouterr()
    assert main([*common, "--weights", str(saved), "--name", "from-weights"]) == 0
    assert capsys.readouterr().err == ""  # no swap: tanh weights, tanh network
    _, card = load(models / "from-weights" / "1" / "model.onnx")
    assert card.activation == "tanh"
    assert main([*common, "--weights", str(saved)]) == 0  # the default name follows it too
    assert (models / "resnet8-tanh-shapes" / "1" / "model.onnx").is_file()


def test_save_weights_path_is_checked_before_anything_is_written(tmp_path: Path, capsys) -> None:
    argv = [
        "build",
        *SMALL,
        "--dataset",
        "shapes",
        "--image-size",
        "8",
        "--shapes-per-class",
        "2",
        "--epochs",
        "0",
        "--models-dir",
        str(tmp_path / "models"),
        "--save-weights",
        str(tmp_path / "w.pth"),
    ]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("error: --save-weights needs a .safetensors path")
    assert not (tmp_path / "models").exists()


def test_build_from_an_image_folder(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    for cls, channel in (("apples", 0), ("grapes", 2)):
        (tmp_path / "fruit" / cls).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 60, size=(20, 24, 3), dtype=np.uint8)
            pixels[..., channel] = 230
            Image.fromarray(pixels).save(tmp_path / "fruit" / cls / f"{i}.png")
    (tmp_path / "fruit" / "apples" / "notes.txt").write_text("picked in May")
    argv = [
        "build",
        *SMALL,
        "--dataset",
        f"imagefolder:{tmp_path / 'fruit'}",
        "--image-size",
        "16",
        "--epochs",
        "1",
        "--models-dir",
        str(tmp_path / "models"),
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "published resnet8-relu-fruit version 1" in out
    assert "warning: imagefolder:fruit: skipped 1 file that is not an image" in err
    assert err.rstrip().endswith(": 1 .txt")
    _, card = load(tmp_path / "models" / "resnet8-relu-fruit" / "1" / "model.onnx")
    assert card.labels == ["apples", "grapes"] and card.dataset == "imagefolder:fruit"
    assert card.resize_size == round(16 * 256 / 224) and card.input_size == (16, 16)
    assert card.split["train"] == 6 and card.split["val"] == 2


def test_sigterm_ends_a_build_like_ctrl_c(tmp_path: Path) -> None:
    """docker stop / Kubernetes: exit 130 with the one-line message, no version and no staging
    directory left behind, whatever the build was doing when the signal came."""
    models = tmp_path / "models"
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "build", "--arch", "resnet8", "--width", "4",
         "--threads", "2", "--dataset", "digits", "--image-size", "16", "--epochs", "50",
         "--name", "stopped", "--models-dir", str(models)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    progress = proc.stderr.read(1)  # the progress bar's first character: training has begun
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert progress and proc.returncode == 130, err
    assert (
        err.rstrip().endswith("error: interrupted; nothing was published")
        and "Traceback" not in err
    )
    assert not any(models.glob("stopped/*")) and out == ""
