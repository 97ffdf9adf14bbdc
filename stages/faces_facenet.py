"""Stage faces_facenet: FaceNet (CASIA-WebFace) as it ships, no training here — LFW-protocol verification on the
held-out people (the protocol faces_verify@ applies to the trained stage-1 models) and GestaltMatcher-style
nearest-neighbour matching of the syndrome photos on its raw embeddings, both from faces_embed_facenet's cache."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("cache", "faces_embed_facenet's folder"), ("identities", "ingested identities (160×160)"),
                  ("syndromes", "ingested syndromes (160×160)"), ("split", "their split CSV"),
                  ("metrics", "verification metrics JSON"), ("nn", "matching metrics JSON"),
                  ("gallery", "gallery .npz")).parse_args()
    from pathlib import Path

    from genediag.data.ingest import ingest_summary
    from genediag.faces.evaluate import verify_facenet
    from genediag.faces.matching import facenet_rows, match_run
    from genediag.schema import EVIDENCE, MATCHING, validate

    evidence = validate(params_of(args, "evidence"), EVIDENCE, f"{args.params}: evidence")
    matching = validate(params_of(args, "faces", "matching"), MATCHING, f"{args.params}: faces.matching")
    verify_facenet(Path(args.cache) / "identities.npz", args.identities, args.metrics, evidence)
    feats, rows = facenet_rows(Path(args.cache) / "syndromes.npz", args.split)
    match_run("facenet", feats, rows, [], matching, evidence, args.nn, args.gallery,
              bool(ingest_summary(args.syndromes).get("synthetic")))


if __name__ == "__main__":
    run(main)
