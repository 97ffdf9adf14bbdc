"""ChromosomeNet's baselines (timm) and EfficientNet-Lite0: the paper preset makes every model of the family a run
with the paper's recipe, and every model runs a forward/backward pass and a one-epoch fit through the one trainer, at
the input size params.yaml configures for it (32 px for the models only the paper preset trains, which uses 224 px
on a GPU machine)."""

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genediag import schema
from genediag.data.datasets import CachedImageDataset
from genediag.models import create_model
from genediag.models.checkpoint import load_checkpoint, save_checkpoint
from genediag.presets import META_KEY, deep_merge
from genediag.training.trainer import fit

ROOT = Path(__file__).resolve().parents[2]
FAMILY = ["mobilenetv2_100", "densenet121", "resnet50", "resnet101", "resnet152", "resnext101_32x8d",
          "res2net50_26w_4s", "resnest50d", "tf_efficientnet_lite0"]
PAPER_PRESET = ROOT / "presets" / "chromosomenet_paper.yaml"


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader) or {}


def _timm_runs(params: dict) -> dict[str, dict]:
    """model_name → the resolved config (run over its family, schema defaults filled) of every timm chromosome run."""
    section = params.get("chromosomes") or {}
    resolved = [schema.resolve_run("chromosomes", run, section, "test") for run in section.get("runs") or {}]
    return {cfg["arch"]["model_name"]: cfg for cfg in resolved if cfg["arch"]["name"] == "timm"}


PARAMS = _load(ROOT / "params.yaml")
DEFAULT_RUNS = _timm_runs(PARAMS)


def _with_paper_preset() -> dict:
    preset = {k: v for k, v in _load(PAPER_PRESET).items() if k != META_KEY}
    return deep_merge(copy.deepcopy(PARAMS), preset)


def test_paper_preset_covers_the_family():
    runs = _timm_runs(_with_paper_preset())
    assert sorted(runs) == sorted(FAMILY)
    for name, cfg in runs.items():
        f = cfg["fit"]
        assert f["optimizer"]["lr"] == pytest.approx(1e-4) and f["batch_size"] == 32 and f["epochs"] == 500
        assert f["scheduler"]["name"] == "onecycle" and f["loss"]["label_smoothing"] == pytest.approx(0.1)
        assert f["early_stopping"]["patience"] == 5 and f["restore_best"] and cfg["input_size"] == 224
        assert cfg["caps"] == {"train": None, "val": None} and cfg["augment"] == [], name
        assert cfg["task"] == "chromosomes24" and cfg["classes"] == "normal24" and cfg["model"] == name
        assert cfg["arch"]["pretrained"] in ("cache", "pypi:efficientnet-lite0"), name


def test_paper_recipe_lives_in_the_family():
    """The recipe is the timm family's (a run added later gets it too); the runs name only their backbone."""
    preset = _load(PAPER_PRESET)
    family = preset["chromosomes"]["families"]["timm"]
    assert family["fit"]["epochs"] == 500 and family["input_size"] == 224
    assert family["caps"] == {"train": None, "val": None}
    for run, entry in preset["chromosomes"]["runs"].items():
        assert entry["family"] == "timm" and set(entry) <= {"family", "task", "model", "classes", "arch"}, run
        assert set(entry["arch"]) == {"model_name", "pretrained"}, run
    assert preset["datasets"]["chromosomes"]["ingest"]["size"] == 224  # the cache at the models' input size
    assert set(preset["chromosomes"]["benchmark"]) == set(preset["chromosomes"]["runs"])


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and does not stall when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _size(name: str) -> int:
    return int(DEFAULT_RUNS[name]["input_size"]) if name in DEFAULT_RUNS else 32


@pytest.mark.parametrize("name", FAMILY)
def test_forward_backward_and_one_epoch_fit(name, tmp_path):
    size = _size(name)
    torch.manual_seed(0)
    model = create_model("timm", num_classes=5, in_chans=1, img_size=size, model_name=name, pretrained=False)
    x = torch.rand(2, 1, size, size)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    loss = torch.nn.functional.cross_entropy(out, torch.tensor([0, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads[:1] + grads[-1:])  # first convolution and classifier
    assert grads[0].abs().sum() > 0 and grads[-1].abs().sum() > 0
    model.zero_grad(set_to_none=True)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, size, size), dtype=np.uint8)
    targets = np.arange(12) % 5
    train = CachedImageDataset(images, np.arange(8), targets[:8], size)
    val = CachedImageDataset(images, np.arange(8, 12), targets[8:], size)
    cfg = schema.validate({"epochs": 1, "batch_size": 4, "eval_batch_size": 4, "device": "cpu",
                           "optimizer": {"name": "adam", "lr": 1e-4}, "scheduler": {"name": "onecycle"},
                           "loss": {"name": "cross_entropy", "label_smoothing": 0.1}}, schema.FIT, "test")
    before = {k: v.clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}
    model, result = fit(model, train, val, cfg, tmp_path / "run")
    assert result.epochs_run == 1 and np.isfinite(result.best_val_loss)
    assert (tmp_path / "run" / "summary.csv").is_file()
    changed = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed, "one epoch of training changed no weight"


def test_timm_checkpoint_round_trip(tmp_path):
    """A trained timm backbone is rebuilt from its checkpoint by the factory (no weights needed at load time)."""
    arch = {"name": "timm", "model_name": "mobilenetv2_100", "pretrained": False, "drop_rate": 0.2}
    model = create_model(arch["name"], num_classes=3, in_chans=1, img_size=32,
                         **{k: v for k, v in arch.items() if k != "name"}).eval()
    save_checkpoint(tmp_path / "m.pt", model, arch, ["a", "b", "c"], {"size": 32, "in_chans": 1, "invert": True})
    again, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), again(x)) and meta["class_names"] == ["a", "b", "c"]


def test_checkpoint_loads_without_the_weights_it_started_from(tmp_path):
    """A model trained from a local weights file is rebuilt from its checkpoint alone: the file may be gone (a
    colleague pulled only models/<run>), and the input normalisation that came with the weights is restored."""
    from genediag.models.thesis_transfer import _vgg16

    net, *_ = _vgg16(1)
    weights = tmp_path / "vgg16.pth"
    torch.save(net.state_dict(), weights)
    arch = {"name": "thesis_transfer", "backbone": "vgg16", "trainable": "frozen", "pretrained": str(weights)}
    model = create_model(arch["name"], num_classes=2, in_chans=1, img_size=32,
                         **{k: v for k, v in arch.items() if k != "name"}).eval()
    assert float(model.normalize.std.flatten()[0]) != 1.0  # ImageNet statistics came with the weights
    save_checkpoint(tmp_path / "m.pt", model, arch, ["normal", "abnormal"], {"size": 32, "in_chans": 1, "invert": True})
    weights.unlink()
    again, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(model(x), again(x)) and meta["arch"]["pretrained"] == str(weights)
