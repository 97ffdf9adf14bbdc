"""``genediag compare A B``: what changed between two revisions, and whether it is beyond noise.

    python -m genediag compare HEAD~1 HEAD          # Markdown (a pull-request comment)
    python -m genediag compare main --html out.html  # main against the working tree
    make compare BASE=main

Sections: the params that changed (``params.yaml``, flattened to dotted keys); every headline metric that changed
(``metrics/<branch>/<run>.json``: A, B, the change, both 95 % intervals and *beyond noise*); the plots and report
figures whose content changed (from ``dvc.lock``), to look at with ``dvc plots diff A B``.

*Beyond noise* is decided, in order of strength:

1. **paired bootstrap** — both revisions' per-item predictions (``evaluation/<branch>/<run>/predictions.csv``, read
   with ``dvc.api`` from the workspace, the DVC cache or the remote) on the same test items: the metric of both is
   recomputed on the same resampled patients; *yes* when the 95 % interval of B − A excludes 0;
2. **intervals** — when predictions are missing or the test items differ: *yes* only when the two 95 % intervals do
   not overlap (a conservative test: overlapping intervals can still hide a real difference, which is then
   reported as "not shown");
3. *unknown* when neither revision has an interval.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import yaml

from genediag.reports.summary import BRANCHES, HEADLINE, fmt_ci

log = logging.getLogger(__name__)

WORKSPACE = "workspace"
LABELS = dict(HEADLINE)
#: metrics compared besides the headline ones (no interval: shown, never called beyond noise)
EXTRA = {"ece": "ECE (calibrated)"}


class CompareError(ValueError):
    """A revision or file cannot be read; the message says which and why."""


# --------------------------------------------------------------------------------------------------- reading
class Revision:
    """Files of one revision of the repository at `root` (``rev`` None = the working tree)."""

    def __init__(self, root: Path, rev: str | None):
        self.root, self.rev = root, rev
        self.label = rev or WORKSPACE
        if rev is not None:
            try:
                self.sha = self._git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
            except CompareError:
                raise CompareError(f"{rev}: not a commit of the git repository at {root}") from None

    def _git(self, *args: str) -> str:
        res = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True)
        if res.returncode:
            raise CompareError(f"git {' '.join(args)}: {res.stderr.strip() or 'failed'}")
        return res.stdout

    def text(self, path: str) -> str | None:
        """A git-tracked (or workspace) file's text, None if absent."""
        if self.rev is None:
            p = self.root / path
            return p.read_text() if p.is_file() else None
        res = subprocess.run(["git", "-C", str(self.root), "show", f"{self.sha}:{path}"], capture_output=True,
                             text=True)
        return res.stdout if res.returncode == 0 else None

    def files(self, folder: str) -> list[str]:
        if self.rev is None:
            base = self.root / folder
            return sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file()) \
                if base.is_dir() else []
        out = self._git("ls-tree", "-r", "--name-only", self.sha, "--", folder)
        return sorted(line for line in out.splitlines() if line)

    def dvc_text(self, path: str) -> str | None:
        """A DVC-tracked file's text (workspace, cache or remote), None when it cannot be had."""
        if self.rev is None and (self.root / path).is_file():
            return (self.root / path).read_text()
        try:
            import dvc.api

            return dvc.api.read(path, repo=str(self.root), rev=self.sha if self.rev else None)
        except Exception as exc:  # noqa: BLE001 — dvc raises many kinds (not in cache, no remote, not tracked)
            log.info("%s@%s: not readable through DVC (%s: %s)", path, self.label, type(exc).__name__,
                     str(exc).splitlines()[0][:120] if str(exc) else "")
            return None


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out or ({prefix[:-1]: {}} if prefix else {})
    return {prefix[:-1]: d}


def params_diff(a: Revision, b: Revision, path: str = "params.yaml") -> list[tuple[str, Any, Any]]:
    pa, pb = (flatten(yaml.safe_load(r.text(path) or "") or {}) for r in (a, b))
    return [(k, pa.get(k, "—"), pb.get(k, "—")) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)]


def run_metrics(rev: Revision, metrics_dir: str = "metrics") -> dict[tuple[str, str], dict[str, Any]]:
    """{(branch, run): metrics} of the headline files ``<metrics_dir>/<branch>/<run>.json``."""
    out = {}
    for path in rev.files(metrics_dir):
        parts = Path(path).relative_to(metrics_dir).parts
        if len(parts) != 2 or not parts[1].endswith(".json") or parts[1].endswith(".seeds.json"):
            continue
        try:
            data = json.loads(rev.text(path) or "null")
        except json.JSONDecodeError:
            log.warning("%s@%s: not JSON; left out", path, rev.label)
            continue
        if isinstance(data, dict) and not data.get("skipped"):
            out[(parts[0], Path(parts[1]).stem)] = data
    return out


