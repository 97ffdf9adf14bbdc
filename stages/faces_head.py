"""Stage faces_head@<run>: a FaceNet-init syndrome run (`faces.heads.<run>`): FaceNet (CASIA-WebFace) with its first
layers fixed, the rest trained on the cached forward pass of faces_embed_facenet, and its test evaluation
(metrics with patient-bootstrap intervals, calibration, referral, OOD probes, predictions, embeddings) with its
nearest-neighbour matching and gallery."""

from _common import params_of, parser, run


def main() -> None:
    p = parser(__doc__, ("run", "run (a key of faces.heads)"), ("cache", "FaceNet cache folder"),
               ("data", "ingested syndromes (160×160)"), ("split", "split CSV"), ("out", "run folder"),
               ("metrics", "metrics JSON"), ("plots", "plots folder of the branch"), ("eval", "evaluation folder"))
    p.add_argument("--live", help="dvclive folder (training curves)")
    p.add_argument("--nn", required=True, help="nearest-neighbour matching metrics JSON")
    p.add_argument("--gallery", required=True, help="the run's nearest-neighbour gallery .npz")
    args = p.parse_args()
    from genediag.faces.heads import train_head_run
    from genediag.schema import EVIDENCE, FACE_RUN, MATCHING, resolve_run, validate

    cfg = resolve_run("faces", args.run, params_of(args, "faces"), args.params, "heads", FACE_RUN)
    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    matching = validate(params_of(args, "faces", "matching"), MATCHING, f"{args.params}: faces.matching")
    train_head_run(args.run, cfg, args.cache, args.data, args.split, args.out, args.metrics, args.plots, args.eval,
                   evidence, live_dir=args.live, matching=matching, nn_path=args.nn, gallery_path=args.gallery)


if __name__ == "__main__":
    run(main)
