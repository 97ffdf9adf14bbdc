"""``reports/index.html``: one static page over every branch's results, built from whatever the pipeline wrote.

Nothing is registered by hand: the page collects
- every ``metrics/**/*.json`` into one overview table (and links each file),
- every ``reports/*.md`` (rendered from Markdown, tables and figures included),
- every model card ``evaluation/*/MODEL_CARD.md``,
- every dvclive training history ``plots/training/<run>/**/*.tsv`` as small inline SVG charts,
- every other plot data file under ``plots/`` (confusion pairs, ROC points, …) as a link,
- every figure under ``reports/figures/`` that no report shows, as a gallery,
so a new task's report, metrics and plots appear on the next ``dvc repro`` without touching this module.

The page needs no server and no network: CSS and charts are inline, images are referenced relative to the
page (they live beside it in ``reports/figures/``) or, with ``embed_images``, inlined as data URIs for a
single-file hand-out. The output is deterministic (no timestamps) so an unchanged pipeline gives an unchanged
file in git.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import mimetypes
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".svg", ".gif", ".webp"}
PLOT_DATA_SUFFIXES = {".csv", ".tsv", ".json"}
# preferred columns of the overview table, in order; any other top-level number of a metrics file follows
PREFERRED_METRICS = ["n", "accuracy", "balanced_accuracy", "macro_precision", "macro_sensitivity",
                     "macro_specificity", "macro_f1", "auc", "roc_auc", "top1", "top5", "top_1", "top_5"]
HIDDEN_METRICS = {"best_epoch", "epochs_run"}
SERIES_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f23;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:14px 28px}header h1{margin:0;font-size:1.5em}
header p{margin:4px 0 0;color:#c9d1d9;font-size:.9em}
nav{background:#fff;border-bottom:1px solid #d0d7de;padding:8px 28px;position:sticky;top:0;z-index:1}
nav a{margin-right:14px;color:#0969da;text-decoration:none;font-size:.92em}
main{max-width:1100px;margin:0 auto;padding:12px 28px 40px}
section.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:8px 22px 16px;margin:18px 0}
table{border-collapse:collapse;margin:10px 0;font-size:.9em}
th,td{border:1px solid #d0d7de;padding:3px 9px}th{background:#f0f3f6}
tbody tr:nth-child(even){background:#fafbfc}
img{max-width:100%;height:auto}code{background:#eff1f3;padding:1px 4px;border-radius:4px;font-size:.9em}
pre{background:#f6f8fa;padding:8px;overflow:auto}blockquote{border-left:4px solid #d29922;margin:8px 0;
padding:4px 12px;background:#fff8c5}
.charts{display:flex;flex-wrap:wrap;gap:14px}.charts figure{margin:0}
figcaption{font-size:.85em;color:#57606a;text-align:center}
.muted{color:#57606a;font-size:.9em}.scroll{overflow-x:auto}td.num{text-align:right}
header code{background:#3d444d;color:#fff}.synthetic{color:#9a6700;font-weight:600}
"""


# --------------------------------------------------------------------------------------------- markdown
def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table")


def _is_relative_url(url: str) -> bool:
    return bool(url) and not re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|/|#)", url)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def markdown_to_html(text: str, source: Path, out_dir: Path, embed_images: bool = False,
                     seen_images: set[Path] | None = None) -> str:
    """Render Markdown; relative links and images are re-pointed from `source`'s folder to `out_dir`."""
    md = _markdown()
    tokens = md.parse(text)
    for tok in tokens:
        for child in tok.children or []:
            attr = "src" if child.type == "image" else "href" if child.type == "link_open" else None
            if attr is None:
                continue
            url = str(child.attrGet(attr) or "")
            if not _is_relative_url(url):
                continue
            target = (source.parent / url).resolve()
            if child.type == "image" and seen_images is not None:
                seen_images.add(target)
            if child.type == "image" and embed_images and target.is_file():
                child.attrSet(attr, _data_uri(target))
            else:
                child.attrSet(attr, _rel(target, out_dir))
    return md.renderer.render(tokens, md.options, {})


