"""Stage report_html: reports/index.html, one static page over every report, metrics file, plot and model card."""

from _common import params_of, parser, run


def main() -> None:
    args = parser(__doc__, ("out", "the HTML page")).parse_args()
    cfg = params_of(args, "reports", "html")
    from genediag.reports.html import build_html_report
    from genediag.schema import REPORTS, validate

    cfg = validate({"html": cfg}, REPORTS, f"{args.params}: reports")["html"]
    build_html_report(args.out, title=cfg["title"], embed_images=cfg["embed_images"])


if __name__ == "__main__":
    run(main)
