"""Stage faces_pretrain@<run> / faces_finetune@<run>: train `faces.pretrain.<run>` (stage 1, identities) or
`faces.finetune.<run>` (stage 2, syndromes, from a stage-1 run) → the run folder and its dvclive curves."""

from _common import params_of, parser, run


def main() -> None:
    p = parser(__doc__, ("stage", "pretrain or finetune"), ("run", "run (a key of faces.<stage>)"),
               ("data", "ingested face dataset"), ("split", "split CSV"), ("out", "run folder"),
               ("plots", "dvclive folder"))
    p.add_argument("--init", help="the stage-1 run folder (finetune)")
    args = p.parse_args()
    if args.stage not in ("pretrain", "finetune"):
        raise SystemExit(f"error: stage must be pretrain or finetune, got {args.stage!r}")
    from genediag.faces.train import train_face_run
    from genediag.schema import FACE_RUN, resolve_run

    cfg = resolve_run("faces", args.run, params_of(args, "faces"), args.params, args.stage, FACE_RUN)
    train_face_run(args.run, cfg, args.stage, args.data, args.split, args.out, args.plots, args.init)


if __name__ == "__main__":
    run(main)
