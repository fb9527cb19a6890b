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
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from fdflare.core.errors import InputError
from fdflare.models.registry import INPUT_ADAPTERS, check_adapter, get_spec, list_models
from fdflare.models.weights import first_line, load_imagenet_state_dict, weights_file

if TYPE_CHECKING:  # torchvision loads only for its backbones (1-2 s; smallcnn needs none)
    import torchvision

__all__ = [
    "INPUT_ADAPTERS",
    "AlexNetFlare",
    "FlareNet",
    "ResNetFlare",
    "SmallCNNFlare",
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


class SmallCNNFlare(FlareNet):
    """A small CNN for quick CPU runs (not in the study; no ImageNet weights exist for it).

    Four blocks ``Conv2d(3x3, no bias) + BatchNorm2d + ReLU`` of 16, 32, 64 and 128 channels,
    ``MaxPool2d(2)`` after each of the first three, then ``AdaptiveAvgPool2d(1)``,
    ``Dropout(0.3)`` and ``fc = [Linear(128, 2)]`` (``N(0, 0.01)``, as the study's heads). It
    takes any image size of at least 8 px and runs about 9x faster than ResNet18 at 64 px on
    a CPU, so the demo's minutes buy enough optimisation steps to learn.

    Its input is :meth:`disk_departure`: the magnetogram minus its disk's mean, with the sky
    and a thin rim at the limb set to 0. Without that, the position of the limb (the disk's
    apparent radius, which follows the season) is a cue a network learns from a year of data
    in place of the active regions.
    """

    CHANNELS = (16, 32, 64, 128)
    LIMB_MARGIN = 0.02  # share of the image width cut off the limb, plus one pixel (>= 3 px)

    def disk_departure(self, x: torch.Tensor) -> torch.Tensor:
        """The departure from each disk's mean grey level, zero on the sky and at the limb.

        The lit pixels (``x > 0``) are eroded by :data:`LIMB_MARGIN` of the image width plus
        one pixel (at least 3 pixels), so the disk's edge, whose place follows the Earth-Sun distance and
        hence the season, is not an input the network can learn in place of the regions.
        """
        lit = (x > 0).to(x.dtype)
        e = max(3, int(self.LIMB_MARGIN * x.shape[-1]) + 1)
        mask = -F.max_pool2d(-lit, 2 * e + 1, stride=1, padding=e)
        bg = (x * mask).sum((2, 3), keepdim=True) / mask.sum((2, 3), keepdim=True).clamp_min(1)
        return (x - bg) * mask * 10.0

    def __init__(self, input_adapter: str = "conv", num_classes: int = 2) -> None:
        super().__init__(input_adapter)
        self.arch = "smallcnn"
        layers: list[nn.Module] = []
        c_in = 3 if input_adapter == "conv" else 1
        for i, c_out in enumerate(self.CHANNELS):
            conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
            _init_first_conv(conv)
            layers += [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            if i < len(self.CHANNELS) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Dropout(0.3), nn.Linear(c_in, num_classes))
        _init_linear(self.fc)

    def logits(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.features(self.first_conv_layer(self.disk_departure(x)))
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
        name: one of :func:`list_models` (``alexnet``, ``vgg16``, ``resnet34``, ``resnet18``,
            ``smallcnn``).
        pretrained: start the backbone from its ImageNet weights (read from the local torch hub
            cache, or ``weights_path``); ``False`` keeps torchvision's random initialisation.
        input_adapter: ``"conv"`` (the study's extra 1->3 convolution) or ``"sum"`` (one-channel
            first convolution with the RGB kernels summed).
        num_classes: output classes (2 in the study).
        weights_path: an explicit ImageNet weights file instead of the hub cache.

    Raises:
        MissingDataError: ``pretrained`` and the weights file is absent.
        InputError: unknown name or adapter, ``pretrained`` for a model without weights, or a weights file that does not fit the backbone.
    """
    spec = get_spec(name)
    check_adapter(input_adapter)
    if not spec.has_weights:
        if pretrained:
            raise InputError(
                f"{name} has no ImageNet weights: train it with --no-pretrained", field="pretrained"
            )
        return SmallCNNFlare(input_adapter, num_classes)
    import torchvision

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
