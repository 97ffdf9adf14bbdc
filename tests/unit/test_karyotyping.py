"""Cell-level karyotyping: ISCN parsing, constrained assignment on hand-made probability matrices, the stage
end to end on a tiny dataset with an oracle model, and the clean skip without cell_id."""

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import yaml

from genediag.config import ConfigError
from genediag.data.tasks import NORMAL_CHROMOSOMES
from genediag.karyotyping.assign import (EXTRA, counts_to_iscn, is_numerically_abnormal, karyotype_cell,
                                         make_hypotheses, parse_iscn)
from genediag.karyotyping.cells import karyotype_cells, resolve_config, select_model_run
from genediag.models import register_model
from genediag.models.checkpoint import save_checkpoint
from genediag.reports.karyotyping import karyotyping_section

ROOT = Path(__file__).resolve().parents[2]
CLASSES = list(NORMAL_CHROMOSOMES)  # 1..22, X, Y
IDX = {c: i for i, c in enumerate(CLASSES)}
PRIORS = {"46,XX": 0.40, "46,XY": 0.40, "47,XX,+21": 0.03, "47,XY,+21": 0.03, "47,XX,+18": 0.015,
          "47,XY,+18": 0.015, "47,XX,+13": 0.01, "47,XY,+13": 0.01, "45,X": 0.02, "47,XXY": 0.02}
HYP = make_hypotheses(PRIORS, CLASSES)


def cell_labels(sex="XX", extra=(), drop=()):
    labels = [c for c in CLASSES[:22] for _ in range(2)] + list(sex) + list(extra)
    for d in drop:
        labels.remove(d)
    return labels


def confident(labels, p=0.99):
    """One row per crop: probability p on its label, the rest spread evenly."""
    probs = np.full((len(labels), len(CLASSES)), (1 - p) / (len(CLASSES) - 1))
    probs[np.arange(len(labels)), [IDX[c] for c in labels]] = p
    return probs


def call(probs, hyp=HYP, **kw):
    return karyotype_cell(probs, hyp, **kw)


# ------------------------------------------------------------------------------------------------ ISCN
@pytest.mark.parametrize("iscn", ["46,XX", "46,XY", "47,XY,+21", "47,XX,+18", "45,X", "47,XXY", "45,XX,-21",
                                  "48,XY,+13,+21"])
def test_iscn_round_trip(iscn):
    counts = parse_iscn(iscn)
    assert sum(counts.values()) == int(iscn.split(",")[0])
    assert counts_to_iscn(counts) == iscn


def test_iscn_counts_and_rejections():
    c = parse_iscn("47,XY,+21")
    assert c["21"] == 3 and c["X"] == 1 and c["Y"] == 1 and c["1"] == 2
    assert parse_iscn("45,X")["X"] == 1 and parse_iscn("45,X")["Y"] == 0
    for bad in ("46,XX,del(5)(p14)", "47,XX", "46,XY,+21", "46", "46,XX,+23"):
        with pytest.raises(ValueError):
            parse_iscn(bad)
    assert not is_numerically_abnormal("46,XY") and is_numerically_abnormal("45,X")
    assert is_numerically_abnormal("47,XXY") and is_numerically_abnormal("47,XX,+21")


def test_make_hypotheses_validates_and_normalises():
    assert math.isclose(sum(math.exp(h.log_prior) for h in HYP), 1.0)
    assert len(HYP[0].slots) == 46 and len(HYP[2].slots) == 47
    with pytest.raises(ValueError, match="canonical"):
        make_hypotheses({"46,YX": 1.0}, CLASSES)
    with pytest.raises(ValueError, match="does not classify"):
        make_hypotheses(["46,XY"], CLASSES[:23])  # a model without Y cannot test 46,XY
    with pytest.raises(ValueError, match="positive"):
        make_hypotheses({"46,XX": 0.0}, CLASSES)


# ------------------------------------------------------------------------------------- the four asks
@pytest.mark.parametrize("sex", ["XX", "XY"])
def test_46_confident_crops_give_normal_karyotype(sex):
    labels = cell_labels(sex)
    c = call(confident(labels))
    assert c.karyotype == f"46,{sex}"
    assert c.final_labels(confident(labels), CLASSES) == labels
    assert c.best.n_extra == 0 and c.best.missing == [] and c.margin > 5


