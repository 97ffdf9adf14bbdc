"""Stage faces_generate: the synthetic dysmorphology cohort (`faces_generate:`) → data/synthetic-faces/."""

from _common import parser, run, stage_section

FACES_ROOT = "data/synthetic-faces"


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "faces_generate")
    from genediag.faces.synthetic import CohortConfigError, generate_face_cohort

    try:
        generate_face_cohort(FACES_ROOT, cfg, figure="reports/figures/synthetic_faces.png")
    except CohortConfigError as exc:
        raise SystemExit(f"error: {args.params}: faces_generate: {exc}")


if __name__ == "__main__":
    run(main)
