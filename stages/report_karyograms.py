"""Stage report_karyograms: reports/karyograms.md (Table 5.1 layout, ROC, MC-dropout referral, missed abnormality
types) and its figures in reports/figures/karyograms/."""

from _common import is_synthetic, parser, run, stage_section


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "report_karyograms")
    from genediag.config import check_keys

    check_keys(cfg, {"dataset", "balanced", "task", "runs", "mc_dropout", "hpsearch"}, f"{args.params}: report_karyograms")
    source = stage_section(args, "ingest", cfg["dataset"], "source")
    runs = stage_section(args, "train")
    from genediag.reports.karyograms import write_karyogram_report

    write_karyogram_report(cfg, runs, is_synthetic(source), "reports/karyograms.md",
                           figures_dir="reports/figures/karyograms")


if __name__ == "__main__":
    run(main)