def predictions(rev: Revision, branch: str, run: str) -> pd.DataFrame | None:
    text = rev.dvc_text(f"evaluation/{branch}/{run}/predictions.csv")
    if text is None:
        return None
    return pd.read_csv(io.StringIO(text), dtype={"target": str, "predicted": str, "group_id": str, "path": str},
                       keep_default_na=False)


def lock_outs(rev: Revision, prefixes: Sequence[str] = ("plots/", "reports/figures")) -> dict[str, str]:
    """{out path: md5} of the ``dvc.lock`` outs under `prefixes` (plots and report figures)."""
    lock = yaml.safe_load(rev.text("dvc.lock") or "") or {}
    out = {}
    for stage in (lock.get("stages") or {}).values():
        for o in stage.get("outs") or []:
            if any(str(o.get("path", "")).startswith(p) for p in prefixes):
                out[o["path"]] = str(o.get("md5"))
    return out


# ------------------------------------------------------------------------------------------------- comparing
@dataclass
class Change:
    branch: str
    run: str
    metric: str
    a: float | None
    b: float | None
    ci_a: tuple[float, float] | None
    ci_b: tuple[float, float] | None
    beyond: str          # "yes", "no", "not shown", "unknown", "—"
    method: str          # "paired bootstrap", "intervals", ""
    diff_ci: tuple[float, float] | None = None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _ci(d: dict[str, Any], key: str) -> tuple[float, float] | None:
    ci = (d.get("ci95") or {}).get(key)
    return (float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 and None not in ci else None


def _paired(pa: pd.DataFrame, pb: pd.DataFrame, keys: Sequence[str], n_resamples: int, seed: int
            ) -> dict[str, dict[str, Any]] | None:
    """Paired bootstrap of the headline metrics recomputed from two prediction tables on the same items."""
    from genediag.evaluation.metrics import headline_metrics
    from genediag.evaluation.uncertainty import paired_bootstrap

    ident = "path" if "path" in pa.columns and "path" in pb.columns else "index"
    if ident not in pa.columns or ident not in pb.columns or "group_id" not in pa.columns:
        return None
    if len(pa) != len(pb) or set(pa[ident]) != set(pb[ident]):
        return None
    pb = pb.set_index(ident).loc[pa[ident]].reset_index()
    names = [c[2:] for c in pa.columns if c.startswith("p_")]
    if names != [c[2:] for c in pb.columns if c.startswith("p_")] or not (pa["target"].values == pb["target"].values).all():
        return None
    index = {n: i for i, n in enumerate(names)}

    def data(p: pd.DataFrame) -> dict[str, np.ndarray]:
        return {"y": p["target"].map(index).to_numpy(), "pred": p["predicted"].map(index).to_numpy(),
                "probs": p[[f"p_{n}" for n in names]].to_numpy(float)}

    da, db = data(pa), data(pb)
    if any(np.isnan(d[k].astype(float)).any() for d in (da, db) for k in ("y", "pred")):
        return None
    fn = lambda y, pred, probs: {k: v for k, v in headline_metrics(y, pred, probs, names).items() if k in keys}  # noqa: E731
    return paired_bootstrap(fn, pa["group_id"].to_numpy(), da, db, n_resamples, seed)


def compare_metrics(a: Revision, b: Revision, metrics_dir: str = "metrics", n_resamples: int = 1000,
                    seed: int = 0) -> list[Change]:
    ma, mb = run_metrics(a, metrics_dir), run_metrics(b, metrics_dir)
    changes: list[Change] = []
    for branch, run in sorted(set(ma) | set(mb), key=lambda k: (list(BRANCHES).index(k[0]) if k[0] in BRANCHES
                                                                else len(BRANCHES), k)):
        da, db = ma.get((branch, run), {}), mb.get((branch, run), {})
        keys = [k for k in [*LABELS, *EXTRA] if _num(da.get(k)) is not None or _num(db.get(k)) is not None]
        moved = [k for k in keys if _num(da.get(k)) != _num(db.get(k))]
        if not moved:
            continue
        paired = None
        headline_moved = [k for k in moved if k in LABELS]
        if da and db and headline_moved:
            pa, pb = predictions(a, branch, run), predictions(b, branch, run)
            if pa is not None and pb is not None:
                paired = _paired(pa, pb, headline_moved, n_resamples, seed)
        for k in moved:
            va, vb = _num(da.get(k)), _num(db.get(k))
            ca, cb = _ci(da, k), _ci(db, k)
            if va is None or vb is None:
                changes.append(Change(branch, run, k, va, vb, ca, cb, "new in B" if va is None else "gone in B", ""))
            elif k in EXTRA:
                changes.append(Change(branch, run, k, va, vb, ca, cb, "—", ""))
            elif paired is not None and k in paired and paired[k]["ci95"] is not None:
                p = paired[k]
                changes.append(Change(branch, run, k, va, vb, ca, cb, "yes" if p["distinguishable"] else "no",
                                      "paired bootstrap", tuple(p["ci95"])))
            elif ca and cb:
                disjoint = ca[1] < cb[0] or cb[1] < ca[0]
                changes.append(Change(branch, run, k, va, vb, ca, cb, "yes" if disjoint else "not shown",
                                      "intervals"))
            else:
                changes.append(Change(branch, run, k, va, vb, ca, cb, "unknown", ""))
    return changes


def changed_plots(a: Revision, b: Revision) -> list[tuple[str, str]]:
    oa, ob = lock_outs(a), lock_outs(b)
    out = []
    for path in sorted(set(oa) | set(ob)):
        if oa.get(path) != ob.get(path):
            out.append((path, "added" if path not in oa else "removed" if path not in ob else "changed"))
    return out


# ---------------------------------------------------------------------------------------------------- output
def _v(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.6g}"
    return "—" if x is None else str(x)


def compare(rev_a: str, rev_b: str | None, root: str | Path = ".", metrics_dir: str = "metrics",
            n_resamples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Everything ``genediag compare`` prints, as data."""
    root = Path(root).resolve()
    a, b = Revision(root, rev_a), Revision(root, rev_b)
    if n_resamples is None:
        ev = (yaml.safe_load(b.text("params.yaml") or "") or {}).get("evidence") or {}
        n_resamples = int(ev.get("bootstrap", 1000))
    return {"a": a.label, "b": b.label, "params": params_diff(a, b),
            "metrics": compare_metrics(a, b, metrics_dir, n_resamples, seed), "plots": changed_plots(a, b),
            "bootstrap": n_resamples}


def to_markdown(result: dict[str, Any]) -> str:
    from genediag.reports.markdown import table

    a, b = result["a"], result["b"]
    lines = [f"## genediag compare: {a} → {b}", ""]
    if result["params"]:
        ptable = table(["param", a, b], [[f"`{k}`", _v(x), _v(y)] for k, x, y in result["params"]], "lll")
        if len(result["params"]) > 25:  # a restructured params.yaml: keep the comment readable
            ptable = f"<details><summary>{len(result['params'])} keys</summary>\n\n{ptable}\n\n</details>"
        lines += [f"### Params changed ({len(result['params'])})", "", ptable, ""]
    else:
        lines += ["### Params: unchanged", ""]
    ch: list[Change] = result["metrics"]
    if ch:
        rows = []
        for c in ch:
            label = LABELS.get(c.metric) or EXTRA.get(c.metric, c.metric)
            change = "—" if c.change is None else f"{c.change:+.3f}"
            if c.diff_ci:
                change += f" [{c.diff_ci[0]:+.3f}, {c.diff_ci[1]:+.3f}]"
            rows.append([c.branch, c.run, label, fmt_ci(c.a, c.ci_a), fmt_ci(c.b, c.ci_b), change,
                         f"{c.beyond} ({c.method})" if c.method else c.beyond])
        lines += [f"### Metrics changed ({len(ch)})", "",
                  table(["branch", "run", "metric", f"A: {a} [95 % CI]", f"B: {b} [95 % CI]", "change B − A",
                         "beyond noise"], rows, "lllrrrl"), "",
                  f"*Beyond noise*: **paired bootstrap** = both revisions' predictions on the same test items, "
                  f"{result['bootstrap']} patient resamples, the interval of the change (in brackets) excludes 0; "
                  "**intervals** = predictions not available for both, so only non-overlapping 95 % intervals count "
                  "(\"not shown\": they overlap, which does not prove the two are equal).", ""]
    else:
        lines += ["### Metrics: no headline metric changed", ""]
    if result["plots"]:
        lines += [f"### Plots and figures changed ({len(result['plots'])})", "",
                  table(["output", "change"], [[f"`{p}`", s] for p, s in result["plots"]], "ll"), "",
                  f"Render them side by side: `dvc plots diff {a if a != WORKSPACE else ''} "
                  f"{b if b != WORKSPACE else ''}`.".replace("  ", " "), ""]
    else:
        lines += ["### Plots: unchanged", ""]
    return "\n".join(lines)


def to_html(result: dict[str, Any], title: str = "genediag compare") -> str:
    from genediag.reports.html import CSS, markdown_to_html

    body = markdown_to_html(to_markdown(result), Path("compare.md"), Path("."))
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title><style>{CSS}"
            f"</style></head><body><main><section class='card' id='compare'>{body}</section></main></body></html>\n")