@pytest.mark.parametrize("sex", ["XX", "XY"])
def test_three_confident_21s_give_trisomy_21(sex):
    labels = cell_labels(sex, extra=["21"])
    c = call(confident(labels))
    assert c.karyotype == f"47,{sex},+21"
    assert c.runner_up.hypothesis.iscn == f"46,{sex}"  # the alternative: drop a 21 as an extra crop


def test_one_x_and_no_y_gives_45_x():
    labels = cell_labels("X")
    assert len(labels) == 45
    assert call(confident(labels)).karyotype == "45,X"


def test_xxy_and_trisomy_18():
    assert call(confident(cell_labels("XXY"))).karyotype == "47,XXY"
    assert call(confident(cell_labels("XY", extra=["18"]))).karyotype == "47,XY,+18"


def test_pairing_constraint_corrects_a_confident_but_wrong_crop():
    """A 21 predicted as 22 with 0.7: argmax gives three 22s and one 21; the two-per-class slots fix it."""
    labels = cell_labels("XY")
    probs = confident(labels)
    wrong = labels.index("21")
    probs[wrong] = 0.05 / 22
    probs[wrong, IDX["22"]], probs[wrong, IDX["21"]] = 0.7, 0.25
    top = Counter(CLASSES[i] for i in probs.argmax(1))
    assert top["22"] == 3 and top["21"] == 1  # a plain argmax miscounts
    c = call(probs)
    final = c.final_labels(probs, CLASSES)
    assert c.karyotype == "46,XY"
    assert final[wrong] == "21" and final == labels
    counts = Counter(final)
    assert counts["21"] == 2 and counts["22"] == 2


# ---------------------------------------------------------------------------------- dummies and priors
def test_dummy_slot_absorbs_an_extra_crop_at_the_penalty():
    labels = cell_labels("XX", extra=["7"])  # 47 crops, no 47,XX,+7 hypothesis
    probs = confident(labels, p=0.999)
    c = call(probs, extra_penalty=8.0, missing_penalty=8.0)
    assert c.karyotype == "46,XX"
    assert c.best.n_extra == 1 and c.best.missing == []
    extra = int(np.flatnonzero(c.best.crop_class == EXTRA)[0])
    assert labels[extra] == "7"
    assert c.best.log_likelihood == pytest.approx(-8.0 + 46 * math.log(0.999), abs=1e-9)
    # a dearer extra makes the forced alternative win: the third 7 into the +21 slot (−ln 1e-6 = 13.8 < 30)
    assert call(probs, extra_penalty=30.0).karyotype == "47,XX,+21"


def test_dummy_slot_absorbs_a_missing_crop_at_the_penalty():
    labels = cell_labels("XY", drop=["3"])  # 45 crops: a 3 was lost in segmentation
    c = call(confident(labels, p=0.999), missing_penalty=5.0)
    assert c.karyotype == "46,XY"
    assert [CLASSES[s] for s in c.best.missing] == ["3"] and c.best.n_extra == 0
    assert c.best.log_likelihood == pytest.approx(-5.0 + 45 * math.log(0.999), abs=1e-9)


def test_priors_decide_only_close_calls():
    hyp_equal = make_hypotheses({"47,XX,+22": 1.0, "47,XX,+21": 1.0}, CLASSES)
    hyp_21 = make_hypotheses({"47,XX,+22": 1.0, "47,XX,+21": 10.0}, CLASSES)  # ln 10 = 2.3 nats for +21
    labels = cell_labels("XX", extra=["22"])
    close = confident(labels)
    close[-1] = 0.0
    close[-1, IDX["22"]], close[-1, IDX["21"]] = 0.55, 0.45  # 0.2 nats apart
    assert call(close, hyp_equal).karyotype == "47,XX,+22"
    assert call(close, hyp_21).karyotype == "47,XX,+21"
    clear = confident(labels)
    clear[-1] = 0.0
    clear[-1, IDX["22"]], clear[-1, IDX["21"]] = 0.99, 0.01  # 4.6 nats apart: the prior does not flip it
    assert call(clear, hyp_21).karyotype == "47,XX,+22"
    assert call(clear, hyp_equal).margin == pytest.approx(math.log(99), rel=1e-6)


