"""Stage report_karyograms: reports/karyograms.md (Table 5.1 layout, ROC, MC-dropout referral, missed abnormality
types, the base, the search) and its figures."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("source", "ingested karyogram dataset"), ("data", "the (balanced) dataset of the runs"),
                  ("split", "its split CSV"), ("out", "report Markdown"), ("figures", "figure folder")).parse_args()
    cfg = params_of(args, "reports", "karyograms")
    from genediag.reports.karyograms import write_karyogram_report

    write_karyogram_report(cfg, args.source, args.data, args.split, args.out, figures_dir=args.figures)


if __name__ == "__main__":
    run(main)