# ---------------------------------------------------------------------------------------------- metrics
def collect_metrics(metrics_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every metrics JSON (a dict at top level) under `metrics_dir`, sorted by path."""
    found = []
    for path in sorted(metrics_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: skipped in the HTML report (not valid JSON: %s)", path, exc)
            continue
        if isinstance(data, dict):
            found.append((path, data))
    return found


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def metrics_table(entries: Sequence[tuple[Path, dict[str, Any]]], out_dir: Path, metrics_dir: Path,
                  synthetic_datasets: Iterable[str] = ()) -> str:
    """One table per task folder of metrics/: a row per top-level number, a column per model (file)."""
    if not entries:
        return "<p class='muted'>No metrics yet under <code>metrics/</code>; run <code>dvc repro</code>.</p>"
    synthetic_datasets = set(synthetic_datasets)
    groups: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, d in entries:
        groups.setdefault(path.parent.relative_to(metrics_dir).as_posix(), []).append((path, d))
    parts = []
    for task, items in groups.items():
        numeric = {k for _, d in items for k, v in d.items() if _number(v)} - HIDDEN_METRICS
        keys = [k for k in PREFERRED_METRICS if k in numeric] + sorted(numeric - set(PREFERRED_METRICS))
        head = "<th>metric</th>" + "".join(f"<th>{html.escape(str(d.get('model', path.stem)))}</th>"
                                            for path, d in items)

        def data_cell(d: dict[str, Any]) -> str:
            dataset = str(d.get("dataset", ""))
            synthetic = d.get("synthetic") is True or dataset in synthetic_datasets
            split = f" / {d['split']}" if d.get("split") else ""
            return (html.escape(dataset + split)
                    + (" <span class='synthetic'>(synthetic)</span>" if synthetic else ""))

        rows = ["<tr><td>data</td>" + "".join(f"<td>{data_cell(d)}</td>" for _, d in items) + "</tr>"]
        for k in keys:
            cells = []
            for _, d in items:
                v = d.get(k)
                cells.append("" if not _number(v) else (f"{v:.4f}" if isinstance(v, float) else str(v)))
            rows.append(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td class='num'>{c}</td>" for c in cells)
                        + "</tr>")
        links = "".join(f"<td><a href='{html.escape(_rel(path, out_dir))}'>{html.escape(path.name)}</a></td>"
                        for path, _ in items)
        rows.append(f"<tr><td>file</td>{links}</tr>")
        parts.append(f"<h3>{html.escape(task)}</h3><div class='scroll'><table><thead><tr>{head}</tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table></div>")
    return "".join(parts)


def _rel(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()


# ----------------------------------------------------------------------------------------------- charts
def read_tsv_series(path: Path) -> tuple[str, list[tuple[float, float]]]:
    """(value column name, [(step, value)]) of a dvclive TSV (header `step<TAB>name`, maybe a timestamp)."""
    lines = [ln.rstrip("\n").split("\t") for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        return path.stem, []
    header = lines[0]
    value_col = next((i for i, h in enumerate(header) if h not in ("step", "timestamp")), len(header) - 1)
    step_col = header.index("step") if "step" in header else None
    points = []
    for n, row in enumerate(lines[1:]):
        try:
            x = float(row[step_col]) if step_col is not None else float(n)
            y = float(row[value_col])
        except (ValueError, IndexError):
            continue
        if math.isfinite(y):
            points.append((x, y))
    return header[value_col], points


def svg_line_chart(series: dict[str, list[tuple[float, float]]], title: str, width: int = 330,
                   height: int = 220) -> str:
    """A small self-contained SVG line chart (one line per series, legend, min/max ticks)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    left, right, top, bottom = 52, 10, 36, 34
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = width - left - right, height - top - bottom
    sx = lambda x: left + (x - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda y: top + (1 - (y - y0) / (y1 - y0)) * ph  # noqa: E731
    fmt = lambda v: f"{v:.3g}"  # noqa: E731
    out = [f"<svg width='{width}' height='{height}' role='img' "
           f"aria-label='{html.escape(title)}' style='background:#fff;border:1px solid #d0d7de'>",
           f"<text x='{width / 2}' y='15' text-anchor='middle' font-size='12' font-weight='600'>"
           f"{html.escape(title)}</text>",
           f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#d0d7de'/>"]
    for v in (y0, y1):
        out.append(f"<text x='{left - 4}' y='{sy(v) + 4:.1f}' text-anchor='end' font-size='10'>{fmt(v)}</text>")
    for v in (x0, x1):
        out.append(f"<text x='{sx(v):.1f}' y='{top + ph + 13}' text-anchor='middle' font-size='10'>{fmt(v)}</text>")
    out.append(f"<text x='{left + pw / 2}' y='{height - 4}' text-anchor='middle' font-size='10' "
               "fill='#57606a'>step</text>")
    for i, (name, s) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.8' points='{path}'/>")
        if len(s) == 1:
            out.append(f"<circle cx='{sx(s[0][0]):.1f}' cy='{sy(s[0][1]):.1f}' r='3' fill='{colour}'/>")
        if len(series) > 1 or name:  # legend: one row under the title
            lx = left + 4 + 70 * i
            out.append(f"<line x1='{lx}' y1='{top - 6}' x2='{lx + 14}' y2='{top - 6}' stroke='{colour}' "
                       f"stroke-width='2'/><text x='{lx + 17}' y='{top - 2}' font-size='10'>{html.escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def training_charts(training_dir: Path) -> list[tuple[str, list[str]]]:
    """[(run, [svg, ...])] for each dvclive run directory: one chart per metric, one line per split."""
    runs = []
    if not training_dir.is_dir():
        return runs
    for run_dir in sorted(d for d in training_dir.iterdir() if d.is_dir()):
        by_metric: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for tsv in sorted(run_dir.rglob("*.tsv")):
            name, points = read_tsv_series(tsv)
            rel_parent = tsv.parent.relative_to(run_dir).as_posix()
            split = "" if rel_parent in ("plots/metrics", ".") else tsv.parent.name
            by_metric.setdefault(tsv.stem, {})[split] = points
        charts = [svg_line_chart(series, f"{metric}") for metric, series in sorted(by_metric.items())]
        charts = [c for c in charts if c]
        if charts:
            runs.append((run_dir.name, charts))
    return runs


# ------------------------------------------------------------------------------------------------- page
def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _title_of(markdown: str, fallback: str) -> str:
    m = re.search(r"^#\s+(.+)$", markdown, flags=re.M)
    return m.group(1).strip() if m else fallback


def build_html_report(out_path: str | Path = "reports/index.html", reports_dir: str | Path = "reports",
                      metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots",
                      evaluation_dir: str | Path = "evaluation", title: str = "genediag results",
                      synthetic_datasets: Iterable[str] = (), embed_images: bool = False) -> dict[str, int]:
    """Write the page; returns counts of what it collected (reports, metrics files, model cards, charts, …)."""
    out_path = Path(out_path)
    out_dir = out_path.parent
    reports_dir, metrics_dir, plots_dir, evaluation_dir = map(Path, (reports_dir, metrics_dir, plots_dir,
                                                                     evaluation_dir))
    synthetic_datasets = sorted(set(synthetic_datasets))
    seen_images: set[Path] = set()
    sections: list[tuple[str, str, str]] = []  # (id, nav label, html)

    metrics = collect_metrics(metrics_dir)
    note = ""
    if synthetic_datasets:
        note = ("<p class='synthetic'>Columns marked synthetic were measured on the embedded synthetic cohort, "
                "not on patient data.</p>")
    sections.append(("metrics", "Metrics", "<h2>Metrics, every task and model</h2>" + note
                     + metrics_table(metrics, out_dir, metrics_dir, synthetic_datasets)
                     + "<p class='muted'>Compare commits with <code>dvc metrics diff</code>; interactive plots "
                       "with <code>dvc plots show</code> / <code>dvc plots diff</code>.</p>"))

    md_reports = sorted(p for p in reports_dir.glob("*.md") if p.resolve() != out_path.resolve())
    for md_path in md_reports:
        text = md_path.read_text()
        body = markdown_to_html(text, md_path, out_dir, embed_images, seen_images)
        sections.append((f"report-{_slug(md_path.stem)}", _title_of(text, md_path.stem),
                         body + f"<p class='muted'>Source: <code>{html.escape(md_path.as_posix())}</code></p>"))

    charts = training_charts(plots_dir / "training")
    if charts:
        parts = ["<h2>Training curves</h2><p class='muted'>From the dvclive logs in <code>plots/training/</code> "
                 "(validation curves are what early stopping watched).</p>"]
        for run, svgs in charts:
            parts.append(f"<h3>{html.escape(run)}</h3><div class='charts'>"
                         + "".join(f"<figure>{s}</figure>" for s in svgs) + "</div>")
        sections.append(("training", "Training curves", "".join(parts)))

    cards = sorted(evaluation_dir.glob("*/MODEL_CARD.md"))
    if cards:
        parts = ["<h2>Model cards</h2>"]
        for card in cards:
            text = card.read_text()
            parts.append(f"<details><summary><b>{html.escape(_title_of(text, card.parent.name))}</b></summary>"
                         + markdown_to_html(text, card, out_dir, embed_images, seen_images) + "</details>")
        sections.append(("model-cards", "Model cards", "".join(parts)))

    data_files = sorted(p for p in plots_dir.rglob("*") if p.is_file() and p.suffix in PLOT_DATA_SUFFIXES
                        and not (plots_dir / "training") in p.parents)
    if data_files:
        items = "".join(f"<li><a href='{html.escape(_rel(p, out_dir))}'>"
                        f"{html.escape(p.as_posix())}</a></li>" for p in data_files)
        sections.append(("plot-data", "Plot data", "<h2>Plot data</h2><p class='muted'>Interactive versions: "
                         "<code>dvc plots show</code> renders these with DVC's templates.</p><ul>" + items + "</ul>"))

    figures = sorted(p for p in (reports_dir / "figures").rglob("*")
                     if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.resolve() not in seen_images)
    if figures:
        parts = ["<h2>Other figures</h2><div class='charts'>"]
        for fig in figures:
            src = _data_uri(fig) if embed_images else _rel(fig, out_dir)
            parts.append(f"<figure><img src='{html.escape(src)}' alt='{html.escape(fig.name)}' style='max-width:480px'>"
                         f"<figcaption>{html.escape(fig.relative_to(reports_dir).as_posix())}</figcaption></figure>")
        sections.append(("figures", "Other figures", "".join(parts) + "</div>"))

    nav = "".join(f"<a href='#{sid}'>{html.escape(label)}</a>" for sid, label, _ in sections)
    body = "".join(f"<section class='card' id='{sid}'>{content}</section>" for sid, _, content in sections)
    subtitle = "Built by the <code>report_html</code> stage from reports/, metrics/, plots/ and evaluation/."
    if synthetic_datasets:
        subtitle += (f" <b>Synthetic:</b> dataset(s) {', '.join(synthetic_datasets)} come from the embedded "
                     "synthetic cohort.")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1><p>{subtitle}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path.write_text(page)
    counts = {"reports": len(md_reports), "metrics_files": len(metrics), "model_cards": len(cards),
              "training_runs": len(charts), "plot_data_files": len(data_files), "other_figures": len(figures)}
    log.info("wrote %s: %s", out_path, counts)
    return counts
