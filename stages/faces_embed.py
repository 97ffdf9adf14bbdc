"""Stage faces_embed_facenet: FaceNet's forward pass once per photo — the syndrome photos (repeat_3 outputs and
512-d embeddings), the held-out identity photos with their mirror images (verification) and the OOD probes — cached
for the verification, the FaceNet-init heads and the nearest-neighbour matching (faces/embeddings.py)."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("weights", "converted FaceNet state dict"), ("syndromes", "ingested syndromes (160×160)"),
                  ("identities", "ingested identities (160×160)"), ("identities_split", "their split CSV"),
                  ("out", "cache folder")).parse_args()
    from genediag.faces.embeddings import facenet_cache
    from genediag.schema import FACENET, validate

    cfg = validate(params_of(args, "faces", "facenet"), FACENET, f"{args.params}: faces.facenet")
    facenet_cache(args.weights, args.syndromes, args.identities, args.identities_split, args.out,
                  batch_size=cfg["batch_size"])


if __name__ == "__main__":
    run(main)
