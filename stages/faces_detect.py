"""Stage faces_detect@<dataset>: MTCNN on the ingested photos (`faces_detect.<dataset>`), reviewer overrides from
its `manual` CSV → data/faces/detect/<dataset>/, review queue CSV + contact sheet under reports/faces_review/."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "dataset name (a key of faces_detect: in params.yaml)").parse_args()
    cfg = stage_section(args, "faces_detect", args.name)
    from genediag.faces.detect import run_detection

    run_detection(f"data/ingested/{args.name}", cfg, f"data/faces/detect/{args.name}",
                  f"reports/faces_review/{args.name}.csv", f"reports/faces_review/{args.name}.png",
                  where=f"{args.params}: faces_detect.{args.name}")


if __name__ == "__main__":
    run(main)
