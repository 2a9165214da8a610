"""`build` refuses early and honestly: up-front checks, untrained heads, recorded activations,
default names, the recorded thread count, option errors that name the option, and Ctrl-C."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

import export.build
import export.commands.build
import export.commands.defaults
import export.commands.quantize
from export.__main__ import main, make_parser
from export.build import BuildRequest
from export.build_request import default_name, with_threads
from export.publish import existing_versions
from export.resnet import build_resnet
from service.modelcard import INPUT_NAME, LOGITS_NAME, ModelCard

TINY = [
    "build", "--arch", "resnet8", "--width", "4", "--quiet", "--image-size", "8",
    "--dataset", "shapes", "--shapes-per-class", "2", "--epochs", "0",
]  # fmt: skip


def tiny(repo: Path, *extra: str) -> list[str]:
    return [*TINY, "--models-dir", str(repo), *extra]


def card_of(path: Path) -> tuple[ort.InferenceSession, ModelCard]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, ModelCard.from_metadata(session.get_modelmeta().custom_metadata_map)


def one_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the check ran after data loading or training")


@pytest.fixture
def nothing_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the build gets as far as loading data or training."""
    monkeypatch.setattr(export.build, "load_dataset", refuse)
    monkeypatch.setattr(export.build, "train_model", refuse)


@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> Callable[[Path], None]:
    """Make ``os.access`` report a folder as unwritable (what a read-only mount or a chmod does
    for a non-root user; the tests may run as root, which chmod does not stop)."""
    denied: set[str] = set()
    real_access = os.access

    def access(path: object, mode: int, *args: object, **kwargs: object) -> bool:
        if mode & os.W_OK and os.path.abspath(str(path)) in denied:
            return False
        return real_access(path, mode, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "access", access)
    return lambda path: denied.add(os.path.abspath(path))


# --- a head the weights do not provide -----------------------------------------------------


