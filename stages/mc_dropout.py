"""Stage mc_dropout@<name>: Monte-Carlo dropout on a trained karyogram run's test split — majority vote,
agreement, referral below the threshold; metrics, a referral curve and per-case predictions."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "entry (a key of karyograms.mc_dropout)"), ("model", "run folder"),
                  ("data", "ingested dataset folder"), ("split", "split CSV"), ("metrics", "metrics JSON"),
                  ("curve", "referral curve CSV"), ("out", "evaluation folder")).parse_args()
    cfg = params_of(args, "karyograms", "mc_dropout", args.name)
    from genediag.karyograms.mc_dropout import run_mc_dropout

    run_mc_dropout(args.name, cfg, args.model, args.data, args.split, args.metrics, args.curve, args.out)


if __name__ == "__main__":
    run(main)
