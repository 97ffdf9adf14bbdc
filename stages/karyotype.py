"""Stage karyotype: each cell's crops → its karyotype by constrained assignment over the hypotheses, with a
"no hypothesis fits" referral; metrics with patient-bootstrap intervals, a confusion table, per-cell karyograms."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("data", "ingested crop dataset"), ("split", "its split CSV"),
                  ("models", "folder of the candidate runs"), ("metrics", "metrics JSON"),
                  ("confusion", "confusion CSV"), ("out", "evaluation folder"), ("example", "example karyogram PNG")
                  ).parse_args()
    cfg = params_of(args, "karyotyping")
    from genediag.karyotyping.cells import karyotype_cells
    from genediag.schema import EVIDENCE, validate

    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    karyotype_cells(cfg, args.data, args.split, args.models,
                    {"metrics": args.metrics, "confusion": args.confusion, "eval_dir": args.out,
                     "example": args.example}, evidence)


if __name__ == "__main__":
    run(main)
