"""A trained nnU-Net v2 model's maps feeding the paper's head (framework manual,
``--features FOLDER``).

nnU-Net (Isensee et al., Nature Methods 2021) works on each case at the plans' spacing,
through its own pre-processing and sliding window, so its maps differ in size between
cases. The head therefore reads one fixed-length vector per case — the compact variant of
the paper's head (:class:`segfew.models.FeatureClassifier` with ``pooling="stats"``, SPEC
§7): the mean and standard deviation of each channel over the image, then BatchNorm1d and
the fully connected layers (:class:`segfew.models.StatsHead`). What the channels are:

- ``reads="softmax"``: nnU-Net's class probabilities (its logits from
  ``predict_logits_from_preprocessed_data`` — sliding window with Gaussian weighting,
  mirroring as the checkpoint allows, the folds' mean — through its label manager's
  softmax or sigmoid), over the pre-processed image (summed a few channels at a time in
  float64: no float64 copy of the volume);
- ``reads="features"``: the encoder's deepest stage (the bottleneck) on each tile of
  nnunetv2's own sliding window (its slicers and patch size, zero padding to at least one
  patch), the sums and sums of squares of each channel accumulated over every tile (in
  float64: memory bounded by one tile). The first fold's encoder only: the channels of
  separately trained folds do not correspond, so they cannot be averaged. No mirroring.

A one-channel model on a case of several channels (ED + ES) runs on each channel and the
statistics are concatenated, channel 0's first (each channel's means, then each one's
standard deviations), as :class:`~segfew.models.FeatureClassifier` orders them. The
network is frozen: each case's vector is computed once (cached per case) and only the head
trains; no augmentation reaches it. The model file records the folder's identity as
:class:`~segfew.inference.nnunet.NnUNetMeasurer`'s does and refuses a changed folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segfew.errors import DataError, ModelFileError, SpecError
from segfew.inference.nnunet import CHECKPOINT, NNUNET, NnUNetFolder

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["READS", "NnUNetStats"]

#: what the head reads of an nnU-Net: its class probabilities or its bottleneck features
READS = ("softmax", "features")
#: values summed at a time in float64 (a softmax volume is summed a few channels at a time,
#: so the sums never hold a float64 copy of it)
CHUNK = 1 << 24


class NnUNetStats(NnUNetFolder):
    """Each case's per-channel mean and std of the nnU-Net in ``folder`` (cached per case).

    ``reads``: ``"softmax"`` or ``"features"`` (the module docstring); ``identity`` and
    ``device`` as :class:`~segfew.inference.nnunet.NnUNetFolder`'s. Calling it on a case
    gives ``(2·G·F,)`` float32: G the image groups (the case's channels for a one-channel
    model, else 1), F the channels of one map. Raises SpecError when nnunetv2 is missing
    or ``reads`` is unknown; on a case, DataError naming the image the model cannot take.
    """

    def __init__(self, folder: Path, identity: Mapping[str, Any] | None = None,
                 device: Any = "cpu", reads: str = "softmax") -> None:
        if reads not in READS:
            raise SpecError(f"an nnU-Net's head reads {' or '.join(READS)}, not {reads!r}")
        super().__init__(folder, identity, device)
        self.reads = reads
        self._done: dict[tuple[str, ...], np.ndarray] = {}
        self._encoder: Any = None

    @classmethod
    def for_model(cls, source: Mapping[str, Any], model: Path, device: Any = "cpu"
                  ) -> NnUNetStats:
        """The statistics of the classifier in ``model`` (its ``feature_source`` is
        ``source``); DataError naming ``model`` when the folder is gone or changed."""
        folder, recorded = cls.verified(source, model)
        if source.get("reads") not in READS:
            raise ModelFileError("its record of what the head reads of the nnU-Net is "
                                 "incomplete", model)
        return cls(folder, recorded, device, str(source["reads"]))

    @property
    def source(self) -> dict[str, Any]:
        """What a model file records as its ``feature_source``: the folder's identity, what
        the head reads and (features) the fold whose encoder computes them."""
        fold = {"fold": self.identity["folds"][0]} if self.reads == "features" else {}
        return {NNUNET: self.record, "reads": self.reads, **fold}

    def __call__(self, case: Case) -> np.ndarray:
        key = tuple(str(p) for p in case.images)
        if key not in self._done:
            moments = [self._moments(group, case) for group in self.image_groups(case)]
            self._done[key] = np.concatenate(
                [m for m, _ in moments] + [s for _, s in moments]).astype(np.float32)
        return self._done[key]

    def _moments(self, images: Sequence[Any], case: Case) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std (F,) of each channel of one image stack's maps."""
        data = torch.from_numpy(self.preprocessed(images, case)[0])
        total: Any = 0.0
        squares: Any = 0.0
        count = 0
        with torch.inference_mode():
            for maps in self._maps(data):  # (F, *spatial) each
                flat = maps.flatten(1)
                step = max(1, CHUNK // max(1, flat.shape[1]))  # channels at a time
                chunks = [flat[i:i + step].double() for i in range(0, flat.shape[0], step)]
                total = total + torch.cat([c.sum(1) for c in chunks])
                squares = squares + torch.cat([c.square().sum(1) for c in chunks])
                count += flat.shape[1]
        mean = total / count
        std = (squares / count - mean.square()).clamp_min(0).sqrt()
        return mean.cpu().numpy(), std.cpu().numpy()

    def _maps(self, data: torch.Tensor) -> Iterable[torch.Tensor]:
        """The maps whose statistics are taken: the whole softmax, or each tile's
        bottleneck features."""
        if self.reads == "softmax":
            p = self.predictor
            logits = p.predict_logits_from_preprocessed_data(data).float()
            return [p.label_manager.apply_inference_nonlin(logits)]
        encoder = self.encoder
        device = torch.device(str(self.device))
        return (_deepest(encoder(tile.to(device))) for tile in self.tiles(data))

    @property
    def encoder(self) -> Any:
        """The first fold's encoder (eval mode, on the device); ModelFileError naming the
        checkpoint when the network has none."""
        if self._encoder is None:
            p = self.predictor
            p.network.load_state_dict(p.list_of_parameters[0])
            encoder = getattr(p.network, "encoder", None)
            if not isinstance(encoder, torch.nn.Module):
                where = self.folder / f"fold_{self.identity['folds'][0]}" / CHECKPOINT
                raise ModelFileError(f"this nnU-Net's network ({type(p.network).__name__}) has "
                                     "no encoder to read features from; set head.source = "
                                     '"softmax"', where)
            self._encoder = encoder.to(torch.device(str(self.device))).eval()
        return self._encoder


def _deepest(out: Any) -> torch.Tensor:
    """The bottleneck (F, *spatial) of an encoder's output for one tile (its skips' last,
    or the output itself)."""
    if isinstance(out, list | tuple):
        out = out[-1]
    if not isinstance(out, torch.Tensor):
        raise DataError(f"the nnU-Net encoder gave {type(out).__name__}, not feature maps")
    return out[0]
