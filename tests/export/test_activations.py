"""Torch activations agree with the numpy catalogue (service.activations) on a dense grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.activations import TORCH_ACTIVATIONS, Maxout, torch_activation
from service.activations import (
    CATALOGUE,
    NETWORK_ACTIVATIONS,
    CatalogueError,
    get_activation,
    maxout,
)

ELEMENTWISE = [n for n in NETWORK_ACTIVATIONS if CATALOGUE[n].kind == "elementwise"]

# Non-default parameters, so every parameter is shown to reach the torch module.
VARIANTS: list[tuple[str, dict[str, float | int | str]]] = [
    *[(name, {}) for name in ELEMENTWISE],
    ("leaky_relu", {"negative_slope": 0.2}),
    ("prelu", {"init": 0.1, "mode": "single"}),
    ("prelu", {"init": 0.6, "mode": "channel"}),
    ("elu", {"alpha": 0.5}),
    ("celu", {"alpha": 2.5}),
    ("gelu", {"approximate": "tanh"}),
    ("silu", {"beta": 2.0}),
    ("softplus", {"beta": 2.0, "threshold": 10.0}),
]


def dense_grid() -> np.ndarray:
    """Fine steps near 0, wide steps out to ±1e4, and the boundaries themselves."""
    near = np.linspace(-12.0, 12.0, 24001)
    far = np.logspace(1.0, 4.0, 3001)
    special = np.array([0.0, -0.0, 3.0, -3.0, 6.0, 1e-12, -1e-12, 1e4, -1e4])
    return np.concatenate([near, far, -far, special])


def test_torch_names_equal_catalogue_network_names() -> None:
    assert set(TORCH_ACTIVATIONS) == set(NETWORK_ACTIVATIONS)
    assert "softmax" not in TORCH_ACTIVATIONS
    assert len(TORCH_ACTIVATIONS) == len(NETWORK_ACTIVATIONS) == 20


@pytest.mark.parametrize(("name", "params"), VARIANTS, ids=lambda v: str(v))
def test_torch_matches_catalogue_on_dense_grid(name: str, params: dict) -> None:
    x = dense_grid()
    expected, _ = get_activation(name).evaluate(x, params)
    module = torch_activation(name, params).make(channels=1).double().eval()
    with torch.no_grad():
        got = module(torch.from_numpy(x).reshape(1, 1, -1)).reshape(-1).numpy()
    assert got.dtype == np.float64
    assert np.all(np.isfinite(got)), f"{name}: non-finite output"
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_float32_module_is_finite_at_extremes(name: str) -> None:
    module = torch_activation(name).make(channels=1).eval()
    x = torch.tensor([-1e4, -1e3, -88.0, 0.0, 88.0, 1e3, 1e4]).reshape(1, 1, -1)
    with torch.no_grad():
        assert torch.isfinite(module(x)).all()


@pytest.mark.parametrize("k", [2, 3, 4])
def test_maxout_matches_catalogue_over_channel_groups(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.normal(scale=100.0, size=(2, 5 * k, 3, 4))
    module = torch_activation("maxout", {"k": k}).make(channels=5)
    assert isinstance(module, Maxout)
    got = module(torch.from_numpy(x)).numpy()
    channels_last = np.moveaxis(x, 1, -1)
    expected = np.moveaxis(maxout(channels_last, k), -1, 1)
    assert got.shape == (2, 5, 3, 4)
    np.testing.assert_array_equal(got, expected)


def test_prelu_modes_and_learned_slope() -> None:
    per_channel = torch_activation("prelu").make(channels=7)
    single = torch_activation("prelu", {"mode": "single"}).make(channels=7)
    assert isinstance(per_channel, torch.nn.PReLU) and isinstance(single, torch.nn.PReLU)
    assert per_channel.weight.shape == (7,) and single.weight.shape == (1,)
    assert torch.all(per_channel.weight == 0.25)
    assert per_channel.weight.requires_grad


def test_each_call_makes_a_new_instance() -> None:
    act = torch_activation("prelu")
    first, second = act.make(4), act.make(4)
    assert first is not second
    assert first.weight is not second.weight


def test_aliases_and_case_resolve() -> None:
    assert torch_activation("Swish").name == "silu"
    assert torch_activation("LEAKY-RELU").name == "leaky_relu"


def test_widen_and_trainable_flags() -> None:
    assert torch_activation("maxout", {"k": 3}).widen == 3
    assert torch_activation("relu").widen == 1
    assert torch_activation("binary_step").trainable is False
    assert all(torch_activation(n).trainable for n in NETWORK_ACTIVATIONS if n != "binary_step")


def test_unknown_name_lists_allowed() -> None:
    with pytest.raises(CatalogueError, match="unknown activation 'swoosh'; choose one of: relu"):
        torch_activation("swoosh")


def test_softmax_is_not_a_network_activation() -> None:
    with pytest.raises(CatalogueError, match="not a hidden-layer activation"):
        torch_activation("softmax")


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("elu", {"alpha": 0.0}, r"parameter 'alpha' of 'elu' must be a number in \[0.01, 10.0\]"),
        ("gelu", {"approximate": "fast"}, "must be one of 'none', 'tanh'"),
        ("maxout", {"k": 2.5}, "must be an integer"),
        ("relu", {"slope": 1}, "'relu' has no parameter 'slope'; its parameters are: none"),
    ],
)
def test_bad_parameters_say_what_is_allowed(name: str, params: dict, message: str) -> None:
    with pytest.raises(CatalogueError, match=message):
        torch_activation(name, params)
