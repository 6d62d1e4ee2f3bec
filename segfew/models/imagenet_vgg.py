"""Classifier on frozen ImageNet VGG-16 features (framework VGG, 2D only; Wong et al. 2018,
section 2.2.2; SPEC §3(c)).

The convolutional part of torchvision's VGG-16 (13 convolutions with biases, no BatchNorm)
is rebuilt here with the same state-dict keys (``features.0.weight`` … ``features.28.bias``),
so a torchvision ``vgg16`` state dict loads directly — torchvision itself is not needed and
nothing is ever downloaded: :func:`segfew.modelfile.load_imagenet_vgg16` reads a local
file the user gives and hands the state dict to
:meth:`ImageNetVGGClassifier.load_imagenet_state`. The convolutions are frozen; only the
new FC head (the modified VGG head of SPEC §3(b), ``n_fc = 100``) is trained, as in the
paper.

Input convention (SPEC §3(c)): images already resized to 224×224 and CLAHE-normalised to
0–255. The module itself replicates each image channel to the three RGB channels and
subtracts 128, the paper's shift to "resemble the pre-training condition". With C > 1 image
channels (e.g. ED and ES) the frozen VGG runs on each channel and the features are
concatenated. Note that torchvision's weights were trained on ``(x/255 - mean) / std``
inputs, about 57× smaller in scale than ``x - 128``; ``torchvision_normalize=True`` uses
that normalisation instead (not the paper's, off by default).

Example::

    net = ImageNetVGGClassifier(num_classes=9)
    net.load_imagenet_state(torch.load("vgg16-397923af.pth", weights_only=True))
    net(torch.zeros(4, 1, 224, 224)).shape                     # (4, 9)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from segfew.models.blocks import FCHead, init_glorot

__all__ = ["VGG16_CONFIG", "ImageNetVGGClassifier", "vgg16_features"]

#: torchvision's VGG-16 "D" configuration: conv widths, "M" = 2×2 max-pool
VGG16_CONFIG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                       512, 512, 512, "M", 512, 512, 512, "M")
INPUT_SIZE = (224, 224)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    """torchvision's ``vgg16().features`` layer for layer (same indices, same key names).

    (N, 3, 224, 224) → (N, 512, 7, 7).
    """
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_CONFIG:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(channels, item, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = item
    return nn.Sequential(*layers)


class ImageNetVGGClassifier(nn.Module):
    """Frozen ImageNet VGG-16 convolutions → new FC head.

    Args:
        num_classes: classes N_c.
        n_fc: hidden FC width (paper: 100).
        dropout: dropout after each hidden FC layer.
        in_channels: image channels C; each runs through the frozen VGG on its own.
        torchvision_normalize: use torchvision's ImageNet normalisation instead of the
            paper's ``x - 128`` (see the module docstring).

    Input (N, C, 224, 224) with intensities 0–255 → logits (N, num_classes).
    """

    def __init__(self, num_classes: int, n_fc: int = 100, dropout: float = 0.5,
                 in_channels: int = 1, torchvision_normalize: bool = False) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.torchvision_normalize = torchvision_normalize
        self.features = vgg16_features()
        self.features.requires_grad_(False)
        self.num_features = 512 * in_channels
        self.classifier = FCHead(self.num_features * 7 * 7, n_fc, num_classes, dropout)
        init_glorot(self.classifier)
        self.train(self.training)

    def train(self, mode: bool = True) -> ImageNetVGGClassifier:
        """Set training mode; the frozen VGG convolutions stay in eval mode."""
        super().train(mode)
        self.features.eval()
        return self

    def load_imagenet_state(self, state: Mapping[str, Any]) -> None:
        """Load the VGG-16 convolutions from a torchvision state dict already in memory.

        Accepts a full torchvision ``vgg16`` state dict (only its ``features.*`` entries are
        used), a features-only one (``features.N.*`` or ``N.*`` keys) or either wrapped in
        ``{"state_dict": ...}``. Reading the file is the model-file layer's job
        (:func:`segfew.modelfile.load_imagenet_vgg16`). Raises ``ValueError`` when the keys
        or shapes are not VGG-16's.
        """
        if isinstance(state.get("state_dict"), Mapping):
            state = state["state_dict"]
        if any(str(k).startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items()
                     if str(k).startswith("features.")}
        expected = self.features.state_dict()
        missing = sorted(set(expected) - set(state), key=_key_order)
        if missing:
            raise ValueError(f"not VGG-16 weights: {len(missing)} of the 26 feature tensors "
                             f"are missing (first: features.{missing[0]})")
        for key, ref in expected.items():
            value = state[key]
            if not isinstance(value, Tensor) or tuple(value.shape) != tuple(ref.shape):
                got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise ValueError(f"not VGG-16 weights: features.{key} has shape {got}, "
                                 f"expected {tuple(ref.shape)}")
        self.features.load_state_dict({k: state[k] for k in expected})

    def _prepare(self, x: Tensor) -> Tensor:
        """(M, 1, 224, 224) in 0–255 → (M, 3, 224, 224) as the VGG expects."""
        x = x.expand(-1, 3, -1, -1)
        if self.torchvision_normalize:
            mean = torch.tensor(_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            std = torch.tensor(_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            return (x / 255.0 - mean) / std
        return x - 128.0

    def forward_features(self, x: Tensor) -> Tensor:
        """Frozen VGG features: (N, C, 224, 224) → (N, C · 512, 7, 7)."""
        if tuple(x.shape[1:]) != (self.in_channels, *INPUT_SIZE):
            raise ValueError(f"expected (N, {self.in_channels}, 224, 224) images (SPEC §3(c)), "
                             f"got {tuple(x.shape)}")
        n, c = x.shape[:2]
        with torch.no_grad():
            f = self.features(self._prepare(x.reshape(n * c, 1, *INPUT_SIZE)))
        return f.reshape(n, c * f.shape[1], *f.shape[2:])

    def forward_head(self, f: Tensor) -> Tensor:
        """(N, C · 512, 7, 7) → logits (N, num_classes)."""
        return self.classifier(f)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, 224, 224) → logits (N, num_classes); softmax is left to the loss."""
        return self.forward_head(self.forward_features(x))


def _key_order(key: str) -> tuple[int, str]:
    index, _, name = key.partition(".")
    return (int(index) if index.isdigit() else 10**6, name)
