"""One case's evidence on one PNG sheet, and a batch's HTML index of the sheets.

A sheet shows, top to bottom: the scan of each channel with the segmentation's contours on the
slices that hold the most of each structure (a colour legend names the structures); where the
classifier is a network, its Grad-CAM map of the predicted class over the same slices
(:mod:`segfew.inference.saliency`); for the ``measures`` classifier, the measurements it leans
on most, each against the training cases' values per class (a box and the points per class, the
case as a red line), and each measurement's contribution to this case's decision; and the class
probabilities with the confidence and, where the case is flagged low-confidence, why. Everything
is in words and units (:mod:`segfew.inference.measure_names`). Drawing uses matplotlib's object
API (no global state); each figure is dropped after it is written, atomically.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segfew.files import atomic_path, write_text

__all__ = ["Evidence", "Measured", "choose_slices", "write_index", "write_sheet"]

DPI = 110
_FONT: dict[str, Any] = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8}
MAX_SLICES = 4  # columns of scan panels


@dataclass
class Measured:
    """A measurement shown on a sheet: its words, the case's value and the training cases'
    values per class (shown units), and its contribution to the decision score."""

    label: str
    value: float
    by_class: dict[str, list[float]] = field(default_factory=dict)
    contribution: float = 0.0


@dataclass
class Evidence:
    """What one sheet shows (arrays of one case; freed once the sheet is written).

    ``images``: one 2D or 3D array per channel (display grid); ``labels``: matching label
    maps (or None); ``saliency``: one map per channel in [0, 1] on the same grid (or None);
    ``structures``: label value → name.
    """

    case_id: str
    predicted: str
    probabilities: Mapping[str, float]
    confidence: float
    min_confidence: float
    channels: Sequence[str]
    images: Sequence[np.ndarray]
    labels: Sequence[np.ndarray] | None = None
    saliency: Sequence[np.ndarray] | None = None
    structures: Mapping[int, str] = field(default_factory=dict)
    target: str | None = None
    saliency_method: str = ""
    measured: Sequence[Measured] = ()
    decision: str = ""  # how the contributions are computed, base and score


def choose_slices(labels: np.ndarray | None, saliency: np.ndarray | None,
                  structures: Sequence[int], shape: tuple[int, ...]) -> list[int]:
    """Slice indices (last axis) to show: for each structure the slice holding the most of
    it; without a segmentation, the slices of most saliency; else the middle one."""
    if len(shape) == 2:
        return [0]
    picks: list[int] = []
    if labels is not None:
        for value in structures:
            counts = (labels == value).reshape(-1, shape[-1]).sum(0)
            if counts.max() > 0:
                picks.append(int(counts.argmax()))
    if not picks and saliency is not None and saliency.max() > 0:
        mass = saliency.reshape(-1, shape[-1]).sum(0)
        picks = [int(i) for i in np.argsort(-mass)[:3]]
    picks = sorted(set(picks)) or [shape[-1] // 2]
    return picks[:MAX_SLICES]


def _plane(a: np.ndarray, s: int) -> np.ndarray:
    return (a if a.ndim == 2 else a[..., s]).T  # rows: the second axis, as viewers show


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _panels(ev: Evidence) -> list[list[tuple[str, np.ndarray, np.ndarray | None,
                                             np.ndarray | None, int]]]:
    """Rows of scan panels ``(title, image, labels, saliency, slice)``: per channel one row
    of its chosen slices with contours, and one with the saliency map; 2D images' panels
    are packed side by side instead."""
    values = sorted(v for v in ev.structures if v != 0)
    rows = []
    for c, (name, image) in enumerate(zip(ev.channels, ev.images, strict=True)):
        lab = ev.labels[c] if ev.labels is not None else None
        sal = ev.saliency[c] if ev.saliency is not None else None
        slices = choose_slices(lab, sal, values, image.shape)
        for what, overlay in (("segmentation", None), ("Grad-CAM", sal)):
            if what == "Grad-CAM" and sal is None:
                continue
            where = [f", slice {s}" if image.ndim == 3 else "" for s in slices]
            rows.append([(f"{name}{w}: {what}", image, lab if overlay is None else None,
                          overlay, s) for w, s in zip(where, slices, strict=True)])
    if all(len(r) == 1 for r in rows):  # 2D: pack
        flat = [r[0] for r in rows]
        rows = [flat[i:i + MAX_SLICES] for i in range(0, len(flat), MAX_SLICES)]
    return rows


def _scan_rows(fig: Any, gs: Any, panels: list[list[Any]], ev: Evidence) -> int:
    """Draw the scan panels; returns the next free row."""
    from matplotlib.patches import Patch

    values = sorted(v for v in ev.structures if v != 0)
    colours = dict(zip(values, _colours(len(values)), strict=True))
    for row, strip in enumerate(panels):
        for j, (title, image, lab, sal, s) in enumerate(strip):
            lo, hi = np.percentile(image, [1, 99.5])
            ax = fig.add_subplot(gs[row, j])
            ax.imshow(_plane(image, s), cmap="gray", vmin=lo, vmax=hi, origin="lower")
            for v in values if lab is not None else []:
                mask = _plane(lab, s) == v
                if mask.any() and not mask.all():
                    ax.contour(mask, levels=[0.5], colors=[colours[v]], linewidths=1.2,
                               origin="lower")
            if sal is not None:
                ax.imshow(_plane(sal, s), cmap="inferno", vmin=0, vmax=1, alpha=0.5,
                          origin="lower")
            ax.set_title(title)
            ax.set_axis_off()
    if ev.labels is not None and values:
        fig.legend(handles=[Patch(color=colours[v], label=ev.structures[v]) for v in values],
                   loc="outside upper right", ncols=len(values), frameon=False,
                   title="structures (contours)")
    return len(panels)


def _probabilities(ax: Any, ev: Evidence) -> None:
    names = list(ev.probabilities)
    p = [ev.probabilities[n] for n in names]
    colours = ["tab:red" if n == ev.predicted else "tab:gray" for n in names]
    ax.barh(names, p, color=colours)
    ax.axvline(ev.min_confidence, color="k", linestyle="--", linewidth=1)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("class probability (dashed: the low-confidence threshold)")


def _verdict(ev: Evidence) -> str:
    top = sorted(ev.probabilities.values(), reverse=True)
    second = top[1] if len(top) > 1 else 0.0
    if ev.confidence < ev.min_confidence:
        why = (f"LOW CONFIDENCE: the top probability {ev.confidence:.2f} is below the "
               f"threshold {ev.min_confidence:.2f}")
    else:
        why = (f"confident: the top probability {ev.confidence:.2f} is at or above the "
               f"threshold {ev.min_confidence:.2f}")
    return f"{why}; margin over the next class {ev.confidence - second:.2f}"


def _measure_rows(fig: Any, gs: Any, row: int, ev: Evidence, ncols: int) -> int:
    shown = list(ev.measured)
    for j, m in enumerate(shown[:ncols]):
        ax = fig.add_subplot(gs[row, j])
        classes = list(m.by_class)
        data = [[v for v in m.by_class[c] if np.isfinite(v)] for c in classes]
        ax.boxplot([d or [np.nan] for d in data], positions=range(len(classes)), widths=0.5,
                   showfliers=False)
        rng = np.random.default_rng(0)
        for i, d in enumerate(data):
            ax.plot(i + rng.uniform(-0.15, 0.15, len(d)), d, "o", ms=2.5, color="tab:blue",
                    alpha=0.6)
        if np.isfinite(m.value):
            ax.axhline(m.value, color="tab:red", linewidth=1.5)
        ax.set_xticks(range(len(classes)), classes, rotation=45)
        ax.set_title(_wrap(m.label), fontsize=8)
    row += 1
    ax = fig.add_subplot(gs[row, :])
    order = sorted(shown, key=lambda m: -abs(m.contribution))[:8]
    ax.barh([_wrap(m.label, 60) for m in order], [m.contribution for m in order],
            color=["tab:green" if m.contribution > 0 else "tab:purple" for m in order])
    ax.axvline(0, color="k", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_title(f"what drove {ev.predicted}: {ev.decision}")
    ax.set_xlabel(f"contribution to the {ev.predicted} score (right: for it, left: against)")
    return row + 1


def _wrap(text: str, width: int = 28) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def write_sheet(ev: Evidence, path: Path) -> Path:
    """Draw ``ev`` and write it as a PNG at ``path``, atomically; returns ``path``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(ev)
    n_img = len(panels)
    ncols = MAX_SLICES if ev.measured else max(3, max(len(r) for r in panels))
    n_rows = n_img + (2 if ev.measured else 0) + 1
    heights = [2.6] * n_img + ([2.2, 0.35 * min(8, len(ev.measured)) + 0.8]
                               if ev.measured else []) + [0.25 * len(ev.probabilities) + 0.9]
    with matplotlib.rc_context(_FONT):  # type: ignore[arg-type]
        fig = Figure(figsize=(2.6 * ncols, sum(heights) + 1.0), layout="constrained")
        FigureCanvasAgg(fig)
        gs = fig.add_gridspec(n_rows, ncols, height_ratios=heights)
        truth = f" · true class {ev.target}" if ev.target is not None else ""
        fig.suptitle(f"case {ev.case_id} · predicted {ev.predicted} "
                     f"(confidence {ev.confidence:.2f}){truth}", fontweight="bold",
                     x=0.02, ha="left")
        row = _scan_rows(fig, gs, panels, ev)
        if ev.measured:
            row = _measure_rows(fig, gs, row, ev, ncols)
        ax = fig.add_subplot(gs[row, :])
        _probabilities(ax, ev)
        method = f"\nsaliency: {ev.saliency_method}" if ev.saliency_method else ""
        ax.set_title(_verdict(ev) + method, fontsize=8, loc="left")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
        fig.clear()
    return path


