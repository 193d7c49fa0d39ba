"""reports/index.html: the whole report as one self-contained page (no network: styles, the sorting script and every
figure are inside the file), written by the report stage next to reports/README.md.

Order: the smoke-run warning (cpu, ci), provenance (profile, commit, seeds, models, data, N), Table 1 (the headline,
with the Identity / Blur / Oracle rows), whether any method removes opacity, evaluator competence, every other table
with the paper's numbers beside it, the figures, and which metric files were found. Click a column header to sort a
table (numbers by value, "—" last). Cells are the same text as the markdown tables (mean ± std over seeds and the
95 % interval where there is one).
"""
from __future__ import annotations

import base64
import html
import math
import re
import subprocess
from pathlib import Path
from typing import Any

from reports import tables as tabs
from reports.inputs import SMOKE_LINE, Inputs

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 0 24px 48px; color: #1d1d1f; }
h1 { font-size: 26px; margin: 24px 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin: 20px 0 6px; }
.smoke { background: #fff4ce; border: 1px solid #e0b400; padding: 10px 14px; margin: 12px 0; }
.meta { color: #444; } .meta li { margin: 2px 0; }
.wrap { overflow-x: auto; margin: 6px 0 12px; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f5f7; cursor: pointer; position: sticky; top: 0; }
th:first-child, td:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
tr.floor td { background: #f1f6ff; } tr.ceiling td { background: #effaf1; }
.note { color: #555; font-size: 13px; } code { background: #f2f2f2; padding: 0 3px; }
figure { margin: 12px 0 24px; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
nav a { margin-right: 12px; }
"""

# Click a header: sort by that column (numeric when every non-empty cell starts with a number; "—" goes last).
SORT_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute("data-dir") !== "asc";
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("data-dir"); });
      th.setAttribute("data-dir", asc ? "asc" : "desc");
      var key = function (r) { var c = r.cells[col]; var v = c.getAttribute("data-v");
        return v === null ? c.textContent : (v === "" ? null : parseFloat(v)); };
      rows.sort(function (a, b) { var x = key(a), y = key(b);
        if (x === null) return 1; if (y === null) return -1;
        if (typeof x === "number" && typeof y === "number") return asc ? x - y : y - x;
        return asc ? String(x).localeCompare(String(y)) : String(y).localeCompare(String(x)); });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""

FLOOR_ROWS = {"original", "identity", "blur"}
CEILING_ROWS = {"oracle"}


def inline(text: str) -> str:
    """The markdown the tables' notes use (`code`, **bold**, [text](link)) as HTML; everything else escaped."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', out)


def _sort_value(row: dict[str, Any], col: tabs.Column) -> str | None:
    v = row.get(col.key)
    if col.key in row.get("_text", {}) or col.fmt == "text":
        return None  # sorted as text
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return ""
    return "" if not math.isfinite(v) else repr(float(v))


def table_html(columns: list[tabs.Column], rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="note">no rows</p>'
    head = "".join(f"<th>{html.escape(c.header)}</th>" for c in columns)
    body = []
    for r in rows:
        model = str(r.get("model", "")).lower()
        cls = ' class="floor"' if model in FLOOR_ROWS else ' class="ceiling"' if model in CEILING_ROWS else ""
        cells = []
        for c in columns:
            v = _sort_value(r, c)
            attr = "" if v is None else f' data-v="{v}"'
            cells.append(f"<td{attr}>{inline(tabs.cell(r, c))}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="wrap"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def table_section(t: tabs.Table, level: int = 2) -> str:
    parts = [f'<h{level} id="{t.name}">{html.escape(t.title)}</h{level}>',
             '<ul class="note">' + "".join(f"<li>{inline(n)}</li>" for n in t.notes) + "</ul>",
             "<h3>This run</h3>", table_html(t.columns, t.rows)]
    if t.paper_rows or t.paper_note:
        parts.append("<h3>Paper (published numbers)</h3>")
        if t.paper_note:
            parts.append(f'<p class="note">{inline(t.paper_note)}</p>')
        if t.paper_rows:
            parts.append(table_html(t.paper_columns, t.paper_rows))
    return "\n".join(parts)


def figure_html(name: str, path: Path, caption: str) -> str:
    if not path.is_file():
        return f'<p class="note">{html.escape(name)}: not written</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption><b>{html.escape(name)}</b>: {inline(caption)}</figcaption></figure>")


def commit_of(root: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    if out.returncode != 0:
        return "unknown (not a git checkout)"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def render_page(inp: Inputs, tables: list[tabs.Table], figures: dict[str, Path], captions: dict[str, str],
                coverage: list[str], problems: list[str]) -> str:
    by_name = {t.name: t for t in tables}
    first = [n for n in ("table1", "competence") if n in by_name]
    rest = [t for t in tables if t.name not in first]
    nav = " ".join(f'<a href="#{t.name}">{html.escape(t.title.split(":")[0])}</a>'
                   for t in [by_name[n] for n in first] + rest)
    ev = inp.params.eval
    meta = [f"Profile <code>{html.escape(inp.profile)}</code>; commit {html.escape(commit_of(inp.root))}; "
            f"seeds {html.escape(str(inp.seeds()))}; models: "
            + ", ".join(f"<code>{html.escape(m)}</code>" for m in inp.models),
            inline(tabs.data_description(inp)),
            f"Evaluation cap: {ev.max_images or 'all'} images per domain of each evaluation set; each table states "
            "its N, seeds and feature space.",
            *[inline(line) for line in tabs.budget_notes(inp)],
            *[inline(line) for line in tabs.fid_notes(inp)[:-1]],
            "Written by <code>cxrbench report</code> from the metric files under <code>metrics/</code>. Rows with a "
            "blue background are floors (Original / Identity: do nothing; Blur), green ones the ceiling (Oracle: "
            "the true clean image, DRR benchmark only)."]
    body = ["<h1>cxrbench report</h1>"]
    if inp.is_smoke():
        body.append(f'<div class="smoke">{inline(SMOKE_LINE)}</div>')
    body += ['<ul class="meta">' + "".join(f"<li>{m}</li>" for m in meta) + "</ul>", f"<nav>{nav}</nav>"]
    body += [table_section(by_name[n]) for n in first[:1]]
    body += ['<h2 id="removal">Does any method remove opacity? (paired DRR metrics vs the Identity floor)</h2>',
             "<ul>" + "".join(f"<li>{inline(s)}</li>" for s in tabs.removal_sentences(inp)) + "</ul>"]
    body += [table_section(by_name[n]) for n in first[1:]]
    body += [table_section(t) for t in rest]
    body.append('<h2 id="figures">Figures</h2>')
    body += [figure_html(name, path, captions.get(name, "")) for name, path in figures.items()]
    body += ['<h2 id="coverage">Which metric files this report found</h2>',
             "".join(f"<p class='note'>{inline(line)}</p>" for line in coverage if not line.startswith("|"))]
    rows = [line for line in coverage if line.startswith("|") and not set(line) <= set("|-: ")]
    if rows:
        cells = [[c.strip() for c in line.strip("|").split("|")] for line in rows]
        body.append('<div class="wrap"><table><thead><tr>' + "".join(f"<th>{inline(c)}</th>" for c in cells[0])
                    + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r)
                                                     + "</tr>" for r in cells[1:]) + "</tbody></table></div>")
    if problems:
        body += ["<h2>Problems while building this report</h2>",
                 "<ul>" + "".join(f"<li>{inline(p)}</li>" for p in problems) + "</ul>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>cxrbench report ({html.escape(inp.profile)})</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + f"\n<script>{SORT_JS}</script>\n</body></html>\n")
