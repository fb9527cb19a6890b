"""Attribution maps of P(flare) through captum: Grad-CAM, Guided Grad-CAM, IG, occlusion.

Every method explains the **flare logit** (class 1 of :meth:`FlareNet.logits`) with
respect to the image exactly as the network sees it: the 8-bit magnetogram scaled to
[0, 1] by :class:`fdflare.data.dataset.FlareDataset` (the scaling of training and
prediction). Maps have the image's size, one value per pixel:

* ``gradcam``: :class:`captum.attr.LayerGradCam` on the last convolutional block of the
  architecture (:data:`TARGET_LAYERS`), ReLU of the weighted activations, upsampled
  bilinearly to the image with :meth:`captum.attr.LayerAttribution.interpolate`;
* ``guided-gradcam``: :class:`captum.attr.GuidedGradCam` on the same layer (guided
  backpropagation times the upsampled Grad-CAM), multiplied by the sign of the field
  (image minus the no-field grey): a gradient with respect to the grey level is negative
  where darkening a negative spot raises P, so the product is the gradient with respect
  to the field *strength*, positive wherever more field of either polarity means a flare;
* ``ig``: :class:`captum.attr.IntegratedGradients` from the *no-field* baseline
  (:func:`no_field_baseline`: 0 G grey, 128/255, on the disk, the image's own 0 on the sky);
* ``occlusion``: :class:`captum.attr.Occlusion`, square windows of 1/8 of the image
  side moved by half a window, each replaced by the same no-field baseline.

Guided backpropagation replaces the gradient of every ``nn.ReLU`` module, and captum's
hooks need ReLUs that do not work in place: :func:`relus_not_inplace` turns ``inplace`` off
for the length of one attribution and back on afterwards (the forward values are the same
either way, so the probability is untouched).

captum is imported inside the functions (``pip install "fdflare[explain]"``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from fdflare.core.errors import InputError

__all__ = [
    "METHODS",
    "TARGET_LAYERS",
    "attribute",
    "no_field_baseline",
    "occlusion_window",
    "relus_not_inplace",
    "require_captum",
    "target_layer",
]

#: ``--method`` choices, the default first.
METHODS = ("guided-gradcam", "gradcam", "ig", "occlusion")

#: The last convolutional block of each registered architecture (a dotted module path of
#: the network): the ReLU after the last convolution (AlexNet, VGG16, the small CNN), or
#: the last residual stage (ResNets).
TARGET_LAYERS = {
    "alexnet": "features.11",
    "vgg16": "features.29",
    "resnet34": "layer4",
    "resnet18": "layer4",
    "smallcnn": "features.14",
}

#: The flare class: the logit every map explains.
FLARE_CLASS = 1
#: Integration steps of Integrated Gradients (Gauss-Legendre).
IG_STEPS = 32
#: 8-bit grey of 0 G in fdflare's magnetograms (``fdflare synth`` and Helioviewer's scale).
ZERO_FIELD_GREY = 128


def require_captum() -> Any:
    """Import captum, or say which extra brings it.

    Raises:
        InputError: captum is not installed.
    """
    try:
        import captum.attr
    except ImportError:
        raise InputError(
            'attribution maps need captum: install it with pip install "fdflare[explain]"'
        ) from None
    return captum.attr


def target_layer(net: Any, model: str) -> Any:
    """The module of ``net`` whose activations Grad-CAM weighs (:data:`TARGET_LAYERS`).

    Raises:
        InputError: an architecture without an entry in the table.
    """
    if model not in TARGET_LAYERS:
        raise InputError(f"no Grad-CAM layer is known for the {model} architecture", field="model")
    return net.get_submodule(TARGET_LAYERS[model])


@contextlib.contextmanager
def relus_not_inplace(net: Any) -> Iterator[None]:
    """Turn off ``inplace`` of every ``nn.ReLU`` of ``net`` while the block runs, then restore it."""
    from torch import nn

    changed = [m for m in net.modules() if isinstance(m, nn.ReLU) and m.inplace]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


def no_field_baseline(x: Any) -> Any:
    """The image with no magnetic field: grey 128/255 (0 G) where lit, the sky (0) left as it is.

    fdflare's 8-bit magnetograms put 0 G at grey 128 and the sky at 0 (``fdflare synth``,
    Helioviewer's HMI scale; disk pixels are 1 .. 255), so this is the same Sun, same disk
    and same limb, with the field removed: what Integrated Gradients and occlusion compare
    against.
    """
    import torch

    return torch.where(x > 0, torch.full_like(x, ZERO_FIELD_GREY / 255.0), torch.zeros_like(x))


def occlusion_window(size: int) -> tuple[int, int]:
    """``(window, stride)`` of the occlusion squares for an image ``size`` pixels wide.

    The window is 1/8 of the side (64 px at 512, an active region with some margin), at
    least 2 px; the stride half a window, so every pixel is covered by up to four windows
    and an image costs about 225 forward passes whatever its size.
    """
    window = max(2, round(size / 8))
    return window, max(1, window // 2)


def _logit_module(net: Any) -> Any:
    """A module whose ``forward`` gives the logits of ``net`` (captum explains ``forward``)."""
    from torch import nn

    class FlareLogits(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.net: Any = inner

        def forward(self, x: Any) -> Any:
            return self.net.logits(x)

    return FlareLogits(net).eval()


def attribute(net: Any, model: str, x: Any, method: str) -> np.ndarray:
    """The attribution map of the flare logit for one image, as float64 ``[H, W]``.

    Args:
        net: the network (:class:`fdflare.models.networks.FlareNet`), in eval mode.
        model: its registry name (chooses the Grad-CAM layer).
        x: the image as the network sees it, ``[1, 1, H, W]`` float in [0, 1].
        method: one of :data:`METHODS`.

    Raises:
        InputError: captum missing, or an unknown method.
    """
    import torch

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    attr = require_captum()
    wrapped = _logit_module(net)
    x = x.detach().clone().requires_grad_(True)
    size = tuple(int(v) for v in x.shape[-2:])
    with relus_not_inplace(net), torch.enable_grad(), warnings.catch_warnings():
        # captum announces its ReLU hooks with a UserWarning every call
        warnings.filterwarnings("ignore", message="Setting backward hooks", category=UserWarning)
        if method == "gradcam":
            cam = attr.LayerGradCam(wrapped, target_layer(net, model))
            layer_map = cam.attribute(x, target=FLARE_CLASS, relu_attributions=True)
            out = attr.LayerAttribution.interpolate(layer_map, size, interpolate_mode="bilinear")
        elif method == "guided-gradcam":
            ggc = attr.GuidedGradCam(wrapped, target_layer(net, model))
            out = ggc.attribute(x, target=FLARE_CLASS, interpolate_mode="bilinear")
            # signed by polarity: d logit / d |B|, so a spot of either sign that raises P is > 0
            out = out * torch.sign(x.detach() - no_field_baseline(x.detach()))
        elif method == "ig":
            ig = attr.IntegratedGradients(wrapped)
            out = ig.attribute(
                x,
                baselines=no_field_baseline(x.detach()),
                target=FLARE_CLASS,
                n_steps=IG_STEPS,
                internal_batch_size=8,
            )
        else:
            window, stride = occlusion_window(size[-1])
            occ = attr.Occlusion(wrapped)
            out = occ.attribute(
                x.detach(),
                sliding_window_shapes=(1, window, window),
                strides=(1, stride, stride),
                baselines=no_field_baseline(x.detach()),
                target=FLARE_CLASS,
                perturbations_per_eval=32,
            )
    result = out.detach().float().cpu().numpy().reshape(out.shape[-2:]).astype(np.float64)
    return np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0)
