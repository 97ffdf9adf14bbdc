"""Stage ingest@<dataset>: decode and validate `datasets.<dataset>` into a cache (manifest, quarantine with a
reason per refused item, images.npy, summary); face photos are detected and aligned on the way."""

from _common import params_of, parser, run


def main() -> None:
    p = parser(__doc__, ("name", "dataset (a key of datasets:)"), ("out", "output folder"))
    p.add_argument("--review", default="review", help="folder of reviewer corrections (review/<kind>/<dataset>.csv)")
    args = p.parse_args()
    cfg = params_of(args, "datasets", args.name)
    from genediag.pipeline import ingest_dataset

    ingest_dataset(args.name, cfg, args.out, args.review, where=f"{args.params}: datasets")


if __name__ == "__main__":
    run(main)
