"""Stage report_chromosomes: reports/chromosomes.md (the chromosome classifiers' tables and figures, inference
time, cell karyotyping) from the branch's metrics, plots and data summaries."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("data", "ingested crop dataset"), ("split", "its split JSON"), ("out", "report Markdown"),
                  ("figures", "figure folder")).parse_args()
    cfg = params_of(args, "reports", "chromosomes")
    from genediag.reports.chromosomes import write_chromosome_report

    write_chromosome_report(cfg["tasks"], args.data, args.split, args.out, figures_dir=args.figures)


if __name__ == "__main__":
    run(main)
