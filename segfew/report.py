"""The learning-curve report: Markdown with PNGs beside it, and one self-contained HTML file.

Built from one or more RUN_DIRs of :func:`segfew.experiment.run_experiment` (shards are
merged). Plots follow the paper's Fig. 5 and 8: mean ± standard deviation over repetitions
against the number of labelled training patients per class, one line per framework. The
document is assembled once as a list of blocks and rendered to both formats, so the two
always say the same thing.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segfew.atomic import atomic_path, write_text
from segfew.experiment import (
    FRAMEWORK_NAMES,
    collect_results,
    load_spec,
    summarise,
    task_status,
)

__all__ = ["write_report"]

_METRIC_WORDS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy",
                 "kappa": "Cohen's kappa", "macro_f1": "Macro F1"}
_X_LABEL = "labelled training patients per class"


@dataclass
class _Block:
    kind: str  # "h1" | "h2" | "p" | "list" | "table" | "image" | "code"
    text: str = ""
    items: Sequence[Any] = ()
    header: Sequence[str] = ()
    path: Path | None = None


def framework_words(fw: str) -> str:
    return FRAMEWORK_NAMES.get(fw, fw)


def _ms(cell: dict[str, Any] | None) -> str:
    if not cell or cell.get("mean") is None:
        return "—"
    std = cell.get("std")
    return f"{cell['mean']:.3f}" + (f" ± {std:.3f}" if std is not None else "")


# ---------------------------------------------------------------- plots


def _x_positions(sizes: Sequence[int], j: int, m: int, log: bool) -> np.ndarray:
    """Sizes nudged sideways per framework so error bars do not hide each other."""
    x = np.asarray(sizes, dtype=float)
    shift = (j - (m - 1) / 2) * 0.04
    return x * 2.0**shift if log else x + shift * 2


def _axes_setup(ax: Any, sizes: Sequence[int], log: bool) -> None:
    if log:
        ax.set_xscale("log", base=2)
    ax.set_xticks(list(sizes), [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel(_X_LABEL)
    ax.grid(alpha=0.3)


def plot_learning_curves(rows: Sequence[dict[str, Any]], metric: str, path: Path, *,
                         title: str, ylabel: str, chance: float | None = None) -> Path:
    """One line per framework: ``metric`` mean ± std against training size; atomic PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    log = len(sizes) > 1 and max(sizes) / min(sizes) >= 8
    fig = Figure(figsize=(7.5, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, fw in enumerate(frameworks):
        pts = [r for r in rows if r["framework"] == fw and r[metric]["mean"] is not None]
        x = _x_positions([r["size"] for r in pts], j, len(frameworks), log)
        y = [r[metric]["mean"] for r in pts]
        err = [r[metric]["std"] or 0.0 for r in pts]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=4, label=framework_words(fw))
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1,
                   label=f"chance ({chance:.2f})")
    _axes_setup(ax, sizes, log)
    ax.set_ylabel(ylabel)
    low = min([0.0] + [r[metric]["mean"] - (r[metric]["std"] or 0.0) for r in rows
                       if r[metric]["mean"] is not None])
    ax.set_ylim(low - 0.05 if low < 0 else 0.0, 1.02)
    if low < 0:
        ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_class_f1(rows: Sequence[dict[str, Any]], classes: Sequence[str], path: Path) -> Path:
    """One panel per class: F1 mean ± std against training size, one line per framework."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frameworks = list(dict.fromkeys(r["framework"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    log = len(sizes) > 1 and max(sizes) / min(sizes) >= 8
    cols = min(3, max(len(classes), 1))
    nrows = -(-max(len(classes), 1) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * nrows + 0.8))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False, sharey=True)
    for i, name in enumerate(classes):
        ax = axes[i // cols][i % cols]
        for j, fw in enumerate(frameworks):
            pts = [r for r in rows if r["framework"] == fw
                   and (r["f1"].get(name) or {}).get("mean") is not None]
            x = _x_positions([r["size"] for r in pts], j, len(frameworks), log)
            ax.errorbar(x, [r["f1"][name]["mean"] for r in pts],
                        yerr=[r["f1"][name]["std"] or 0.0 for r in pts], marker="o",
                        capsize=3, label=framework_words(fw))
        _axes_setup(ax, sizes, log)
        ax.set_ylim(0.0, 1.02)
        ax.set_title(f"class {name}")
        ax.set_ylabel("F1 score")
    for i in range(len(classes), nrows * cols):
        axes[i // cols][i % cols].set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncols=min(len(labels), 2) or 1,
               fontsize="small")
    fig.suptitle("F1 score of each class against the number of labelled patients")
    fig.tight_layout(rect=(0, 0.08 + 0.02 * max(len(labels) - 2, 0), 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


# ---------------------------------------------------------------- document


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _run_info(run_dirs: Sequence[Path]) -> dict[str, Any]:
    for d in run_dirs:
        for path in [d / "run.json", *sorted(d.glob("run-shard*.json"))]:
            info = _read_json(path)
            if info:
                return info
    return {}


def _blocks(run_dirs: Sequence[Path], out: Path) -> list[_Block]:
    spec = load_spec(run_dirs[0])
    results = collect_results(run_dirs)
    rows = summarise(results)
    status = task_status(run_dirs)
    data = _read_json(run_dirs[0] / "data.json") or {}
    classes: list[str] = list(data.get("classes") or [])
    for r in rows:
        classes += [c for c in r["f1"] if c not in classes]

    b: list[_Block] = [_Block("h1", "Learning curves: classification from few labelled patients")]
    test_words = ("a fixed test set" if spec.test == "fixed" else
                  "the patients not used for training (a new random split each repetition)")
    b.append(_Block("p", (
        f"Each method was trained with {', '.join(map(str, spec.sizes))} labelled patients "
        f"per class, {spec.repetitions} times with a different random choice of patients, "
        f"and scored on {test_words}. Within a repetition every method saw exactly the same "
        "patients. Points show the mean over repetitions; bars show one standard deviation.")))
    b.append(_Block("p", (
        f"Tasks: {len(status.finished)} of {status.total} finished, {len(status.failed)} "
        f"failed, {len(status.missing)} not run yet.")))
    b.append(_Block("list", items=[f"{fw}: {framework_words(fw)}" for fw in spec.frameworks]))

    if rows:
        chance = 1.0 / len(classes) if classes else None
        b.append(_Block("h2", "Learning curves"))
        plots = [
            ("accuracy", "accuracy.png", "Accuracy against the number of labelled patients",
             "accuracy (share of test patients classified correctly)", chance),
            ("kappa", "kappa.png", "Cohen's kappa against the number of labelled patients",
             "Cohen's kappa (0 = chance, 1 = perfect)", None),
        ]
        for metric, name, title, ylabel, ch in plots:
            path = plot_learning_curves(rows, metric, out / name, title=title, ylabel=ylabel,
                                        chance=ch)
            b.append(_Block("image", title, path=path))
        if classes:
            path = plot_class_f1(rows, classes, out / "f1_per_class.png")
            b.append(_Block("image", "F1 score of each class", path=path))

        b.append(_Block("h2", "Results (mean ± standard deviation over repetitions)"))
        b.append(_Block("table", header=["method", "patients per class", "repetitions",
                                         *_METRIC_WORDS.values()],
                        items=[[r["framework"], str(r["size"]), str(r["repetitions"]),
                                *(_ms(r[m]) for m in _METRIC_WORDS)] for r in rows]))
        b.append(_Block("h2", "F1 score per class"))
        b.append(_Block("table", header=["method", "patients per class", *classes],
                        items=[[r["framework"], str(r["size"]),
                                *(_ms(r["f1"].get(c)) for c in classes)] for r in rows]))
    else:
        b.append(_Block("p", "No task has finished yet, so there is nothing to plot."))

    b += _data_blocks(data)
    if status.failed:
        b.append(_Block("h2", "Failed tasks"))
        b.append(_Block("list", items=[f"{k}: {e}" for k, e in status.failed.items()]))

    b.append(_Block("h2", "Settings"))
    b.append(_Block("code", json.dumps(spec.model_dump(mode="json"), indent=2)))
    info = _run_info(run_dirs)
    versions = info.get("versions") or {}
    b.append(_Block("h2", "Software"))
    if versions:
        b.append(_Block("table", header=["software", "version"],
                        items=[[k, str(v)] for k, v in versions.items()]))
    extra = [f"{k}: {info[k]}" for k in ("platform", "created", "command") if info.get(k)]
    extra.append("run folders: " + ", ".join(str(d) for d in run_dirs))
    b.append(_Block("list", items=extra))
    return b


def _data_blocks(data: dict[str, Any]) -> list[_Block]:
    if not data:
        return []
    classes = list(data.get("classes") or [])
    cases = data.get("cases_per_class") or {}
    patients = data.get("patients_per_class") or {}
    header = ["class", "cases", "patients"]
    fixed = data.get("fixed_test_cases_per_class")
    by_rep = data.get("test_cases_per_class_by_repetition") or {}
    if fixed:
        header.append("test cases (fixed set)")
    elif len({json.dumps(t, sort_keys=True) for t in by_rep.values()}) == 1:
        by_rep = dict(list(by_rep.items())[:1])
        header.append("test cases (each repetition)")
    else:
        header += [f"test cases, repetition {r}" for r in by_rep]
    items = []
    for c in classes:
        row = [c, str(cases.get(c, 0)), str(patients.get(c, 0))]
        if fixed:
            row.append(str(fixed.get(c, 0)))
        else:
            row += [str(t.get(c, 0)) for t in by_rep.values()]
        items.append(row)
    where = ("a fixed test set" if fixed else "random test sets drawn per repetition")
    return [_Block("h2", "Data"),
            _Block("p", f"{data.get('cases', 0)} labelled cases in {len(classes)} classes "
                        f"available for training; {where}."),
            _Block("table", header=header, items=items)]


# ---------------------------------------------------------------- rendering


def _markdown(blocks: Sequence[_Block], out: Path) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines: list[str] = []
    for b in blocks:
        if b.kind == "h1":
            lines += [f"# {b.text}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind == "p":
            lines += [b.text, ""]
        elif b.kind == "list":
            lines += [f"- {cell(i)}" for i in b.items] + [""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.items]
            lines.append("")
        elif b.kind == "image" and b.path is not None:
            lines += [f"![{b.text}]({b.path.relative_to(out).as_posix()})", ""]
        elif b.kind == "code":
            lines += ["```json", b.text, "```", ""]
    return "\n".join(lines)


_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:980px;
margin:2em auto;padding:0 1em;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f2f2f2}
img{max-width:100%;height:auto;display:block;margin:.8em 0}
pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.85em}
"""


def _html(blocks: Sequence[_Block]) -> str:
    e = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "segfew report")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "list":
            parts.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b.items) + "</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
                           for row in b.items)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "image" and b.path is not None:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            parts.append(f'<img alt="{e(b.text)}" src="data:image/png;base64,{data}">')
        elif b.kind == "code":
            parts.append(f"<pre><code>{e(b.text)}</code></pre>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dirs: Sequence[Path], out: Path | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` (PNGs beside it) and a self-contained ``report.html`` into ``out``.

    ``run_dirs``: one RUN_DIR, or the RUN_DIRs of several shards of one experiment (their
    results are merged). ``out`` defaults to ``<first RUN_DIR>/report``. The HTML embeds
    its images and style, so it can be mailed or archived as one file. Returns
    ``(report.md, report.html)``.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise ValueError("give at least one RUN_DIR")
    out = Path(out) if out is not None else dirs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    blocks = _blocks(dirs, out)
    md, page = out / "report.md", out / "report.html"
    write_text(md, _markdown(blocks, out))
    write_text(page, _html(blocks))
    return md, page
