"""Stage split@<dataset>: stratified, group-aware split of an ingested dataset, with a leakage audit."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "dataset name (a key of split: in params.yaml)").parse_args()
    cfg = stage_section(args, "split", args.name)
    from genediag.config import check_keys
    from genediag.data.split import SplitError, split_dataset

    check_keys(cfg, {"ratios", "seed", "stratify_on", "trials"}, f"{args.params}: split.{args.name}")
    try:
        split_dataset(f"data/ingested/{args.name}", f"data/splits/{args.name}.csv", cfg["ratios"], int(cfg["seed"]),
                      cfg.get("stratify_on", "label"), int(cfg.get("trials", 200)))
    except SplitError as exc:
        raise SystemExit(f"error: split.{args.name}: {exc}")


if __name__ == "__main__":
    run(main)
