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
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from segfew.files import atomic_path, write_text

__all__ = ["Evidence", "Measured", "choose_slices", "contribution_caption", "write_index",
           "write_sheet"]

DPI = 110
_FONT: dict[str, Any] = {"font.size": 9, "axes.titlesize": 9, "legend.fontsize": 8,
                         "xtick.labelsize": 8, "ytick.labelsize": 8}
MAX_SLICES = 4  # columns of scan panels
SHOWN_BARS = 8  # contributions drawn, largest first


@dataclass
class Measured:
    """A measurement shown on a sheet: its words, the case's value and the training cases'
    values per class (shown units), and its contribution to the decision score."""

    label: str
    value: float
    by_class: dict[str, list[float]] = field(default_factory=dict)
    contribution: float = 0.0
    unit: str = ""
    title: str = ""  # the label without its unit (the unit is the box plot's y-axis)

    def __post_init__(self) -> None:
        self.title = self.title or self.label


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
    n_measurements: int = 0  # how many the model reads (the bars show the largest few)
    rest: float = 0.0  # what the measurements not shown add to the score
    caveat: str = ""  # what the model's own estimate says of all its answers (chance)


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
    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _panels(ev: Evidence) -> list[tuple[str, list[tuple[str, np.ndarray, np.ndarray | None,
                                                       np.ndarray | None, int]]]]:
    """Rows of scan panels ``(what, [(title, image, labels, saliency, slice), …])``: per
    channel one row of its chosen slices with contours, and one with the saliency map; the
    kind of panel (``what``) labels the row, the short title names channel and slice. 2D
    images' panels are packed side by side instead (their titles then say the kind)."""
    values = sorted(v for v in ev.structures if v != 0)
    rows = []
    for c, (name, image) in enumerate(zip(ev.channels, ev.images, strict=True)):
        lab = ev.labels[c] if ev.labels is not None else None
        sal = ev.saliency[c] if ev.saliency is not None else None
        slices = choose_slices(lab, sal, values, image.shape)
        for what, overlay in (("segmentation", None), ("Grad-CAM", sal)):
            if what == "Grad-CAM" and sal is None:
                continue
            rows.append((what, [(f"{name} · slice {s}" if image.ndim == 3 else name, image,
                                 lab if overlay is None else None, overlay, s)
                                for s in slices]))
    if all(len(r) == 1 for _, r in rows):  # 2D: pack, the kind in each title
        flat = [(f"{t} · {what}", im, lab, sal, s) for what, r in rows
                for t, im, lab, sal, s in r]
        rows = [("", flat[i:i + MAX_SLICES]) for i in range(0, len(flat), MAX_SLICES)]
    return rows


def _scan_rows(fig: Any, panels: list[Any], ev: Evidence, ncols: int) -> None:
    """Draw the scan panels into (sub)figure ``fig``, a row label naming each row's kind."""
    values = sorted(v for v in ev.structures if v != 0)
    colours = dict(zip(values, _colours(len(values)), strict=True))
    axes = fig.subplots(len(panels), ncols, squeeze=False)
    for row, (what, strip) in enumerate(panels):
        for j, ax in enumerate(axes[row]):
            ax.set_axis_off()
            if j >= len(strip):
                continue
            title, image, lab, sal, s = strip[j]
            lo, hi = np.percentile(image, [1, 99.5])
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
            if j == 0 and what:
                ax.text(-0.06, 0.5, what, rotation=90, ha="right", va="center",
                        transform=ax.transAxes, fontweight="bold")
    if ev.labels is not None and values:
        fig.legend(handles=[Patch(color=colours[v], label=ev.structures[v]) for v in values],
                   loc="outside upper right", ncols=len(values), frameon=False,
                   title="structures (contours)")


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
    said = f"{why}; margin over the next class {ev.confidence - second:.2f}"
    return f"{said}\nMODEL: {ev.caveat}" if ev.caveat else said


#: a case's value this far beyond the classes' range (× the range) is marked, not shown
OFF_AXIS = 0.5