def test_ties_keep_hypothesis_order():
    probs = np.full((46, len(CLASSES)), 1 / len(CLASSES))
    hyp = make_hypotheses(["46,XY", "46,XX"], CLASSES)
    assert call(probs, hyp).karyotype == "46,XY" and call(probs, hyp).margin == 0.0


# ----------------------------------------------------------------------------------------- the stage
@register_model("test_bar_oracle")
class BarOracle(nn.Module):
    """Reads the class from the darkest pixel: class k's bar has grey level LEVELS[k] (see bar_image)."""

    def __init__(self, num_classes, in_chans=1, img_size=16, width=0.01):
        super().__init__()
        self.register_buffer("levels", torch.tensor([bar_level(k) / 255 for k in range(num_classes)]))
        self.inv_width = nn.Parameter(torch.tensor(1.0 / width))  # a parameter, so the model has a device

    def forward(self, x):
        m = x.flatten(1).amin(1, keepdim=True)
        return -(((m - self.levels) * self.inv_width) ** 2)


def bar_level(k: float) -> float:
    return 40 + 6 * k


def bar_image(level: float, size=16) -> np.ndarray:
    img = np.full((size, size), 255, np.uint8)
    img[2:14, 6:10] = int(round(level))
    return img


def write_dataset(root: Path, cells: dict, with_cell_id=True, dataset="chr", split=None):
    """cells: {cell_id: (karyotype, [(label, origin, bar level)])} → ingested cache + split csv (all test)."""
    rows, images = [], []
    for cid, (kt, crops) in cells.items():
        for label, origin, level in crops:
            i = len(rows)
            rows.append({"index": i, "path": f"{cid}_{i}.png", "label": label, "group_id": cid.split("-")[0],
                         "cell_id": cid if with_cell_id else "", "fixed_split": "", "sha256": f"{i:064x}",
                         "pixel_sha256": f"{i:064x}", "width": 16, "height": 16, "karyotype": kt, "origin": origin})
            images.append(bar_image(level))
    ing = root / "data" / "ingested" / dataset
    ing.mkdir(parents=True)
    manifest = pd.DataFrame(rows)
    manifest.to_csv(ing / "manifest.csv", index=False)
    np.save(ing / "images.npy", np.stack(images))
    (root / "data" / "splits").mkdir(parents=True)
    manifest.assign(split=split or "test").to_csv(root / "data" / "splits" / f"{dataset}.csv", index=False)


def write_oracle(root: Path, run="oracle", synthetic=True, val_accuracy=0.9):
    model = BarOracle(len(CLASSES))
    save_checkpoint(root / "models" / run / "model.pt", model, {"name": "test_bar_oracle"}, CLASSES,
                    {"size": 16, "in_chans": 1, "invert": False, "kind": "chromosome_crop"},
                    extra={"run": run, "dataset": "chr", "synthetic": synthetic,
                           "fit": {"best_val_accuracy": val_accuracy}})


def stage_cfg(**kw):
    return {"model_run": "oracle", "hypotheses": PRIORS, "karyogram_size": [320, 240], "nofit_quantile": None, **kw}


def outputs(root: Path) -> dict:
    return {"metrics": root / "metrics" / "karyotyping" / "oracle.json",
            "confusion": root / "plots" / "karyotyping" / "oracle.csv",
            "eval_dir": root / "evaluation" / "karyotyping" / "oracle",
            "example": root / "reports" / "figures" / "karyotyping_example.png"}


def run_stage(root: Path, cfg: dict, synthetic=True):
    return karyotype_cells(cfg, root / "data" / "ingested" / "chr", root / "data" / "splits" / "chr.csv",
                           root / "models", outputs(root), {"bootstrap": 100, "seed": 0, "runtime": "torch"})


def crops_of(labels, ambiguous=None):
    out = [(c, c, bar_level(IDX[c])) for c in labels]
    if ambiguous is not None:  # (position, level): a crop whose bar sits between two classes
        pos, level = ambiguous
        out[pos] = (out[pos][0], out[pos][1], level)
    return out


