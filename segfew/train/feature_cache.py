"""The frozen-feature cache: compute a frozen network's features once, train only the head.

When nothing is augmented and the model has ``forward_features``/``forward_head`` with a
frozen feature part (no parameter that ``forward_features`` uses requires grad, and none of
its BatchNorm/Dropout layers is in training mode while the model is), the features of every
training and validation image are computed once and only the head runs per epoch. This
equals the uncached path up to float rounding, because the feature part is then a fixed
function of the image. The cache is skipped when its estimated size exceeds a limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from segfew.errors import DataError
from segfew.runtime import Plan

__all__ = ["Head", "cache_features", "features_are_frozen", "maybe_cache"]

BatchTransform = Callable[[Tensor], Tensor]


def features_are_frozen(model: nn.Module, sample: Tensor) -> bool:
    """Whether ``model.forward_features`` is a fixed function of its input.

    True when the model has ``forward_features`` and ``forward_head``, no parameter of a
    module that ``forward_features(sample)`` calls (nor of the model itself) requires grad,
    and none of those modules is a BatchNorm/Dropout left in training mode by
    ``model.train()``. ``sample`` is one batch on the model's device. Leaves the model's
    mode as it was and its state untouched.
    """
    if not (callable(getattr(model, "forward_features", None))
            and callable(getattr(model, "forward_head", None))):
        return False
    if any(p.requires_grad for p in model.parameters(recurse=False)):
        return False
    called: list[nn.Module] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: called.append(mod))
             for m in model.modules()]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.forward_features(sample)  # type: ignore[operator]
        model.train()
        for m in {id(m): m for m in called}.values():
            if any(p.requires_grad for p in m.parameters(recurse=False)):
                return False
            stochastic = isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
            stateful = isinstance(m, nn.modules.batchnorm._NormBase) and (
                m.track_running_stats or isinstance(m, nn.modules.batchnorm._BatchNorm))
            if m.training and (stochastic or stateful):
                return False
        return True
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def cache_features(model: nn.Module, dataset: Dataset, device: torch.device | str,
                   batch_size: int, *, batch_transform: BatchTransform | None = None,
                   plan: Plan | None = None) -> TensorDataset:
    """``TensorDataset(features, targets)`` of ``model.forward_features`` for every sample.

    Runs in eval mode without gradients, in the order of ``dataset``, under ``plan``'s
    autocast and memory format; features are kept on the CPU in the dtype the model
    produced (bf16 under bf16 autocast). Raises :class:`DataError` on an empty dataset.
    """
    device = torch.device(device)
    feats, targets = [], []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for item in DataLoader(dataset, batch_size=batch_size, shuffle=False):
                x, y = (item[0], item[1] if len(item) > 1 else None) \
                    if isinstance(item, (list, tuple)) else (item, None)
                x = x.to(device)
                if batch_transform is not None:
                    x = batch_transform(x)
                if plan is not None:
                    x = plan.memory_format(x)
                with plan.autocast() if plan is not None else contextlib.nullcontext():
                    f = model.forward_features(x)  # type: ignore[operator]
                feats.append(f.detach().cpu().contiguous())
                if y is not None:
                    targets.append(torch.as_tensor(y))
    finally:
        model.train(was_training)
    if not feats:
        raise DataError("cannot cache features of an empty dataset")
    tensors = [torch.cat(feats)] + ([torch.cat(targets)] if targets else [])
    return TensorDataset(*tensors)


class Head(nn.Module):
    """Runs only ``model.forward_head`` (cached-feature training); shares the parameters."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor) -> Tensor:
        return self.model.forward_head(features)  # type: ignore[operator]


def maybe_cache(model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                probe: Tensor, *, device: torch.device, plan: Plan, batch_size: int,
                max_gb: float, batch_transform: BatchTransform | None
                ) -> tuple[Dataset, Dataset | None, bool]:
    """``(train data, val data, cached)``: the feature datasets when the model's features
    are frozen and fit in ``max_gb`` GiB, else the datasets unchanged.

    ``probe`` is one prepared input batch on ``device``.
    """
    if not features_are_frozen(model, probe):
        return train_set, val_set, False
    with torch.no_grad(), plan.autocast():
        f = model.forward_features(probe)  # type: ignore[operator]
    n_total = len(train_set) + (len(val_set) if val_set is not None else 0)  # type: ignore[arg-type]
    if f.numel() * f.element_size() * n_total > max_gb * 2**30:
        return train_set, val_set, False
    def cached(data: Dataset) -> TensorDataset:
        return cache_features(model, data, device, batch_size, batch_transform=batch_transform,
                              plan=plan)

    return cached(train_set), (cached(val_set) if val_set is not None else None), True
