"""Stage karyogram_base@<name>: train the convolutional base of `karyograms.bases.<name>` to count the
chromosomes in the slots of karyograms recomposed from the train patients' cells → weights.pth, the local weights
file the karyogram runs load (`arch.pretrained`)."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "base (a key of karyograms.bases)"), ("split", "karyogram split CSV"),
                  ("out", "output folder"), ("metrics", "metrics JSON")).parse_args()
    cfg = params_of(args, "karyograms", "bases", args.name)
    from genediag.karyograms.pretrain import pretrain_base

    pretrain_base(args.name, cfg, args.split, args.out, args.metrics)


if __name__ == "__main__":
    run(main)
