"""Stage hpsearch@<name>: Optuna TPE search of a run's learning rate and batch size on validation loss;
writes hpsearch/<name>.json (best values, usable by a run through train.<run>.hpsearch) and the trials table."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "search name (a key of hpsearch: in params.yaml)").parse_args()
    cfg = stage_section(args, "hpsearch", args.name)
    run_cfg = stage_section(args, "train", str(cfg.get("run")))
    from genediag.karyograms.hpsearch import run_hpsearch

    run_hpsearch(args.name, cfg, run_cfg)


if __name__ == "__main__":
    run(main)
