"""A tiny document model, rendered to Markdown and to a standalone HTML page.

The report is built once as a list of blocks, so ``report.md`` and ``report.html``
always carry the same content. Block text is plain text: each renderer escapes it.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from typing import Mapping, Sequence, Union


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    """Plain text; ``lead`` (if any) is shown in bold before it."""

    text: str
    lead: str | None = None


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    """A figure written beside the document; ``name`` is its file name in the same folder."""

    name: str
    alt: str


@dataclass(frozen=True)
class Code:
    text: str
    language: str = ""


Block = Union[Heading, Paragraph, Bullets, Table, Image, Code]


# --- Markdown -------------------------------------------------------------------------


def _md_inline(text: str) -> str:
    # Only what would otherwise change the meaning; names like "lira-online" stay readable.
    return text.replace("\\", "\\\\").replace("*", "\\*").replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md_inline(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {_md_inline(block.text)}")
        elif isinstance(block, Paragraph):
            lead = f"**{_md_inline(block.lead)}** " if block.lead else ""
            parts.append(lead + _md_inline(block.text))
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {_md_inline(item)}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |",
                     "|" + "|".join("---" for _ in block.header) + "|"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            parts.append("\n".join(lines))
        elif isinstance(block, Image):
            parts.append(f"![{_md_cell(block.alt)}]({block.name})")
        elif isinstance(block, Code):
            parts.append(f"```{block.language}\n{block.text}\n```")
        else:  # pragma: no cover - the Block union is closed
            raise TypeError(f"unknown block {type(block).__name__}")
    return "\n\n".join(parts) + "\n"


# --- HTML -----------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.45; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
img { max-width: 100%; }
pre { background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }
"""


def to_html(blocks: Sequence[Block], title: str, images: Mapping[str, bytes] | None = None) -> str:
    """A standalone page; figures in ``images`` (file name -> PNG bytes) are embedded as base64,
    any other figure is linked by file name."""
    images = images or {}
    esc = html.escape
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{esc(block.text)}</h{level}>")
        elif isinstance(block, Paragraph):
            lead = f"<strong>{esc(block.lead)}</strong> " if block.lead else ""
            body.append(f"<p>{lead}{esc(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = images.get(block.name)
            src = ("data:image/png;base64," + base64.b64encode(data).decode("ascii")) if data else esc(block.name)
            body.append(f'<figure><img src="{src}" alt="{esc(block.alt)}"></figure>')
        elif isinstance(block, Code):
            body.append(f"<pre><code>{esc(block.text)}</code></pre>")
        else:  # pragma: no cover
            raise TypeError(f"unknown block {type(block).__name__}")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
