"""Measurement column names in words and units: the one mapping a person reads.

:mod:`segfew.inference.measure` names its columns for machines (``LV_volume_ml_frame01``,
``RV_to_LV_volume_ratio_frame02``, ``LV_ejection_fraction_frame01_frame02``); sheets,
tables and reports show ``LV volume at frame01 (mL)`` instead. Structure names are the
segmentation's label names (``label_names.json`` of ``segfew label``, or the pre-training
spec); channel names are the case's channels (``--channels``), optionally shown under
other names (``channel_words={"frame01": "ED", "frame02": "ES"}``: ACDC's first frame is
end-diastole, its second end-systole). Units follow each measurement's definition in
:mod:`segfew.inference.measure`; ejection fractions are shown in % (the stored value × 100).

When the structures are those of cine cardiac MRI (RV, myocardium and LV, as ``segfew
label --method cavities`` names them) and a case has two phases, the first is end-diastole
and the second end-systole — the convention of the cavities labels (ED first) and of
ACDC — so :func:`cine_channel_words` shows them as ED and ES.

Example::

    describe("LV_volume_ml_frame01", {"frame01": "ED"}).label   # 'LV volume at ED (mL)'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segfew.errors import DataError, DataWarning

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["KINDS", "Described", "ImpossibleMeasurements", "check_channels",
           "check_spacing_expected",
           "cine_channel_words", "describe", "fitted_names", "impossible", "impossible_warning",
           "label", "spacing_expected", "structure_names"]

#: measurement kind → (words, unit, factor from the stored value to the shown one)
KINDS: dict[str, tuple[str, str, float]] = {
    "ejection_fraction": ("ejection fraction", "%", 100.0),
    "volume_change": ("volume decrease", "%", 100.0),  # 1 − later/first: growth is < 0
    "volume_ratio": ("volume ratio", "", 1.0),
    "volume_ml": ("volume", "mL", 1.0),
    "surface_mm2": ("surface area", "mm²", 1.0),
    "area_mm2": ("area", "mm²", 1.0),
    "perimeter_mm": ("perimeter", "mm", 1.0),
    "sphericity": ("sphericity", "", 1.0),
    "major_axis_mm": ("long axis length", "mm", 1.0),
    "minor_axis_mm": ("short axis length", "mm", 1.0),
    "solidity": ("solidity", "", 1.0),
    "extent": ("extent", "", 1.0),
    "thickness_mean_mm": ("mean thickness", "mm", 1.0),
    "thickness_max_mm": ("maximum thickness", "mm", 1.0),
    # a file without a real voxel size is measured in voxels (3D) or pixels (2D)
    **{f"{base}_{unit}": (words, unit_words, 1.0)
       for unit, unit_words in (("vox", "voxels"), ("px", "pixels"))
       for base, words in (
           ("volume", "volume"), ("surface", "surface area"), ("area", "area"),
           ("perimeter", "perimeter"), ("major_axis", "long axis length"),
           ("minor_axis", "short axis length"), ("thickness_mean", "mean thickness"),
           ("thickness_max", "maximum thickness"))},
}


@dataclass(frozen=True)
class Described:
    """A measurement in words: ``label`` (words and unit), ``unit``, and ``factor`` (shown
    value = stored value × factor)."""

    label: str
    unit: str
    factor: float


def structure_names(names: Sequence[str]) -> dict[int, str]:
    """Label value → the name a person reads, background (0) aside: a segmentation model's
    own names, where ``segfew pretrain`` had none (``label1``, …) ``structure 1``, …"""
    return {i: f"structure {i}" if re.fullmatch(r"label\d+", n) else n
            for i, n in enumerate(names) if i}


def describe(name: str, channel_words: Mapping[str, str] | None = None,
             structures: Mapping[int, str] | None = None) -> Described:
    """Words and unit of a measurement column ``name`` (:mod:`segfew.inference.measure`).

    ``channel_words`` renames channels (``frame01`` → ``ED``; to ``""``: not shown, as
    for the one channel of a single-image case). The channel ``all`` (one label map of
    every channel) is not shown. A name that is no known measurement is returned as it
    is, without a unit, unless it ends in a renamed channel: then its words are spaced and
    the channel said (``label2_texture_contrast_frame01`` → ``structure 2 texture contrast
    at ED``). ``structures`` (label value → name) renames the unnamed ``label<i>`` of a
    segmentation model trained without names.
    """
    words = dict(channel_words or {})
    lead = re.match(r"label(\d+)_", name)
    if lead and structures and int(lead[1]) in structures:
        name = f"{structures[int(lead[1])]}_{name[lead.end():]}"

    def ch(c: str) -> str:
        return words.get(c, c)

    for kind, (text, unit, factor) in KINDS.items():
        marker = f"_{kind}_"
        if marker not in name:
            continue
        structure, _, channels = name.partition(marker)
        at = f" at {ch(channels)}" if ch(channels) and channels != "all" else ""
        if kind == "volume_ratio":  # S_to_T_volume_ratio_c
            a, _, b = structure.partition("_to_")
            shown = f"{a}/{b} volume ratio{at}"
        elif kind in ("ejection_fraction", "volume_change"):  # S_<kind>_a_b
            first, _, later = channels.partition("_")
            shown = f"{structure} {text} ({ch(first)}→{ch(later)})"
        else:
            shown = f"{structure} {text}{at}"
        return Described(f"{shown} ({unit})" if unit else shown, unit, factor)
    head, _, last = name.rpartition("_")
    if head and last in words:
        at = f" at {words[last]}" if words[last] else ""
        return Described(head.replace("_", " ") + at, "", 1.0)
    return Described(name, "", 1.0)


def label(name: str, channel_words: Mapping[str, str] | None = None) -> str:
    """:func:`describe`'s label alone."""
    return describe(name, channel_words).label