@pytest.fixture(scope="module")
def stage_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("karyo")
    t21 = cell_labels("XX", extra=["21"])
    der = cell_labels("XY")
    der_crops = crops_of(der)
    j = der.index("22")
    der_crops[j] = ("der22", "22", bar_level(IDX["22"]))  # a structural crop: not a model class, origin 22
    cells = {
        "P1-C1": ("46,XY", crops_of(cell_labels("XY"))),
        # the third 21's bar lies between 21 and 22, nearer 22: argmax says 22, the +21 slot takes it
        "P2-C1": ("47,XX,+21", crops_of(t21, ambiguous=(len(t21) - 1, bar_level(IDX["21"]) + 3.6))),
        "P3-C1": ("46,XY,t(9;22)(q34;q11.2)", der_crops),
        "P4-C1": ("45,X", crops_of(cell_labels("X"))),
    }
    write_dataset(root, cells)
    write_oracle(root)
    metrics = run_stage(root, stage_cfg())
    return root, metrics


def test_stage_calls_cells_and_writes_outputs(stage_run):
    root, m = stage_run
    assert m["cells"] == 4 and m["crops"] == 46 + 47 + 46 + 45
    assert m["crops_scored"] == m["crops"] - 1  # the der22 crop is not a model class
    assert m["crop_accuracy_before"] < m["crop_accuracy_after"] == 1.0
    assert m["exact_karyotype_accuracy"] == 1.0 and m["cells_counts_exact_after"] == 1.0
    assert m["cells_counts_exact_before"] == 0.75  # P2's argmax counts three 22s
    assert m["abnormal_cells"] == 2 and m["sensitivity"] == 1.0 and m["specificity"] == 1.0
    assert m["exact_karyotype_accuracy_abnormal"] == 1.0 and m["referred"] == 0
    assert set(m["ci95"]) == {"exact_karyotype_accuracy", "exact_karyotype_accuracy_abnormal", "sensitivity",
                              "specificity"}
    assert "seconds" not in json.dumps(m)
    saved = json.loads((root / "metrics" / "karyotyping" / "oracle.json").read_text())
    assert saved == m
    cells = pd.read_csv(root / "evaluation" / "karyotyping" / "oracle" / "cells.csv", dtype=str,
                        keep_default_na=False).set_index("cell_id")
    assert cells.loc["P2-C1", "predicted"] == "47,XX,+21" and cells.loc["P4-C1", "predicted"] == "45,X"
    assert cells.loc["P3-C1", "true_numerical"] == "46,XY" and cells.loc["P3-C1", "predicted"] == "46,XY"
    assert cells["suspected_abnormal"].tolist() == ["False", "True", "False", "True"]
    assert cells.loc["P2-C1", "n_low_confidence"] == "1"
    crops = pd.read_csv(root / "evaluation" / "karyotyping" / "oracle" / "crops.csv", dtype=str,
                        keep_default_na=False)
    assert len(crops) == m["crops"]
    fixed = crops[(crops["cell_id"] == "P2-C1") & (crops["argmax"] != crops["final_label"])]
    assert fixed[["argmax", "final_label", "low_confidence"]].values.tolist() == [["22", "21", "True"]]
    assert crops.loc[crops["label"] == "der22", "final_label"].tolist() == ["22"]
    conf = pd.read_csv(root / "plots" / "karyotyping" / "oracle.csv", dtype=str)
    assert conf.columns.tolist() == ["actual", "predicted"] and (conf["actual"] == conf["predicted"]).all()
    kdir = root / "evaluation" / "karyotyping" / "oracle" / "karyograms"
    assert sorted(p.name for p in kdir.glob("*.png")) == [f"{c}.png" for c in cells.index]
    kman = pd.read_csv(kdir / "manifest.csv", dtype=str)
    assert kman["label"].tolist() == ["normal", "abnormal", "abnormal", "abnormal"]
    example = root / "reports" / "figures" / "karyotyping_example.png"
    assert m["example_cell"] == "P2-C1" and example.read_bytes() == (kdir / "P2-C1.png").read_bytes()


def test_stage_is_deterministic(stage_run, tmp_path):
    root, m = stage_run
    again = run_stage(root, stage_cfg())
    assert again == m


