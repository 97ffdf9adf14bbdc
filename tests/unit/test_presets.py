"""`python -m genediag.presets apply`: deep merge into params.yaml, comments kept, validation before writing."""

import shutil
from pathlib import Path

import pytest
import yaml

from genediag.config import ConfigError
from genediag.presets import apply_preset, deep_merge, main

ROOT = Path(__file__).resolve().parents[1]

PARAMS = """\
# top comment
generate:                 # the generator
  seed: 2026
  abnormalities: ["+21", "+18", "+13", "-X", "XXY", "del(5)(p14)", "del(4)(p15.2)", "del(18)(p11)",
                  "del(1)(p36.1)", "t(9;22)(q34;q11.2)", "inv(9)(p12q13)", "i(X)(q10)"]

train:
  a-dcnn:                 # the first run
    task: a
    model: dcnn
    dataset: chromosomes
    classes: normal24
    arch: {name: pinnacle_dcnn, channels: [32, 64, 64]}
    input_size: 64
    fit:
      epochs: 10
      optimizer: {name: adam, lr: 0.003}

report:
  chromosomes:
    tasks: [a]
"""


def test_deep_merge_rules():
    base = {"train": {"a": {"fit": {"epochs": 10, "lr": 1}, "augment": [1, 2]}}, "x": 1}
    out = deep_merge(base, {"train": {"a": {"fit": {"epochs": 2}, "augment": [3]}, "b": {"task": "b"}}, "x": None})
    assert out == {"train": {"a": {"fit": {"epochs": 2, "lr": 1}, "augment": [3]}, "b": {"task": "b"}}, "x": None}


def test_apply_keeps_untouched_sections_and_comments(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    preset = tmp_path / "p.yaml"
    preset.write_text("""\
preset: a description that is not merged
train:
  a-dcnn:
    fit: {epochs: 500}
  b-timm:
    task: a
    model: mobilenetv2_100
    dataset: chromosomes
    classes: normal24
    arch: {name: timm, model_name: mobilenetv2_100, pretrained: cache}
    input_size: 224
    max_train_per_class: null
report:
  chromosomes:
    tasks: [a, b]
""")
    diff = apply_preset(preset, params, dry_run=True)
    assert params.read_text() == PARAMS  # dry run: nothing written
    assert "+      epochs: 500" in diff and "-      epochs: 10" in diff
    apply_preset(preset, params)
    text = params.read_text()
    # the generate section is byte-identical (comments, flow style, line breaks)
    assert PARAMS.split("train:")[0] == text.split("train:")[0]
    assert "# the first run" in text and "preset:" not in text
    merged = yaml.safe_load(text)
    assert merged["train"]["a-dcnn"]["fit"] == {"epochs": 500, "optimizer": {"name": "adam", "lr": 0.003}}
    assert merged["train"]["b-timm"]["max_train_per_class"] is None
    assert merged["report"]["chromosomes"]["tasks"] == ["a", "b"]
    assert apply_preset(preset, params) == ""  # idempotent


def test_bad_preset_is_rejected_before_writing(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  a-dcnn:\n    fitt: {epochs: 1}\n")
    with pytest.raises(ConfigError, match=r"train\.a-dcnn: unknown key\(s\) \['fitt'\]"):
        apply_preset(bad, params)
    assert params.read_text() == PARAMS
    assert main(["apply", str(bad), "--params", str(params)]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert main(["apply", str(tmp_path / "missing.yaml"), "--params", str(params)]) == 2


def test_paper_preset_applies_to_the_real_params(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    assert main(["apply", str(ROOT / "presets" / "chromosomenet_paper.yaml"), "--params", str(params)]) == 0
    merged = yaml.safe_load(params.read_text())
    runs = {r: c for r, c in merged["train"].items() if c["arch"]["name"] == "timm"}
    assert len(runs) == 9
    for c in runs.values():
        assert c["input_size"] == 224 and c["max_train_per_class"] is None and c["max_val_per_class"] is None
    assert merged["ingest"]["chromosomes"]["size"] == 224
    original = yaml.safe_load((ROOT / "params.yaml").read_text())
    for run, cfg in original["train"].items():
        if cfg["arch"]["name"] != "timm":  # the DCNN runs are not part of the preset
            assert merged["train"][run] == cfg
