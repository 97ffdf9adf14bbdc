"""Stage faces_realign@<name>: a face dataset's photos aligned onto another template (faces.realign.<name>) from the
landmarks its ingest found — a derived dataset (ingest format) with the same photos and the source's split."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "derived dataset (a key of faces.realign)"), ("data", "source dataset folder"),
                  ("split", "source split CSV"), ("photos", "the source's photo folder"),
                  ("out", "derived dataset folder"), ("out_split", "derived split CSV")).parse_args()
    from genediag.faces.realign import realign_dataset
    from genediag.schema import REALIGN, validate

    cfg = validate(params_of(args, "faces", "realign", args.name), REALIGN, f"{args.params}: faces.realign.{args.name}")
    realign_dataset(args.name, cfg, args.data, args.split, args.photos, args.out, args.out_split)


if __name__ == "__main__":
    run(main)
