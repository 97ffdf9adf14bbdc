"""Stage karyotype: each cell's crops → its karyotype by constrained assignment (metrics/karyotyping/<run>.json,
plots/karyotyping/<run>.csv, evaluation/karyotyping/<run>/, reports/figures/karyotyping_example.png)."""

from _common import is_synthetic, parser, run, stage_section


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "karyotype")
    source = stage_section(args, "ingest", cfg.get("dataset", "chromosomes"), "source")
    from genediag.karyotyping.cells import karyotype_cells

    karyotype_cells(cfg, synthetic=is_synthetic(source))


if __name__ == "__main__":
    run(main)
