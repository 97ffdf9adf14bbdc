"""Stage faces_verify@<run> (a stage-1 model: LFW-protocol verification on held-out people) and
faces_evaluate@<run> (a stage-2 model: top-1, per-class precision/recall, calibration, referral, embeddings, and
GestaltMatcher-style nearest-neighbour matching with the run's gallery)."""

from _common import params_of, parser, run


def main() -> None:
    p = parser(__doc__, ("stage", "verify or evaluate"), ("model", "run folder"), ("data", "ingested face dataset"),
               ("split", "split CSV"), ("metrics", "metrics JSON"))
    p.add_argument("--plots", help="plots folder of the branch (evaluate)")
    p.add_argument("--out", help="evaluation folder of the run (evaluate)")
    p.add_argument("--nn", help="nearest-neighbour matching metrics JSON (evaluate; faces.matching)")
    p.add_argument("--gallery", help="the run's nearest-neighbour gallery .npz (evaluate)")
    args = p.parse_args()
    from genediag.faces.evaluate import evaluate_face_run, verify_run
    from genediag.schema import EVIDENCE, MATCHING, validate

    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    if args.stage == "verify":
        verify_run(args.model, args.data, args.split, args.metrics, evidence)
    elif args.stage == "evaluate":
        matching = None
        if args.nn or args.gallery:
            if not (args.nn and args.gallery):
                raise SystemExit("error: --nn and --gallery go together")
            matching = validate(params_of(args, "faces", "matching"), MATCHING, f"{args.params}: faces.matching")
        evaluate_face_run(args.model, args.data, args.split, args.metrics, args.plots, args.out, evidence, matching,
                          args.nn, args.gallery)
    else:
        raise SystemExit(f"error: stage must be verify or evaluate, got {args.stage!r}")


if __name__ == "__main__":
    run(main)
