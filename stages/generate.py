"""Stage generate: render the embedded synthetic cohort (chromosome crops and karyograms) from `generate:`."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("out", "output folder (data/synthetic)"), ("figures", "folder of the cohort figures")).parse_args()
    cfg = params_of(args, "generate")
    from genediag.synthetic.cohort import generate_cohort

    try:
        generate_cohort(args.out, cfg, report_dir=args.figures)
    except ValueError as exc:  # bad generator params: one line naming the key
        raise SystemExit(f"error: {args.params}: generate: {exc}")


if __name__ == "__main__":
    run(main)
