"""Classifier on frozen M-Net features (frameworks MANUAL / THRESHOLD; Wong et al. 2018,
section 2.2.1, Fig. 2(a); SPEC §3(a)).

frozen segmentation network → right-leg features → ``2^dim`` max-pool →
r × [``3^dim`` conv + BN + ReLU → ``2^dim`` max-pool] (channels ``n_c · 2^j``) → flatten →
FC(n_fc)+BN+ReLU+Dropout → FC(n_fc)+BN+ReLU+Dropout → FC(num_classes).

Two compact options (SPEC §7: the wide right-leg representation is hard to learn from with
10–20 labels) keep the rest of the method: ``source="softmax"`` feeds the segmentation's
softmax maps (N_s channels per image channel) instead of the right-leg features, and
``pooling`` says how a volume reaches the head — ``"volume"`` (the stacked slices, a 3D
head), ``"slices"`` (the 2D head on every short-axis slice, log-probabilities averaged
over the slices: the head sees the slices the network was trained on) or ``"stats"`` (the
mean and standard deviation of each channel over the whole image → the FC layers only).

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
    # the compact variant: softmax maps, mean/std per channel → FC layers
    clf = FeatureClassifier(seg, 2, 5, (128, 128, 16), source="softmax", pooling="stats")
"""

from __future__ import annotations

import math
from typing import Literal

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

__all__ = ["POOLINGS", "SOURCES", "FeatureClassifier", "StatsHead"]

