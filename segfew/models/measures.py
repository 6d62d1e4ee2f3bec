"""Classifier on named measurements of the predicted segmentation (framework MEASURES).

Not in Wong et al. 2018: an extension that SPEC §7 motivates. With 10–20 labelled cases the wide
frozen representation (31·n_s channels per voxel) is hard to learn from, while a few dozen
measurements of the structures the network segments (``segfew.inference.measure``: volumes in
mL, wall thickness, ejection fractions, volume ratios, on the source grid) carry what a
clinician reads. :func:`segfew.models.measures_selection.select_classifier` fits a small,
class-balanced scikit-learn model (logistic regression or random forest, on a subset of the
measurements) — chosen by cross-validation **inside the training set only** once each class
has ``SELECT_FROM`` cases, the first candidate below —, calibrates its probabilities
by a temperature fitted on the out-of-fold predictions, and :class:`MeasurementClassifier` holds
the result as tensors so the model file stays plain data (``weights_only=True``).

Example::

    choice = select_classifier(x, y, names, num_classes=5, seed=0)   # x (N, F), y (N,)
    clf = MeasurementClassifier(seg_net, names, 5, **choice.shape_args)
    clf.load_choice(choice)
    clf(torch.from_numpy(x_new))   # (M, 5) calibrated log-probabilities
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from segfew.models.measures_selection import FLOOR, Choice, forest_proba, transform
from segfew.models.mnet import MNet

__all__ = ["MeasurementClassifier", "contributions"]

class MeasurementClassifier(nn.Module):
    """Measurements (N, F) → calibrated log-probabilities (N, num_classes).

    Holds the frozen segmentation network (``feature_net``, eval mode; None when the label
    maps come from another tool) whose label maps the measurements come from, the
    measurement names, and the fitted model as buffers: a linear layer (``n_trees = 0``)
    or a forest of ``n_trees`` trees of at most ``max_nodes`` nodes. The measurement step
    itself (segmenting on the source grid) is
    :func:`segfew.inference.measure.case_measurements`; this module never reads files.
    """

    mask: Tensor  # (F,) bool: measurements the model uses
    median: Tensor  # (F,) imputation of NaN
    mean: Tensor  # (F,) standardisation
    std: Tensor
    weight: Tensor  # (K, F) linear model
    bias: Tensor  # (K,)
    tree_feature: Tensor  # (T, M) forest nodes: split feature, threshold, children, leaf values
    tree_threshold: Tensor
    tree_left: Tensor
    tree_right: Tensor
    tree_value: Tensor  # (T, M, K)
    temperature: Tensor  # () calibration: p ∝ p_model^(1/T)

    def __init__(self, feature_net: MNet | None = None, feature_names: Sequence[str] = (),
                 num_classes: int = 2, n_trees: int = 0, max_nodes: int = 0,
                 in_channels: int | None = None, tta: bool = False) -> None:
        super().__init__()
        self.tta = tta  # whether its measurements come from test-time augmented label maps
        f = len(feature_names)
        if f == 0:
            raise ValueError("a measurement classifier needs at least one measurement")
        # None: the label maps come from another tool (``--masks``), nothing segments here
        self.feature_net = feature_net.requires_grad_(False) if feature_net else None
        self.feature_names = list(feature_names)
        self.num_classes = int(num_classes)
        self.in_channels = in_channels
        for name, shape, dtype in (
                ("mask", (f,), torch.bool), ("median", (f,), torch.float64),
                ("mean", (f,), torch.float64), ("std", (f,), torch.float64),
                ("weight", (num_classes, f), torch.float64), ("bias", (num_classes,),
                                                              torch.float64),
                ("tree_feature", (n_trees, max_nodes), torch.long),
                ("tree_threshold", (n_trees, max_nodes), torch.float64),
                ("tree_left", (n_trees, max_nodes), torch.long),
                ("tree_right", (n_trees, max_nodes), torch.long),
                ("tree_value", (n_trees, max_nodes, num_classes), torch.float64),
                ("temperature", (), torch.float64)):
            self.register_buffer(name, torch.zeros(shape, dtype=dtype))
        self.std.fill_(1.0)
        self.temperature.fill_(1.0)
        self.train(self.training)

    def train(self, mode: bool = True) -> MeasurementClassifier:
        """Set training mode; the frozen segmentation network stays in eval mode."""
        super().train(mode)
        if self.feature_net is not None:
            self.feature_net.eval()
        return self

    def load_choice(self, choice: Choice) -> None:
        """Copy a :class:`Choice` (from :func:`select_classifier`) into the buffers."""
        def put(buffer: Tensor, value: Any) -> None:
            buffer.copy_(torch.as_tensor(np.asarray(value)).to(buffer.dtype))

        for name in ("mask", "median", "mean", "std"):
            put(getattr(self, name), getattr(choice, name))
        if choice.linear is not None:
            put(self.weight, choice.linear[0])
            put(self.bias, choice.linear[1])
        if choice.forest is not None:
            for key in ("feature", "threshold", "left", "right", "value"):
                put(getattr(self, f"tree_{key}"), choice.forest[key])
        put(self.temperature, choice.temperature)

    def forward(self, x: Tensor) -> Tensor:
        """(N, F) raw measurements (NaN allowed) → (N, num_classes) log-probabilities / T."""
        z = torch.from_numpy(transform(x.detach().cpu().double().numpy(), self.feature_names))
        z = ((torch.where(torch.isnan(z), self.median, z) - self.mean) / self.std) * self.mask
        if self.tree_feature.shape[0]:
            p = forest_proba({"feature": self.tree_feature, "threshold": self.tree_threshold,
                               "left": self.tree_left, "right": self.tree_right,
                               "value": self.tree_value}, z)
            logp = torch.log(p.clamp_min(FLOOR))
        else:
            logp = torch.log_softmax(z @ self.weight.T + self.bias, dim=1)
        return (logp / self.temperature).float().to(x.device)


def contributions(model: MeasurementClassifier, x: np.ndarray, k: int
                  ) -> tuple[np.ndarray, float, float, str]:
    """Each measurement's share of class ``k``'s decision score for one case.

    ``x`` (F,) raw measurements in ``model.feature_names`` order. Returns
    ``(contributions (F,), base, score, method)`` with ``base + contributions.sum() ==
    score``:

    - linear model: contribution = coefficient × standardised (log-)value, base = the
      intercept, score = the class logit (before the temperature) — exact;
    - forest: the path decomposition of Saabas (as in the ``treeinterpreter`` package):
      along each tree's decision path, every split adds the change in the class frequency
      to the measurement it splits on; base = the root's frequency, score = the forest's
      class probability (before the temperature), averaged over trees — exact too, but a
      split's credit depends on the order of splits in the tree.
    """
    z = torch.from_numpy(transform(np.asarray(x, dtype=np.float64)[None], model.feature_names))
    z = ((torch.where(torch.isnan(z), model.median, z) - model.mean) / model.std) * model.mask
    zz = z[0].numpy()
    if not model.tree_feature.shape[0]:
        share = model.weight[k].numpy() * zz
        base = float(model.bias[k])
        return share, base, base + float(share.sum()), "coefficient × standardised value"
    feature, threshold = model.tree_feature.numpy(), model.tree_threshold.numpy()
    left, right, value = (model.tree_left.numpy(), model.tree_right.numpy(),
                          model.tree_value.numpy()[..., k])
    share = np.zeros(len(zz))
    z32 = zz.astype(np.float32).astype(threshold.dtype)  # as _forest_proba compares
    trees = feature.shape[0]
    for t in range(trees):
        node = 0
        while left[t, node] >= 0:
            f = feature[t, node]
            nxt = left[t, node] if z32[f] <= threshold[t, node] else right[t, node]
            share[f] += value[t, nxt] - value[t, node]
            node = nxt
    share /= trees
    base = float(value[:, 0].mean())
    return share, base, base + float(share.sum()), "tree path decomposition (Saabas)"
