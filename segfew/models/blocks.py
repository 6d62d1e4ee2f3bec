"""Layers shared by the segfew networks: 2D/3D layer factories, conv blocks, the FC head.

One code path serves 2D and 3D (MONAI-style): :func:`conv`, :func:`bn` and :func:`pool`
map a spatial dimension to ``nn.Conv2d``/``nn.Conv3d`` and so on, so no architecture is
written twice. Convolutions followed by BatchNorm carry no bias (the BatchNorm shift makes
it redundant). Weights are initialised with Glorot (Xavier) uniform, as in the paper
(Wong et al. 2018, section 2.3).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Conv3d",
    "ConvBNAct",
    "ConvBlock",
    "FCHead",
    "bn",
    "cat_channels",
    "check_dim",
    "conv",
    "conv_nd",
    "init_glorot",
    "max_pool_nd",
    "pool",
    "upsample2",
]

class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that trains a layer two voxels deep in fp32 on the CPU.

    torch 2.13's oneDNN computes the weight gradient of a bf16 3D convolution wrongly when
    the input is two voxels deep and holds two or more samples. The errors reach 1e37, inf
    and NaN, and vary from run to run. The M-Net's deepest levels on 16³–32³ grids are such
    layers, so a default bf16 run lost its loss to NaN. Forward, input gradient and fp32
    are right. Such a call runs in fp32; its few voxels cost nothing measurable
    (``tests/models`` pins the gradient against fp32).
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type == "cpu" and x.dim() == 5 and x.shape[0] > 1 and x.shape[2] == 2
                and self.kernel_size[0] > 1 and self.weight.requires_grad
                and torch.is_grad_enabled()
                and (x.dtype == torch.bfloat16 or (torch.is_autocast_enabled("cpu") and
                     torch.get_autocast_dtype("cpu") == torch.bfloat16))):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: Conv3d}
_BN: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL: dict[int, type[nn.Module]] = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def check_dim(dim: int) -> int:
    """``dim`` if it is 2 or 3, else a ``ValueError`` that says so."""
    if dim not in (2, 3):
        raise ValueError(f"dim must be 2 or 3, got {dim!r}")
    return dim


def conv(dim: int) -> type[nn.Conv2d] | type[nn.Conv3d]:
    """``nn.Conv2d`` or :class:`Conv3d` (an ``nn.Conv3d``)."""
    return _CONV[check_dim(dim)]  # type: ignore[return-value]


def bn(dim: int) -> type[nn.BatchNorm2d] | type[nn.BatchNorm3d]:
    """``nn.BatchNorm2d`` or ``nn.BatchNorm3d``."""
    return _BN[check_dim(dim)]  # type: ignore[return-value]


def pool(dim: int) -> type[nn.MaxPool2d] | type[nn.MaxPool3d]:
    """``nn.MaxPool2d`` or ``nn.MaxPool3d`` (use with ``kernel_size=2``: the ``2^dim`` pooling)."""
    return _POOL[check_dim(dim)]  # type: ignore[return-value]


def conv_nd(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Functional unpadded convolution of ``x`` (N, C, *spatial) with ``weight``, 2D or 3D."""
    if x.dim() == 4:
        return F.conv2d(x, weight, bias)
    return F.conv3d(x, weight, bias)


def max_pool_nd(x: Tensor, kernel: int | tuple[int, ...] = 2) -> Tensor:
    """``2^dim`` max-pooling (stride = kernel) of ``x`` (N, C, *spatial), 2D or 3D.

    Runs in ``x``'s dtype even under CPU autocast, whose fp32 list holds ``max_pool3d``: a
    maximum is exact in bf16, and the fp32 copy would cost a pass over every pooled volume,
    promote the concatenation after it to fp32 and double what autograd keeps for it.
    """
    if x.dim() == 4:
        return F.max_pool2d(x, kernel)
    if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        with torch.autocast("cpu", enabled=False):
            return F.max_pool3d(x, kernel)
    return F.max_pool3d(x, kernel)


