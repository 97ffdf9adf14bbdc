"""Stage generate: render the embedded synthetic cohort (chromosome crops and karyograms) from `generate:`."""

from _common import SYNTHETIC_ROOT, parser, run, stage_section


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "generate")
    from genediag.synthetic.cohort import generate_cohort

    try:
        generate_cohort(SYNTHETIC_ROOT, cfg, report_dir="reports/figures")
    except ValueError as exc:  # bad generator params: one line naming the key
        raise SystemExit(f"error: {args.params}: generate: {exc}")


if __name__ == "__main__":
    run(main)
