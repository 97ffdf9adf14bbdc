"""Stage hpsearch@<name>: Optuna TPE search of a karyogram run's learning rate and batch size on validation loss
→ hpsearch/<name>.json (best values), the trials table and a preset that applies them."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("name", "search (a key of karyograms.hpsearch)"), ("data", "ingested dataset folder"),
                  ("split", "split CSV"), ("out", "output folder")).parse_args()
    cfg = params_of(args, "karyograms", "hpsearch", args.name)
    from genediag.karyograms.hpsearch import run_hpsearch
    from genediag.schema import resolve_run

    rcfg = resolve_run("karyograms", str(cfg.get("run")), params_of(args, "karyograms"), args.params)
    run_hpsearch(args.name, cfg, rcfg, args.data, args.split, args.out)


if __name__ == "__main__":
    run(main)
