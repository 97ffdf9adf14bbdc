"""Stage train@<run>: fit the model of `train.<run>` and write models/<run>/ (model.pt, args.yaml, summary.csv)."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "run name (a key of train: in params.yaml)").parse_args()
    cfg = stage_section(args, "train", args.name)
    from genediag.training.run import train_run

    try:
        train_run(args.name, cfg)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run(main)
