"""Stage faces_report: reports/faces.md and reports/figures/faces/ from the face branch's metrics and data."""

from pathlib import Path

from _common import parser, run, stage_section

FACES_ROOT = Path("data/synthetic-faces")


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "faces_report")
    source = Path(stage_section(args, "ingest", cfg["syndromes"], "source"))
    try:  # the default run's photos come from the embedded synthetic face cohort
        source.resolve().relative_to(FACES_ROOT.resolve())
        synthetic = True
    except ValueError:
        synthetic = False
    from genediag.config import check_keys
    from genediag.reports.faces import write_faces_report

    check_keys(cfg, {"syndromes", "identities", "pretrain", "finetune", "embedding_runs"}, f"{args.params}: faces_report")
    write_faces_report(cfg, synthetic, "reports/faces.md", figures_dir="reports/figures/faces",
                       cohort_dir=str(FACES_ROOT))


if __name__ == "__main__":
    run(main)
