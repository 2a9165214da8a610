"""Weights: strict loading of torchvision/timm state dicts, listed errors, head swap, warnings."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from export.errors import WeightsError
from export.resnet import build_resnet
from export.weights import (
    ActivationSwapWarning,
    check_weights_path,
    load_weights,
    read_checkpoint,
    save_weights,
)


def tiny(activation: str = "relu", classes: int = 10, width: int = 4, seed: int = 0):
    return build_resnet("resnet8", activation, num_classes=classes, width=width, seed=seed).eval()


def outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".safetensors"])
def test_state_dict_round_trips_strictly(tmp_path: Path, suffix: str) -> None:
    source, target = tiny(seed=1), tiny(seed=2)
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    else:
        torch.save(source.state_dict(), path)
    assert not torch.equal(outputs(source), outputs(target))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # relu onto relu: no warning
        report = load_weights(target, read_checkpoint(path), activation="relu")
    assert not report.head_replaced and report.source_classes == 10
    assert torch.equal(outputs(source), outputs(target))
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_torchvision_key_names_load_into_resnet18(tmp_path: Path) -> None:
    reference = build_resnet("resnet18", num_classes=1000, seed=0).state_dict()
    assert {
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_var",
        "fc.weight",
        "fc.bias",
    } <= set(reference)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.items()}}, path)
    model = build_resnet("resnet18", num_classes=1000, seed=1)
    load_weights(model, read_checkpoint(path), activation="relu")
    assert torch.equal(
        model.state_dict()["layer4.1.conv2.weight"], reference["layer4.1.conv2.weight"]
    )


def test_head_is_replaced_when_class_count_differs(tmp_path: Path) -> None:
    source = tiny(classes=1000)
    path = tmp_path / "w.pth"
    torch.save(source.state_dict(), path)
    target = tiny(classes=3, seed=5)
    fresh_head = target.fc.weight.detach().clone()
    report = load_weights(target, read_checkpoint(path), activation="relu")
    assert report.head_replaced and report.source_classes == 1000
    assert target.fc.weight.shape == (3, 16) and torch.equal(target.fc.weight, fresh_head)
    assert torch.equal(target.conv1.weight, source.conv1.weight)


def save(tmp_path: Path, state: dict, name: str = "w.pth") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_missing_key_is_listed(tmp_path: Path) -> None:
    state = tiny().state_dict()
    del state["layer1.0.bn1.weight"]
    with pytest.raises(
        WeightsError,
        match=r"^the weights do not fit this architecture: missing "
        r"keys \(1\): layer1.0.bn1.weight$",
    ):
        load_weights(tiny(), read_checkpoint(save(tmp_path, state)))


def test_unexpected_key_is_listed(tmp_path: Path) -> None:
    state = tiny().state_dict()
    state["layer4.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): layer4.0.conv1.weight$"):
        load_weights(tiny(), read_checkpoint(save(tmp_path, state)))


def test_shape_mismatch_is_listed_with_both_shapes(tmp_path: Path) -> None:
    state = tiny(width=8).state_dict()
    with pytest.raises(WeightsError) as info:
        load_weights(tiny(width=4), read_checkpoint(save(tmp_path, state)))
    message = str(info.value)
    assert "shape mismatches (" in message
    assert "conv1.weight (file (8, 3, 3, 3), model (4, 3, 3, 3))" in message
    assert "… and " in message  # long lists are cut, with the count
    assert "\n" not in message


def test_all_three_problems_in_one_message(tmp_path: Path) -> None:
    state = tiny().state_dict()
    del state["bn1.bias"]
    state["bogus"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(
        WeightsError,
        match=r"missing keys \(1\): bn1.bias; unexpected keys \(1\): "
        r"bogus; shape mismatches \(1\): conv1.weight",
    ):
        load_weights(tiny(), read_checkpoint(save(tmp_path, state)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (torch.randn(3), "w.pth is not a state dict .*got Tensor"),
        ([1, 2], "w.pth is not a state dict .*got list"),
        (
            {"conv1.weight": torch.zeros(1), "epoch": 3},
            r"entries that are not tensors \(1\): epoch",
        ),
        ({}, "w.pth is not a state dict"),
    ],
)
def test_not_a_state_dict(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(WeightsError, match=message):
        read_checkpoint(save(tmp_path, content))


class Arbitrary:
    pass


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = save(tmp_path, {"model": Arbitrary()})
    with pytest.raises(WeightsError, match=r"holds objects other than tensors.*weights_only=True"):
        read_checkpoint(path)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("w.pth", "cannot read w.pth: not a valid PyTorch .pth/.pt file"),
        ("w.safetensors", "cannot read w.safetensors: not a valid .safetensors file"),
    ],
)
def test_corrupt_files(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / name).write_bytes(b"PK\x03\x04 this is not what it claims" * 10)
    with pytest.raises(WeightsError, match=message):
        read_checkpoint(tmp_path / name)


@pytest.mark.parametrize("content", [b"hello world\n", b"junk\n", bytes(range(256)) * 4])
def test_any_bytes_that_are_not_a_checkpoint_are_a_weights_error(
    tmp_path: Path, content: bytes
) -> None:
    (tmp_path / "w.pth").write_bytes(content)
    with pytest.raises(WeightsError) as caught:
        read_checkpoint(tmp_path / "w.pth")
    assert str(caught.value) == "cannot read w.pth: not a valid PyTorch .pth/.pt file"


def test_truncated_pth(tmp_path: Path) -> None:
    path = save(tmp_path, tiny().state_dict())
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(WeightsError, match="not a valid PyTorch"):
        read_checkpoint(path)


def test_wrong_suffix_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(
        WeightsError,
        match=r"unsupported weights file 'w.bin': use one of .pth, "
        r".pt, .safetensors",
    ):
        read_checkpoint(tmp_path / "w.bin")
    with pytest.raises(WeightsError, match=r"weights file .*nothere.pth does not exist"):
        read_checkpoint(tmp_path / "nothere.pth")


def test_swap_on_unrecorded_weights_warns_generally(tmp_path: Path) -> None:
    path = save(tmp_path, tiny().state_dict())
    target = tiny("gelu")
    with pytest.warns(ActivationSwapWarning, match="does not record its activation .*with gelu"):
        load_weights(target, read_checkpoint(path), activation="gelu")


def test_swap_on_recorded_weights_names_both(tmp_path: Path) -> None:
    path = tmp_path / "trained.safetensors"
    save_weights(tiny("mish"), path, activation="mish")
    assert read_checkpoint(path).activation == "mish"
    with pytest.warns(ActivationSwapWarning, match="trained with mish and are now used with relu"):
        load_weights(tiny("relu"), read_checkpoint(path), activation="relu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_weights(tiny("mish"), read_checkpoint(path), activation="mish")


def test_prelu_on_relu_weights_keeps_initial_slopes(tmp_path: Path) -> None:
    path = save(tmp_path, tiny("relu").state_dict())
    target = tiny("prelu")
    with pytest.warns(ActivationSwapWarning):
        report = load_weights(target, read_checkpoint(path), activation="prelu")
    assert "act1.weight" in report.activation_keys_skipped
    assert torch.all(target.act1.weight == 0.25)
    back = tiny("relu")
    with pytest.warns(ActivationSwapWarning):
        load_weights(
            back, read_checkpoint(save(tmp_path, target.state_dict(), "p.pth")), activation="relu"
        )


def test_missing_num_batches_tracked_is_fine_like_torchs_strict_load(tmp_path: Path) -> None:
    """Files saved before PyTorch 0.4.1 (torchvision's classic ResNet files) lack the counters."""
    source = tiny(seed=1)
    state = {k: v for k, v in source.state_dict().items() if "num_batches_tracked" not in k}
    assert len(state) < len(source.state_dict())
    reference = tiny(seed=2)
    reference.load_state_dict(state, strict=True)  # torch accepts it too
    target = tiny(seed=2)
    load_weights(target, read_checkpoint(save(tmp_path, state)), activation="relu")
    assert torch.equal(outputs(source), outputs(target))
    assert all(int(v) == 0 for k, v in target.state_dict().items() if "num_batches_tracked" in k)
    del state["bn1.running_var"]  # any other missing key is still an error
    with pytest.raises(WeightsError, match=r"missing keys \(1\): bn1.running_var$"):
        load_weights(tiny(), read_checkpoint(save(tmp_path, state)))


@pytest.mark.parametrize(("mode", "expected"), [("channel", "channel"), ("single", "single")])
def test_prelu_slopes_mean_prelu_in_their_mode(tmp_path: Path, mode: str, expected: str) -> None:
    model = build_resnet(
        "resnet8", "prelu", num_classes=3, width=4, activation_params={"mode": mode}
    )
    checkpoint = read_checkpoint(save(tmp_path, model.state_dict()))
    assert checkpoint.activation is None
    assert checkpoint.trained_activation() == ("prelu", {"mode": expected})
    assert read_checkpoint(save(tmp_path, tiny().state_dict())).trained_activation() == (None, {})


def test_saved_weights_record_activation_parameters(tmp_path: Path) -> None:
    path = tmp_path / "leaky.safetensors"
    model = tiny("leaky_relu")
    save_weights(model, path, activation="leaky_relu", activation_params={"negative_slope": 0.2})
    checkpoint = read_checkpoint(path)
    assert checkpoint.trained_activation() == ("leaky_relu", {"negative_slope": 0.2})
    torch.save({"state_dict": model.state_dict(), "activation": "elu",
                "activation_params": {"alpha": 0.5}}, tmp_path / "c.pth")  # fmt: skip
    assert read_checkpoint(tmp_path / "c.pth").trained_activation() == ("elu", {"alpha": 0.5})


def test_unreadable_recorded_parameters_are_a_weights_error(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    tensors = {k: v.contiguous() for k, v in tiny().state_dict().items()}
    save_file(tensors, str(path), metadata={"actlab.activation_params": "[1, 2]"})
    with pytest.raises(WeightsError, match=r"^cannot read w.safetensors: its recorded activation"):
        read_checkpoint(path)


def test_a_failed_save_is_one_weights_error_and_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "absent" / "w.safetensors"
    with pytest.raises(WeightsError, match=r"^cannot write weights to .*absent/w.safetensors: "):
        save_weights(tiny(), target, activation="relu")
    assert list(tmp_path.iterdir()) == []


def test_check_weights_path(tmp_path: Path) -> None:
    assert check_weights_path(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"
    for bad, message in (
        ("w.pth", "--save-weights needs a .safetensors path in an existing folder"),
        ("no/w.safetensors", "--save-weights needs a .safetensors path in an existing folder"),
        ("d.safetensors", "--save-weights: .*d.safetensors is a folder"),
    ):
        (tmp_path / "d.safetensors").mkdir(exist_ok=True)
        with pytest.raises(WeightsError, match=f"^{message}"):
            check_weights_path(tmp_path / bad)