#: the structures of cine cardiac MRI (``segfew.labelling.cavities.LABEL_NAMES``, background aside)
CINE_STRUCTURES = frozenset({"RV", "myocardium", "LV"})


def cine_channel_words(channels: Sequence[str], structures: Sequence[str]) -> dict[str, str]:
    """``{first: "ED", second: "ES"}`` for two cine phases of the heart's structures
    (module docstring); for a single image, its channel ``0`` unsaid; else no renaming."""
    if len(channels) == 2 and set(structures) >= CINE_STRUCTURES:
        return {channels[0]: "ED", channels[1]: "ES"}
    return {} if len(channels) > 1 else {"0": ""}  # one image: its channel goes unsaid


# ------------------------------------------------------------- names against a model


def spacing_expected(names: Sequence[str]) -> bool | None:
    """Whether measurements ``names`` were taken with a real voxel size (mm, mL: True), in
    voxels (False), or say neither (None)."""
    if any("_vox" in n or "_px" in n for n in names):
        return False
    if any("_ml" in n or "_mm" in n for n in names):
        return True
    return None


def check_spacing_expected(images: Sequence[Any], path: Path, expect_real: bool | None
                           ) -> None:
    """Refuse, before segmenting and measuring, a case whose voxel size is not the kind
    the classifier was fitted on (:func:`spacing_expected`): :func:`fitted_names` would
    refuse it anyway, after all the work. DataError naming ``path``."""
    if expect_real is None or not images or images[0].spacing_known == expect_real:
        return
    have, want = ("voxels", "mm and mL") if expect_real else ("mm and mL", "voxels")
    raise DataError(f"this case's sizes would be in {have} (its file "
                    f"{'gives no real voxel size' if expect_real else 'gives one'}) and the "
                    f"model was fitted on measurements in {want}: train and predict on images "
                    "with the same spacing information", path)


def check_channels(model_channels: Sequence[str] | None, channels: Sequence[str] | None,
                   path: Path) -> None:
    """Refuse, before any work, ``--channels`` other than a measures model's own
    ``model_channels`` (its names, in its order): every measurement is named after its
    channel, so each case would fail after being segmented. DataError naming ``path``."""
    if model_channels and channels and list(channels) != list(model_channels):
        same = sorted(channels) == sorted(model_channels)
        raise DataError(f"--channels {','.join(channels)}: the model measures channels "
                        f"{', '.join(model_channels)} in that order"
                        f"{' (the same names in another order)' if same else ''}, and names "
                        "each measurement after its channel: name the files with the model's "
                        f"channel names, in its order (--channels {','.join(model_channels)})",
                        path)


