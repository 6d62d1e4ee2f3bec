"""Rigid augmentation on the training device, a batch at a time (SPEC §4).

Each image of a batch is transformed with probability ``cfg.p`` by a rotation, a shift, an
isotropic zoom and (only when ``cfg.flip``) a mirror along ``cfg.flip_axis``, parameters
uniform within the configured ranges. The whole batch is resampled with one
``affine_grid`` + ``grid_sample`` on the tensors' device: images (bi/tri)linearly, labels by
nearest neighbour so label values stay in the original set.

Choices left open by the paper:

- 3D rotation: one angle about each of the three axes, each uniform in ``±rotation_deg``,
  composed as ``R = R_z R_y R_x``.
- Geometry is in voxel units (rotations do not shear non-square grids); ``shift`` is a
  fraction of the field of view along each axis; zoom ``s ∈ [1-zoom, 1+zoom]`` enlarges
  the content when ``s > 1``.
- Padding ``"border"`` for images AND labels: the edge of a medical image is background in
  any intensity convention (0 after CLAHE, −1000 HU or the window floor in CT), which zero
  padding would get wrong for CT; using the same padding for labels keeps image and label
  consistent everywhere.
- Parameters are drawn on the generator's device for every image of the batch, whether or
  not it is transformed, so the random stream consumed depends only on the batch size.

Images that are not transformed come back bit-identical.

Patch training (``[train] patch_size``, nnU-Net's): after the rigid transform each image
and its labels are cut to a patch of the given size at a corner drawn uniformly over the
grid (:func:`draw_patch_corners`, :func:`take_patches`); prediction still sees the whole
grid, as the network is fully convolutional.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AugmentParams", "Augmentation", "apply_params", "augment_batch", "draw_params",
           "draw_patch_corners", "take_patches", "transform_share"]

_COLUMNS = 9  # apply, 3 angles, 3 shifts, zoom, flip — drawn for 2D and 3D alike


@dataclass(frozen=True)
class Augmentation:
    """Rigid augmentation settings: each image is transformed with probability ``p``.

    ``rotation_deg`` largest angle in degrees; ``shift`` largest shift as a fraction of the
    field of view; ``zoom`` scale in [1 - zoom, 1 + zoom]; ``flip`` mirrors along
    ``flip_axis`` (spatial, -1 = last) half the time. Run specs hold it as
    :class:`segfew.spec.AugmentConfig`, which checks the values (``.plain()`` gives this).
    """

    enabled: bool = True
    p: float = 0.6
    rotation_deg: float = 10.0
    shift: float = 0.1
    zoom: float = 0.1
    flip: bool = False
    flip_axis: int = -1


@dataclass(frozen=True)
class AugmentParams:
    """Per-image transform parameters (CPU tensors), indexable like a batch.

    ``apply`` (N,) bool; ``angles`` (N, 3) radians (2D uses column 0; 3D: about x, y, z);
    ``shift`` (N, dim) fraction of the field of view per spatial axis (array order);
    ``zoom`` (N,) scale; ``flip`` (N,) bool; ``flip_axis`` spatial axis (array order).
    """

    apply: Tensor
    angles: Tensor
    shift: Tensor
    zoom: Tensor
    flip: Tensor
    flip_axis: int

    def __len__(self) -> int:
        return int(self.apply.shape[0])

    def select(self, index: Tensor | slice) -> AugmentParams:
        """The parameters of a subset of the batch (e.g. one rank's share)."""
        return AugmentParams(self.apply[index], self.angles[index], self.shift[index],
                             self.zoom[index], self.flip[index], self.flip_axis)


def draw_params(n: int, dim: int, cfg: Augmentation, generator: torch.Generator
                ) -> AugmentParams:
    """Draw transform parameters for ``n`` images of ``dim`` spatial dimensions."""
    if dim not in (2, 3):
        raise ValueError(f"augmentation supports 2D and 3D images, got {dim} spatial axes")
    u = torch.rand(n, _COLUMNS, generator=generator, device=generator.device,
                   dtype=torch.float64).cpu()
    sym = 2 * u - 1  # uniform in [-1, 1]
    apply = u[:, 0] < cfg.p
    angles = sym[:, 1:4] * math.radians(cfg.rotation_deg)
    shift = sym[:, 4:4 + dim] * cfg.shift
    zoom = 1 + sym[:, 7] * cfg.zoom
    flip = (u[:, 8] < 0.5) & cfg.flip
    flip_axis = cfg.flip_axis % dim
    return AugmentParams(apply, angles, shift, zoom, flip, flip_axis)


def _rotation(angles: Tensor, dim: int) -> Tensor:
    """(N, dim, dim) rotation matrices acting on coordinates ordered (x, y[, z])."""
    n = angles.shape[0]
    if dim == 2:
        c, s = angles[:, 0].cos(), angles[:, 0].sin()
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    mats = []
    for axis in range(3):  # rotation about x, then y, then z
        c, s = angles[:, axis].cos(), angles[:, axis].sin()
        m = torch.eye(3, dtype=angles.dtype).repeat(n, 1, 1)
        i, j = [k for k in range(3) if k != axis]
        m[:, i, i], m[:, i, j], m[:, j, i], m[:, j, j] = c, -s, s, c
        mats.append(m)
    return mats[2] @ mats[1] @ mats[0]


def _theta(params: AugmentParams, spatial: tuple[int, ...]) -> Tensor:
    """``affine_grid`` matrices (N, dim, dim+1) mapping output to input normalised coords.

    Content moves by ``c_out = M c_in + t`` in voxel units with ``M = zoom · R · Flip``;
    grid_sample needs the inverse, conjugated into normalised coordinates by
    ``D = diag(size)`` (normalised coordinates order axes last-first: x is the last axis).
    """
    dim = len(spatial)
    sizes = torch.tensor(spatial[::-1], dtype=torch.float64)  # (x, y, z) order
    n = len(params)
    flip = torch.ones(n, dim, dtype=torch.float64)
    flip[:, dim - 1 - params.flip_axis] = torch.where(params.flip, -1.0, 1.0)
    m = params.zoom.view(n, 1, 1) * _rotation(params.angles, dim) @ torch.diag_embed(flip)
    t_norm = 2 * params.shift.flip(-1)  # a fraction f of the FOV is 2f normalised units
    d, d_inv = torch.diag(sizes), torch.diag(1 / sizes)
    m_inv = torch.linalg.inv(m)
    a = d_inv @ m_inv @ d
    b = -(d_inv @ m_inv @ d @ t_norm.unsqueeze(-1))
    return torch.cat([a, b], dim=-1)


def apply_params(images: Tensor, labels: Tensor | None, params: AugmentParams
                 ) -> tuple[Tensor, Tensor | None]:
    """Resample the images (and labels) that ``params.apply`` selects; see the module doc."""
    if images.dim() not in (4, 5):
        raise ValueError(f"images must be (N, C, *spatial) with 2 or 3 spatial axes, "
                         f"got shape {tuple(images.shape)}")
    n, spatial = images.shape[0], tuple(images.shape[2:])
    if len(params) != n:
        raise ValueError(f"{len(params)} augmentation parameters for a batch of {n}")
    label_channel = labels is not None and labels.dim() == images.dim() - 1
    if labels is not None and (labels.shape[0] != n or
                               tuple(labels.shape[1 + (not label_channel):]) != spatial):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match images "
                         f"{tuple(images.shape)}")
    idx = torch.nonzero(params.apply).flatten()
    if idx.numel() == 0:
        return images, labels
    theta = _theta(params.select(idx), spatial).to(device=images.device, dtype=torch.float32)
    sel = idx.to(images.device)
    grid = F.affine_grid(theta, [idx.numel(), 1, *spatial], align_corners=False)
    out = images.clone()
    moved = F.grid_sample(images[sel].float(), grid, mode="bilinear", padding_mode="border",
                          align_corners=False)
    out[sel] = moved.to(images.dtype)
    if labels is None:
        return out, None
    lab = labels[sel].unsqueeze(1) if label_channel else labels[sel]
    lab_moved = F.grid_sample(lab.float(), grid, mode="nearest", padding_mode="border",
                              align_corners=False)
    if label_channel:
        lab_moved = lab_moved.squeeze(1)
    if not labels.is_floating_point():
        lab_moved = lab_moved.round()
    lab_out = labels.clone()
    lab_out[sel] = lab_moved.to(labels.dtype)
    return out, lab_out


