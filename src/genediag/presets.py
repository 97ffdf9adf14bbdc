"""Params presets: a YAML file under ``presets/`` deep-merged into ``params.yaml``.

    python -m genediag.presets apply presets/chromosomenet_paper.yaml --dry-run   # print the diff only
    python -m genediag.presets apply presets/chromosomenet_paper.yaml && dvc exp run

Merge rules: a mapping merges key by key, recursively (so entries under ``chromosomes: {runs: ...}`` add runs or
change keys of existing runs, and ``families:`` entries change the defaults of every run of a family); any other
value — a number, a string, a list, ``null`` — replaces what was there. Comments and key order of ``params.yaml``
are kept (round-trip YAML; sections the preset does not touch keep their exact text). After merging, the whole
file is checked against the schema (:func:`genediag.params_check.check_params`, what ``python -m genediag params check``
runs: every dataset, every run resolved over its family, every section), so a typo in a preset fails before
anything is written. Undo with ``git checkout params.yaml``. A preset's own top-level ``preset:`` key (a
description) is not merged."""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import re
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from genediag.config import ConfigError

META_KEY = "preset"   # a preset may describe itself under this key; it is not merged


def _yaml():
    from ruamel.yaml import YAML

    y = YAML()  # round-trip: keeps comments, key order and flow style
    y.preserve_quotes = True
    y.width = 4096  # no re-wrapping of long flow-style lines
    y.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def load_yaml(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found")
    with path.open() as fh:
        data = _yaml().load(fh)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def deep_merge(base: Any, overlay: Any) -> Any:
    """Merge `overlay` into `base` in place (mappings recursively, anything else replaced); returns `base`."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _plain(node: Any, styled: bool = False) -> Any:
    """ruamel's round-trip containers as plain dicts/lists. A mapping built with a YAML merge key
    (``<<: *anchor``) lists the anchor's keys first, in the anchor's order; an alias becomes a copy of its anchor.
    `styled`: fresh ruamel containers instead, each written in the flow or block style it had (no comments, anchors
    or shared nodes), so values a preset adds to params.yaml look as they did in the preset."""
    if isinstance(node, dict):
        keys: list[Any] = []
        for base in getattr(node, "merge", None) or []:
            base = base[1] if isinstance(base, tuple) else base  # (position, map) in older ruamel versions
            keys += [k for k in base if k not in keys]
        keys += [k for k in node if k not in keys]
        items = [(str(k), _plain(node[k], styled)) for k in keys]
        return _restyled(node, CommentedMap(items)) if styled else dict(items)
    if isinstance(node, list):
        items = [_plain(v, styled) for v in node]
        return _restyled(node, CommentedSeq(items)) if styled else items
    return node


def _restyled(source: Any, out: Any) -> Any:
    fa = getattr(source, "fa", None)
    if fa is not None and fa.flow_style():
        out.fa.set_flow_style()
    return out


def validate(params: dict[str, Any], source: str) -> dict[str, int]:
    """Check merged params as every stage would before it starts (:func:`genediag.params_check.check_params`): unknown
    sections or keys, malformed values, runs whose family is missing. Returns check_params' counts."""
    from genediag.params_check import check_params

    return check_params(_plain(params), source)


def dump(data: Any) -> str:
    buf = io.StringIO()
    _yaml().dump(data, buf)
    return buf.getvalue()


_TOP_KEY = re.compile(r"^([A-Za-z_][\w-]*)\s*:")


def _top_blocks(text: str) -> tuple[str, dict[str, str]]:
    """(header before the first top-level key, {key: its text block up to the next top-level key})."""
    lines = text.splitlines(True)
    starts = [(i, m.group(1)) for i, line in enumerate(lines) if (m := _TOP_KEY.match(line))]
    if not starts:
        return text, {}
    header = "".join(lines[: starts[0][0]])
    blocks = {}
    for j, (i, key) in enumerate(starts):
        end = starts[j + 1][0] if j + 1 < len(starts) else len(lines)
        blocks[key] = "".join(lines[i:end])
    return header, blocks


def render(original_text: str, original: dict[str, Any], merged: dict[str, Any]) -> str:
    """The merged params as text: untouched top-level sections keep their exact original text, changed or new
    sections are dumped (round-trip, with their comments)."""
    header, blocks = _top_blocks(original_text)
    out = header
    for i, key in enumerate(merged):
        if key in blocks and key in original and _plain(original[key]) == _plain(merged[key]):
            text = blocks[key]
        else:  # re-dumped: blank lines that ruamel carried over from the old end of the section are dropped
            text = "".join(line for line in dump({key: merged[key]}).splitlines(True) if line.strip())
        if out and not out.endswith("\n"):
            out += "\n"
        if i and not out.endswith("\n\n"):
            out += "\n"  # one blank line between top-level sections
        out += text
    return out


def apply_preset(preset: str | Path, params: str | Path = "params.yaml", dry_run: bool = False) -> str:
    """Merge `preset` into the `params` file; returns the unified diff (the file is untouched when `dry_run`)."""
    params = Path(params)
    base = load_yaml(params)
    overlay = _plain(load_yaml(preset), styled=True)  # YAML anchors/merge keys of the preset resolved
    overlay = {k: v for k, v in overlay.items() if k != META_KEY}
    before = params.read_text()
    original = copy.deepcopy(base)
    merged = deep_merge(base, overlay)
    validate(merged, f"{params} + {preset}")
    after = render(before, original, merged)
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), str(params),
                                        f"{params} (+ {preset})"))
    if not dry_run:
        params.write_text(after)
    return diff


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m genediag.presets", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    ap = sub.add_parser("apply", help="deep-merge a preset into the params file")
    ap.add_argument("preset", help="preset YAML file, e.g. presets/chromosomenet_paper.yaml")
    ap.add_argument("--params", default="params.yaml", help="params file to update (default: params.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    args = p.parse_args(argv)
    try:
        diff = apply_preset(args.preset, args.params, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(diff or "(no change)\n")
    else:
        print(f"{args.params}: merged {args.preset} ({sum(1 for line in diff.splitlines() if line[:1] in '+-')} "
              f"changed lines); undo with `git checkout {args.params}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