def fitted_names(names: Sequence[str], measured: Mapping[str, float], case: Case,
                 channels: Sequence[str] | None = None) -> list[str]:
    """The names in ``measured`` of the measurements a measures model was fitted on.

    A model file of an older segfew names a wall's volume change ``…_ejection_fraction_…``;
    it is read under its new name. A measurement the case does not give is a
    :class:`DataError` naming the case's first file (the model would otherwise see NaN),
    which says why: the case is 2D and the model 3D (or the reverse), the sizes are in
    other units (mL measured here in voxels, or the reverse: one set of files has a real
    spacing and the other has not), or the case's channels are not the model's
    ``channels`` (its ``--channels``; None: read from ``names``) in the same order — every
    measurement name ends in its channel's.
    """
    out, missing = [], []
    for name in names:
        renamed = name.replace("_ejection_fraction_", "_volume_change_")
        if name in measured or renamed in measured:
            out.append(name if name in measured else renamed)
        else:
            missing.append(name)
    if missing:
        shown = f"{', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}"
        raise DataError(f"this case does not give measurements the model (or the first "
                        f"training case) has: {shown}; "
                        f"{_why_missing(names, measured, case, channels)}", case.images[0])
    return out


def _units(names: Sequence[str] | Mapping[str, float]) -> set[str]:
    """``{"real"}``, ``{"voxels"}``, both or neither: the kind of sizes ``names`` hold."""
    return {"voxels" if u in ("_vox", "_px") else "real" for n in names
            for u in ("_vox", "_px", "_ml", "_mm") if u in n}


def _channels_of(names: Sequence[str]) -> list[str]:
    """The channels of measurement ``names`` in their order: each name's last word."""
    return list(dict.fromkeys(n.rpartition("_")[2] for n in names if "_" in n))


def _why_missing(names: Sequence[str], measured: Mapping[str, float], case: Case,
                 channels: Sequence[str] | None) -> str:
    """Why a case lacks measurements a model has, in words, with what to do."""
    dims = [{3 if "volume" in size else 2 for n in group for size in _SIZES if f"_{size}_" in n}
            for group in (measured, names)]  # a 2D case has volume ratios, no volume_ml/vox
    if len(dims[0]) == len(dims[1]) == 1 and dims[0] != dims[1]:  # one slice is a 2D image
        return (f"it reads as a {dims[0].pop()}D image and the model was fitted on "
                f"{dims[1].pop()}D ones (a volume of one slice reads as 2D): predict on images "
                "of the dimension it was trained on")
    have, want = _units(measured), _units(names)
    if have and want and have != want:
        said = {"real": "mm and mL", "voxels": "voxels"}
        return (f"its sizes are in {' and '.join(said[u] for u in sorted(have))}, the "
                f"model's in {' and '.join(said[u] for u in sorted(want))}: train and predict "
                "on images with the same spacing information")
    mine = list(case.channel_names)
    theirs = list(channels) if channels else _channels_of(names)
    if mine != theirs and len(mine) == len(theirs):
        order = " (the same names in another order)" if sorted(mine) == sorted(theirs) else ""
        return (f"the measurements are named by channel, and the model's channels are "
                f"{', '.join(theirs)} in that order while this case's are {', '.join(mine)}"
                f"{order}: name the files with the model's channel names in its order, or "
                f"pass --channels {','.join(theirs)}")
    return ("the case's structures or channels differ from those the model was fitted on: "
            "measure it with the same segmentation (label names) and channels")


# ------------------------------------------------------------- impossible values


#: kinds that cannot be below 0: sizes, ratios of sizes and shape measures (KINDS but the
#: volume change, which a growing structure makes negative)
_NOT_NEGATIVE = tuple(k for k in KINDS if k != "volume_change")


class ImpossibleMeasurements(DataWarning):
    """A :class:`DataWarning` of a case with measurements that cannot be (:func:`impossible`).

    ``message`` is the same text for every case with the same problem, so a batch folds
    them into a few lines and a count (:class:`segfew.errors.RepeatedWarnings`); the case's
    own values, ``detail``, are said only in the line of that case (``str``).
    """

    def __init__(self, message: str, path: str | Path, detail: str) -> None:
        super().__init__(message, path)
        self.detail = detail

    def __str__(self) -> str:
        return f"{super().__str__()} ({self.detail})"


def _kind(name: str) -> str | None:
    return next((k for k in KINDS if f"_{k}_" in name or name.endswith(f"_{k}")), None)


#: the size of a structure in one channel (``S_<size>_c``): 3D volume, 2D area
_SIZES = ("volume_ml", "volume_vox", "area_mm2", "area_px")