def augment_batch(images: Tensor, labels: Tensor | None, cfg: Augmentation,
                  generator: torch.Generator) -> tuple[Tensor, Tensor | None]:
    """Randomly transform a batch (SPEC §4); see the module docstring for the conventions.

    ``images`` (N, C, *spatial), 2D or 3D, any float dtype, on any device; ``labels``
    (N, *spatial) integer, (N, C, *spatial), or None. Returns new tensors (or the inputs
    themselves when no image was selected); images not selected are bit-identical.

    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = augment_batch(torch.rand(2, 1, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long),
    ...                      Augmentation(p=1.0), g)
    >>> x.shape, y.dtype
    (torch.Size([2, 1, 16, 16]), torch.int64)
    """
    params = draw_params(images.shape[0], images.dim() - 2, cfg, generator)
    return apply_params(images, labels, params)


def draw_patch_corners(n: int, spatial: Sequence[int], size: Sequence[int],
                       generator: torch.Generator) -> Tensor:
    """(n, dim) int64 first index of a ``size`` patch in a ``spatial`` grid for each of ``n``
    images, uniform over the positions that keep the patch inside the grid. ValueError when
    ``size`` has another number of axes or exceeds the grid."""
    if len(size) != len(spatial) or any(p > g for p, g in zip(size, spatial, strict=True)):
        raise ValueError(f"a patch of {list(size)} does not fit the grid {list(spatial)}")
    u = torch.rand(n, len(spatial), generator=generator, device=generator.device,
                   dtype=torch.float64).cpu()
    room = torch.tensor([g - p + 1 for g, p in zip(spatial, size, strict=True)],
                        dtype=torch.float64)
    return (u * room).floor().long()