def _box(ax: Any, m: Measured) -> None:
    """One measurement: a box and the points per class, the case as a red line; a value far
    outside every class's range is drawn as an arrow at the axis's edge, with its value."""
    classes = list(m.by_class)
    data = [[v for v in m.by_class[c] if np.isfinite(v)] for c in classes]
    ax.boxplot([d or [np.nan] for d in data], positions=range(len(classes)), widths=0.5,
               showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
        ax.plot(i + rng.uniform(-0.15, 0.15, len(d)), d, "o", ms=2.5, color="tab:blue",
                alpha=0.6)
    ax.set_xticks(range(len(classes)), classes, rotation=45)
    ax.set_title(_wrap(m.title), fontsize=8)
    ax.set_ylabel(m.unit)
    every = [v for d in data for v in d]
    if not np.isfinite(m.value):
        return
    if not every:
        ax.axhline(m.value, color="tab:red", linewidth=1.5)
        return
    lo, hi = min(every), max(every)
    pad = OFF_AXIS * max(hi - lo, abs(hi) * 1e-3, 1e-12)
    if lo - pad <= m.value <= hi + pad:
        ax.axhline(m.value, color="tab:red", linewidth=1.5)
        return
    top = m.value > hi
    ax.set_ylim(lo - 0.1 * pad, hi + 0.1 * pad)
    edge = 1.0 if top else 0.0
    ax.annotate(f"this case {m.value:.3g} {'↑' if top else '↓'}", xy=(0.5, edge),
                xytext=(0.5, edge - (0.12 if top else -0.12)), xycoords="axes fraction",
                textcoords="axes fraction", ha="center", va="center", color="tab:red",
                fontsize=8, fontweight="bold",
                arrowprops={"arrowstyle": "->", "color": "tab:red", "linewidth": 1.5})


def contribution_caption(ev: Evidence) -> str:
    """The contributions chart's title: how the score is made, and how many measurements
    the bars leave out and what those add (so the bars need not sum to the score)."""
    shown = min(SHOWN_BARS, len(ev.measured))
    n = max(ev.n_measurements, shown)
    rest = f"; the other {n - shown} add {ev.rest:+.2f}" if n > shown else ""
    return (_wrap(f"what drove {ev.predicted}: {ev.decision}", 90) + "\n"
            f"top {shown} of {n} measurements shown{rest}")


def _measure_rows(boxes: Any, bars: Any, ev: Evidence, ncols: int) -> None:
    shown = list(ev.measured)
    axes = boxes.subplots(1, ncols, squeeze=False)[0]
    for j, ax in enumerate(axes):
        if j < len(shown):
            _box(ax, shown[j])
        else:
            ax.set_axis_off()
    boxes.legend(handles=[Line2D([], [], color="tab:red", linewidth=1.5,
                                 label="this case (arrow: off the axis, its value)"),
                          Line2D([], [], marker="o", ls="", ms=3, color="tab:blue",
                                 label="training cases, per class")],
                 loc="outside upper right", ncols=2, frameon=False)
    ax = bars.subplots()
    order = sorted(shown, key=lambda m: -abs(m.contribution))[:SHOWN_BARS]
    ax.barh([m.label for m in order], [m.contribution for m in order],
            color=["tab:green" if m.contribution > 0 else "tab:purple" for m in order])
    ax.axvline(0, color="k", linewidth=0.8)
    ax.invert_yaxis()
    ax.set_title(contribution_caption(ev), fontsize=8)
    ax.set_xlabel(f"contribution to the {ev.predicted} score (right: for it, left: against)")


def _wrap(text: str, width: int = 28) -> str:
    """Wrapped at word boundaries only (a long word stays whole)."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False,
                                    break_on_hyphens=False))


def write_sheet(ev: Evidence, path: Path) -> Path:
    """Draw ``ev`` and write it as a PNG at ``path``, atomically; returns ``path``. Each part
    (scans, measurements, contributions, probabilities) is a subfigure with its own margins,
    so long names in one do not squeeze the others."""
    panels = _panels(ev)
    ncols = MAX_SLICES if ev.measured else max(3, max(len(r) for _, r in panels))
    width = 2.6 * ncols
    aspect = max((_plane(im, 0).shape[0] / _plane(im, 0).shape[1]) for im in ev.images)
    heights = [len(panels) * (min(width / ncols * aspect, 3.0) + 0.35) + 0.5]
    if ev.measured:
        heights += [2.9, 0.3 * min(SHOWN_BARS, len(ev.measured)) + 1.1]
    heights += [0.25 * len(ev.probabilities) + 1.0]
    with matplotlib.rc_context(_FONT):  # type: ignore[arg-type]
        fig = Figure(figsize=(width, sum(heights) + 0.4), layout="constrained")
        FigureCanvasAgg(fig)
        parts: Any = fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)
        parts = parts[:, 0]
        truth = f" · true class {ev.target}" if ev.target is not None else ""
        guess = " · read it as a guess (MODEL, below)" if ev.caveat else ""
        fig.suptitle(f"case {ev.case_id} · predicted {ev.predicted} "
                     f"(confidence {ev.confidence:.2f}){truth}{guess}", fontweight="bold",
                     x=0.02, ha="left")
        _scan_rows(parts[0], panels, ev, ncols)
        if ev.measured:
            _measure_rows(parts[1], parts[2], ev, ncols)
        ax = parts[-1].subplots()
        _probabilities(ax, ev)
        method = f"\nsaliency: {ev.saliency_method}" if ev.saliency_method else ""
        ax.set_title(_verdict(ev) + method, fontsize=8, loc="left")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
        fig.clear()
    return path


# ----------------------------------------------------------------------------- the index


def write_index(records: Sequence[Mapping[str, Any]], path: Path, title: str,
                threshold: float | None = None, caveat: str = "") -> Path:
    """A self-contained HTML page: one row per case, lowest confidence first, each linking
    its sheet (relative to ``path``); failed cases last with their error. ``records`` hold
    ``id, predicted, target, confidence, low_confidence, sheet, error`` and optionally
    ``runner_up`` (the next class and its probability); ``threshold``: the confidence
    below which a case is flagged, as the page states it; ``caveat``: what the model's own
    estimate says of every answer (:func:`segfew.inference.fit_measures.estimate_caveat`),
    said above the table."""
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
p.caveat {{ background: #fff3cd; padding: 0.5em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{f'<p class="caveat"><strong>The model: {html.escape(caveat)}.</strong></p>' if caveat else ""}
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
