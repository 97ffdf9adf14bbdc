import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix as sk_cm, f1_score, precision_score, recall_score

from genediag.evaluation.metrics import classification_metrics, confusion_matrix


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    k = 6
    y = rng.integers(0, k, 300)
    p = np.where(rng.random(300) < 0.7, y, rng.integers(0, k, 300))
    p[p == 5] = 4  # a class that is never predicted: precision 0/0
    m = classification_metrics(y, p, [str(i) for i in range(k)])
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert m["macro_precision"] == pytest.approx(precision_score(y, p, average="macro", zero_division=0))
    assert m["macro_sensitivity"] == pytest.approx(recall_score(y, p, average="macro", zero_division=0))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0))
    cm = sk_cm(y, p, labels=range(k))
    assert (confusion_matrix(y, p, k) == cm).all()
    for c in range(k):
        tn = cm.sum() - cm[c].sum() - cm[:, c].sum() + cm[c, c]
        fp = cm[:, c].sum() - cm[c, c]
        spec = tn / (tn + fp)
        assert m["per_class"][str(c)]["specificity"] == pytest.approx(spec)
        # specificity from scikit-learn: recall of the negative class in a one-vs-rest view
        assert spec == pytest.approx(recall_score(y != c, p != c))
    assert m["per_class"]["5"]["precision"] == 0.0


def test_hand_computed_binary_case():
    m = classification_metrics([0, 0, 0, 1, 1], [0, 0, 1, 1, 1], ["neg", "pos"])
    pos = m["per_class"]["pos"]
    assert m["accuracy"] == pytest.approx(0.8)
    assert pos["precision"] == pytest.approx(2 / 3) and pos["sensitivity"] == 1.0
    assert pos["specificity"] == pytest.approx(2 / 3) and pos["f1"] == pytest.approx(0.8)
