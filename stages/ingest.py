"""Stage ingest@<dataset>: validate a source into data/ingested/<dataset>/ (manifest, quarantine, image cache)."""

from _common import parser, run, stage_section


def main() -> None:
    args = parser(__doc__, "dataset name (a key of ingest: in params.yaml)").parse_args()
    cfg = stage_section(args, "ingest", args.name)
    from genediag.data.ingest import IngestError, ingest

    try:
        ingest(cfg, f"data/ingested/{args.name}", where=f"ingest.{args.name}")
    except IngestError as exc:
        raise SystemExit(f"error: {exc}")


if __name__ == "__main__":
    run(main)
