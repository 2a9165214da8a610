"""Architectures: torchvision parameter names/shapes and counts, sites, maxout widening, seeds."""

from __future__ import annotations

import pytest
import torch

from export.resnet import (
    ARCHITECTURES,
    activation_sites,
    arch_style,
    build_resnet,
    count_parameters,
)
from service.activations import NETWORK_ACTIVATIONS

TORCHVISION_COUNTS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}


@pytest.mark.parametrize(("arch", "expected"), TORCHVISION_COUNTS.items())
def test_imagenet_parameter_counts_match_torchvision(arch: str, expected: int) -> None:
    model = build_resnet(arch, "relu", num_classes=1000)
    assert count_parameters(model) == expected


def test_resnet20_has_about_027m_parameters() -> None:
    count = count_parameters(build_resnet("resnet20", "relu", num_classes=10))
    assert count == 272_474  # 3×3 stem, 16/32/64 channels, 1×1 projection shortcuts
    assert round(count / 1e6, 2) == 0.27


def test_cifar_depths_follow_6n_plus_2() -> None:
    for arch, n in {
        "resnet8": 1,
        "resnet20": 3,
        "resnet32": 5,
        "resnet44": 7,
        "resnet56": 9,
    }.items():
        model = build_resnet(arch, num_classes=10)
        convs = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        main_path = [c for c in convs if c.kernel_size == (3, 3)]
        assert len(main_path) + 1 == 6 * n + 2, arch  # 3×3 convs + fc
        assert arch_style(arch) == "cifar"


def test_resnet18_state_dict_keys_and_shapes_are_torchvisions() -> None:
    sd = build_resnet("resnet18", num_classes=1000).state_dict()
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["bn1.running_var"].shape == (64,)
    assert sd["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer2.0.downsample.1.num_batches_tracked"].shape == ()
    assert sd["layer4.1.bn2.bias"].shape == (512,)
    assert sd["fc.weight"].shape == (1000, 512) and sd["fc.bias"].shape == (1000,)
    assert "layer1.0.downsample.0.weight" not in sd
    assert len(sd) == 122  # torchvision resnet18: 62 params + 60 BN buffers


def test_resnet50_bottleneck_shapes() -> None:
    sd = build_resnet("resnet50", num_classes=1000).state_dict()
    assert sd["layer1.0.conv3.weight"].shape == (256, 64, 1, 1)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.conv2.weight"].shape == (512, 512, 3, 3)
    assert sd["fc.weight"].shape == (1000, 2048)
    assert len(sd) == 320


def test_forward_shapes_for_both_styles() -> None:
    torch.manual_seed(0)
    imagenet = build_resnet("resnet18", num_classes=7, width=8).eval()
    cifar = build_resnet("resnet8", num_classes=3, width=4).eval()
    with torch.no_grad():
        assert imagenet(torch.randn(2, 3, 64, 64)).shape == (2, 7)
        assert cifar(torch.randn(5, 3, 16, 16)).shape == (5, 3)


def test_activation_sites_in_forward_order_each_its_own_instance() -> None:
    model = build_resnet("resnet8", "prelu", num_classes=10, width=4)
    sites = activation_sites(model)
    assert [name for name, _ in sites] == [
        "act1",
        "layer1.0.act1",
        "layer1.0.act2",
        "layer2.0.act1",
        "layer2.0.act2",
        "layer3.0.act1",
        "layer3.0.act2",
    ]
    modules = [m for _, m in sites]
    assert len({id(m) for m in modules}) == len(modules)
    assert [m.weight.shape[0] for m in modules] == [4, 4, 4, 8, 8, 16, 16]
    bottleneck = activation_sites(build_resnet("resnet50", num_classes=10, width=8))
    assert [n for n, _ in bottleneck[:4]] == [
        "act1",
        "layer1.0.act1",
        "layer1.0.act2",
        "layer1.0.act3",
    ]


def test_sites_run_in_the_listed_order() -> None:
    model = build_resnet("resnet8", "relu", num_classes=10, width=4).eval()
    order: list[str] = []
    for name, module in activation_sites(model):
        module.register_forward_hook(lambda m, i, o, name=name: order.append(name))
    model(torch.randn(1, 3, 16, 16))
    assert order == [name for name, _ in activation_sites(model)]


def test_maxout_widens_preceding_convolutions() -> None:
    model = build_resnet("resnet8", "maxout", num_classes=10, width=4, activation_params={"k": 3})
    sd = model.state_dict()
    assert sd["conv1.weight"].shape == (12, 3, 3, 3)
    assert sd["layer1.0.conv1.weight"].shape == (12, 4, 3, 3)
    assert sd["layer1.0.conv2.weight"].shape == (12, 4, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (8, 4, 1, 1)
    assert sd["fc.weight"].shape == (10, 16)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_maxout_residual_matches_reference_computation() -> None:
    """out = max over each group of k of (bn2(conv2(...)) + shortcut), shortcut repeated k×."""
    model = build_resnet("resnet8", "maxout", num_classes=10, width=4, seed=3).eval()
    block = model.layer1[0]
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        h = block.act1(block.bn1(block.conv1(x)))
        pre = block.bn2(block.conv2(h))  # [2, 8, 8, 8]
        expected = torch.stack(
            [torch.maximum(pre[:, 2 * c] + x[:, c], pre[:, 2 * c + 1] + x[:, c]) for c in range(4)],
            dim=1,
        )
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("activation", NETWORK_ACTIVATIONS)
def test_every_activation_builds_and_runs(activation: str) -> None:
    model = build_resnet("resnet8", activation, num_classes=10, width=4, seed=0).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    assert model.activation.name == activation


def test_same_seed_same_weights_and_outputs_different_seed_differs() -> None:
    x = torch.randn(3, 3, 16, 16)
    a = build_resnet("resnet8", "gelu", num_classes=10, width=4, seed=7).eval()
    b = build_resnet("resnet8", "gelu", num_classes=10, width=4, seed=7).eval()
    c = build_resnet("resnet8", "gelu", num_classes=10, width=4, seed=8).eval()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_seed_does_not_touch_global_rng() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_resnet("resnet8", num_classes=10, width=4, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_architecture_lists_choices() -> None:
    with pytest.raises(
        ValueError, match="unknown architecture 'resnet19'; choose one of: resnet18"
    ):
        build_resnet("resnet19", num_classes=10)
    assert set(ARCHITECTURES) >= {"resnet18", "resnet152", "resnet20", "resnet56"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 0}, "num_classes must be at least 1, got 0"),
        ({"num_classes": 10, "width": 0}, "width must be a positive number of channels, got 0"),
    ],
)
def test_bad_sizes_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_resnet("resnet8", **kwargs)


def test_reset_classifier_replaces_head() -> None:
    model = build_resnet("resnet8", num_classes=10, width=4)
    model.reset_classifier(3)
    assert model.fc.weight.shape == (3, 16)
