"""Stage report@<name>: write reports/<name>.md from the metrics, plots and data summaries."""

from _common import is_synthetic, parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "report name (a key of report: in params.yaml)").parse_args()
    cfg = stage_section(args, "report", args.name)
    source = stage_section(args, "ingest", cfg["dataset"], "source")
    from genediag.reports.chromosomes import write_chromosome_report

    write_chromosome_report(cfg["tasks"], cfg["dataset"], is_synthetic(source), f"reports/{args.name}.md",
                            figures_dir=f"reports/figures/{args.name}")


if __name__ == "__main__":
    run(main)