def take_patches(images: Tensor, labels: Tensor | None, corners: Tensor, size: Sequence[int]
                 ) -> tuple[Tensor, Tensor | None]:
    """The ``size`` patch at each image's ``corners`` row: images (N, C, *spatial) → (N, C,
    *size); labels (N, *spatial) or (N, C, *spatial) likewise (None stays None)."""
    def cut(t: Tensor, spatial_from: int) -> Tensor:
        parts = []
        for i, corner in enumerate(corners.tolist()):
            part = t[i]
            for axis, (start, length) in enumerate(zip(corner, size, strict=True)):
                part = part.narrow(spatial_from - 1 + axis, start, length)
            parts.append(part)
        return torch.stack(parts)

    if len(corners) != images.shape[0]:
        raise ValueError(f"{len(corners)} patch corners for a batch of {images.shape[0]}")
    dim = corners.shape[1]
    return (cut(images, images.dim() - dim),
            None if labels is None else cut(labels, labels.dim() - dim))


def transform_share(images: Tensor, labels: Tensor | None, augment: Augmentation | None,
                    patch_size: Sequence[int] | None,
                    generators: tuple[torch.Generator, torch.Generator],
                    global_batch: int, rank: int = 0, world: int = 1
                    ) -> tuple[Tensor, Tensor | None]:
    """One process's share of a training batch, transformed (``augment``; None: not) and
    cut to patches (``patch_size``; None: not), with a segmentation's ``labels`` (None for
    class labels); ``generators`` draw the transforms and the patch corners. Both are drawn
    for the whole ``global_batch`` and rank ``rank`` of ``world`` keeps its share, so the
    numbers drawn do not depend on the number of processes."""
    if augment is not None:
        drawn = draw_params(global_batch, images.dim() - 2, augment, generators[0])
        mine = drawn.select(slice(rank, None, world)).select(slice(0, len(images)))
        images, labels = apply_params(images, labels, mine)
    if patch_size is not None:
        corners = draw_patch_corners(global_batch, images.shape[2:], patch_size, generators[1])
        images, labels = take_patches(images, labels, corners[rank::world][:len(images)],
                                      patch_size)
    return images, labels
