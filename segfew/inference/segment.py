"""A segmentation model of a saved file: label maps in the source geometry.

A segmentation is written back on the input image's grid and geometry, so it overlays the
scan in ITK-SNAP or 3D Slicer. :meth:`segfew.inference.predictor.Predictor.open` returns a
:class:`Segmenter` for a segmentation model file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segfew.data.read import read_case
from segfew.inference.predictor import Predictor
from segfew.inference.run import check_source_memory, segment_on_source
from segfew.io import write_image
from segfew.preprocess.grid import preprocess_image

if TYPE_CHECKING:
    from segfew.data import Case
    from segfew.io import Image

__all__ = ["Segmenter"]


class Segmenter(Predictor, kind="segmentation"):
    """Label maps and probabilities of cases on their source grid (SPEC §5)."""

    def split_channels(self, cases: Sequence[Case]) -> list[Case]:
        """For a one-channel network, multi-channel cases become one case per channel
        (``<id>_<channel>``), as in pre-training (ACDC: ED and ES); else unchanged."""
        if self.in_channels != 1:
            return list(cases)
        return [c for case in cases for c in case.per_channel()]

    def segment_case(self, case: Case) -> tuple[np.ndarray, np.ndarray, Image]:
        """:meth:`segment_images` of a case read from its files."""
        return self._segment_prepared(*self.read_images(case))

    def read_images(self, case: Case) -> tuple[list[Image], np.ndarray]:
        """A case's channel images as read and their pre-processed stack ``(C, *grid)``."""
        images, _ = read_case(case)
        return list(images), self._prepare(case, images)

    def _prepare(self, case: Case, images: Sequence[Image]) -> np.ndarray:
        check_source_memory(images, case.images[0] if case.images else None)
        x = np.stack([np.asarray(preprocess_image(im.array, self.preprocessing, im.spacing,
                                                  im.path), dtype=np.float32) for im in images])
        self.check_input(case, x)
        return x

    def segment_images(self, case: Case, images: Sequence[Image]
                       ) -> tuple[np.ndarray, np.ndarray, Image]:
        """Label map and probabilities of a case on its source grid, from its channel images.

        Returns ``(labels, probabilities, reference)``: ``labels`` has the shape of the
        first channel's array (int16), ``probabilities`` is ``(L, *that shape)`` float32,
        and ``reference`` is that channel's :class:`segfew.io.Image`, for writing back.
        """
        return self._segment_prepared(images, self._prepare(case, images))

    def _segment_prepared(self, images: Sequence[Image], x: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray, Image]:
        labels, restored = segment_on_source(self.model, x, images[0].shape,
                                             self.preprocessing, self.device,
                                             self.batch_size, self.plan, self.tta,
                                             images[0].spacing)
        return labels, restored, images[0]

    def segment(self, case: Case, out_dir: str | Path, probabilities: bool = False,
                read: tuple[list[Image], np.ndarray] | None = None) -> list[Path]:
        """Write ``<out_dir>/<id>_seg.nii.gz`` (and ``<id>_prob.nii.gz``, labels last).

        Both are in the input image's geometry (its shape, affine and orientation).
        ``read`` is the case's :meth:`read_images`, when it was read ahead.
        """
        labels, proba, reference = (self._segment_prepared(*read) if read is not None
                                    else self.segment_case(case))
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [write_image(labels, reference, out_dir / f"{case.id}_seg.nii.gz")]
        if probabilities:
            written.append(write_image(np.moveaxis(proba, 0, -1), reference,
                                       out_dir / f"{case.id}_prob.nii.gz"))
        return [Path(p) for p in written]
