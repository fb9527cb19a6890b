"""The one list of model names: every architecture fdflare builds, importable without torch.

The command line takes its ``--model`` choices from here (building the parser imports no
torch), the config checks its ``model`` field against it, and :mod:`fdflare.models.networks`
builds what it names. Adding an architecture is one entry here and one builder there.

Example:
    >>> from fdflare.models.registry import list_models
    >>> list_models(study_only=True)
    ['alexnet', 'vgg16', 'resnet34']
"""

from __future__ import annotations

from dataclasses import dataclass

from fdflare.core.errors import InputError

INPUT_ADAPTERS = ("conv", "sum")


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture.

    Attributes:
        name: registry name (also the torchvision builder's name).
        weights: name of its torchvision ImageNet weights (``AlexNet_Weights.IMAGENET1K_V1``).
        url: where torchvision downloads those weights; the file name is the last part.
        description: one line for ``--help`` and the docs.
        short: the study's short name in prediction file names (``fold1_alex.csv``).
        in_study: whether the study used it (others are extras, e.g. for quick tests).
    """

    name: str
    weights: str
    url: str
    description: str
    short: str
    in_study: bool = True

    @property
    def weights_filename(self) -> str:
        """The ImageNet weights file name, as torch's hub cache stores it (``""``: none)."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def has_weights(self) -> bool:
        """Whether ImageNet weights exist for it (the small CNN has none)."""
        return bool(self.url)


_HUB = "https://download.pytorch.org/models/"

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "alexnet",
            "AlexNet_Weights.IMAGENET1K_V1",
            _HUB + "alexnet-owt-7be5be79.pth",
            "AlexNet features + 3-layer head (57M parameters)",
            "alex",
        ),
        ModelSpec(
            "vgg16",
            "VGG16_Weights.IMAGENET1K_V1",
            _HUB + "vgg16-397923af.pth",
            "VGG16 features + 3-layer head (134M)",
            "vgg",
        ),
        ModelSpec(
            "resnet34",
            "ResNet34_Weights.IMAGENET1K_V1",
            _HUB + "resnet34-b627a593.pth",
            "ResNet34 + Linear(512, 2) (21M)",
            "resnet",
        ),
        ModelSpec(
            "resnet18",
            "ResNet18_Weights.IMAGENET1K_V1",
            _HUB + "resnet18-f37072fd.pth",
            "ResNet18 + Linear(512, 2) (11M; not in the study, for quick runs)",
            "resnet18",
            in_study=False,
        ),
        ModelSpec(
            "smallcnn",
            "",
            "",
            "4 conv blocks (16-32-64-128, batch norm) + global pooling + Linear(128, 2) "
            "(0.1M; not in the study, no ImageNet weights: the demo's model)",
            "smallcnn",
            in_study=False,
        ),
    )
}


def list_models(study_only: bool = False) -> list[str]:
    """Return the registered model names (the study's three first)."""
    return [name for name, spec in MODELS.items() if spec.in_study or not study_only]


def get_spec(name: str) -> ModelSpec:
    """Return the spec of ``name``.

    Raises:
        InputError: an unknown name, listing the known ones.
    """
    if name not in MODELS:
        raise InputError(
            f"unknown model {name!r}; choose one of {', '.join(MODELS)}", field="model"
        )
    return MODELS[name]


def check_adapter(input_adapter: str) -> None:
    """Check an input adapter name.

    Raises:
        InputError: not one of :data:`INPUT_ADAPTERS`.
    """
    if input_adapter not in INPUT_ADAPTERS:
        choices = ", ".join(INPUT_ADAPTERS)
        raise InputError(
            f"unknown input adapter {input_adapter!r}; choose one of {choices}",
            field="input_adapter",
        )
