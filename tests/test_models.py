"""The study's three architectures, their initialisation and local ImageNet weights (fdflare.models)."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from fdflare.core.errors import InputError, MissingDataError
from fdflare.models.networks import (
    AlexNetFlare,
    ResNetFlare,
    VGG16Flare,
    _first_layer,
    create_model,
)
from fdflare.models.registry import MODELS, list_models
from fdflare.models.weights import load_imagenet_state_dict, weights_file


def test_registry():
    assert list_models(study_only=True) == ["alexnet", "vgg16", "resnet34"]
    assert set(list_models()) >= {"alexnet", "vgg16", "resnet34"}
    for name, spec in MODELS.items():  # the registry's URLs are torchvision's own
        if not spec.has_weights:  # the small CNN: no ImageNet weights exist
            assert name == "smallcnn" and not spec.in_study
            continue
        tv_weights = eval(f"torchvision.models.{spec.weights}")
        assert tv_weights.url == spec.url, name
    with pytest.raises(InputError, match="unknown model 'lenet'"):
        create_model("lenet", pretrained=False)
    with pytest.raises(InputError, match="unknown input adapter"):
        create_model("resnet34", pretrained=False, input_adapter="avg")


@pytest.fixture(scope="module")
def study_models() -> dict[str, nn.Module]:
    """The three study models, built once (VGG16 alone takes seconds to initialise)."""
    torch.manual_seed(0)
    return {name: create_model(name, pretrained=False) for name in ("alexnet", "vgg16", "resnet34")}


@pytest.mark.parametrize(
    ("name", "size", "adapter"),
    [
        ("alexnet", 64, "conv"),
        ("vgg16", 32, "conv"),
        ("resnet34", 32, "conv"),
        ("resnet18", 32, "conv"),
        ("smallcnn", 64, "conv"),
        ("smallcnn", 32, "sum"),
        ("alexnet", 64, "sum"),
        ("resnet34", 32, "sum"),
    ],
)
def test_forward_backward(study_models, name, size, adapter):
    torch.manual_seed(0)
    if adapter == "conv" and name in study_models:
        net = study_models[name]
    else:
        net = create_model(name, pretrained=False, input_adapter=adapter)
    net.train()
    net.zero_grad()
    x = torch.rand(2, 1, size, size)
    out = net(x)
    assert out.shape == (2, 2)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-5)  # log-softmax
    nn.functional.nll_loss(out, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    first = (
        net.first_conv_layer[0]
        if adapter == "conv"
        else (net.conv1 if hasattr(net, "conv1") else net.features[0])
    )
    assert first.weight.grad.abs().sum() > 0
    net.eval()
    p = net.predict_proba(x)
    assert p.shape == (2,) and p.dtype == torch.float32
    assert torch.allclose(p, torch.softmax(net.logits(x), 1)[:, 1])
    assert torch.allclose(p, net(x).exp()[:, 1], atol=1e-6)


def _linears(module: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, nn.Linear)]


def test_heads_as_the_study(study_models):
    alex = study_models["alexnet"]
    assert isinstance(alex, AlexNetFlare)
    assert [type(m).__name__ for m in alex.classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    assert _linears(alex.classifier) == [(9216, 4096), (4096, 4096), (4096, 2)]
    assert alex.avgpool.output_size == (6, 6)
    vgg = study_models["vgg16"]
    assert isinstance(vgg, VGG16Flare)
    assert [type(m).__name__ for m in vgg.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear",
    ]  # fmt: skip
    assert _linears(vgg.classifier) == [(25088, 4096), (4096, 4096), (4096, 2)]
    assert vgg.avgpool.output_size == (7, 7)
    res = study_models["resnet34"]
    assert isinstance(res, ResNetFlare)
    assert _linears(res.fc) == [(512, 2)]
    assert res.avgpool.output_size == (1, 1)
    assert [len(getattr(res, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]  # ResNet34
    for net in (alex, vgg, res):
        conv, relu = net.first_conv_layer
        assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (
            1,
            3,
            (3, 3),
            (1, 1),
        )
        assert isinstance(relu, nn.ReLU)
    # module names of the study's code, so its state_dict files load as they are
    assert {"first_conv_layer.0.weight", "features.0.weight", "classifier.6.bias"} <= set(
        alex.state_dict()
    )
    assert {"first_conv_layer.0.bias", "conv1.weight", "layer4.2.bn2.weight", "fc.0.weight"} <= set(
        res.state_dict()
    )


def test_initialisation():
    torch.manual_seed(1)
    # Kaiming normal, fan_out, relu: std = sqrt(2 / (3 out channels * 3 * 3)), bias 0
    w = torch.cat([_first_layer()[0].weight.flatten() for _ in range(400)])
    assert w.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.05)
    assert abs(w.mean().item()) < 0.02
    for name in ("alexnet", "resnet34"):
        net = create_model(name, pretrained=False)
        assert torch.count_nonzero(net.first_conv_layer[0].bias) == 0
        head = net.classifier if name == "alexnet" else net.fc
        for m in head.modules():
            if isinstance(m, nn.Linear):
                assert torch.count_nonzero(m.bias) == 0
                if m.weight.numel() > 10_000:
                    assert m.weight.std().item() == pytest.approx(0.01, rel=0.02)
                    assert abs(m.weight.mean().item()) < 1e-3


def test_missing_imagenet_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    expected = tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert weights_file("alexnet") == expected
    with pytest.raises(MissingDataError) as err:
        create_model("alexnet", pretrained=True)
    text = str(err.value)
    assert str(expected) in text
    assert str(expected.parent) in text
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in text
    assert "--no-pretrained" in text


def test_local_weights_file_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(5)
    backbone = torchvision.models.resnet34(weights=None)
    path = weights_file("resnet34")
    assert path.name == "resnet34-b627a593.pth"  # torchvision's cache name, hash prefix included
    path.parent.mkdir(parents=True)
    torch.save(backbone.state_dict(), path)
    net = create_model("resnet34", pretrained=True)
    for key in ("conv1.weight", "layer3.1.conv2.weight", "bn1.running_var"):
        mod, _, attr = key.rpartition(".")
        assert torch.equal(net.get_submodule(mod).get_parameter(attr) if attr != "running_var"
                           else net.get_submodule(mod).running_var, backbone.state_dict()[key])  # fmt: skip
    # the new layers keep the study's initialisation, not the weights file
    assert torch.count_nonzero(net.fc[0].bias) == 0
    # timm-style adapter: the RGB kernels of the pretrained first conv, summed
    summed = create_model("resnet34", pretrained=True, input_adapter="sum")
    assert summed.conv1.in_channels == 1
    assert torch.allclose(summed.conv1.weight, backbone.conv1.weight.sum(1, keepdim=True))
    assert isinstance(summed.first_conv_layer, nn.Identity)


def test_wrong_or_unsafe_weights_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = weights_file("resnet34")
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)  # another backbone
    with pytest.raises(InputError) as err:
        create_model("resnet34", pretrained=True)
    assert str(path) in str(err.value) and "resnet34" in str(err.value)
    path.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="cannot read ImageNet weights file"):
        create_model("resnet34", pretrained=True)
    # a pickle that is not plain tensors is refused (weights_only=True), not executed
    torch.save({"conv1.weight": torch.zeros(1), "x": _Opaque()}, path)
    with pytest.raises(InputError, match="cannot read"):
        load_imagenet_state_dict("resnet34")


class _Opaque:
    """An arbitrary object: ``torch.load(weights_only=True)`` must refuse to unpickle it."""


def test_smallcnn_has_no_imagenet_weights():
    with pytest.raises(
        InputError, match="smallcnn has no ImageNet weights: train it with --no-pretrained"
    ):
        create_model("smallcnn", pretrained=True)
    net = create_model("smallcnn", pretrained=False)
    assert sum(p.numel() for p in net.parameters()) < 200_000  # small enough for CPU minutes
    head = net.fc[-1]
    assert head.bias.abs().sum() == 0 and 0.005 < head.weight.std() < 0.02  # N(0, 0.01)
