"""Stage pretrain_base@<name>: train the convolutional base of `pretrain_base.<name>` to count the chromosomes in
the slots of karyograms recomposed from the train patients' cells, and write models/bases/<name>/weights.pth (a
local weights file for `arch: {name: thesis_transfer, pretrained: models/bases/<name>/weights.pth}`)."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "base name (a key of pretrain_base: in params.yaml)").parse_args()
    cfg = stage_section(args, "pretrain_base", args.name)
    from genediag.karyograms.pretrain import pretrain_base

    pretrain_base(args.name, cfg)


if __name__ == "__main__":
    run(main)
