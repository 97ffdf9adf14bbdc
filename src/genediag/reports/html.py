"""``reports/index.html``: one static page over every branch's results, built from whatever the pipeline wrote.

The page reads top-down the way a reviewer asks:

1. ``id="summary"`` — what this commit shows: per branch, the models as columns, the headline metrics with their
   95 % intervals, the papers' published figures beside ours (marked "their data") and a synthetic/real badge
   (:mod:`genediag.reports.summary`);
2. figures — per branch the report figures (confusion heat maps, ROC, examples), then inline reliability diagrams
   and referral curves drawn from ``plots/<branch>/reliability`` and ``plots/<branch>/referral``, then the dvclive
   training curves;
3. every ``reports/*.md`` rendered (tables and figures in context);
4. collapsed: the raw per-file metrics tables, the model cards ``evaluation/**/MODEL_CARD.md``, the plot data.

Nothing is registered by hand, so a new run appears on the next ``dvc repro``. The page needs no server and no
network: CSS and charts are inline, images are referenced relative to the page or, with ``embed_images``, inlined as
data URIs. The output is deterministic (no timestamps) so an unchanged pipeline gives an unchanged file in git.
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
.badge{display:inline-block;border-radius:10px;padding:0 7px;font-size:.8em;font-weight:600}
.badge.synthetic{background:#fff8c5;color:#9a6700;border:1px solid #d4a72c}
.badge.real{background:#dafbe1;color:#1a7f37;border:1px solid #4ac26b}
.badge.unknown{background:#eaeef2;color:#57606a;border:1px solid #afb8c1}
td.pub{color:#57606a;font-style:italic}#summary table{font-size:.88em}
.thumbs figure{width:300px}.thumbs img{max-height:260px;object-fit:contain}
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


def metrics_table(entries: Sequence[tuple[Path, dict[str, Any]]], out_dir: Path, metrics_dir: Path) -> str:
    """One table per task folder of metrics/: a row per top-level number, a column per model (file)."""
    if not entries:
        return "<p class='muted'>No metrics yet under <code>metrics/</code>; run <code>dvc repro</code>.</p>"
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
            synthetic = d.get("synthetic") is True
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
                   height: int = 220, x_label: str = "step", fixed: tuple[float, float, float, float] | None = None,
                   dashed: Sequence[str] = ()) -> str:
    """A small self-contained SVG line chart (one line per series, legend, min/max ticks)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    left, right, top, bottom = 52, 10, 36, 34
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if fixed is not None:
        x0, x1, y0, y1 = fixed
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
               f"fill='#57606a'>{html.escape(x_label)}</text>")
    for i, (name, s) in enumerate(series.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        dash = " stroke-dasharray='4 3'" if name in dashed else ""
        out.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.8'{dash} points='{path}'/>")
        if len(s) == 1:
            out.append(f"<circle cx='{sx(s[0][0]):.1f}' cy='{sy(s[0][1]):.1f}' r='3' fill='{colour}'/>")
        if len(series) > 1 or name:  # legend: one row under the title
            lx = left + 4 + 90 * i
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


def summary_html(groups: Sequence[Any], out_dir: Path, report_anchor: dict[str, str]) -> str:
    """The first screen: a table per branch group, models as columns, headline metrics with their 95 % CIs."""
    from genediag.reports import summary as S

    if not groups:
        return ("<h2>Summary</h2><p class='muted'>No metrics yet under <code>metrics/</code>; run "
                "<code>make repro</code> (or <code>dvc repro</code>).</p>")
    parts = ["<h2>Summary: what this commit shows</h2>",
             "<p class='muted'>Test split; each cell is the point estimate with its 95 % interval from a bootstrap "
             "over patients (people, for faces). Published figures come from the papers' own private data: they are "
             "context, not a comparison. Compare two commits with <code>python -m genediag compare A B</code>.</p>"]
    for g in groups:
        cols = g.columns
        head = "<th></th>" + "".join(f"<th>{html.escape(S.column_header(c))}</th>" for c in cols)
        badge = lambda c: f"<span class='badge {S.synthetic_badge(c)}'>{S.synthetic_badge(c)}</span>"  # noqa: E731
        rows = ["<tr><td>data</td>" + "".join(f"<td>{html.escape(str(c.data.get('dataset', '—')))} {badge(c)}</td>"
                                              for c in cols) + "</tr>",
                "<tr><td>test set</td>" + "".join(f"<td class='num'>{html.escape(S.n_text(c))}</td>" for c in cols)
                + "</tr>"]
        for key, label in g.rows():
            rows.append(f"<tr><td>{html.escape(label)}</td>" + "".join(
                f"<td class='num'>{html.escape(S.fmt_ci(c.value(key), c.ci(key)))}</td>" for c in cols) + "</tr>")
            pub = [S.published_value(c, key) for c in cols]
            if any(v is not None for v in pub):
                rows.append(f"<tr><td class='pub'>{html.escape(label)}, published (their data)</td>" + "".join(
                    f"<td class='num pub'>{'—' if v is None else f'{v:.3f}'}</td>" for v in pub) + "</tr>")
        sd = [c.seed_sd(g.rows()[0][0]) if g.rows() else None for c in cols]
        if any(sd):
            rows.append(f"<tr><td>{html.escape(g.rows()[0][1])}: sd over seeds</td>" + "".join(
                f"<td class='num'>{'—' if v is None else f'{v[0]:.3f} ({v[1]} seeds)'}</td>" for v in sd) + "</tr>")
        links = "".join(f"<a href='{html.escape(_rel(c.path, out_dir))}'>{html.escape(c.path.name)}</a> "
                        for c in cols)
        more = report_anchor.get(g.branch)
        parts.append(f"<h3>{html.escape(g.title)}</h3><div class='scroll'><table><thead><tr>{head}</tr></thead>"
                     f"<tbody>{''.join(rows)}</tbody></table></div><p class='muted'>"
                     + (f"<a href='#{more}'>Full report ↓</a> · " if more else "") + f"files: {links}</p>")
    return "".join(parts)


def _read_csv_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _points(rows: list[dict[str, str]], x: str, y: str) -> list[tuple[float, float]]:
    out = []
    for r in rows:
        try:
            px, py = float(r[x]), float(r[y])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(px) and math.isfinite(py):
            out.append((px, py))
    return sorted(out)


def evidence_charts(plots_dir: Path, branch: str) -> list[tuple[str, str]]:
    """(run, svg) reliability diagrams and referral curves of a branch, from its plot data files."""
    charts = []
    for path in sorted((plots_dir / branch / "reliability").glob("*.csv")):
        rows = _read_csv_rows(path)
        series = {"ideal": [(0.0, 0.0), (1.0, 1.0)]}
        for cal, name in (("none", "uncalibrated"), ("temperature", "temperature")):
            pts = _points([r for r in rows if r.get("calibration") == cal], "confidence", "accuracy")
            if pts:
                series[name] = pts
        if len(series) > 1:
            charts.append((path.stem, svg_line_chart(series, f"reliability: {path.stem}", x_label="confidence",
                                                     fixed=(0.0, 1.0, 0.0, 1.0), dashed=("ideal",))))
    for run_dir in sorted(d for d in (plots_dir / branch / "referral").glob("*") if d.is_dir()):
        series = {}
        for name in ("max_probability", "mc_dropout"):
            if (run_dir / f"{name}.csv").is_file():
                pts = _points(_read_csv_rows(run_dir / f"{name}.csv"), "referred_fraction", "accuracy")
                if pts:
                    series[name.replace("_", " ")] = pts
        if series:
            charts.append((run_dir.name, svg_line_chart(series, f"referral: {run_dir.name}",
                                                        x_label="share referred to a human (accuracy of the rest)")))
    return charts


def branch_figures(reports_dir: Path, branch: str) -> list[Path]:
    """The report figures of a branch: ``reports/figures/<branch>/`` (+ the karyotyping example)."""
    figs = sorted(p for p in (reports_dir / "figures" / branch).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if branch == "karyotyping" and (reports_dir / "figures" / "karyotyping_example.png").is_file():
        figs.append(reports_dir / "figures" / "karyotyping_example.png")
    return figs


def _figure(path: Path, out_dir: Path, embed: bool, caption: str) -> str:
    src = _data_uri(path) if embed else _rel(path, out_dir)
    link = src if not embed else ""
    img = f"<img src='{html.escape(src)}' alt='{html.escape(caption)}' loading='lazy'>"
    return (f"<figure>{f'<a href={chr(39)}{html.escape(link)}{chr(39)}>{img}</a>' if link else img}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def build_html_report(out_path: str | Path = "reports/index.html", reports_dir: str | Path = "reports",
                      metrics_dir: str | Path = "metrics", plots_dir: str | Path = "plots",
                      evaluation_dir: str | Path = "evaluation", title: str = "genediag results",
                      embed_images: bool = False) -> dict[str, int]:
    """Write the page; returns counts of what it collected (summary tables, reports, metrics files, charts, …)."""
    from genediag.reports import summary as S

    out_path = Path(out_path)
    out_dir = out_path.parent
    reports_dir, metrics_dir, plots_dir, evaluation_dir = map(Path, (reports_dir, metrics_dir, plots_dir,
                                                                     evaluation_dir))
    seen_images: set[Path] = set()
    groups = S.collect(metrics_dir)
    md_reports = sorted(p for p in reports_dir.glob("*.md") if p.resolve() != out_path.resolve())
    report_of = {"chromosomes": "chromosomes", "karyotyping": "chromosomes", "karyograms": "karyograms",
                 "faces": "faces"}
    anchors = {b: f"report-{_slug(r)}" for b, r in report_of.items() if (reports_dir / f"{r}.md").is_file()}
    sections: list[tuple[str, str, str]] = [("summary", "Summary", summary_html(groups, out_dir, anchors))]

    # figures first: per branch, the report figures, then reliability and referral charts
    fig_parts, n_figures, n_evidence = [], 0, 0
    for branch, label in S.BRANCHES.items():
        figs = branch_figures(reports_dir, branch)
        charts = evidence_charts(plots_dir, branch)
        if not figs and not charts:
            continue
        fig_parts.append(f"<h3>{html.escape(label)}</h3>")
        if figs:
            fig_parts.append("<div class='charts thumbs'>" + "".join(
                _figure(f, out_dir, embed_images, f.stem.replace("_", " ")) for f in figs) + "</div>")
        if charts:
            fig_parts.append("<p class='muted'>Reliability (confidence vs accuracy per bin, before and after the "
                             "validation-fitted temperature) and referral (accuracy of the cases kept when the least "
                             "confident are referred to a human).</p><div class='charts'>"
                             + "".join(f"<figure>{svg}</figure>" for _, svg in charts) + "</div>")
        n_figures += len(figs)
        n_evidence += len(charts)
    synthetic_figs = [p for p in sorted((reports_dir / "figures").glob("synthetic_*.png"))]
    if synthetic_figs:
        fig_parts.append("<h3>The synthetic cohort</h3><div class='charts thumbs'>" + "".join(
            _figure(f, out_dir, embed_images, f"{f.stem.replace('_', ' ')} (synthetic)") for f in synthetic_figs)
                         + "</div>")
    if fig_parts:
        sections.append(("figures", "Figures", "<h2>Figures</h2>" + "".join(fig_parts)))

    charts = training_charts(plots_dir / "training")
    if charts:
        parts = ["<h2>Training curves</h2><p class='muted'>From the dvclive logs in <code>plots/training/</code> "
                 "(validation curves are what early stopping watched).</p>"]
        for run, svgs in charts:
            parts.append(f"<details><summary>{html.escape(run)}</summary><div class='charts'>"
                         + "".join(f"<figure>{s}</figure>" for s in svgs) + "</div></details>")
        sections.append(("training", "Training curves", "".join(parts)))

    for md_path in md_reports:
        text = md_path.read_text()
        body = markdown_to_html(text, md_path, out_dir, embed_images, seen_images)
        sections.append((f"report-{_slug(md_path.stem)}", _title_of(text, md_path.stem),
                         body + f"<p class='muted'>Source: <code>{html.escape(md_path.as_posix())}</code></p>"))

    metrics = collect_metrics(metrics_dir)
    sections.append(("metrics", "Every metrics file", "<h2>Every metrics file</h2><details><summary>One table per "
                     "folder of <code>metrics/</code> (raw numbers, no intervals)</summary>"
                     + metrics_table(metrics, out_dir, metrics_dir)
                     + "<p class='muted'>Compare commits with <code>python -m genediag compare A B</code> (with "
                       "intervals) or <code>dvc metrics diff</code>.</p></details>"))

    cards = sorted(evaluation_dir.rglob("MODEL_CARD.md"))
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
        sections.append(("plot-data", "Plot data", "<h2>Plot data</h2><details><summary>" + str(len(data_files))
                         + " files; <code>dvc plots show</code> renders them with DVC's templates</summary><ul>"
                         + items + "</ul></details>"))

    nav = "".join(f"<a href='#{sid}'>{html.escape(label)}</a>" for sid, label, _ in sections)
    body = "".join(f"<section class='card' id='{sid}'>{content}</section>" for sid, _, content in sections)
    synthetic = sorted({str(c.data["dataset"]) for g in groups for c in g.columns
                        if c.synthetic and c.data.get("dataset")})   # (karyotyping metrics name no dataset)
    subtitle = "Built by the <code>report_html</code> stage from reports/, metrics/, plots/ and evaluation/."
    if synthetic:
        subtitle += (f" <span class='badge synthetic'>synthetic</span> dataset(s) {html.escape(', '.join(synthetic))}"
                     " come from the embedded synthetic cohort, not from patients.")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1><p>{subtitle}</p></header>"
            f"<nav>{nav}</nav><main>{body}</main></body></html>\n")
    from genediag import io as gio

    gio.write_text(out_path, page)
    counts = {"summary_tables": len(groups), "reports": len(md_reports), "metrics_files": len(metrics),
              "model_cards": len(cards), "training_runs": len(charts), "figures": n_figures,
              "evidence_charts": n_evidence, "plot_data_files": len(data_files)}
    log.info("wrote %s: %s", out_path, counts)
    return counts
