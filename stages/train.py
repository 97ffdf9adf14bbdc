"""Stage train@<run> / karyogram_train@<run>: fit `<branch>.runs.<run>` (over its family) on the branch's dataset
→ the run folder (model.pt with its preprocessing, temperature and OOD detector; args.yaml; summary.csv; fit.json)
and the dvclive curves."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("branch", "chromosomes or karyograms"), ("run", "run (a key of <branch>.runs)"),
                  ("data", "ingested dataset folder"), ("split", "split CSV"), ("out", "run folder"),
                  ("plots", "dvclive folder")).parse_args()
    from genediag.schema import resolve_run
    from genediag.training.run import train_run

    cfg = resolve_run(args.branch, args.run, params_of(args, args.branch), args.params)
    try:
        train_run(args.run, cfg, args.data, args.split, args.out, args.plots, branch=args.branch)
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    run(main)
