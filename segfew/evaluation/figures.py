"""The figures of segfew's reports and run folders, drawn to be read on paper.

Learning curves follow the paper's Fig. 5 and 8 (mean ± standard deviation over
repetitions against the training size, one line per framework), with the legend below the
plot, never over the data. Every figure is written atomically as a PNG at 150 dpi with
fonts of at least 9 pt at its printed size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from segfew.files import atomic_path

__all__ = ["plot_class_f1", "plot_confusion_matrix", "plot_examples", "plot_label_preview",
           "plot_learning_curves", "plot_training_curve"]

DPI = 150
_FONT: dict[str, Any] = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 9, "xtick.labelsize": 9, "ytick.labelsize": 9}
F = TypeVar("F", bound=Callable[..., Path])


def _print_fonts(fn: F) -> F:
    """Draw with fonts readable in print, without changing matplotlib's global settings."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Path:
        with matplotlib.rc_context(_FONT):  # type: ignore[arg-type]
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float) -> Any:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _x_positions(sizes: Sequence[int], j: int, m: int, log: bool) -> np.ndarray:
    """Sizes nudged sideways per framework so error bars do not hide each other."""
    x = np.asarray(sizes, dtype=float)
    shift = (j - (m - 1) / 2) * 0.04
    return x * 2.0**shift if log else x + shift * 2


def _axes_setup(ax: Any, sizes: Sequence[int], log: bool, xlabel: str) -> None:
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.grid(alpha=0.3)


def _log_axis(sizes: Sequence[int]) -> bool:
    return len(sizes) > 1 and max(sizes) / min(sizes) >= 8


@_print_fonts
def plot_learning_curves(rows: Sequence[dict[str, Any]], metric: str, path: Path, *,
                         title: str, ylabel: str, xlabel: str, words: Mapping[str, str],
                         chance: float | None = None) -> Path:
    """One line per framework: ``metric`` mean ± std (rows of
    :func:`segfew.experiment.protocol.summarise`) against training size; the legend below."""
    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    log = _log_axis(sizes)
    fig = _figure(7.0, 4.4 + 0.22 * (len(frameworks) + (chance is not None)))
    ax = fig.add_subplot()
    for j, fw in enumerate(frameworks):
        pts = [r for r in rows if r["framework"] == fw and r[metric]["mean"] is not None]
        x = _x_positions([r["size"] for r in pts], j, len(frameworks), log)
        ax.errorbar(x, [r[metric]["mean"] for r in pts],
                    yerr=[r[metric]["std"] or 0.0 for r in pts], marker="o", capsize=4,
                    label=words.get(fw, fw))
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1,
                   label=f"chance ({chance:.2f})")
    _axes_setup(ax, sizes, log, xlabel)
    ax.set_ylabel(ylabel)
    low = min([0.0] + [r[metric]["mean"] - (r[metric]["std"] or 0.0) for r in rows
                       if r[metric]["mean"] is not None])
    ax.set_ylim(low - 0.05 if low < 0 else 0.0, 1.02)
    if low < 0:
        ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=1, frameon=False)
    return _save(fig, path)


