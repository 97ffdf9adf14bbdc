"""Stage report_faces: reports/faces.md from the face branch's metrics and data; every picture showing a face goes
to the figure folder, a DVC output (never git)."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("syndromes", "ingested syndrome photos"), ("identities", "ingested identity photos"),
                  ("out", "report Markdown"), ("figures", "figure folder (DVC-tracked: faces)")).parse_args()
    cfg = params_of(args, "reports", "faces")
    from genediag.reports.faces import write_faces_report

    write_faces_report(cfg, args.syndromes, args.identities, args.out, figures_dir=args.figures,
                       cohort_figure=f"{args.figures}/synthetic_faces.png")


if __name__ == "__main__":
    run(main)
