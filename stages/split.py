"""Stage split@<dataset>: stratified, patient-grouped split of an ingested dataset (fixed splits of the source
kept, near-copies kept together) with a leakage audit → the split CSV and its JSON summary."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "dataset (a key of datasets:)"), ("data", "ingested dataset folder"),
                  ("out", "split CSV")).parse_args()
    from genediag.data.split import split_dataset
    from genediag.schema import resolve_dataset

    cfg = resolve_dataset(args.name, params_of(args, "datasets", args.name), f"{args.params}: datasets")
    split_dataset(args.data, args.out, cfg["split"], cfg["kind"], where=f"datasets.{args.name}.split")


if __name__ == "__main__":
    run(main)