def test_report_section(stage_run):
    root, _ = stage_run
    md = karyotyping_section(root / "reports" / "chromosomes.md", True, root / "metrics" / "karyotyping",
                             root / "plots" / "karyotyping", root / "reports" / "figures" / "karyotyping_example.png")
    assert "Cell-level karyotyping (synthetic cohort)" in md
    assert "| oracle | 4 | 183 |" in md and "47,XX,+21" in md and "Exact karyotype" in md
    assert "(figures/karyotyping_example.png)" in md


def test_truth_missing_is_logged_not_fatal(tmp_path, caplog):
    cells = {"U1": ("", [("unknown", "", bar_level(IDX[c])) for c in cell_labels("XY")])}
    write_dataset(tmp_path, cells)
    write_oracle(tmp_path, synthetic=False)
    m = run_stage(tmp_path, stage_cfg(), synthetic=False)
    assert m["cells"] == 1 and m["crops_scored"] == 0 and m["crop_accuracy_before"] is None
    assert m["cells_with_truth"] == 0 and "truth" in m and "sensitivity" not in m
    assert m["predicted_karyotypes"] == {"46,XY": 1}
    assert "no usable ground truth" in caplog.text


def test_cell_split_across_splits_has_no_truth(tmp_path, caplog):
    write_dataset(tmp_path, {"P1-C1": ("46,XY", crops_of(cell_labels("XY"))),
                             "P2-C1": ("46,XX", crops_of(cell_labels("XX")))},
                  split=["train"] * 10 + ["test"] * 82)  # P1-C1 lost 10 crops to the training split
    write_oracle(tmp_path)
    m = run_stage(tmp_path, stage_cfg())
    assert m["cells"] == 2 and m["cells_with_truth"] == 1 and m["exact_karyotype_accuracy"] == 1.0
    assert "1 cells have crops outside the splits ['test']" in caplog.text
    cells = pd.read_csv(tmp_path / "evaluation" / "karyotyping" / "oracle" / "cells.csv", dtype=str,
                        keep_default_na=False)
    assert cells["true_numerical"].tolist() == ["", "46,XX"]


def test_select_best_run_and_config_errors(tmp_path):
    """best = the highest validation accuracy (validation losses of runs with different losses do not compare)."""
    for run, acc in (("a", 0.937), ("b", 0.967), ("c", 0.95)):
        write_oracle(tmp_path, run=run, val_accuracy=acc)
    cfg = resolve_config(stage_cfg(model_run="best", candidate_runs=["a", "b", "c"]))
    assert select_model_run(cfg, tmp_path / "models") == "b"
    with pytest.raises(FileNotFoundError, match="candidate run 'z'"):
        select_model_run(resolve_config(stage_cfg(model_run="best", candidate_runs=["a", "z"])), tmp_path / "models")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_config(stage_cfg(hypothesis={}))
    with pytest.raises(ConfigError, match="46,YX"):
        resolve_config(stage_cfg(hypotheses={"46,YX": 1}))
    with pytest.raises(ConfigError, match="candidate_runs"):
        resolve_config(stage_cfg(model_run="best"))


def test_stage_without_cell_id_skips_cleanly(tmp_path):
    write_dataset(tmp_path, {"P1-C1": ("46,XY", crops_of(cell_labels("XY")))}, with_cell_id=False)
    params = {"karyotyping": stage_cfg(), "evidence": {"bootstrap": 100}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = outputs(tmp_path)
    res = subprocess.run([sys.executable, str(ROOT / "stages" / "karyotype.py"), "data/ingested/chr",
                          "data/splits/chr.csv", "models", str(out["metrics"]), str(out["confusion"]),
                          str(out["eval_dir"]), str(out["example"])], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "no cell_id" in res.stderr
    assert json.loads((tmp_path / "metrics" / "karyotyping" / "oracle.json").read_text())["skipped"] == \
        "no cell_id in manifest"
    assert (tmp_path / "plots" / "karyotyping" / "oracle.csv").read_text().strip() == "actual,predicted"
    assert (tmp_path / "reports" / "figures" / "karyotyping_example.png").is_file()
    md = karyotyping_section(tmp_path / "reports" / "chromosomes.md", False, tmp_path / "metrics" / "karyotyping",
                             tmp_path / "plots" / "karyotyping")
    assert "skipped: no cell_id in manifest" in md
