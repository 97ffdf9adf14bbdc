"""Stage report_html: reports/index.html, one static page over every report, metrics file, plot and model card."""

from _common import is_synthetic, load_params, parser, run, stage_section


def main() -> None:
    args = parser(__doc__).parse_args()
    cfg = stage_section(args, "report_html")
    from genediag.config import check_keys
    from genediag.reports.html import build_html_report

    check_keys(cfg, {"title", "embed_images"}, f"{args.params}: report_html")
    ingest = load_params(args.params).get("ingest") or {}
    synthetic = [name for name, item in ingest.items() if isinstance(item, dict) and item.get("source")
                 and is_synthetic(item["source"])]
    build_html_report("reports/index.html", title=cfg.get("title", "genediag results"),
                      synthetic_datasets=synthetic, embed_images=bool(cfg.get("embed_images", False)))


if __name__ == "__main__":
    run(main)
