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

from segfew.errors import DataError

if TYPE_CHECKING:
    from segfew.data import Case

__all__ = ["KINDS", "Described", "check_spacing_expected", "cine_channel_words", "describe",
           "fitted_names", "label", "spacing_expected", "structure_names"]

#: measurement kind → (words, unit, factor from the stored value to the shown one)
KINDS: dict[str, tuple[str, str, float]] = {
    "ejection_fraction": ("ejection fraction", "%", 100.0),
    "volume_change": ("volume change", "%", 100.0),
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


def fitted_names(names: Sequence[str], measured: Mapping[str, float], case: Case) -> list[str]:
    """The names in ``measured`` of the measurements a measures model was fitted on.

    A model file of an older segfew names a wall's volume change ``…_ejection_fraction_…``;
    it is read under its new name. A measurement the case does not give — most often one in
    mL measured here in voxels, or the reverse, because one set of files has a real spacing
    and the other has not — is a :class:`DataError`: the model would otherwise see NaN.
    """
    out, missing = [], []
    for name in names:
        renamed = name.replace("_ejection_fraction_", "_volume_change_")
        if name in measured or renamed in measured:
            out.append(name if name in measured else renamed)
        else:
            missing.append(name)
    if missing:
        units = {u for n in measured for u in ("_vox", "_px", "_ml", "_mm") if u in n}
        raise DataError(f"this case does not give measurements the model (or the first "
                        f"training case) has: {', '.join(missing[:3])}"
                        f"{', …' if len(missing) > 3 else ''}; its sizes are in "
                        f"{'/'.join(sorted(u[1:] for u in units)) or '?'}: train and predict "
                        "on images with the same spacing information", case.images[0])
    return out
