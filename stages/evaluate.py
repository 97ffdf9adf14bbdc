"""Stage evaluate@<run> / karyogram_evaluate@<run>: test-set metrics with patient-bootstrap intervals,
calibration, referral and out-of-distribution checks (`evidence:`), plots and per-item predictions."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("model", "run folder (model.pt, args.yaml)"), ("data", "ingested dataset folder"),
                  ("split", "split CSV"), ("metrics", "metrics JSON"), ("plots", "plots folder of the branch"),
                  ("out", "evaluation folder of the run")).parse_args()
    from genediag.evaluation.evaluate import evaluate_run
    from genediag.schema import EVIDENCE, validate

    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    evaluate_run(args.model, args.data, args.split, args.metrics, args.plots, args.out, evidence)


if __name__ == "__main__":
    run(main)
