"""Modified VGG-16 trained from scratch (framework SCRATCH; Wong et al. 2018, section 2.2.2,
Fig. 2(b); SPEC §3(b)), 2D or 3D.

Five blocks of (2, 2, 3, 3, 3) ``3^dim`` convolutions with BatchNorm and ReLU, channels
``n_c, 2n_c, 4n_c, 8n_c, 8n_c``, each block followed by a ``2^dim`` max-pool; flatten →
FC(n_fc)+BN+ReLU+Dropout → FC(n_fc)+BN+ReLU+Dropout → FC(num_classes). The paper uses
``n_c = 16`` and ``n_fc = 100`` (2D) / ``200`` (3D); ``n_c = 64, n_fc = 4096`` without the FC
BatchNorm gives VGG-16's layer sizes (this class always keeps BatchNorm after the convs).

Example::

    net = VGGClassifier(dim=3, in_channels=2, num_classes=3, input_size=(128, 128, 128),
                        n_c=16, n_fc=200)
    net(torch.zeros(1, 2, 128, 128, 128)).shape             # (1, 3)
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from segfew.models.blocks import (
    ConvBNAct,
    FCHead,
    check_dim,
    init_glorot,
    max_pool_nd,
    pool_kernels,
    pooled_size,
)

__all__ = ["VGGClassifier"]

BLOCK_CONVS = (2, 2, 3, 3, 3)
BLOCK_WIDTHS = (1, 2, 4, 8, 8)  # × n_c


class VGGStage(nn.Module):
    """``n`` cascaded ``ConvBNAct`` then a ``2^dim`` max-pool; keys ``conv1``, ``conv2``, …"""

    def __init__(self, dim: int, in_channels: int, out_channels: int, n: int,
                 pool: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.pool = pool or (2,) * dim
        for k in range(n):
            self.add_module(f"conv{k + 1}",
                            ConvBNAct(dim, in_channels if k == 0 else out_channels, out_channels))

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.children():
            x = layer(x)
        return max_pool_nd(x, self.pool)


class VGGClassifier(nn.Module):
    """Modified VGG-16 classifier: (N, in_channels, *input_size) → logits (N, num_classes).

    Five poolings; an axis already down to one voxel is no longer pooled
    (:func:`~segfew.models.blocks.pool_kernels`), so short axes (few slices) are allowed.
    State-dict keys: ``stages.<block>.conv<k>.{conv,bn}.*`` and ``classifier.fc{1,2,3}.*``.
    """

    def __init__(self, dim: int, in_channels: int, num_classes: int,
                 input_size: tuple[int, ...], n_c: int = 16, n_fc: int = 100,
                 dropout: float = 0.5, fc_batch_norm: bool = True) -> None:
        super().__init__()
        self.dim = check_dim(dim)
        input_size = tuple(int(s) for s in input_size)
        if len(input_size) != dim:
            raise ValueError(f"input size {input_size} has {len(input_size)} axes, dim is {dim}")
        stages = len(BLOCK_CONVS)
        if min(input_size) < 1:
            raise ValueError(f"input size {input_size} must be positive")
        kernels = pool_kernels(input_size, stages)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        widths = [in_channels] + [n_c * w for w in BLOCK_WIDTHS]
        self.stages = nn.ModuleList(
            [VGGStage(dim, widths[i], widths[i + 1], n, kernels[i])
             for i, n in enumerate(BLOCK_CONVS)])
        final = math.prod(pooled_size(input_size, stages))
        self.classifier = FCHead(widths[-1] * final, n_fc, num_classes, dropout,
                                 batch_norm=fc_batch_norm)
        init_glorot(self)

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x)
