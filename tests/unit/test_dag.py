"""dvc.yaml lists the code every stage runs, every YAML file parses with the libyaml-based parsers, and the
branches stay independent."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
YAML_FILES = sorted([ROOT / "params.yaml", ROOT / "dvc.yaml", *(ROOT / "presets").glob("*.yaml")]
                    + ([ROOT / "dvc.lock"] if (ROOT / "dvc.lock").exists() else []))


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    base = SRC.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def imported_modules(path: Path) -> set[str]:
    """genediag modules a file imports (module level and inside functions), including parent packages."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for n in names:
            if n.split(".")[0] == "genediag":
                parts = n.split(".")
                out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {m for m in out if _module_file(m) is not None}


def _trivial_package(path: Path) -> bool:
    """An ``__init__.py`` with nothing but a docstring and constants (it cannot change what a stage computes)."""
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, (ast.Expr, ast.Assign, ast.AnnAssign)) and not any(
        isinstance(x, (ast.Call, ast.Name)) for x in ast.walk(n.value if hasattr(n, "value") else n)) for n in body)


def transitive_files(script: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [script]
    if (script.parent / "_common.py").is_file():
        todo.append(script.parent / "_common.py")
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for m in imported_modules(f):
            mf = _module_file(m)
            if mf is not None and mf not in seen:
                todo.append(mf)
    return seen


def resolved_stages() -> dict[str, dict]:
    """Every stage of dvc.yaml with foreach expanded by DVC itself."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: {"cmd": s.cmd, "deps": [str(Path(d.def_path)) for d in s.deps]}
                for s in repo.index.stages}


def test_every_stage_lists_the_code_it_runs():
    missing = {}
    for name, stage in resolved_stages().items():
        script = re.search(r"python (stages/\S+\.py)", stage["cmd"])
        assert script, f"{name}: cmd does not run a stage script: {stage['cmd']}"
        deps = [ROOT / d for d in stage["deps"]]
        for f in transitive_files(ROOT / script.group(1)):
            if not _trivial_package(f) and not any(f == d or d in f.parents for d in deps):
                missing.setdefault(name, []).append(str(f.relative_to(ROOT)))
    assert not missing, f"stages whose deps miss code they import: {missing}"


def test_no_stage_lists_a_dependency_twice():
    twice = {name: sorted({d for d in stage["deps"] if stage["deps"].count(d) > 1})
             for name, stage in resolved_stages().items()}
    twice = {k: v for k, v in twice.items() if v}
    assert not twice, f"stages listing a dependency more than once: {twice}"


def test_only_karyogram_stages_depend_on_the_karyogram_base():
    for name, stage in resolved_stages().items():
        if any(d.startswith("models/bases") for d in stage["deps"]):
            assert name.startswith(("karyogram_", "hpsearch@")), name


def test_branch_reports_depend_on_their_own_metrics_only():
    stages = resolved_stages()
    for branch in ("chromosomes", "karyograms", "faces"):
        deps = stages[f"report_{branch}"]["deps"]
        others = {"chromosomes", "karyograms", "faces"} - {branch}
        for d in deps:
            if d.startswith(("metrics/", "plots/", "evaluation/")):
                assert d.split("/")[1] not in others, f"report_{branch} depends on {d}"


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.name)
def test_yaml_parses_with_libyaml(path):
    from ruamel.yaml import YAML

    text = path.read_text()
    assert yaml.load(text, Loader=yaml.CSafeLoader) is not None
    YAML(typ="safe", pure=False).load(text)
    import ruamel.yaml

    assert ruamel.yaml.__with_libyaml__, "ruamel.yaml.clib (the C parser) is not installed"