def pool_kernels(size: tuple[int, ...], n: int) -> list[tuple[int, ...]]:
    """Kernels of ``n`` successive ×2 max-poolings of a ``size`` grid.

    An axis that has shrunk to one voxel is no longer pooled (kernel 1), so volumes with few
    slices (cine MRI: 6–18) fit the paper's networks without resampling every axis to 32+;
    on grids large enough this is exactly the paper's ``2^dim`` pooling.
    """
    kernels, current = [], list(size)
    for _ in range(n):
        k = tuple(2 if s >= 2 else 1 for s in current)
        current = [s // kk for s, kk in zip(current, k, strict=True)]
        kernels.append(k)
    return kernels


def pooled_size(size: tuple[int, ...], n: int) -> tuple[int, ...]:
    """The grid after :func:`pool_kernels`' ``n`` poolings."""
    current = list(size)
    for k in pool_kernels(size, n):
        current = [s // kk for s, kk in zip(current, k, strict=True)]
    return tuple(current)


class _CatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, *tensors: Tensor) -> Tensor:
        ctx.widths = [t.shape[1] for t in tensors]
        return torch.cat(tensors, dim=1)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, ...]:
        fmt = torch.contiguous_format
        if grad.dim() in (4, 5) and grad.shape[1] > 1:
            cl = torch.channels_last if grad.dim() == 4 else torch.channels_last_3d
            if grad.is_contiguous(memory_format=cl):
                fmt = cl
        return tuple(g.contiguous(memory_format=fmt) for g in grad.split(ctx.widths, dim=1))


def cat_channels(tensors: list[Tensor]) -> Tensor:
    """``torch.cat(tensors, dim=1)`` of (N, C_i, *spatial) tensors, whose backward hands each
    input its gradient in the output's memory format.

    Autograd's own backward gives each input a channel slice of the output's gradient,
    contiguous in no layout: under channels-last the upsampling and pooling backward after
    it copied that slice to NCHW, and the layers below then mixed NCHW gradients with
    channels-last tensors, a cost docs/benchmarks.md measures. Values are exactly
    ``torch.cat``'s.
    """
    return _CatChannels.apply(*tensors)


def upsample2(x: Tensor) -> Tensor:
    """Nearest-neighbour ×2 upsampling of every spatial axis (Keras' default ``UpSampling``)."""
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def init_glorot(module: nn.Module) -> None:
    """Glorot (Xavier) uniform weights and zero biases for every conv and linear layer.

    The paper initialises both its convolutional and FC layers this way (section 2.3).
    BatchNorm layers keep their default (weight 1, bias 0). Works on meta tensors too.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def glorot_bound(weight: Tensor) -> float:
    """The Xavier uniform bound ``sqrt(6 / (fan_in + fan_out))`` of a conv/linear weight."""
    receptive = math.prod(weight.shape[2:]) if weight.dim() > 2 else 1
    fan_in, fan_out = weight.shape[1] * receptive, weight.shape[0] * receptive
    return math.sqrt(6.0 / (fan_in + fan_out))


class ConvBNAct(nn.Module):
    """``3^dim`` convolution (padding "same", no bias) → BatchNorm → ReLU.

    (N, in_channels, *spatial) → (N, out_channels, *spatial).
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = conv(dim)(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = bn(dim)(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvBlock(nn.Module):
    """The M-Net conv block (SPEC §2, paper section 2.1): two cascaded ``ConvBNAct`` whose
    outputs are added (the skip connection between cascaded convolutions).

    (N, in_channels, *spatial) → (N, out_channels, *spatial). :meth:`forward_both` also
    returns the first convolution's output, which is the source of the M-Net's left leg.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvBNAct(dim, in_channels, out_channels)
        self.conv2 = ConvBNAct(dim, out_channels, out_channels)

    def forward_both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(first convolution's output, block output = first + second)."""
        first = self.conv1(x)
        return first, first + self.conv2(first)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_both(x)[1]


class FCHead(nn.Module):
    """The classifiers' fully-connected end (SPEC §3, paper Fig. 2):
    FC(n_fc) + BN + ReLU + Dropout → FC(n_fc) + BN + ReLU + Dropout → FC(num_classes).

    (N, in_features) → logits (N, num_classes); softmax is left to the loss / predictor.
    With ``batch_norm=False`` the two hidden layers carry biases instead of BatchNorm
    (plain VGG-16's head when ``n_fc = 4096``).
    """

    def __init__(self, in_features: int, n_fc: int, num_classes: int, dropout: float = 0.5,
                 batch_norm: bool = True) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, n_fc, bias=not batch_norm)
        self.bn1: nn.Module = nn.BatchNorm1d(n_fc) if batch_norm else nn.Identity()
        self.fc2 = nn.Linear(n_fc, n_fc, bias=not batch_norm)
        self.bn2: nn.Module = nn.BatchNorm1d(n_fc) if batch_norm else nn.Identity()
        self.fc3 = nn.Linear(n_fc, num_classes)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(x, 1)
        x = self.dropout(self.act(self.bn1(self.fc1(x))))
        x = self.dropout(self.act(self.bn2(self.fc2(x))))
        return self.fc3(x)
