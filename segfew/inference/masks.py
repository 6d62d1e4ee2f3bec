"""Measurements of label maps made by another tool (``--masks DIR``, framework measures).

Many teams already segment with nnU-Net, TotalSegmentator or by hand. ``train-classifier
--framework measures --masks DIR`` measures those label maps instead of segmenting: each
case's map(s) are found in ``DIR`` by case id exactly as voxel labels are
(:class:`segfew.data.label_maps.LabelMaps`: ``<id>.nii.gz``, ``<id>_seg…``, or one per channel;
never the image itself when ``DIR`` is the images' own folder, as in ACDC), the
label values 0, 1, … are named by ``label_names.json`` in ``DIR`` (as ``segfew label`` writes
it) or by ``--label-names``, and every measurement of :mod:`segfew.inference.measure`
(shape) and :mod:`segfew.inference.radiomics` (intensity, surroundings, texture, location)
is taken on the source grid. No network runs. The model file records that its masks come
from outside (``feature_source = {"masks": "external", "structures": …}``), so ``predict``
and ``evaluate`` ask for ``--masks`` too. Masks numbered otherwise (0/255) are remapped by
``train-classifier --label-map 255:1`` (spec ``data.label_map``), through the door's
:class:`segfew.data.read.LabelRules`; the model file records it (``"label_map"``), and
``predict`` and ``evaluate`` remap their ``--masks`` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from segfew.data.binary_masks import BinaryMaskError
from segfew.data.label_maps import LabelMaps
from segfew.data.label_names import read_label_names as names_file
from segfew.data.read import (
    LabelRules,
    SparseLabelsError,
    label_map_hint,
    label_values,
    read_case,
)
from segfew.data.scan import list_folder
from segfew.errors import DataError
from segfew.inference.measure import measure_images
from segfew.inference.measure_names import check_spacing_expected
from segfew.inference.run import check_source_memory
from segfew.preprocess.grid import stack_axis

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["EXTERNAL", "NAMES_FILE", "LabelMapMeasurer", "MaskMeasurer", "check_masks",
           "external_structures", "mask_files", "mask_label_names"]

#: the file in a masks folder that names its label values
NAMES_FILE = "label_names.json"
#: ``feature_source["masks"]`` of a classifier whose label maps come from another tool
EXTERNAL = "external"


def mask_label_names(masks: Path, names: Sequence[str] | None = None) -> dict[int, str]:
    """Label value → structure name for the label maps in ``masks``.

    ``names`` (``--label-names background,tumour``, spec key ``label_names``) or else
    ``masks/label_names.json`` (the file ``segfew label`` writes: ``{"label_names":
    ["background", …]}``) name the values 0, 1, … as everywhere in segfew; value 0 is
    background and never measured. Raises DataError naming the folder or file when neither
    names a structure.
    """
    masks = Path(masks)
    given = list(names) if names else names_file(masks)
    if given is None:
        raise DataError(f"nothing names the label values: add {NAMES_FILE} "
                        '({"label_names": ["background", "tumour"]}) or set label_names = '
                        '["background", "tumour"] in the spec (train-classifier: '
                        f"--label-names background,tumour){_values_found(masks)}", masks)
    out = {i: str(n).strip() for i, n in enumerate(given) if i > 0}
    if not out or any(not n.replace("-", "").replace("_", "").isalnum() for n in out.values()):
        raise DataError("label names must be the background's, then one word (letters, "
                        f"digits, - or _) per structure: {', '.join(map(str, given))}", masks)
    return out


def _values_found(masks: Path) -> str:
    """What the first map in ``masks`` holds, for the refusal that asks for names: how many
    it needs, or, where the values are codes (0, 2, 41), the pairs that number them first."""
    try:
        first = list_folder(masks).images[0]
        values = sorted(label_values([first]))
    except (IndexError, DataError, OSError):
        return ""
    held = f"; {first.name} holds {', '.join(map(str, values[:8]))}{', …' * (len(values) > 8)}"
    if values == list(range(len(values))):
        return f"{held}: {len(values)} names, background first"
    return (f"{held}: codes — remap them first (--label-map {label_map_hint(values)}), then "
            "name them")


def external_structures(source: Mapping[str, Any] | None) -> dict[int, str] | None:
    """The structures of a classifier's ``feature_source`` whose masks come from another
    tool, or None when it segments its own."""
    if not source or source.get("masks") != EXTERNAL:
        return None
    return {int(k): str(v) for k, v in source.get("structures", {}).items()}


def check_masks(source: Mapping[str, Any] | None, masks: Path | None, model: Path
                ) -> Path | None:
    """``masks`` for a model whose ``feature_source`` is ``source``; DataError (one line,
    naming the ``model`` file) when it measures another tool's label maps and none are
    given, or they are given to a model that segments its own."""
    external = external_structures(source) is not None
    if external and masks is None:
        raise DataError("this classifier measures label maps from another tool: give "
                        "--masks DIR (their folder, matched to the images by id)", model)
    if masks is not None and not external:
        raise DataError("--masks is for a measures classifier trained with --masks", model)
    return masks


class LabelMapMeasurer:
    """Measurements of each case's label maps made by something other than segfew's own
    network (cached per case): another tool's files (:class:`MaskMeasurer`) or a trained
    nnU-Net (:class:`segfew.inference.nnunet.NnUNetMeasurer`).

    Same interface as :class:`segfew.inference.measure.Measurer` (``model`` is None: no
    segfew network; ``tta`` is False). ``structures`` maps label values to names; a
    subclass gives :meth:`label_maps` and records what a model file needs in :attr:`source`.
    """

    model = None
    tta = False
    expect_real: bool | None = None  # as :class:`segfew.inference.measure.Measurer`'s

    def __init__(self, structures: Mapping[int, str]) -> None:
        self.structures = dict(structures)
        self._done: dict[tuple[str, ...], dict[str, float]] = {}

    @property
    def source(self) -> dict[str, Any]:
        """What a model file records as its ``feature_source``."""
        raise NotImplementedError

    @property
    def files(self) -> list[Path]:
        """The files behind the label maps beyond the cases' own (for run.json's manifest)."""
        return []

    def __call__(self, case: Case) -> dict[str, float]:
        key = tuple(str(p) for p in case.images)
        if key not in self._done:
            self._done[key] = self._measure(case)
        return self._done[key]

    def names(self, case: Case) -> list[str]:
        """The measurement names of ``case`` (every case of a data set has the same)."""
        return list(self(case))

    def label_maps(self, case: Case) -> tuple[list[Any], list[Any]]:
        """The case's channel images as read and its label maps on their grid."""
        raise NotImplementedError

    def map_names(self, case: Case) -> list[str]:
        """The names of :meth:`label_maps`' maps in measurement names: one per channel."""
        return list(case.channel_names)

    def _measure(self, case: Case) -> dict[str, float]:
        images, maps = self.label_maps(case)
        axis = stack_axis(images[0].shape, images[0].spacing)
        return measure_images(images, maps, self.structures, self.map_names(case),
                              case.channel_names, -1 if axis is None else axis)