@_print_fonts
def plot_class_f1(rows: Sequence[dict[str, Any]], classes: Sequence[str], path: Path, *,
                  xlabel: str, words: Mapping[str, str]) -> Path:
    """One panel per class (two per row): F1 mean ± std against training size; one legend
    below all panels."""
    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    log = _log_axis(sizes)
    cols = min(2, max(len(classes), 1))
    nrows = -(-max(len(classes), 1) // cols)
    fig = _figure(4.2 * cols, 2.9 * nrows + 0.3 + 0.22 * len(frameworks))
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    for i, name in enumerate(classes):
        ax = axes[i // cols][i % cols]
        for j, fw in enumerate(frameworks):
            pts = [r for r in rows if r["framework"] == fw
                   and (r["f1"].get(name) or {}).get("mean") is not None]
            x = _x_positions([r["size"] for r in pts], j, len(frameworks), log)
            ax.errorbar(x, [r["f1"][name]["mean"] for r in pts],
                        yerr=[r["f1"][name]["std"] or 0.0 for r in pts], marker="o",
                        capsize=3, label=words.get(fw, fw))
        _axes_setup(ax, sizes, log, xlabel)
        ax.set_ylim(0.0, 1.02)
        ax.set_title(f"class {name}")
        ax.set_ylabel("F1 score")
    for i in range(len(classes), nrows * cols):
        axes[i // cols][i % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=1, frameon=False)
    fig.suptitle("F1 score of each class")
    return _save(fig, path)


@_print_fonts
def plot_training_curve(history: Sequence[Mapping[str, float]], path: Path,
                        metric_name: str = "validation metric") -> Path:
    """Training loss (left axis) and the validation metric (right axis) per epoch."""
    fig = _figure(6.4, 3.6)
    ax = fig.add_subplot()
    epochs = [int(r["epoch"]) for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], marker="o", color="tab:blue",
            label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss", color="tab:blue")
    ax.grid(alpha=0.3)
    values = [r.get("val_metric", float("nan")) for r in history]
    if any(np.isfinite(values)):
        right = ax.twinx()
        right.plot(epochs, values, marker="s", color="tab:orange", label=metric_name)
        right.set_ylabel(metric_name, color="tab:orange")
        right.set_ylim(0.0, 1.02)
    ax.set_title("Training curve")
    return _save(fig, path)


@_print_fonts
def plot_examples(examples: Sequence[tuple[str, np.ndarray, np.ndarray | None]], path: Path,
                  num_labels: int) -> Path:
    """One example image per class: the image, and beside it its segmentation overlaid.

    ``examples`` holds ``(title, image, labels)``; arrays are indexed (x, y[, z]) and a
    volume shows its middle slice; ``labels`` None draws the image alone.
    """
    n = max(len(examples), 1)
    fig = _figure(2.6 * n, 5.4)
    axes = fig.subplots(2, n, squeeze=False)
    cmap = colormaps["tab10"].resampled(max(num_labels, 2))
    for col, (title, image, labels) in enumerate(examples):
        img = _middle(np.asarray(image, dtype=float)).T
        axes[0, col].imshow(img, cmap="gray")
        axes[0, col].set_title(title)
        axes[1, col].imshow(img, cmap="gray")
        if labels is not None:
            lab = _middle(np.asarray(labels)).T
            axes[1, col].imshow(np.ma.masked_equal(lab, 0), cmap=cmap, vmin=0,
                                vmax=max(num_labels - 1, 1), alpha=0.45,
                                interpolation="nearest")
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle("One image per class (top) and the segmentation network's labels "
                 "(bottom)")
    return _save(fig, path)


def _middle(array: np.ndarray) -> np.ndarray:
    return array if array.ndim == 2 else array[..., array.shape[-1] // 2]


@_print_fonts
def plot_label_preview(shown: Sequence[tuple[str, np.ndarray, np.ndarray]],
                       label_names: Sequence[str], path: Path, what: str = "k-means labels"
                       ) -> Path:
    """Images (top row) above their labels (bottom row), with the label names; ``what``
    names the labelling in the title."""
    n = max(len(shown), 1)
    fig = _figure(2.6 * n + 1.2, 5.6)
    axes = fig.subplots(2, n, squeeze=False)
    drawn = None
    for col, (name, image, labels) in enumerate(shown):
        axes[0, col].imshow(_middle(np.asarray(image, dtype=float)).T, cmap="gray")
        axes[0, col].set_title(name)
        drawn = axes[1, col].imshow(_middle(labels).T, cmap="viridis", vmin=0,
                                    vmax=max(len(label_names) - 1, 1), interpolation="nearest")
    for ax in axes.ravel():
        ax.set_axis_off()
    if drawn is not None:
        bar = fig.colorbar(drawn, ax=axes[1, :].tolist(), shrink=0.8,
                           ticks=range(len(label_names)))
        bar.ax.set_yticklabels(list(label_names))
    fig.suptitle(f"{what} ({len(label_names)} labels)")
    return _save(fig, path)


@_print_fonts
def plot_confusion_matrix(cm: np.ndarray | Sequence[Sequence[int]], class_names: Sequence[str],
                          path: Path, title: str = "") -> Path:
    """Write the confusion matrix as a PNG: counts in the cells, colour = share of the row.

    Rows are the true classes, columns the predicted ones. Written atomically.
    """
    cm = np.asarray(cm, dtype=float)
    k = len(class_names)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = 2.0 + 0.6 * k
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="share of the true class")
    ax.set_xticks(range(k), [str(c) for c in class_names], rotation=45, ha="right")
    ax.set_yticks(range(k), [str(c) for c in class_names])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if share[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    return _save(fig, Path(path))