def _absent(measured: Mapping[str, float]) -> dict[str, tuple[str, str, str]]:
    """Size names of 0 of a structure that is present (> 0) in another channel of the same
    case → (structure, this channel, a channel where it is present)."""
    sizes: dict[tuple[str, str], dict[str, float]] = {}
    for name, value in measured.items():
        for size in _SIZES:
            structure, marker, channel = name.partition(f"_{size}_")
            if marker and structure and channel:
                sizes.setdefault((structure, size), {})[channel] = value
    out = {}
    for (structure, size), by_channel in sizes.items():
        present = [c for c, v in by_channel.items() if v > 0]
        for channel, v in by_channel.items():
            if present and v == 0:
                out[f"{structure}_{size}_{channel}"] = (structure, channel, present[0])
    return out


def impossible(measured: Mapping[str, float]) -> dict[str, float]:
    """The measurements of ``measured`` (:mod:`segfew.inference.measure` names) that cannot
    be, name → value: a size, ratio or shape measure below 0, an ejection fraction below 0
    (the later phase's cavity is larger than the first's, which a heart never does when the
    first phase is end-diastole) or of 1 and above (a cavity of no volume at the later
    phase), a volume change above 1 (a negative later volume), and a structure's size of 0
    in one channel while it is present in another of the case (a structure missing from one
    phase's map; absent from every channel is no contradiction). NaN (undefined) is never
    impossible by itself."""
    out = {}
    for name, value in measured.items():
        kind = _kind(name)
        if kind is None or value != value:  # not a shape measurement, or NaN
            continue
        if ((kind in _NOT_NEGATIVE and value < 0) or (kind == "ejection_fraction" and value >= 1)
                or (kind == "volume_change" and value > 1)):
            out[name] = value
    return out | {name: measured[name] for name in _absent(measured)}


_FLAGGED = "(a prediction on such a case is flagged low_confidence)"


def impossible_warning(measured: Mapping[str, float], path: str | Path,
                       channels: Sequence[str], structures: Sequence[str]
                       ) -> ImpossibleMeasurements | None:
    """The warning of a case whose measurements cannot be (:func:`impossible`), naming its
    file ``path``; None when all can. A structure missing from one channel's map is said
    as such. Ejection fractions below 0 in every cavity are said as phases in the wrong
    order: measurements read the first of ``channels`` as end-diastole (ED, the fullest
    phase; with the heart's ``structures`` and two channels, the second as end-systole,
    ES — :func:`cine_channel_words`); below 0 in some cavities only, as that structure's
    segmentation. The text is the same for every case with the same problem; the case's
    values are its ``detail``."""
    bad = impossible(measured)
    if not bad:
        return None
    detail = "this case: " + ", ".join(f"{n} {v:.3g}" for n, v in bad.items())
    absent = _absent(measured)
    if absent:
        said = "; ".join(dict.fromkeys(
            f"{s} absent from the map at {c} while present at {other}"
            for s, c, other in absent.values()))
        return ImpossibleMeasurements(f"{said}: check the label maps {_FLAGGED}", path, detail)
    negative = all(_kind(n) == "ejection_fraction" and v < 0 for n, v in bad.items())
    every = all(v < 0 for n, v in measured.items()
                if _kind(n) == "ejection_fraction" and v == v)
    if channels and negative and every:
        first, later = channels[0], channels[1] if len(channels) == 2 else "a later one"
        words = cine_channel_words(channels, structures)
        named = first.upper() == "ED"  # not "ED is read as end-diastole (ED)"
        read = (f"{first} is read as end-diastole{'' if named else ' (ED)'} and {later} as "
                f"end-systole{'' if later.upper() == 'ES' else ' (ES)'}"
                if words.get(first) == "ED" else
                f"{first} is read as end-diastole (ED, the fullest phase), the others after it")
        return ImpossibleMeasurements(
            f"an ejection fraction below 0 (a cavity larger at {later} than at {first}) "
            f"cannot be: the phases are likely in the wrong order — {read}; name the files so "
            f"that {first} is the end-diastole phase {_FLAGGED}", path, detail)
    if negative:
        return ImpossibleMeasurements(
            "an ejection fraction below 0 in some cavities while another's is not: the "
            "phases are in order and that cavity's segmentation is likely wrong (larger at a "
            f"later phase): check the label maps of that structure {_FLAGGED}", path, detail)
    return ImpossibleMeasurements(
        "measurements that cannot be (a size below 0, or an ejection fraction or volume "
        "change outside what a volume allows): check the label maps and the voxel size "
        f"{_FLAGGED}", path, detail)