class MaskMeasurer(LabelMapMeasurer):
    """Measurements of each case's label maps in ``masks`` (cached per case).

    ``structures`` maps label values to names (:func:`mask_label_names`). Calling it on a
    case raises DataError (one line, naming the file) when its label map is missing,
    unreadable or off the image's grid.
    """

    def __init__(self, masks: Path, structures: Mapping[int, str],
                 per_channel: bool | None = None, remap: Mapping[int, int] | None = None
                 ) -> None:
        self.masks = Path(masks)
        if not self.masks.is_dir():
            raise DataError("masks folder not found", self.masks)
        super().__init__(structures)
        #: label values replaced before any check (``--label-map 255:1``), as the door does
        self.remap = dict(remap) if remap else None
        #: the model file whose recorded remap this follows (predict, evaluate), else None
        self.fitted: Path | None = None
        #: the layout of a multi-channel case's maps: one per channel (True) or one for the
        #: case (False); learnt from the first such case when training (None)
        self.per_channel = per_channel
        self._maps: dict[bool, LabelMaps] = {}  # the folder's listing, flat and recursive

    def _attach(self, case: Case) -> Case:
        """``case`` with its maps: ``masks`` is read with its sub-folders when the case's
        images lie in them (the images' own tree given as ``--masks``)."""
        root = self.masks.resolve()
        real = [p.resolve() for p in case.images]
        below = any(root in p.parent.parents for p in real)
        if below not in self._maps:  # quiet: the images' own folder, already listed
            self._maps[below] = LabelMaps(self.masks, recursive=below,
                                          quiet=any(root in p.parents for p in real))
        return self._maps[below].attach(case)

    def map_files(self, case: Case) -> tuple[Path, ...]:
        """The files of ``case``'s label maps in ``masks`` (for a run's manifest); () where
        none is found (its error row says why)."""
        try:
            return tuple(self._attach(case).labels) if case.images else ()
        except DataError:
            return ()

    @classmethod
    def for_model(cls, source: Mapping[str, Any] | None, masks: Path | None, model: Path
                  ) -> MaskMeasurer:
        """The measurer of the classifier in ``model``, trained with ``--masks`` (its
        ``feature_source`` is ``source``), reading ``masks`` (:func:`check_masks`)."""
        masks = check_masks(source, masks, model)
        assert masks is not None
        assert source is not None
        remap = {int(k): int(v) for k, v in (source.get("label_map") or {}).items()}
        out = cls(masks, external_structures(source) or {}, source.get("per_channel"), remap)
        out.fitted = Path(model)
        return out

    @property
    def source(self) -> dict[str, Any]:
        """What a model file records as its ``feature_source``."""
        out = {"masks": EXTERNAL, "structures": {str(k): v for k, v in self.structures.items()},
               "classes": ["background", *self.structures.values()]}
        if self.remap:
            out["label_map"] = {str(k): v for k, v in self.remap.items()}
        return out if self.per_channel is None else {**out, "per_channel": self.per_channel}

    def label_maps(self, case: Case) -> tuple[list[Any], list[Any]]:
        """The case's channel images as read and its label maps from ``masks`` (one per
        channel: a single map for the case serves every channel). DataError naming the map
        when it holds a value the label names do not name, or no structure at all (the
        other tool found nothing: measuring it would be a confident answer about nothing)."""
        attached = self._attach(case)
        try:
            images, labels = read_case(attached, LabelRules(remap=self.remap))
        except (BinaryMaskError, SparseLabelsError) as err:  # their advice: --label-map
            if self.fitted is None:  # train-classifier, which takes it
                raise
            raise self._cannot_remap(err) from None
        check_source_memory(images, case.images[0])
        check_spacing_expected(images, case.images[0], self.expect_real)
        maps = [lab.array for lab in labels]
        for path, arr in zip(attached.labels, maps, strict=True):
            self._check_values(path, arr)
        if len(images) > 1:
            self._check_layout(attached, len(maps) > 1)
        if len(maps) == 1 and len(images) > 1:  # one map for the case: each channel's
            maps = maps * len(images)
        return list(images), maps

    def _cannot_remap(self, err: DataError) -> DataError:
        """``err``, the door's refusal of a 0/255 or sparse-codes map, in words for
        ``predict`` and ``evaluate``, which remap only as the model file says: the values
        the classifier measures, and how to get there."""
        try:
            raw = sorted(label_values([err.path])) if err.path is not None else []
        except DataError:
            return err
        binary = isinstance(err, BinaryMaskError)
        hint = "255:1" if binary else label_map_hint(raw, self.remap)
        numbers = "/".join(str(v) for v in [0, *sorted(self.structures)])
        names = ", ".join(["background", *(self.structures[v] for v in sorted(self.structures))])
        remapped = (f", remapped {','.join(f'{a}:{b}' for a, b in self.remap.items())}"
                    if self.remap else "")
        found = "/".join(map(str, raw))
        return DataError(f"{'binary mask' if binary else 'label values'} stored as {found}; the "
                         f"classifier {self.fitted} was fitted on masks numbered {numbers} "
                         f"({names}{remapped}): re-save these as {numbers}, or retrain it with "
                         f"train-classifier --label-map {hint}", err.path)

    def _check_layout(self, case: Case, per_channel: bool) -> None:
        """A multi-channel case's maps laid out as the training cases' were: one map
        copied to every channel reads as no change between the channels (an ED and ES of
        equal volumes), a silent wrong answer for a classifier that learnt from two."""
        if self.per_channel is None:
            self.per_channel = per_channel
        elif per_channel != self.per_channel:
            channels = ", ".join(case.channel_names)
            said = ("one label map for each channel" if self.per_channel
                    else "one label map for all channels")
            raise DataError(f"the classifier was measured on {said} ({channels}); this case "
                            f"has {'one per channel' if per_channel else 'one for all'}: give "
                            "its maps as the training cases had them", case.labels[0])

    def _check_values(self, path: Path, arr: Any) -> None:
        values = {int(v) for v in np.unique(arr)}
        unnamed = sorted(values - {0, *self.structures})
        if unnamed:
            names = ["background", *self.structures.values()]
            raise DataError(f"label value{'s' if len(unnamed) > 1 else ''} "
                            f"{', '.join(map(str, unnamed))} "
                            f"{'are' if len(unnamed) > 1 else 'is'} not in the label names "
                            f"(0–{len(names) - 1}: {', '.join(names)})", path)
        if not values - {0}:
            raise DataError("the label map holds no structure (all background)", path)


def mask_files(measurers: Sequence[object], cases: Sequence[Case]) -> list[Path]:
    """Every ``--masks`` label map the :class:`MaskMeasurer` among ``measurers`` reads for
    ``cases``, once: what decides a measures classifier's answers beside the images, so a
    run's manifest lists them (the others measure what they segment)."""
    found = [f for m in measurers if isinstance(m, MaskMeasurer)
             for c in cases for f in m.map_files(c)]
    return list(dict.fromkeys(found))
