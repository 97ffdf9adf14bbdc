"""Stage evaluate@<run>: test-set metrics to metrics/<task>/<model>.json, confusion data to plots/."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "run name (a key of train: in params.yaml)").parse_args()
    cfg = stage_section(args, "train", args.name)
    from genediag.evaluation.evaluate import evaluate_run

    evaluate_run(args.name, cfg)


if __name__ == "__main__":
    run(main)
