"""Patient-sensitive content never enters git: no face image, review sheet, identity or diagnosis table in the
index (they are DVC outputs or not tracked at all)."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def tracked() -> list[str]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_no_face_or_patient_image_is_tracked():
    """Git may hold only report figures of chromosomes and karyograms (plots, synthetic examples): no photo, no
    face figure, nothing under data/ or evaluation/."""
    images = [f for f in tracked() if f.lower().endswith(IMAGE)]
    bad = [f for f in images if not f.startswith("reports/figures/") or "face" in f.lower()]
    assert bad == [], "images in git that may show a person or patient data"


def test_no_identity_review_or_diagnosis_table_is_tracked():
    bad = [f for f in tracked() if Path(f).name in ("review_queue.csv", "detections.csv", "truth.csv")
           or (f.startswith(("data/", "evaluation/")) and f.endswith(".csv"))]
    assert bad == []
