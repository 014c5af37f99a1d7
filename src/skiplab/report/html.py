"""One self-contained HTML page: images embedded as base64 PNG, inline CSS, no scripts, no external assets —
it opens offline and reads on a phone (fluid images, tables that scroll sideways on narrow screens)."""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from skiplab.experiments.base import Claim, ExperimentSpec, Table
from skiplab.report.artifacts import RenderedFigure

CSS = """
:root { --fg: #1b1b1b; --muted: #555; --bg: #fff; --line: #ddd; --held: #00664d; --not: #a33c00; --code: #f4f4f4; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e8e8e8; --muted: #aaa; --bg: #141414; --line: #333; --held: #4cc9a4; --not: #ff9d5c; --code: #222; }
  img { background: #fff; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
main, header, footer { max-width: 1040px; margin: 0 auto; padding: 0 16px; }
header { padding-top: 24px; }
h1 { font-size: 1.7rem; margin: 0 0 4px; }
h2 { font-size: 1.35rem; margin: 40px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
.meta, figcaption, .test, .note { color: var(--muted); font-size: 0.9rem; }
.verdict { display: inline-block; min-width: 7.5em; text-align: center; font-weight: 600; font-size: 0.85rem;
           border-radius: 4px; padding: 1px 6px; margin-right: 6px; color: #fff; }
.verdict.held { background: var(--held); }
.verdict.not { background: var(--not); }
ul.claims { list-style: none; padding: 0; }
ul.claims li { margin: 10px 0; padding: 8px 10px; border-left: 4px solid var(--line); }
ul.claims li.held { border-color: var(--held); }
ul.claims li.not { border-color: var(--not); }
.evidence { font-size: 0.93rem; margin-top: 3px; }
figure { margin: 18px 0; }
figure img { width: 100%; height: auto; border: 1px solid var(--line); }
.table-wrap { overflow-x: auto; -webkit-overflow-scrolling: touch; margin: 12px 0; }
table { border-collapse: collapse; font-size: 0.88rem; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 8px; text-align: right; white-space: nowrap; }
th { position: sticky; top: 0; background: var(--bg); }
td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; color: var(--muted); font-size: 0.88rem; padding-bottom: 4px;
          white-space: normal; }
code { background: var(--code); padding: 2px 5px; border-radius: 3px; font-size: 0.88rem; word-break: break-all; }
nav table td { white-space: normal; }
footer { margin: 48px auto 32px; color: var(--muted); font-size: 0.85rem; }
.error { border-left: 4px solid var(--not); padding: 6px 10px; }
@media (max-width: 600px) { body { font-size: 15px; } h1 { font-size: 1.4rem; } }
"""


@dataclass
class Section:
    """One experiment's part of the page."""

    spec: ExperimentSpec
    result: Any
    figures: list[RenderedFigure]
    rerun: str
    reused: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None  # the experiment raised: no result, the section shows this instead


def fmt(value: Any) -> str:
    """Numbers for tables: 3 significant digits, scientific outside [1e-3, 1e4), an en dash for NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "–" if math.isnan(value) else ("∞" if value > 0 else "−∞")
    if value != 0 and not 1e-3 <= abs(value) < 1e4:
        return f"{value:.2e}"
    return f"{value:.3g}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(table: Table) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in table.columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(fmt(v))}</td>" for v in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{_e(table.caption)}</caption>" if table.caption else ""
    return f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _verdict(held: bool) -> str:
    return '<span class="verdict held">held</span>' if held else '<span class="verdict not">did not hold</span>'


def _claims(claims: Sequence[Claim]) -> str:
    if not claims:
        return '<p class="note">No claim could be checked with this configuration.</p>'
    items = []
    for c in claims:
        items.append(
            f'<li class="{"held" if c.held else "not"}">{_verdict(c.held)}{_e(c.statement)}'
            f'<div class="evidence">{_e(c.evidence)}</div>'
            + (f'<div class="test">Test: {_e(c.test)}</div>' if c.test else "") + "</li>")
    return '<ul class="claims">' + "".join(items) + "</ul>"


def _figure(f: RenderedFigure, title: str) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(title)}: {_e(f.spec.slug)}" loading="lazy">'
            f"<figcaption>{_e(f.spec.caption)}</figcaption></figure>")


def _section(s: Section) -> str:
    r = s.result
    parts = [f'<section id="{_e(s.spec.name)}"><h2>{_e(s.spec.title)}</h2>',
             f"<p><b>Question.</b> {_e(s.spec.question)}</p>",
             f"<p><b>Claim.</b> {_e(s.spec.claim)} <br><span class=\"meta\">{_e(s.spec.citation)}</span></p>"]
    if s.error is not None:
        parts.append(f'<p class="error"><b>This experiment failed:</b> <code>{_e(s.error)}</code></p>'
                     f"<p><b>Rerun.</b> <code>{_e(s.rerun)}</code></p></section>")
        return "\n".join(parts)
    parts += ["<h3>Verdicts</h3>", _claims(getattr(r, "claims", []))]
    parts += [_figure(f, s.spec.title) for f in s.figures]
    tables = getattr(r, "tables", [])
    if tables:
        parts.append("<h3>Numbers</h3>")
        parts += [_table(t) for t in tables]
    notes = list(getattr(r, "notes", [])) + s.notes
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{_e(n)}</li>' for n in notes) + "</ul>")
    wall = getattr(r, "wall_time_s", None)
    parts.append(f"<p><b>Rerun.</b> <code>{_e(s.rerun)}</code><br><span class=\"meta\">"
                 + (f"ran in {wall:.1f} s" if isinstance(wall, (int, float)) else "") + _e(budget(r))
                 + (" (reused a saved result)" if s.reused else "") + "</span></p></section>")
    return "\n".join(parts)


def budget(result: Any) -> str:
    """The training budget of a result and the measured training time of its nets (nets taken from the cache were
    timed where they were trained), e.g. "; budget 2500 iterations of batch 128 a net; nets trained in 41.2 min"."""
    cfg = getattr(result, "config", None)
    steps, batch = getattr(cfg, "steps", None), getattr(cfg, "batch_size", None)
    seconds = [getattr(n, "train_time_s", None) or getattr(n, "train_seconds", None) or 0.0
               for n in [*getattr(result, "runs", []), *getattr(result, "nets", [])]]
    out = f"; budget {steps} iterations of batch {batch} a net" if isinstance(steps, int) and batch else ""
    if any(seconds):
        out += f"; nets trained in {sum(seconds) / 60:.1f} min (sum over nets, one process each)"
    return out


def _summary(sections: Sequence[Section]) -> str:
    rows = []
    for s in sections:
        claims = getattr(s.result, "claims", [])
        status = "failed" if s.error is not None else f"{sum(c.held for c in claims)} of {len(claims)} held"
        rows.append(f'<tr><td><a href="#{_e(s.spec.name)}">{_e(s.spec.title)}</a></td><td>{status}</td></tr>')
    return ('<nav><div class="table-wrap"><table><thead><tr><th>experiment</th><th>claims</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table></div></nav>")


def render_page(sections: Sequence[Section], *, title: str = "skiplab: why skip connections work",
                subtitle: str = "", footer: str = "") -> str:
    """The whole page as a string (no I/O)."""
    body = "\n".join(_section(s) for s in sections)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{_e(title)}</h1><p class="meta">{_e(subtitle)}</p>{_summary(sections)}</header>
<main>
{body}
</main>
<footer>{_e(footer)}</footer>
</body>
</html>
"""
