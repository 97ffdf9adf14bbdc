"""Stage faces_pretrain@<run> / faces_finetune@<run>: train the face model of `faces_pretrain.<run>` (stage 1,
identities) or `faces_finetune.<run>` (stage 2, syndromes, from a stage-1 model) → models/<run>/."""

from _common import parser, run, stage_section

SECTIONS = {"faces_pretrain": "pretrain", "faces_finetune": "finetune"}


def main() -> None:
    p = parser(__doc__)
    p.add_argument("section", choices=sorted(SECTIONS), help="params section of the run")
    p.add_argument("name", help="run name (a key of that section)")
    args = p.parse_args()
    cfg = stage_section(args, args.section, args.name)
    from genediag.faces.train import train_face_run

    train_face_run(args.name, cfg, SECTIONS[args.section], where=f"{args.params}: {args.section}.{args.name}")


if __name__ == "__main__":
    run(main)
