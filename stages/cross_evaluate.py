"""Stage cross_evaluate@<name>: a trained run scored on another dataset's test split (cross_evaluation.<name>)."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "a key of cross_evaluation"), ("model", "run folder"),
                  ("data", "ingested dataset"), ("split", "its split CSV"), ("metrics", "metrics JSON"),
                  ("plots", "plots folder"), ("out", "evaluation folder")).parse_args()
    from genediag.evaluation.cross import cross_evaluate
    from genediag.schema import CROSS_EVALUATION, EVIDENCE, validate

    cfg = validate(params_of(args, "cross_evaluation", args.name), CROSS_EVALUATION,
                   f"{args.params}: cross_evaluation.{args.name}")
    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    cross_evaluate(args.name, cfg, args.model, args.data, args.split, args.metrics, args.plots, args.out, evidence)


if __name__ == "__main__":
    run(main)
