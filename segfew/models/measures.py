"""Classifier on measurements of the predicted segmentation (framework MEASURES).

Not in Wong et al. 2018: an extension that SPEC §7 motivates. With 10–20 labelled cases,
the wide frozen representation (31·n_s channels per voxel) is hard to learn from, while a
handful of measurements of the structures the network segments — their volumes in every
channel (for cine MRI: every phase), whose log-differences are ejection fractions and
volume ratios — carries what a clinician looks at. The frozen network's softmax gives a
*soft* volume per foreground label and channel; a multinomial logistic regression on the
standardised log-volumes is then fitted to convergence (convex, so no epochs to tune).

Example::

    seg = MNet(dim=2, in_channels=1, num_labels=4, n_s=8)
    clf = MeasureClassifier(seg, in_channels=2, num_classes=5, input_size=(64, 64, 8))
    f = clf.forward_features(x)   # (N, 2 channels · 3 labels) log-volumes
    clf.fit_head(f, y)            # logistic regression, copied into a Linear layer
    clf(x).shape                  # (N, 5) logits
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from segfew.models.mnet import MNet

__all__ = ["MeasureClassifier"]

EPS = 1e-4  # volume fraction floor: an absent structure has log-volume log(1e-4)


class MeasureClassifier(nn.Module):
    """(N, C, *input_size) → logits (N, num_classes) from log soft volumes of each label.

    The segmentation network is frozen (eval mode, no gradients). It runs per channel when
    it takes one channel and the images have more, and slice by slice along the last axis
    when it is 2D and the grid 3D — as :class:`FeatureClassifier` does.
    """

    mean: Tensor  # standardisation of the features, fitted with the head
    std: Tensor

    def __init__(self, feature_net: MNet, in_channels: int, num_classes: int,
                 input_size: tuple[int, ...]) -> None:
        super().__init__()
        input_size = tuple(int(s) for s in input_size)
        if feature_net.in_channels not in (1, in_channels):
            raise ValueError(f"the feature network takes {feature_net.in_channels} channels, "
                             f"the images have {in_channels}")
        if len(input_size) not in (feature_net.dim, 3):
            raise ValueError(f"input size {input_size} does not fit a {feature_net.dim}D network")
        self.feature_net = feature_net
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_size = input_size
        self.per_channel = feature_net.in_channels == 1 and in_channels > 1
        self.slicewise = len(input_size) == 3 and feature_net.dim == 2
        self.dim = len(input_size)
        sets = in_channels if self.per_channel else 1
        self.num_features = sets * (feature_net.num_labels - 1)
        self.register_buffer("mean", torch.zeros(self.num_features))
        self.register_buffer("std", torch.ones(self.num_features))
        self.linear = nn.Linear(self.num_features, num_classes)
        feature_net.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> MeasureClassifier:
        """Set training mode; the frozen segmentation network stays in eval mode."""
        super().train(mode)
        self.feature_net.eval()
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, C, *input_size) → (N, num_features): log fraction of the grid per label."""
        n, c = x.shape[:2]
        with torch.no_grad():
            if self.per_channel:
                x = x.reshape(n * c, 1, *x.shape[2:])
            if self.slicewise:
                b, ch, h, w, d = x.shape
                slices = x.permute(0, 4, 1, 2, 3).reshape(b * d, ch, h, w)
                p = torch.softmax(self.feature_net(slices).float(), dim=1)
                volume = p.sum(dim=(2, 3)).reshape(b, d, -1).sum(dim=1)
            else:
                p = torch.softmax(self.feature_net(x).float(), dim=1)
                volume = p.flatten(2).sum(dim=2)
            fraction = volume[:, 1:] / math.prod(self.input_size)
            return torch.log(fraction + EPS).reshape(n, -1)

    def forward_head(self, f: Tensor) -> Tensor:
        """(N, num_features) → logits (N, num_classes)."""
        return self.linear((f.float() - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def fit_head(self, features: Tensor, targets: Tensor, c: float = 1.0,
                 class_weight: str | None = "balanced") -> None:
        """Fit the standardisation and an L2 multinomial logistic regression (scikit-learn)
        on ``features`` (N, num_features) and class indices ``targets`` (N,)."""
        from sklearn.linear_model import LogisticRegression

        f = features.detach().double().cpu().numpy()
        y = targets.detach().cpu().numpy().astype(int)
        mean, std = f.mean(axis=0), f.std(axis=0)
        std = np.where(std > 1e-6, std, 1.0)
        z = (f - mean) / std
        weight = np.zeros((self.num_classes, self.num_features))
        bias = np.full(self.num_classes, -1e4)  # a class absent from training is never chosen
        present = np.unique(y)
        if len(present) == 1:
            bias[present[0]] = 0.0
        else:
            lr = LogisticRegression(C=c, class_weight=class_weight, max_iter=5000)
            lr.fit(z, y)
            coef, intercept = lr.coef_, lr.intercept_
            if len(present) == 2:  # scikit-learn's binary form: logit of the second class
                coef = np.vstack([-coef[0] / 2, coef[0] / 2])
                intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
            weight[present], bias[present] = coef, intercept
        with torch.no_grad():
            self.mean.copy_(torch.from_numpy(mean))
            self.std.copy_(torch.from_numpy(std))
            self.linear.weight.copy_(torch.from_numpy(weight))
            self.linear.bias.copy_(torch.from_numpy(bias))
