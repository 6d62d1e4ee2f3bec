"""Running a network on pre-processed tensors: softmax probabilities, batched (SPEC §5).

Shared by prediction (:mod:`segfew.inference.predictor`), ``evaluate`` and anything that scores a
network. Every function runs in inference mode under an execution plan
(:class:`segfew.runtime.Plan`: precision and memory format; default fp32) and returns
float32 probabilities on the CPU. :func:`read_ahead` reads and pre-processes the next cases
in worker processes while the network runs on the current ones.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from segfew.errors import DataError, SegfewError
from segfew.preprocess.grid import restore
from segfew.runtime import Plan, check_free_memory

if TYPE_CHECKING:
    from segfew.preprocess.grid import Preprocessing

__all__ = ["SOURCE_BYTES_PER_VOXEL", "TTA_SHIFTS", "check_source_memory",
           "classify_probabilities", "default_workers", "network_dim", "predict_batches",
           "read_ahead", "segment_on_source", "segment_probabilities"]

#: peak bytes per voxel of a scan's own grid to pre-process, segment and measure it (the
#: anti-aliased resize, the probabilities mapped back, distance maps, texture); measured
#: on 128³ and 192³ scans, docs/benchmarks.md "Memory of one case"
SOURCE_BYTES_PER_VOXEL = 128


def check_source_memory(images: Sequence[Any], path: Any = None) -> None:
    """Refuse, before any work, a case whose source grid would not fit in free memory.

    ``images`` are the case's channel images (``.shape``). The reader bounds what a file
    may claim (:class:`segfew.io.ReadLimits`, 2³⁰ voxels); work on the scan's own grid
    needs about :data:`SOURCE_BYTES_PER_VOXEL` per voxel more, so a legal scan could still
    be killed by the system and take its batch with it. Raises :class:`DataError` naming
    ``path`` (a batch's error row).
    """
    voxels = int(np.prod(images[0].shape)) if images else 0
    grid = "×".join(str(s) for s in images[0].shape) if images else "no"
    check_free_memory(voxels * (SOURCE_BYTES_PER_VOXEL + 8 * max(0, len(images) - 1)),
                      f"segmenting and measuring this scan on its own grid ({grid} voxels)",
                      path)


def network_dim(model: Any) -> int:
    """Spatial dimensionality (2 or 3) of a network: its ``dim`` attribute or its first conv.

    Raises ``ValueError`` when the network has neither.
    """
    dim = getattr(model, "dim", None)
    if isinstance(dim, int):
        return dim
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            return 3
        if isinstance(module, nn.Conv2d):
            return 2
    raise ValueError("cannot tell whether the network is 2D or 3D")


def _plan(device: torch.device, plan: Plan | None) -> Plan:
    return plan if plan is not None else Plan(device.type, "fp32", False, False)


def _softmax(model: Any, x: Tensor, device: torch.device, plan: Plan) -> Tensor:
    """``softmax(model(x))`` float32 on the CPU, ``x`` (N, C, *spatial) on any device."""
    x = plan.memory_format(x.to(device, non_blocking=device.type == "cuda"))
    with plan.autocast():
        logits = model(x)
    return torch.softmax(logits.float(), dim=1).cpu()


#: test-time augmentation: in-plane shifts (grid voxels) whose softmax is averaged
TTA_SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 2), (0, -2))


def segment_probabilities(model: Any, image: np.ndarray | Tensor, device: Any,
                          batch_size: int = 8, plan: Plan | None = None,
                          tta: bool = False) -> np.ndarray:
    """Softmax label probabilities of one pre-processed image.

    ``image`` is ``(C, *grid)``; the result is ``(L, *grid)`` float32. A 2D network on a 3D
    grid runs slice by slice along the last axis (where pre-processing puts the slice
    axis), ``batch_size`` slices at a time. ``tta``: test-time augmentation, the mean
    softmax of the image shifted by :data:`TTA_SHIFTS` (± 2 voxels along the first two grid
    axes, each shifted back): rigid shifts are what training augments with, and unlike
    mirroring they keep the anatomy's handedness (5 passes; its effect on ACDC:
    docs/benchmarks.md). Raises :class:`DataError` when the network's dimensionality
    does not fit the image.
    """
    if tta:
        grid = np.asarray(image)
        mean = None
        for shift in TTA_SHIFTS:
            moved = np.roll(grid, shift, axis=(1, 2))  # the grid's edge is background
            p = np.roll(segment_probabilities(model, moved, device, batch_size, plan),
                        tuple(-s for s in shift), axis=(1, 2))
            mean = p if mean is None else mean + p
        assert mean is not None
        return (mean / len(TTA_SHIFTS)).astype(np.float32, copy=False)
    device = torch.device(device)
    plan = _plan(device, plan)
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)
    spatial = x.ndim - 1
    dim = network_dim(model)
    with torch.inference_mode():
        if spatial == dim:
            return _softmax(model, x.unsqueeze(0), device, plan)[0].numpy()
        if dim == 2 and spatial == 3:
            slices = x.permute(3, 0, 1, 2)  # (D, C, H, W)
            out = [_softmax(model, slices[s:s + batch_size], device, plan)
                   for s in range(0, slices.shape[0], max(1, batch_size))]
            return torch.cat(out).permute(1, 2, 3, 0).contiguous().numpy()  # (L, H, W, D)
    raise DataError(f"a {dim}D network cannot segment a {spatial}D image")


def classify_probabilities(model: Any, images: np.ndarray | Tensor, device: Any,
                           batch_size: int = 8, plan: Plan | None = None) -> np.ndarray:
    """Softmax class probabilities ``(N, K)`` float32 of pre-processed images ``(N, C, *grid)``."""
    device = torch.device(device)
    plan = _plan(device, plan)
    x = torch.as_tensor(images, dtype=torch.float32)
    with torch.inference_mode():
        out = [_softmax(model, x[s:s + batch_size], device, plan)
               for s in range(0, x.shape[0], max(1, batch_size))]
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy().astype(np.float32, copy=False)


def predict_batches(model: nn.Module, data: Dataset | Iterable[Tensor],
                    device: torch.device | str = "cpu", batch_size: int = 8,
                    plan: Plan | None = None, *, batch_transform: Any = None) -> Tensor:
    """Softmax probabilities of ``model`` in eval mode, concatenated on the CPU (float32).

    ``data`` is a Dataset yielding images or ``(image, target)`` pairs, or an iterable of
    image batches ``(N, C, *spatial)``. Returns ``(N, L)`` or ``(N, L, *spatial)``.
    ``batch_transform`` maps a batch on the device to the model's input. The model's mode
    is restored afterwards. Raises :class:`DataError` when ``data`` is empty.
    """
    device = torch.device(device)
    plan = _plan(device, plan)
    if isinstance(data, Dataset):
        loader: Iterable[Any] = DataLoader(data, batch_size=batch_size, shuffle=False,
                                           pin_memory=device.type == "cuda")
    else:
        loader = data
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for item in loader:
                x = item[0] if isinstance(item, (list, tuple)) else item
                x = x.to(device, non_blocking=device.type == "cuda")
                if batch_transform is not None:
                    x = batch_transform(x)
                out.append(_softmax(model, x, device, plan))
    finally:
        model.train(was_training)
    if not out:
        raise DataError("nothing to predict: the dataset is empty")
    return torch.cat(out)


# ---------------------------------------------------------------- reading ahead


READ_ERRORS: tuple[type[BaseException], ...] = (SegfewError, OSError, ValueError, RuntimeError)


class _Reader(Dataset):
    """``(index, read(items[index]), "")``, or ``(index, None, message)`` when it fails."""

    def __init__(self, items: Sequence[Any], read: Callable[[Any], Any],
                 describe: Callable[[BaseException], str],
                 errors: tuple[type[BaseException], ...]) -> None:
        self.items, self.read, self.describe, self.errors = items, read, describe, errors

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str]:
        try:
            return index, self.read(self.items[index]), ""
        except self.errors as e:
            return index, None, self.describe(e)


class _Relayed(_Reader):
    """:class:`_Reader` in a reading process: the warnings of each read go back with its
    result, to be said in the main process, which folds a warning of many files into one
    count (a reading process's own printing would fold them out of sight)."""

    def __getitem__(self, index: int) -> tuple[int, Any, str, list[Any]]:  # type: ignore[override]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = super().__getitem__(index)
        return (*out, [w.message for w in caught])


def _as_is(item: Any) -> Any:
    return item


def read_ahead(items: Sequence[Any], read: Callable[[Any], Any], workers: int,
               describe: Callable[[BaseException], str] = str,
               errors: tuple[type[BaseException], ...] = READ_ERRORS
               ) -> Iterator[tuple[int, Any, str]]:
    """``read(item)`` for every item, in order, computed by ``workers`` processes ahead of
    the caller (0: in this process), so reading and pre-processing overlap the network.

    Yields ``(index, result, "")``, or ``(index, None, describe(error))`` for an item whose
    reading raised one of ``errors``: a bad item never stops the others. At most
    ``2 × workers`` results wait in memory. A reading process's warnings are said here,
    in this process.
    """
    reader = _Reader(items, read, describe, errors)
    if workers <= 0 or len(items) < 2:
        yield from (reader[i] for i in range(len(reader)))
        return
    loader = DataLoader(_Relayed(items, read, describe, errors), batch_size=None,
                        shuffle=False, collate_fn=_as_is,
                        num_workers=min(workers, len(items)), prefetch_factor=2)
    for index, result, error, said in loader:
        for message in said:
            warnings.warn(message, stacklevel=2)
        yield index, result, error


def default_workers() -> int:
    """Reading processes for prediction: one per core beyond the first, at most 4; none on
    two cores or fewer. There a reader takes a core from the network's two threads, whose
    parallel regions then wait for the pre-empted one (docs/benchmarks.md, predict)."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(4, cores - 1)


def segment_on_source(model: Any, image: np.ndarray, source_shape: tuple[int, ...],
                      cfg: Preprocessing, device: Any, batch_size: int = 8,
                      plan: Plan | None = None, tta: bool = False,
                      spacing: Sequence[float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Label map (int16, ``source_shape``) and probabilities ``(L, *source_shape)`` float32.

    ``image`` is pre-processed ``(C, *grid)`` by ``cfg`` from a source of voxel ``spacing``;
    the softmax is mapped back onto the source grid linearly before the arg-max, so
    boundaries are as fine as the source's.
    ``tta``: test-time augmentation (:func:`segfew.inference.run.segment_probabilities`).
    """
    proba = segment_probabilities(model, image, device, batch_size, plan, tta)
    restored = np.asarray(restore(proba, tuple(source_shape), cfg, 1, spacing),
                          dtype=np.float32)
    return np.argmax(restored, axis=0).astype(np.int16), restored
