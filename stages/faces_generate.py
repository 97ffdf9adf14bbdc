"""Stage faces_generate: the synthetic dysmorphology cohort (`faces_generate:`) → data/synthetic-faces/."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("out", "output folder"), ("figure", "the cohort figure (PNG; shows faces: DVC, not git)")
                  ).parse_args()
    cfg = params_of(args, "faces_generate")
    from genediag.faces.synthetic import CohortConfigError, generate_face_cohort

    try:
        generate_face_cohort(args.out, cfg, figure=args.figure)
    except CohortConfigError as exc:
        raise SystemExit(f"error: {args.params}: faces_generate: {exc}")


if __name__ == "__main__":
    run(main)
