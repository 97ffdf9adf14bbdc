"""Stage mc_dropout@<name>: Monte-Carlo dropout on a trained run's test split — majority vote, confidence,
referral below the threshold; metrics/mc_dropout/<name>.json, plots/referral/<name>.csv,
evaluation/mc_dropout/<name>/."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "MC-dropout entry (a key of mc_dropout: in params.yaml)").parse_args()
    cfg = stage_section(args, "mc_dropout", args.name)
    run_cfg = stage_section(args, "train", str(cfg.get("run")))
    from genediag.karyograms.mc_dropout import run_mc_dropout

    run_mc_dropout(args.name, cfg, run_cfg)


if __name__ == "__main__":
    run(main)
