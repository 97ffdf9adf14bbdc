"""Params presets: a YAML file under ``presets/`` deep-merged into ``params.yaml``.

    python -m genediag.presets apply presets/chromosomenet_paper.yaml --dry-run   # print the diff only
    python -m genediag.presets apply presets/chromosomenet_paper.yaml && dvc exp run

Merge rules: a mapping merges key by key, recursively (so entries under ``train:`` add runs, or change keys of
existing runs); any other value — a number, a string, a list, ``null`` — replaces what was there. Comments and key
order of ``params.yaml`` are kept (round-trip YAML). After merging, every section the stages validate up front
(the ``train`` runs, ``benchmark``) is checked, so a typo in a preset fails before anything is written.
Undo with ``git checkout params.yaml``. A preset's own top-level ``preset:`` key (a description) is not merged.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import io
import re
import sys
from pathlib import Path
from typing import Any

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


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts/lists. A mapping built with a YAML merge key
    (``<<: *anchor``) lists the anchor's keys first, in the anchor's order."""
    if isinstance(node, dict):
        keys: list[Any] = []
        for base in getattr(node, "merge", None) or []:
            base = base[1] if isinstance(base, tuple) else base  # (position, map) in older ruamel versions
            keys += [k for k in base if k not in keys]
        keys += [k for k in node if k not in keys]
        return {str(k): _plain(node[k]) for k in keys}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def validate(params: dict[str, Any], source: str) -> None:
    """Check the sections the stages would reject at run time (unknown keys, malformed runs)."""
    plain = _plain(params)
    train = plain.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"{source}: 'train' must be a mapping of runs")
    if train:
        from genediag.training.run import resolve_run_config

        for run, cfg in train.items():
            if not isinstance(cfg, dict):
                raise ConfigError(f"{source}: train.{run} must be a mapping")
            resolve_run_config(run, cfg)
    bench = plain.get("benchmark") or {}
    if bench:
        from genediag.evaluation.benchmark import resolve_benchmark_config

        if not isinstance(bench, dict):
            raise ConfigError(f"{source}: 'benchmark' must map run names to benchmark settings")
        for run, cfg in bench.items():
            if run not in train:
                raise ConfigError(f"{source}: benchmark.{run}: no such run under train:")
            resolve_benchmark_config(cfg, f"{source}: benchmark.{run}")


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
    overlay = _plain(load_yaml(preset))  # plain values: YAML anchors/merge keys of the preset resolved
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
