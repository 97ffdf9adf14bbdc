"""The papers' own figures, on their own (private) data — shown beside ours, always marked "their data".

Only figures we could check go here; anything else reads "—". Keys: (branch, run or model) → {metric: value,
"source": where the figure comes from}. Metric keys are the ones of our metrics files, so a summary or report
can put the published value in the row of the metric it measures.
"""

from __future__ import annotations

from typing import Any

PUBLISHED: dict[tuple[str, str], dict[str, Any]] = {
    # BioFace (facial syndrome recognition), on its private clinical photos (10 syndromes + healthy) and LFW
    ("faces", "crossloss"): {"accuracy": 0.935, "source": "BioFace, cross-loss SE-ResNet64, private photos"},
    ("faces", "softmax"): {"accuracy": 0.906, "source": "BioFace, softmax-only ablation, private photos"},
    ("faces", "deepgestalt"): {"accuracy": 0.710, "source": "BioFace's DeepGestalt baseline, private photos"},
    ("faces", "identity-seresnet64"): {"verification_accuracy": 0.984, "source": "BioFace stage 1 on LFW"},
}

#: ChromosomeNet's abstract gives its best baseline's accuracy without naming the model: shown per branch only.
CHROMOSOMENET_BEST_BASELINE = {"accuracy": 0.9933, "source": "ChromosomeNet abstract, best of 8 baselines "
                                                             "(126,453 crops of 408 individuals)"}


def published(branch: str, model: str, metric: str) -> float | None:
    value = PUBLISHED.get((branch, model), {}).get(metric)
    return None if value is None else float(value)