def test_epochs_zero_refuses_a_random_head(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "ten.pth"
    torch.save(build_resnet("resnet8", num_classes=10, width=4).state_dict(), weights)
    repo = tmp_path / "models"
    assert main(tiny(repo, "--weights", str(weights))) == 1
    assert one_error(capsys) == (
        "error: the classifier head (fc) in ten.pth has 10 classes but the dataset has 8, so "
        "the head would be published randomly initialised: train it (--epochs N with a "
        "--dataset), or pass --labels with 10 class names in the order the weights were "
        "trained with"
    )
    assert not repo.exists()


def test_training_a_new_head_says_it_is_new(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "ten.pth"
    torch.save(build_resnet("resnet8", num_classes=10, width=4).state_dict(), weights)
    argv = tiny(tmp_path / "models", "--weights", str(weights), "--epochs", "1")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        "warning: the classifier head (fc) is newly initialised: ten.pth has 10 classes, this "
        "model 8; only the 1 training epoch(s) fit it\n"
    )
    assert captured.out.startswith("published resnet8-relu-shapes version 1")


# --- the activation the weights were trained with ------------------------------------------


@pytest.mark.parametrize("mode", ["channel", "single"])
@pytest.mark.parametrize("flags", [[], ["--activation", "prelu"]])
def test_prelu_weights_build_prelu_with_their_slopes(
    tmp_path: Path, capsys, mode: str, flags: list[str]
) -> None:
    source = build_resnet(
        "resnet8", "prelu", num_classes=8, width=4, activation_params={"mode": mode}, seed=3
    ).eval()
    with torch.no_grad():
        for i, (name, param) in enumerate(source.named_parameters()):
            if ".act" in f".{name}":  # learned slopes, far from the 0.25 a fresh PReLU has
                param.copy_(torch.linspace(-0.5, 0.9, param.numel()) + i / 100)
    weights = tmp_path / "prelu.pth"
    torch.save(source.state_dict(), weights)  # a plain state dict: no activation recorded
    repo = tmp_path / "models"
    assert main(tiny(repo, "--weights", str(weights), *flags)) == 0
    assert capsys.readouterr().err == ""  # no swap, no warning
    name = "resnet8-prelu-shapes" if mode == "channel" else "resnet8-prelu-mode_single-shapes"
    session, card = card_of(repo / name / "1" / "model.onnx")
    assert card.activation == "prelu" and card.activation_params["mode"] == mode
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source(x).numpy()
    got = session.run([LOGITS_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_an_explicit_activation_still_wins_over_prelu_weights(tmp_path: Path, capsys) -> None:
    weights = tmp_path / "prelu.pth"
    torch.save(build_resnet("resnet8", "prelu", num_classes=8, width=4).state_dict(), weights)
    repo = tmp_path / "models"
    assert main(tiny(repo, "--weights", str(weights), "--activation", "relu")) == 0
    assert capsys.readouterr().err == (
        "warning: the weights were trained with prelu and are now used with relu; fine-tune "
        "(--epochs > 0) before trusting the accuracy\n"
    )
    assert card_of(repo / "resnet8-relu-shapes" / "1" / "model.onnx")[1].activation == "relu"


def test_saved_weights_bring_their_activation_parameters(tmp_path: Path, capsys) -> None:
    saved, repo = tmp_path / "leaky.safetensors", tmp_path / "models"
    variant = ["--activation", "leaky_relu", "--act-param", "negative_slope=0.2"]
    assert main(tiny(repo, *variant, "--save-weights", str(saved))) == 0
    assert main(tiny(repo, "--weights", str(saved), "--name", "again")) == 0
    assert capsys.readouterr().err == ""
    card = card_of(repo / "again" / "1" / "model.onnx")[1]
    assert (card.activation, card.activation_params) == ("leaky_relu", {"negative_slope": 0.2})
    # Naming the same activation keeps the recorded parameters unless --act-param overrides them.
    same = ["--weights", str(saved), "--activation", "leaky_relu"]
    assert main(tiny(repo, *same, "--name", "same")) == 0
    assert card_of(repo / "same" / "1" / "model.onnx")[1].activation_params == {
        "negative_slope": 0.2
    }
    assert main(tiny(repo, *same, "--act-param", "negative_slope=0.1", "--name", "other")) == 0
    assert card_of(repo / "other" / "1" / "model.onnx")[1].activation_params == {
        "negative_slope": 0.1
    }


# --- checks that need no training run before it -------------------------------------------


def test_an_existing_version_is_refused_before_training(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "models"
    argv = tiny(repo, "--name", "m")
    assert main(argv) == 0 and main(argv) == 0
    capsys.readouterr()
    monkeypatch.setattr(export.build, "load_dataset", refuse)
    monkeypatch.setattr(export.build, "train_model", refuse)
    assert main([*argv, "--version", "2", "--epochs", "5"]) == 1
    assert one_error(capsys) == (
        f"error: m version 2 already exists in {repo} (versions 1, 2); versions are never "
        "overwritten: choose another --version or leave it out to publish version 3"
    )
    assert existing_versions(repo, "m") == [1, 2]


def test_a_read_only_models_dir_is_refused_before_training(
    tmp_path: Path, capsys, nothing_loaded: None, read_only: Callable[[Path], None]
) -> None:
    read_only(tmp_path)
    assert main(tiny(tmp_path / "models" / "deeper", "--epochs", "5")) == 1
    assert one_error(capsys) == (
        f"error: cannot write to {tmp_path} (read-only or permission denied); choose a "
        "writable --models-dir"
    )
    assert not (tmp_path / "models").exists()


def test_a_models_dir_below_a_file_is_refused(tmp_path: Path, capsys, nothing_loaded) -> None:
    (tmp_path / "file").write_text("x")
    assert main(tiny(tmp_path / "file" / "models")) == 1
    assert one_error(capsys) == (
        f"error: cannot publish into {tmp_path / 'file' / 'models'}: {tmp_path / 'file'} is not "
        "a folder"
    )


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("ro/w.safetensors", "error: --save-weights: cannot write to {tmp}/ro (read-only or "),
        ("w.safetensors", "error: --save-weights: {tmp}/w.safetensors is a folder; give a file"),
        ("absent/w.safetensors", "error: --save-weights needs a .safetensors path in an exist"),
    ],
)
def test_an_unwritable_save_weights_path_is_refused_before_building(
    tmp_path: Path,
    capsys,
    nothing_loaded: None,
    read_only: Callable[[Path], None],
    target: str,
    message: str,
) -> None:
    (tmp_path / "ro").mkdir()
    (tmp_path / "w.safetensors").mkdir()
    read_only(tmp_path / "ro")
    argv = tiny(tmp_path / "models", "--save-weights", str(tmp_path / target), "--epochs", "3")
    assert main(argv) == 1
    assert one_error(capsys).startswith(message.format(tmp=tmp_path))
    assert not (tmp_path / "models").exists()


def test_a_save_weights_failure_after_publishing_is_one_line(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should the folder vanish between the check and the save: one line saying what exists."""
    monkeypatch.setattr(export.commands.build, "check_weights_path", lambda path: path)
    target = tmp_path / "gone" / "w.safetensors"
    assert main(tiny(tmp_path / "models", "--save-weights", str(target))) == 1
    assert one_error(capsys).startswith(
        "error: resnet8-relu-shapes version 1 was published, but --save-weights failed: cannot "
        f"write weights to {target}: "
    )
    assert existing_versions(tmp_path / "models", "resnet8-relu-shapes") == [1]
    assert list(tmp_path.iterdir()) == [tmp_path / "models"]  # no partial file


def test_an_invalid_int8_name_is_refused_before_building(
    tmp_path: Path, capsys, nothing_loaded
) -> None:
    name = "n" * 60  # valid, but "<name>-int8" has 65 characters
    assert main(tiny(tmp_path / "models", "--name", name, "--quantize", "int8")) == 1
    error = one_error(capsys)
    assert error.startswith(f"error: --quantize int8 also publishes '{name}-int8', which is not")
    assert error.endswith("choose a --name of at most 59 characters; nothing was built")
    assert not (tmp_path / "models").exists()


# --- Ctrl-C says what was published --------------------------------------------------------


def test_ctrl_c_during_int8_says_the_fp32_model_was_published(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export.commands.quantize, "quantize_build", interrupted)
    repo = tmp_path / "models"
    assert main(tiny(repo, "--name", "q", "--quantize", "int8")) == 130
    captured = capsys.readouterr()
    assert captured.out.startswith("published q version 1: ")
    assert captured.err == (
        "error: interrupted; q version 1 was published, but its int8 variant was not\n"
    )
    assert existing_versions(repo, "q") == [1] and existing_versions(repo, "q-int8") == []


def test_ctrl_c_before_publishing_says_nothing_was(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(export.build, "export_verified", interrupted)
    assert main(tiny(tmp_path / "models")) == 130
    assert capsys.readouterr().err == "error: interrupted; nothing was published\n"


def test_ctrl_c_during_defaults_names_what_was_published(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def build_defaults(*args: object, log: Callable[[str], None], **kwargs: object) -> None:
        log("published resnet20-relu-digits v3 (val accuracy 0.9889)")
        raise KeyboardInterrupt

    monkeypatch.setattr(export.commands.defaults, "build_defaults", build_defaults)
    assert main(["defaults", "--models-dir", str(tmp_path), "--quiet"]) == 130
    assert capsys.readouterr().err == (
        "error: interrupted; published resnet20-relu-digits v3; the rest of the set was not "
        f"built and {tmp_path / 'README.md'} was not updated\n"
    )


# --- option errors name the option ---------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--weight-decay", "nan"),
        ("--weight-decay", "-1"), ("--label-smoothing", "nan"), ("--label-smoothing", "1"),
        ("--val-fraction", "inf"), ("--val-fraction", "0"), ("--seed", "-5"),
        ("--seed", "4294967296"), ("--seed", "x"),
    ],
)  # fmt: skip
def test_bad_numbers_are_refused_naming_the_option(option: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["build", option, value])
    assert info.value.code == 2
    assert one_error(capsys).startswith(f"error: argument {option}: expected ")


def test_every_typed_option_names_itself_when_refusing_nan(capsys) -> None:
    parser = make_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    checked = 0
    for command, sub in subparsers.choices.items():
        for action in sub._actions:
            if action.type in (None, Path) or not action.option_strings:
                continue
            option = action.option_strings[-1]
            with pytest.raises(SystemExit):
                parser.parse_args([command, option, "nan"])
            assert one_error(capsys).startswith(f"error: argument {option}: "), (command, option)
            checked += 1
    assert checked >= 18


def test_activation_errors_name_the_option(tmp_path: Path, capsys, nothing_loaded) -> None:
    assert main(tiny(tmp_path, "--act-param", "foo=1")) == 1
    assert one_error(capsys) == (
        "error: --act-param: 'relu' has no parameter 'foo'; its parameters are: none"
    )


def test_a_closed_stdout_ends_quietly() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "export", "activations", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `| head` exiting at once: every write hits a closed pipe
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141
    assert err == b""


# --- default names and the recorded command ------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "params", "name"),
    [
        ("swish", {}, "resnet8-silu-shapes"),
        ("leaky_relu", {}, "resnet8-leaky_relu-shapes"),
        ("leaky_relu", {"negative_slope": 0.01}, "resnet8-leaky_relu-shapes"),
        ("leaky_relu", {"negative_slope": 0.2}, "resnet8-leaky_relu-negative_slope0.2-shapes"),
        ("gelu", {"approximate": "tanh"}, "resnet8-gelu-approximate_tanh-shapes"),
        ("maxout", {"k": 3}, "resnet8-maxout-k3-shapes"),
    ],
)
def test_default_names_use_the_catalogue_name_and_non_default_parameters(
    activation: str, params: dict, name: str
) -> None:
    request = BuildRequest(
        arch="resnet8", activation=activation, activation_params=params, dataset="shapes"
    )
    assert default_name(request) == name


def test_a_parameter_variant_does_not_become_a_version_of_the_default(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    assert main(tiny(repo, "--activation", "leaky_relu")) == 0
    assert main(tiny(repo, "--activation", "leaky_relu", "--act-param", "negative_slope=0.2")) == 0
    assert main(tiny(repo, "--activation", "swish")) == 0
    assert sorted(p.name for p in repo.iterdir()) == [
        "resnet8-leaky_relu-negative_slope0.2-shapes",
        "resnet8-leaky_relu-shapes",
        "resnet8-silu-shapes",
    ]


def test_with_threads_records_the_count_once() -> None:
    build = "python -m export build --arch resnet8"
    assert with_threads(build, 3) == f"{build} --threads 3"
    assert with_threads(f"{build} --threads 0 --seed 1", 2) == f"{build} --seed 1 --threads 2"
    assert with_threads(f"{build} --threads=5", 2) == f"{build} --threads 2"
    assert with_threads("export.tiny.publish_tiny_model(...)", 2).endswith("(...)")


def test_the_card_records_the_thread_count_the_build_ran_with(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        assert main(tiny(tmp_path, "--threads", "1", "--name", "t")) == 0
    finally:
        torch.set_num_threads(threads)
    command = card_of(tmp_path / "t" / "1" / "model.onnx")[1].command
    assert command.endswith(" --name t --threads 1") and command.count("--threads") == 1
    assert re.match(r"^python -m export build --arch resnet8 ", command)
