"""Where a classification network looked: Grad-CAM of a class, on the image's grid.

Grad-CAM (Selvaraju et al., ICCV 2017) weighs each channel of a spatial layer by the mean
gradient of the class logit over space and keeps the positive part of the weighted sum:
``relu(Σ_k mean(∂y_c/∂A_k) · A_k)``, upsampled to the input. It needs no change to the
network and one backward pass, and it is class-discriminative; unlike plain input
gradients it is not dominated by edges. Captum's ``LayerGradCam`` computes it (a kept
library, also behind MONAI's and ClinicaDL's maps).

The layer is the last spatial map the classifier reads:

- frameworks MANUAL and THRESHOLD (:class:`~segfew.models.FeatureClassifier`): the frozen
  segmentation features (or softmax maps) the head reads, at half resolution — for
  ``pooling="stats"`` the maps before their mean and std are taken;
- framework VGG (ImageNet VGG-16): its last convolutional features (7 × 7), the layer
  Grad-CAM was defined on;
- framework SCRATCH (:class:`~segfew.models.VGGClassifier`): the deepest block whose
  output keeps at least 1/8 of the input grid (block 3 of 5), so a map of a small grid
  still has more than a voxel or two.

Example::

    cam = grad_cam(model, x, target=2)   # x (C, *grid) pre-processed → (*grid) in [0, 1]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["grad_cam"]

#: SCRATCH: the map comes from the deepest block whose output is at least this part of the grid
MIN_SCALE = 1 / 8


class _Head(nn.Module):
    """A classifier with a frozen front as a network of that front's spatial maps, so the
    gradient reaches them (the front runs without autograd)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.maps = nn.Identity()  # the layer Grad-CAM reads

    def forward(self, f: Tensor) -> Tensor:
        f = self.maps(f)
        if getattr(self.model, "pooling", None) == "stats":
            f = self.model.stats(f)  # type: ignore[operator]
        return self.model.forward_head(f)  # type: ignore[operator]


def _network_and_layer(model: nn.Module, x: Tensor) -> tuple[nn.Module, nn.Module, Tensor]:
    """(network, layer, its input) of what Grad-CAM differentiates (module docstring)."""
    front = getattr(model, "source_maps", None) or getattr(model, "forward_features", None)
    if front is not None and hasattr(model, "forward_head"):
        with torch.no_grad():
            maps = front(x)
        net = _Head(model)
        return net, net.maps, maps
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ValueError(f"no saliency map for a {type(model).__name__}: it has no spatial layer")
    grid = min(x.shape[2:])
    chosen, size = stages[0], grid
    for stage in stages:
        size = max(1, size // max(getattr(stage, "pool", (2,))))
        if size < grid * MIN_SCALE:
            break
        chosen = stage
    return model, chosen, x


def grad_cam(model: Any, image: np.ndarray, target: int, device: Any = "cpu") -> np.ndarray:
    """Grad-CAM of class ``target`` for one pre-processed image ``(C, *grid)``.

    Returns a float32 map of shape ``grid`` scaled to [0, 1] (all zeros where no voxel
    raises the class score). The model runs in eval mode in float32 on ``device``.
    Raises ValueError for a model without a spatial layer (the ``measures`` classifier).
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32,
                        device=torch.device(device))[None]
    net, layer, inputs = _network_and_layer(model, x)
    with torch.enable_grad():
        cam = LayerGradCam(net, layer).attribute(inputs, target=int(target),
                                                 relu_attributions=True)
    grid = tuple(int(s) for s in x.shape[2:])
    cam = cam.detach().float().sum(1, keepdim=True)
    mode = "bilinear" if len(grid) == 2 else "trilinear"
    if cam.ndim - 2 != len(grid):
        raise ValueError(f"a {cam.ndim - 2}D map does not fit a {len(grid)}D image")
    up = LayerAttribution.interpolate(cam, grid, mode)[0, 0].cpu().numpy()
    top = float(up.max())
    return (up / top if top > 0 else np.zeros_like(up)).astype(np.float32)
