"""Training: deterministic per seed, val accuracy per epoch, clear refusals."""

from __future__ import annotations

import pytest
import torch

from export.data import load_dataset, stratified_split
from export.errors import TrainingError
from export.resnet import build_resnet
from export.train import EpochStats, Normalisation, TrainConfig, evaluate, train_model

NORM = Normalisation((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def small_data():
    torch.set_num_threads(2)
    ds = load_dataset("shapes", image_size=16, per_class=12, seed=0)
    split = stratified_split(ds.targets, 0.25, seed=0)
    train = (ds.images[split.train], ds.targets[split.train])
    val = (ds.images[split.val], ds.targets[split.val])
    return train, val


def run(small_data, seed: int, epochs: int = 2, activation: str = "relu"):
    model = build_resnet("resnet8", activation, num_classes=8, width=4, seed=seed)
    seen: list[EpochStats] = []
    config = TrainConfig(epochs=epochs, batch_size=16, seed=seed)
    result = train_model(
        model, *small_data, NORM, config, flips=True, progress=False, on_epoch=seen.append
    )
    return model, result, seen


def test_same_seed_gives_identical_training(small_data) -> None:
    a, ra, _ = run(small_data, seed=3)
    b, rb, _ = run(small_data, seed=3)
    c, _, _ = run(small_data, seed=4)
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert [(s.train_loss, s.val_accuracy) for s in ra.history] == [
        (s.train_loss, s.val_accuracy) for s in rb.history
    ]
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


def test_history_per_epoch_matches_an_independent_evaluation(small_data) -> None:
    model, result, seen = run(small_data, seed=0, epochs=3)
    assert [s.epoch for s in result.history] == [1, 2, 3]
    assert list(result.history) == seen  # on_epoch saw every epoch
    val_images, val_targets = small_data[1]
    with torch.no_grad():
        logits = model.eval()(NORM(val_images))
    accuracy = int((logits.argmax(1) == val_targets).sum()) / len(val_targets)
    assert result.val_accuracy == pytest.approx(accuracy, abs=1e-12)
    assert evaluate(model, val_images, val_targets, NORM)[1] == pytest.approx(accuracy, abs=1e-12)
    assert result.history[-1].train_loss < result.history[0].train_loss
    assert all(0.0 <= s.val_accuracy <= 1.0 and s.seconds > 0 for s in result.history)
    assert not model.training


def test_zero_epochs_leaves_the_model_untouched(small_data) -> None:
    model = build_resnet("resnet8", num_classes=8, width=4, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_model(model, *small_data, NORM, TrainConfig(epochs=0), progress=False)
    assert result.history == () and result.val_accuracy is None
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_binary_step_training_fails_clearly(small_data) -> None:
    with pytest.raises(
        TrainingError,
        match=r"^binary_step cannot be trained: its gradient is zero "
        r"almost everywhere.*--epochs 0",
    ):
        run(small_data, seed=0, epochs=1, activation="binary_step")


def test_bad_config_is_listed() -> None:
    with pytest.raises(
        TrainingError,
        match=r"epochs must be ≥ 0, got -1; learning rate must be a "
        r"positive number, got 0.0",
    ):
        TrainConfig(epochs=-1, lr=0.0).validate()


@pytest.mark.parametrize("weight_decay", [float("nan"), float("inf"), -1.0])
def test_weight_decay_must_be_finite(weight_decay: float) -> None:
    """NaN weight decay trained to NaN weights and only failed at the parity check."""
    with pytest.raises(TrainingError, match=r"^weight decay must be a finite number ≥ 0, got "):
        TrainConfig(weight_decay=weight_decay).validate()


def test_progress_bar_reports_loss_accuracy_and_eta(small_data, capsys) -> None:
    model = build_resnet("resnet8", num_classes=8, width=4, seed=0)
    train_model(model, *small_data, NORM, TrainConfig(epochs=1, batch_size=16), progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err and "acc=" in err
    assert "<" in err  # tqdm's elapsed<remaining (the ETA)
    assert "val loss" in err
