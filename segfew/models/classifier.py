"""Classifier on frozen M-Net features (frameworks MANUAL / THRESHOLD; Wong et al. 2018,
section 2.2.1, Fig. 2(a); SPEC §3(a)).

frozen segmentation network → right-leg features → ``2^dim`` max-pool →
r × [``3^dim`` conv + BN + ReLU → ``2^dim`` max-pool] (channels ``n_c · 2^j``) → flatten →
FC(n_fc)+BN+ReLU+Dropout → FC(n_fc)+BN+ReLU+Dropout → FC(num_classes).

The network is split where the frozen part ends (timm-style): :meth:`forward_features`
returns what the head consumes — the features after the first max-pool, computed at half
resolution via :meth:`MNet.features_pooled` — and :meth:`forward_head` the rest. While the
feature network is frozen, its features are a fixed function of the image, so the training
engine can compute them once and train the head alone.

Examples::

    seg = MNet(2, 1, 10, n_s=16)
    clf = FeatureClassifier(seg, in_channels=1, num_classes=9, input_size=(128, 128))
    clf(torch.zeros(4, 1, 128, 128)).shape                   # (4, 9)
    # ED + ES through a one-channel network: features of each channel concatenated
    clf = FeatureClassifier(seg, in_channels=2, num_classes=5, input_size=(128, 128))
    # 2D network on volumes: slice by slice along the last axis, 3D head
    clf = FeatureClassifier(seg, in_channels=2, num_classes=5, input_size=(128, 128, 16))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from segfew.models.blocks import (
    ConvBNAct,
    FCHead,
    init_glorot,
    max_pool_nd,
    pool_kernels,
    pooled_size,
)
from segfew.models.mnet import MNet

__all__ = ["FeatureClassifier"]


class FeatureClassifier(nn.Module):
    """Few-label classifier on a (by default frozen) :class:`MNet`'s right-leg features.

    Args:
        feature_net: the pre-trained segmentation network (its weights are not touched).
        in_channels: image channels C. If ``feature_net.in_channels == 1`` and C > 1 the
            network runs on each channel and the features are concatenated (C ·
            num_features channels, channel 0's first); otherwise it must equal C.
        num_classes: classes N_c.
        input_size: the image grid, e.g. ``(128, 128)``. Three sizes with a 2D network: the
            network runs slice by slice along the last axis, the features are stacked into
            a volume and the head is 3D.
        n_c, n_fc, r, dropout: head settings (paper: 2D 16, 100, 3; 3D 32, 200, 4; 0.5).
        finetune: train the feature network too (BatchNorm in training mode with the rest);
            its segmentation head, which the features do not use, stays frozen.

    Input (N, C, *input_size) → logits (N, num_classes). When frozen, the feature network's
    parameters do not require grad, it stays in eval mode even after ``.train()``, and its
    forward runs without autograd (no gradient reaches the input image).
    """

    def __init__(self, feature_net: MNet, in_channels: int, num_classes: int,
                 input_size: tuple[int, ...], n_c: int = 16, n_fc: int = 100, r: int = 3,
                 dropout: float = 0.5, finetune: bool = False) -> None:
        super().__init__()
        input_size = tuple(int(s) for s in input_size)
        net_dim = feature_net.dim
        if len(input_size) not in (2, 3) or len(input_size) < net_dim:
            raise ValueError(f"input size {input_size} does not fit a {net_dim}D feature network")
        if feature_net.in_channels not in (1, in_channels):
            raise ValueError(f"the feature network takes {feature_net.in_channels} channels, "
                             f"the images have {in_channels}")
        if any(s % 16 for s in input_size[:net_dim]):
            raise ValueError(f"input size {input_size[:net_dim]} must be divisible by 16 "
                             "(the segmentation network pools four times)")
        if r < 1 or n_c < 1 or n_fc < 1 or num_classes < 1:
            raise ValueError(f"r, n_c, n_fc, num_classes must be positive, got {r}, {n_c}, "
                             f"{n_fc}, {num_classes}")
        self.feature_net = feature_net
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        self.finetune = finetune
        self.per_channel = feature_net.in_channels == 1 and in_channels > 1
        self.slicewise = len(input_size) == 3 and net_dim == 2
        self.dim = len(input_size)  # the head's dimension
        self.num_features = feature_net.num_features * (in_channels if self.per_channel else 1)

        # r + 1 poolings in all (the first on the features); an axis down to one voxel is
        # no longer pooled, so volumes with few slices fit (blocks.pool_kernels).
        kernels = pool_kernels(input_size, r + 1)
        self.first_pool, self.head_pools = kernels[0], kernels[1:]
        final = pooled_size(input_size, r + 1)
        widths = [self.num_features] + [n_c * 2**j for j in range(r)]
        self.convs = nn.ModuleList(
            [ConvBNAct(self.dim, widths[j], widths[j + 1]) for j in range(r)])
        self.classifier = FCHead(widths[-1] * math.prod(final), n_fc, num_classes, dropout)
        init_glorot(self.convs)
        init_glorot(self.classifier)
        feature_net.requires_grad_(finetune)
        # the segmentation head is not on the feature path: frozen even when fine-tuning, so
        # every trainable parameter gets a gradient (DDP needs that)
        feature_net.head.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> FeatureClassifier:
        """Set training mode; a frozen feature network stays in eval mode."""
        super().train(mode)
        if not self.finetune:
            self.feature_net.eval()
        return self

    def _net_features_pooled(self, x: Tensor) -> Tensor:
        """Pooled features of a batch of 2D slices or volumes, per channel if needed."""
        if not self.per_channel:
            return self.feature_net.features_pooled(x)
        n, c = x.shape[:2]
        f = self.feature_net.features_pooled(x.reshape(n * c, 1, *x.shape[2:]))
        return f.reshape(n, c * f.shape[1], *f.shape[2:])

    def forward_features(self, x: Tensor) -> Tensor:
        """Frozen features after the first ``2^dim`` max-pool:
        (N, C, *input_size) → (N, num_features, *input_size / 2)."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(f"expected (N, {self.in_channels}, "
                             f"{', '.join(map(str, self.input_size))}), got {tuple(x.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune):
            if not self.slicewise:
                return self._net_features_pooled(x)
            n, c, h, w, d = x.shape
            slices = x.permute(0, 4, 1, 2, 3).reshape(n * d, c, h, w)
            f = self._net_features_pooled(slices)  # (N·D, F, H/2, W/2)
            f = f.reshape(n, d, *f.shape[1:]).permute(0, 2, 3, 4, 1)  # (N, F, H/2, W/2, D)
            return F.max_pool3d(f, kernel_size=(1, 1, self.first_pool[-1]))

    def forward_head(self, f: Tensor) -> Tensor:
        """(N, num_features, *input_size / 2) → logits (N, num_classes)."""
        for block, kernel in zip(self.convs, self.head_pools, strict=True):
            f = max_pool_nd(block(f), kernel)
        return self.classifier(f)

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *input_size) → logits (N, num_classes); softmax is left to the loss."""
        return self.forward_head(self.forward_features(x))