Source = Literal["features", "softmax"]
Pooling = Literal["volume", "slices", "stats"]
#: what the head reads: the right-leg features (the paper) or the segmentation's softmax maps
SOURCES: tuple[Source, ...] = ("features", "softmax")
#: how an image reaches the head (see the module docstring)
POOLINGS: tuple[Pooling, ...] = ("volume", "slices", "stats")


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
            its segmentation head, which the features do not use, stays frozen (with
            ``source="softmax"`` it is on the path and is trained too).
        source: ``"features"`` (right-leg, F = ``num_features``) or ``"softmax"`` (the
            segmentation's softmax maps, F = ``num_labels``), per image channel.
        pooling: ``"volume"``, ``"slices"`` (3 sizes with a 2D network only) or ``"stats"``
            (mean and std of each of the C·F channels → 2·C·F values → the FC layers; n_c
            and r unused).

    Input (N, C, *input_size) → logits (N, num_classes). When frozen, the feature network's
    parameters do not require grad, it stays in eval mode even after ``.train()``, and its
    forward runs without autograd (no gradient reaches the input image). With ``pooling =
    "slices"`` the logits are the mean over slices of each slice's log-probabilities.
    Raises ValueError for sizes or options that do not fit.
    """

    def __init__(self, feature_net: MNet, in_channels: int, num_classes: int,
                 input_size: tuple[int, ...], n_c: int = 16, n_fc: int = 100, r: int = 3,
                 dropout: float = 0.5, finetune: bool = False, source: Source = "features",
                 pooling: Pooling = "volume") -> None:
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
        if source not in SOURCES or pooling not in POOLINGS:
            raise ValueError(f"source must be one of {', '.join(SOURCES)} and pooling one of "
                             f"{', '.join(POOLINGS)}, got {source!r}, {pooling!r}")
        if pooling == "slices" and not (len(input_size) == 3 and net_dim == 2):
            raise ValueError("pooling 'slices' needs a 2D feature network on volumes (three "
                             f"sizes), got {len(input_size)} sizes and a {net_dim}D network")
        self.source, self.pooling = source, pooling
        self.feature_net = feature_net
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        self.finetune = finetune
        self.per_channel = feature_net.in_channels == 1 and in_channels > 1
        self.slicewise = len(input_size) == 3 and net_dim == 2
        head_size = input_size[:2] if pooling == "slices" else input_size
        self.dim = len(head_size)  # the head's dimension
        per_image = feature_net.num_features if source == "features" else feature_net.num_labels
        self.num_features = per_image * (in_channels if self.per_channel else 1)

        # r + 1 poolings in all (the first on the features); an axis down to one voxel is
        # no longer pooled, so volumes with few slices fit (blocks.pool_kernels).
        kernels = pool_kernels(input_size, r + 1)
        self.first_pool, self.head_pools = kernels[0], pool_kernels(head_size, r + 1)[1:]
        final = pooled_size(head_size, r + 1)
        widths = [self.num_features] + [n_c * 2**j for j in range(r)]
        self.convs = nn.ModuleList([] if pooling == "stats" else
                                   [ConvBNAct(self.dim, widths[j], widths[j + 1])
                                    for j in range(r)])
        if pooling == "stats":  # scale-free input to the FC layers: the statistics differ by
            # orders of magnitude between channels
            self.norm: nn.Module = nn.BatchNorm1d(2 * self.num_features, affine=False)
            self.classifier = FCHead(2 * self.num_features, n_fc, num_classes, dropout)
        else:
            self.norm = nn.Identity()
            self.classifier = FCHead(widths[-1] * math.prod(final), n_fc, num_classes, dropout)
        init_glorot(self.convs)
        init_glorot(self.classifier)
        feature_net.requires_grad_(finetune)
        # the segmentation head is not on the feature path of the right leg: frozen even when
        # fine-tuning, so every trainable parameter gets a gradient (DDP needs that)
        feature_net.head.requires_grad_(finetune and source == "softmax")
        self.train(self.training)

    def train(self, mode: bool = True) -> FeatureClassifier:
        """Set training mode; a frozen feature network stays in eval mode."""
        super().train(mode)
        if not self.finetune:
            self.feature_net.eval()
        return self

    def _source(self, x: Tensor) -> Tensor:
        """What the head reads of a batch of the network's inputs: pooled right-leg
        features, or softmax maps (pooled too unless they feed statistics)."""
        if self.source == "features":
            return self.feature_net.features_pooled(x)
        p = torch.softmax(self.feature_net(x).float(), 1)
        return p if self.pooling == "stats" else max_pool_nd(p, 2)

    def _net_features_pooled(self, x: Tensor) -> Tensor:
        """:meth:`_source` of a batch of 2D slices or volumes, per channel if needed."""
        if not self.per_channel:
            return self._source(x)
        n, c = x.shape[:2]
        f = self._source(x.reshape(n * c, 1, *x.shape[2:]))
        return f.reshape(n, c * f.shape[1], *f.shape[2:])

    def forward_features(self, x: Tensor) -> Tensor:
        """Frozen features after the first ``2^dim`` max-pool:
        (N, C, *input_size) → (N, num_features, *input_size / 2); with ``pooling="slices"``
        the slices are not pooled together, (N, num_features, H/2, W/2, D); with
        ``"stats"``, (N, 2·num_features): each channel's mean, then each one's std."""
        f = self.source_maps(x)
        return self.stats(f) if self.pooling == "stats" else f

    @staticmethod
    def stats(f: Tensor) -> Tensor:
        """Each channel's mean, then each one's std, over space: (N, F, ...) → (N, 2F)."""
        flat = f.float().flatten(2)
        return torch.cat([flat.mean(2), flat.std(2, correction=0)], 1)

    def source_maps(self, x: Tensor) -> Tensor:
        """The spatial maps the head reads (before ``"stats"`` pooling summarises them):
        :meth:`forward_features` for the other poolings. Saliency maps are drawn on them."""
        if tuple(x.shape[1:]) != (self.in_channels, *self.input_size):
            raise ValueError(f"expected (N, {self.in_channels}, "
                             f"{', '.join(map(str, self.input_size))}), got {tuple(x.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune):
            if not self.slicewise:
                f = self._net_features_pooled(x)
            else:
                n, c, h, w, d = x.shape
                slices = x.permute(0, 4, 1, 2, 3).reshape(n * d, c, h, w)
                f = self._net_features_pooled(slices)  # (N·D, F, H', W')
                f = f.reshape(n, d, *f.shape[1:]).permute(0, 2, 3, 4, 1)  # (N, F, H', W', D)
                if self.pooling == "volume":
                    f = F.max_pool3d(f, kernel_size=(1, 1, self.first_pool[-1]))
            return f

    def forward_head(self, f: Tensor) -> Tensor:
        """:meth:`forward_features`' output → logits (N, num_classes)."""
        if self.pooling == "stats":
            return self.classifier(self.norm(f))
        d = f.shape[-1]
        if self.pooling == "slices":  # (N, F, H', W', D) → (N·D, F, H', W')
            f = f.permute(0, 4, 1, 2, 3).reshape(-1, *f.shape[1:4])
        for block, kernel in zip(self.convs, self.head_pools, strict=True):
            f = max_pool_nd(block(f), kernel)
        logits = self.classifier(f)
        if self.pooling == "slices":
            logits = F.log_softmax(logits.float(), 1).reshape(-1, d, logits.shape[1]).mean(1)
        return logits

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, *input_size) → logits (N, num_classes); softmax is left to the loss."""
        return self.forward_head(self.forward_features(x))


class StatsHead(nn.Module):
    """The head of ``pooling="stats"`` alone, on statistics computed outside it: each
    channel's mean and std over the image from a frozen network run elsewhere (a trained
    nnU-Net's softmax maps or encoder features, :mod:`segfew.inference.nnunet_stats`).
    BatchNorm1d without affine (the statistics differ by orders of magnitude between
    channels) → FC(n_fc)+BN+ReLU+Dropout → FC(n_fc)+BN+ReLU+Dropout → FC(num_classes), as
    :class:`FeatureClassifier` with ``pooling="stats"``.

    Args:
        in_channels: image channels the statistics come from (recorded, so a case with
            other channels is refused before its statistics are computed).
        num_features: channels F whose mean and std are read (2F inputs).
        num_classes, n_fc, dropout: as :class:`FeatureClassifier`'s.

    Input (N, 2F) — each channel's mean, then each one's std — or (N, 2F, 1, …) (one-voxel
    images, as the training engine takes samples) → logits (N, num_classes). Raises
    ValueError for sizes that do not fit.
    """

    def __init__(self, in_channels: int, num_features: int, num_classes: int,
                 n_fc: int = 100, dropout: float = 0.5) -> None:
        super().__init__()
        if min(in_channels, num_features, num_classes, n_fc) < 1:
            raise ValueError(f"in_channels, num_features, num_classes, n_fc must be positive, "
                             f"got {in_channels}, {num_features}, {num_classes}, {n_fc}")
        self.in_channels, self.num_features = in_channels, num_features
        self.num_classes = num_classes
        self.norm = nn.BatchNorm1d(2 * num_features, affine=False)
        self.classifier = FCHead(2 * num_features, n_fc, num_classes, dropout)
        init_glorot(self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 2F[, 1, …]) → logits (N, num_classes); softmax is left to the loss."""
        f = x.float().flatten(1)
        if f.shape[1] != 2 * self.num_features:
            raise ValueError(f"expected {2 * self.num_features} statistics per case, got "
                             f"{f.shape[1]}")
        return self.classifier(self.norm(f))
