"""Stage faces_split@<dataset>: split the aligned faces (`faces_split.<dataset>`) → data/faces/splits/<dataset>.csv."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "dataset name (a key of faces_split: in params.yaml)").parse_args()
    cfg = stage_section(args, "faces_split", args.name)
    from genediag.data.split import SplitError
    from genediag.faces.split import split_faces

    try:
        split_faces(f"data/faces/aligned/{args.name}", f"data/faces/splits/{args.name}.csv", cfg,
                    where=f"{args.params}: faces_split.{args.name}")
    except SplitError as exc:
        raise SystemExit(f"error: faces_split.{args.name}: {exc}")


if __name__ == "__main__":
    run(main)
