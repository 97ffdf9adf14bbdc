"""Stage balance@<name>: augment the minority class of a dataset's train split (layout-preserving) into the
derived dataset data/ingested/<name>/ + data/splits/<name>.csv, recording what was generated."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "derived dataset name (a key of balance: in params.yaml)").parse_args()
    cfg = stage_section(args, "balance", args.name)
    from genediag.data.split import SplitError
    from genediag.karyograms.balance import balance_dataset

    try:
        balance_dataset(args.name, cfg)
    except SplitError as exc:
        raise SystemExit(f"error: balance.{args.name}: {exc}")


if __name__ == "__main__":
    run(main)
