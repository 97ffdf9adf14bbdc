"""Stage faces_align@<dataset>: 5-landmark similarity alignment (`faces_align.<dataset>`) of the detections
→ data/faces/aligned/<dataset>/ (an ingest-format cache: manifest.csv, images.npy, excluded.csv, summary.json)."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "dataset name (a key of faces_align: in params.yaml)").parse_args()
    cfg = stage_section(args, "faces_align", args.name)
    from genediag.faces.align import align_dataset

    align_dataset(f"data/faces/detect/{args.name}", cfg, f"data/faces/aligned/{args.name}",
                  where=f"{args.params}: faces_align.{args.name}")


if __name__ == "__main__":
    run(main)
