"""The report's two renderings of one list of blocks: Markdown (PNGs beside it) and one
self-contained HTML page (images and style embedded), so the two always say the same."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Block", "html_page", "markdown"]


@dataclass
class Block:
    """One piece of the report, rendered alike to Markdown and HTML."""

    kind: str  # "h1" | "h2" | "p" | "banner" | "list" | "table" | "image" | "code" (folded)
    text: str = ""
    items: Sequence[Any] = ()
    header: Sequence[str] = ()
    path: Path | None = None



def markdown(blocks: Sequence[Block], out: Path) -> str:
    """The blocks as Markdown; images are linked relative to ``out``."""
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
        elif b.kind == "banner":
            lines += [f"> **{b.text}**", ""]
        elif b.kind == "list":
            lines += [f"- {cell(i)}" for i in b.items] + [""]
        elif b.kind == "table":
            lines.append("| " + " | ".join(cell(h) for h in b.header) + " |")
            lines.append("|" + "|".join("---" for _ in b.header) + "|")
            lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in b.items]
            lines.append("")
        elif b.kind == "image" and b.path is not None:
            lines += [f"![{b.text}]({b.path.relative_to(out).as_posix()})", ""]
        elif b.kind == "code":  # collapsed: GitHub and most viewers fold <details>
            summary = b.header[0] if b.header else "details"
            lines += [f"<details><summary>{summary}</summary>", "", "```json", b.text, "```",
                      "", "</details>", ""]
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
.banner{background:#fdecea;border:2px solid #c62828;color:#8e0000;padding:.8em 1em}
"""


def html_page(blocks: Sequence[Block]) -> str:
    """The blocks as one HTML page with its images and style embedded."""
    e = html.escape
    title = next((b.text for b in blocks if b.kind == "h1"), "segfew report")
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2"):
            parts.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "banner":
            parts.append(f'<p class="banner"><strong>{e(b.text)}</strong></p>')
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
            summary = e(b.header[0]) if b.header else "details"
            parts.append(f"<details><summary>{summary}</summary>"
                         f"<pre><code>{e(b.text)}</code></pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
