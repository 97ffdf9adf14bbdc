"""Stage faces_verify@<run> (a `faces_pretrain` run: LFW-protocol verification on held-out people) and
faces_evaluate@<run> (a `faces_finetune` run: top-1, per-class precision/recall, confusion, embeddings)."""

from _common import parser, run, stage_section


def main() -> None:
    p = parser(__doc__)
    p.add_argument("section", choices=["faces_pretrain", "faces_finetune"], help="params section of the run")
    p.add_argument("name", help="run name (a key of that section)")
    args = p.parse_args()
    cfg = stage_section(args, args.section, args.name)
    from genediag.faces.evaluate import evaluate_face_run, verify_run

    where = f"{args.params}: {args.section}.{args.name}"
    if args.section == "faces_pretrain":
        verify_run(args.name, cfg, where=where)
    else:
        evaluate_face_run(args.name, cfg, where=where)


if __name__ == "__main__":
    run(main)
