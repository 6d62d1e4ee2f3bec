"""The modified M-Net segmentation network, 2D or 3D (Wong et al. 2018, section 2.1, Fig. 1;
SPEC §2).

A U-Net with four poolings, plus two side paths:

- left leg: the first convolution's output at level 0 (``n_s`` channels), max-pooled 1–4
  times; the k-times pooled copy is concatenated into the input of encoder level k;
- right leg: nearest ×2 upsampling and concatenation of the decoder outputs, from the
  bottleneck (2D; ``16+8+4+2+1 = 31·n_s`` channels) or from decoder level 2 (3D, for memory;
  ``4+2+1 = 7·n_s`` channels) down to full resolution. It is the feature source of the
  classifiers (:meth:`MNet.features`).

The segmentation head is a ``1^dim`` convolution of the right leg (whose last part already
is the last decoder output, so that output is not concatenated twice).

Two exact shortcuts keep the wide right-leg tensor from being materialised where it is not
needed (SPEC §2, performance notes): :meth:`MNet.forward` applies the ``1^dim`` head to each
scale before upsampling (a 1×1 convolution is linear and commutes with nearest
upsampling), and :meth:`MNet.features_pooled` returns ``max_pool(features(x), 2)`` from the
half-resolution tensors (max-pooling ×2 a nearest ×2 upsampled map gives the map back).

Examples::

    net = MNet(dim=2, in_channels=1, num_labels=10, n_s=16)    # paper's cardiac CT setting
    net.features(torch.zeros(8, 1, 128, 128)).shape             # (8, 496, 128, 128)
    net = MNet(dim=3, in_channels=1, num_labels=20, n_s=12)    # paper's brain MR setting
    net.features(torch.zeros(1, 1, 128, 128, 128)).shape        # (1, 84, 128, 128, 128)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from segfew.models.blocks import (
    ConvBlock,
    cat_channels,
    check_dim,
    conv,
    conv_nd,
    init_glorot,
    max_pool_nd,
    upsample2,
)

__all__ = ["MNet"]

LEVELS = 5  # levels 0..4: four poolings and four upsamplings


class MNet(nn.Module):
    """Modified M-Net (SPEC §2).

    Args:
        dim: 2 or 3 spatial dimensions.
        in_channels: image channels.
        num_labels: segmentation labels, background included.
        n_s: base width; level i has ``n_s · 2^i`` channels (paper: 16 in 2D, 12 in 3D).
        dropout: dropout probability after the last pooling, applied to level 4's whole
            input (the pooled level-3 output and the four-times pooled left-leg copy).

    Input (N, in_channels, *spatial) with every spatial size divisible by 16.
    State-dict keys: ``encoder.<level>.conv{1,2}.{conv,bn}.*``,
    ``decoder.<level>.conv{1,2}.{conv,bn}.*`` (levels 0..3) and ``head.{weight,bias}``.
    """

    def __init__(self, dim: int, in_channels: int, num_labels: int, n_s: int = 16,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        if in_channels < 1 or num_labels < 1 or n_s < 1:
            raise ValueError("in_channels, num_labels and n_s must be positive, got "
                             f"{in_channels}, {num_labels}, {n_s}")
        self.in_channels = in_channels
        self.num_labels = num_labels
        self.n_s = n_s
        width = [n_s * 2**i for i in range(LEVELS)]
        # the right leg starts at the bottleneck in 2D, at decoder level 2 in 3D
        self.right_leg_start = LEVELS - 1 if dim == 2 else 2
        self.num_features = sum(width[: self.right_leg_start + 1])  # 31·n_s or 7·n_s

        # encoder level i > 0 takes the pooled level i-1 output and the left-leg copy (n_s)
        self.encoder = nn.ModuleList(
            [ConvBlock(dim, in_channels, width[0])]
            + [ConvBlock(dim, width[i - 1] + n_s, width[i]) for i in range(1, LEVELS)])
        self.dropout = nn.Dropout(dropout)
        # decoder level i (0..3) takes the upsampled level i+1 output and encoder level i
        self.decoder = nn.ModuleList(
            [ConvBlock(dim, width[i + 1] + width[i], width[i]) for i in range(LEVELS - 1)])
        self.head = conv(dim)(self.num_features, num_labels, kernel_size=1)
        init_glorot(self)

    # ------------------------------------------------------------------ internals

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"MNet(dim={self.dim}, in_channels={self.in_channels}) expects "
                f"(N, {self.in_channels}, {', '.join(['S'] * self.dim)}), got {tuple(x.shape)}")
        if any(s % 16 for s in x.shape[2:]):
            raise ValueError("MNet input sizes must be divisible by 16 (four poolings), "
                             f"got {tuple(x.shape[2:])}")

    def _levels(self, x: Tensor) -> list[Tensor]:
        """Outputs by level: ``[decoder 0, decoder 1, decoder 2, decoder 3, bottleneck]``;
        level i has shape (N, n_s · 2^i, *spatial / 2^i)."""
        self._check_input(x)
        first, out = self.encoder[0].forward_both(x)  # type: ignore[operator]
        skips = [out]
        left = first
        for i in range(1, LEVELS):
            left = max_pool_nd(left)
            h = cat_channels([max_pool_nd(skips[-1]), left])
            if i == LEVELS - 1:
                h = self.dropout(h)
            skips.append(self.encoder[i](h))
        outs: list[Tensor] = [skips[-1]]  # built coarse to fine, reversed below
        for i in range(LEVELS - 2, -1, -1):
            outs.append(self.decoder[i](cat_channels([upsample2(outs[-1]), skips[i]])))
        return outs[::-1]

    def _right_leg(self, levels: list[Tensor], stop: int) -> Tensor:
        """The right leg from its start level down to level ``stop``, at that level's
        resolution; with ``stop = 1`` its last part is the max-pooled level-0 output.

        Equal to the nested upsample-and-concatenate of SPEC §2 (nearest ×2 applied k times
        is nearest ×2^k), but each part is written once into one preallocated tensor, which
        saves the repeated copies of the coarse parts.
        """
        parts = [(levels[i], i - stop) for i in range(self.right_leg_start, stop - 1, -1)]
        if stop == 1:
            parts.append((max_pool_nd(levels[0]), 0))
        ref = parts[-1][0]
        channels = sum(t.shape[1] for t, _ in parts)
        fmt = torch.contiguous_format
        cl = torch.channels_last if self.dim == 2 else torch.channels_last_3d
        if ref.shape[1] > 1 and ref.is_contiguous(memory_format=cl):
            fmt = cl
        out = torch.empty((ref.shape[0], channels, *ref.shape[2:]), dtype=ref.dtype,
                          device=ref.device, memory_format=fmt)
        offset = 0
        for t, k in parts:
            dst = out[:, offset: offset + t.shape[1]]
            offset += t.shape[1]
            if k == 0:
                dst.copy_(t)
                continue
            # view every spatial axis S as (S / 2^k, 2^k) and broadcast the coarse map into it
            f = 2**k
            split = [n for size in t.shape[2:] for n in (size, f)]
            src = t.reshape(*t.shape[:2], *[n for size in t.shape[2:] for n in (size, 1)])
            dst.view(*t.shape[:2], *split).copy_(src)
        return out

    # ------------------------------------------------------------------ public API

    def features(self, x: Tensor) -> Tensor:
        """The right-leg tensor, (N, num_features, *spatial) at full resolution.

        Channel order, coarse to fine: the start level (bottleneck in 2D, decoder level 2
        in 3D), then each finer decoder output, ending with decoder level 0.
        """
        return self._right_leg(self._levels(x), 0)

    def features_pooled(self, x: Tensor) -> Tensor:
        """``max_pool(features(x), 2)`` exactly, (N, num_features, *spatial / 2), computed
        from the half-resolution right leg and the pooled level-0 decoder output, so the
        full-resolution ``num_features`` tensor is never built (SPEC §2 performance notes).
        """
        return self._right_leg(self._levels(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Segmentation logits (N, num_labels, *spatial); softmax is left to the loss.

        Equals ``head(features(x))`` up to floating-point rounding: the ``1^dim`` head is
        applied to each scale's channels before upsampling the ``num_labels``-channel
        partial sums, which avoids building the full-resolution right-leg tensor.
        """
        levels = self._levels(x)
        weight = self.head.weight
        widths = [lv.shape[1] for lv in levels]
        # the head's input channels follow the right-leg order: start level first; the bias
        # rides on the full-resolution part's convolution (a separate broadcast add of a
        # few-channel channels-last map is a slow pass of its own)
        offset = 0
        y: Tensor | None = None
        for i in range(self.right_leg_start, -1, -1):
            bias = self.head.bias if i == 0 else None
            part = conv_nd(levels[i], weight[:, offset: offset + widths[i]], bias)
            offset += widths[i]
            y = part if y is None else upsample2(y) + part
        assert y is not None
        return y
