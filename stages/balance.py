"""Stage balance@<name>: augment the minority class of a dataset's train split (layout-preserving) into a
derived dataset (ingest format) and its split, recording what was generated."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "derived dataset (a key of karyograms.balance)"), ("data", "source dataset folder"),
                  ("split", "source split CSV"), ("out", "derived dataset folder"), ("out_split", "derived split CSV")
                  ).parse_args()
    cfg = params_of(args, "karyograms", "balance", args.name)
    from genediag.karyograms.balance import balance_dataset

    balance_dataset(args.name, cfg, args.data, args.split, args.out, args.out_split)


if __name__ == "__main__":
    run(main)