# ----------------------------------------------------------------------------- the index


def write_index(records: Sequence[Mapping[str, Any]], path: Path, title: str,
                threshold: float | None = None) -> Path:
    """A self-contained HTML page: one row per case, lowest confidence first, each linking
    its sheet (relative to ``path``); failed cases last with their error. ``records`` hold
    ``id, predicted, target, confidence, low_confidence, sheet, error`` and optionally
    ``runner_up`` (the next class and its probability); ``threshold``: the confidence
    below which a case is flagged, as the page states it."""
    ok = sorted((r for r in records if r.get("sheet")), key=lambda r: r["confidence"])
    failed = [r for r in records if not r.get("sheet")]
    has_target = any(r.get("target") is not None for r in records)
    head = ["case", "predicted", *(["true class"] if has_target else []), "confidence",
            "next class", "flag", "sheet"]
    lines = []
    for r in ok:
        e = html.escape
        flag = "low confidence" if r["low_confidence"] else ""
        wrong = has_target and r.get("target") not in (None, r["predicted"])
        cells = [e(r["id"]), e(r["predicted"]),
                 *([e(str(r.get("target") or "")) + (" ✗" if wrong else "")]
                   if has_target else []),
                 f"{r['confidence']:.3f}", e(r.get("runner_up") or ""), flag,
                 f'<a href="{e(r["sheet"])}">{e(Path(r["sheet"]).name)}</a>']
        cls = ' class="low"' if r["low_confidence"] else ""
        lines.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows = "\n".join(lines)
    errors = "\n".join(f"<tr><td>{html.escape(r['id'])}</td><td>{html.escape(r['error'])}"
                       "</td></tr>" for r in failed)
    failed_part = (f"<h2>Failed cases ({len(failed)})</h2>\n<table><tr><th>case</th>"
                   f"<th>error</th></tr>\n{errors}\n</table>") if failed else ""
    limit = "the threshold" if threshold is None else f"{threshold:.2f}"
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }}
tr.low {{ background: #fde8e8; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{len(ok)} sheets, lowest confidence first; {len(failed)} failed.
Confidence is the top class probability; a case below {limit} is flagged.</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>
{rows}
</table>
{failed_part}
</body></html>
"""
    write_text(path, page)
    return path
