"""The study's three classifiers on torchvision backbones.

Every model maps a one-channel magnetogram ``[B, 1, H, W]`` (values in [0, 1]) to
log-probabilities of the two classes ``[B, 2]`` (0 = no flare, 1 = flare), built exactly as
STUDY.md section 3:

* ``input_adapter="conv"`` (the study): a new ``Conv2d(1, 3, 3, padding=1) + ReLU`` maps the
  magnetogram to three channels, followed by the ImageNet backbone unchanged.
* ``input_adapter="sum"``: no extra layer; the backbone's first convolution takes one
  channel, its kernels being the sum of the pretrained RGB kernels (as timm's
  ``adapt_input_conv``).

New layers are initialised as the study: Kaiming-normal (fan_out, relu) for the new first
convolution with bias 0, ``N(0, 0.01)`` for every head ``Linear`` with bias 0. Module names
follow the study's code (``first_conv_layer``, ``features``, ``classifier``, ``fc``...), so its
released ``state_dict`` files load as they are.

The names come from :mod:`fdflare.models.registry`; ImageNet weights (torchvision's
``AlexNet_Weights.IMAGENET1K_V1`` etc.) are read from the local torch hub cache by
:mod:`fdflare.models.weights`; nothing is downloaded here.

Example:
    >>> from fdflare.models.networks import create_model
    >>> net = create_model("resnet34", pretrained=False)
    >>> net.predict_proba(torch.rand(2, 1, 64, 64)).shape  # P(flare) of each image
    torch.Size([2])
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from fdflare.core.errors import InputError
from fdflare.models.registry import INPUT_ADAPTERS, check_adapter, get_spec, list_models
from fdflare.models.weights import first_line, load_imagenet_state_dict, weights_file

__all__ = [
    "INPUT_ADAPTERS",
    "AlexNetFlare",
    "FlareNet",
    "ResNetFlare",
    "VGG16Flare",
    "adapt_input_conv",
    "create_model",
    "flare_probability",
    "list_models",
]


# --------------------------------------------------------------------------- init helpers


def _init_first_conv(conv: nn.Conv2d) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def adapt_input_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """Return a copy of ``conv`` taking one input channel, its kernels summed over RGB."""
    new = nn.Conv2d(
        1,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    return new


def _first_layer() -> nn.Sequential:
    conv = nn.Conv2d(1, 3, kernel_size=3, stride=1, padding=1)
    _init_first_conv(conv)
    return nn.Sequential(conv, nn.ReLU(inplace=True))


# --------------------------------------------------------------------------- models


class FlareNet(nn.Module):
    """Base class: ``forward`` gives log-probabilities, ``predict_proba`` gives P(flare).

    Attributes:
        arch: registry name of the architecture.
        input_adapter: ``"conv"`` or ``"sum"``.
    """

    arch: str = ""

    def __init__(self, input_adapter: str = "conv") -> None:
        super().__init__()
        check_adapter(input_adapter)
        self.input_adapter = input_adapter
        self.first_conv_layer: nn.Module = (
            _first_layer() if input_adapter == "conv" else nn.Identity()
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the unnormalised class scores ``[B, 2]``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return log-softmax class scores ``[B, 2]`` (the study's training output)."""
        return F.log_softmax(self.logits(x), dim=1)

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Return softmax P(flare) ``[B]`` (float32), the study's prediction output."""
        return flare_probability(self.logits(x))


def flare_probability(scores: torch.Tensor) -> torch.Tensor:
    """P(class 1) from logits or log-probabilities ``[B, 2]`` (softmax is shift invariant)."""
    return torch.softmax(scores.float(), dim=1)[:, 1]


class AlexNetFlare(FlareNet):
    """AlexNet: ``features`` -> ``AdaptiveAvgPool2d(6)`` -> the study's head.

    Head: Dropout, Linear(9216, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Linear(4096, 2).
    """

    arch = "alexnet"

    def __init__(
        self,
        backbone: torchvision.models.AlexNet,
        input_adapter: str = "conv",
        num_classes: int = 2,
    ):
        super().__init__(input_adapter)
        self.features = backbone.features
        if input_adapter == "sum":
            self.features[0] = adapt_input_conv(self.features[0])
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        _init_linear(self.classifier)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.features(self.first_conv_layer(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class VGG16Flare(FlareNet):
    """VGG16: ``features`` -> ``AdaptiveAvgPool2d(7)`` -> the study's head.

    Head: Linear(25088, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, 2).
    """

    arch = "vgg16"

    def __init__(
        self, backbone: torchvision.models.VGG, input_adapter: str = "conv", num_classes: int = 2
    ):
        super().__init__(input_adapter)
        self.features = backbone.features
        if input_adapter == "sum":
            self.features[0] = adapt_input_conv(self.features[0])
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )
        _init_linear(self.classifier)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.features(self.first_conv_layer(x))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


class ResNetFlare(FlareNet):
    """ResNet: ``conv1`` .. ``layer4`` -> ``AdaptiveAvgPool2d(1)`` -> ``fc = [Linear(512, 2)]``."""

    def __init__(
        self,
        backbone: torchvision.models.ResNet,
        arch: str,
        input_adapter: str = "conv",
        num_classes: int = 2,
    ):
        super().__init__(input_adapter)
        self.arch = arch
        self.conv1 = adapt_input_conv(backbone.conv1) if input_adapter == "sum" else backbone.conv1
        self.bn1 = backbone.bn1
        self.relu = backbone.relu
        self.maxpool = backbone.maxpool
        self.layer1 = backbone.layer1
        self.layer2 = backbone.layer2
        self.layer3 = backbone.layer3
        self.layer4 = backbone.layer4
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Linear(backbone.fc.in_features, num_classes))
        _init_linear(self.fc)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.first_conv_layer(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


_BUILDERS: dict[str, Callable[[nn.Module, str, int], FlareNet]] = {
    "alexnet": lambda b, a, n: AlexNetFlare(b, a, n),
    "vgg16": lambda b, a, n: VGG16Flare(b, a, n),
    "resnet34": lambda b, a, n: ResNetFlare(b, "resnet34", a, n),
    "resnet18": lambda b, a, n: ResNetFlare(b, "resnet18", a, n),
}


def create_model(
    name: str,
    pretrained: bool = True,
    input_adapter: str = "conv",
    *,
    num_classes: int = 2,
    weights_path: str | os.PathLike[str] | None = None,
) -> FlareNet:
    """Build a registered model.

    Args:
        name: one of :func:`list_models` (``alexnet``, ``vgg16``, ``resnet34``, ``resnet18``).
        pretrained: start the backbone from its ImageNet weights (read from the local torch hub
            cache, or ``weights_path``); ``False`` keeps torchvision's random initialisation.
        input_adapter: ``"conv"`` (the study's extra 1->3 convolution) or ``"sum"`` (one-channel
            first convolution with the RGB kernels summed).
        num_classes: output classes (2 in the study).
        weights_path: an explicit ImageNet weights file instead of the hub cache.

    Raises:
        MissingDataError: ``pretrained`` and the weights file is absent.
        InputError: unknown name or adapter, or a weights file that does not fit the backbone.
    """
    get_spec(name)
    check_adapter(input_adapter)
    backbone = getattr(torchvision.models, name)(weights=None)
    if pretrained:
        state = load_imagenet_state_dict(name, weights_path)
        try:
            backbone.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            file = weights_path if weights_path is not None else weights_file(name)
            raise InputError(
                f"the file does not hold {name} ImageNet weights ({first_line(exc)})", path=file
            ) from exc
    return _BUILDERS[name](backbone, input_adapter, num_classes)
