#!/usr/bin/env bash
# Render the static HTML report in headless Chromium and save a full-width screenshot, to check that
# reports/index.html opens from disk with no server and shows its tables, figures and charts.
#
#   scripts/screenshot_report.sh [REPORT_HTML] [OUT_PNG] [WIDTH] [HEIGHT]
#   defaults: reports/index.html  ${TMPDIR:-/tmp}/genediag_report.png  1280  4000
# (the PNG goes outside reports/ on purpose: reports/ is a dependency of the report_html stage)
#
# Needs Chromium (Debian/Ubuntu: `apt-get install chromium`; elsewhere set CHROMIUM=/path/to/chrome).
# Works as root and in containers (--no-sandbox), offline (the page loads nothing from the network).
set -euo pipefail

html=${1:-reports/index.html}
out=${2:-${TMPDIR:-/tmp}/genediag_report.png}
width=${3:-1280}
height=${4:-4000}

browser=${CHROMIUM:-}
if [[ -z "$browser" ]]; then
  for b in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
  done
fi
if [[ -z "$browser" ]]; then
  echo "error: no Chromium found; install it (Debian: apt-get install chromium) or set CHROMIUM=/path/to/chrome" >&2
  exit 2
fi
if [[ ! -f "$html" ]]; then
  echo "error: $html not found; build it with: dvc repro report_html" >&2
  exit 2
fi

abs_html=$(cd "$(dirname "$html")" && pwd)/$(basename "$html")
mkdir -p "$(dirname "$out")"
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT

"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --no-default-browser-check \
  --disable-extensions --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size="${width},${height}" --virtual-time-budget=5000 \
  --screenshot="$abs_out" "file://$abs_html" >"$profile/chromium.log" 2>&1 || {
  echo "error: Chromium failed to render $html; its log:" >&2
  tail -n 20 "$profile/chromium.log" >&2
  exit 1
}
if [[ ! -s "$abs_out" ]]; then
  echo "error: Chromium wrote no screenshot to $out" >&2
  exit 1
fi
echo "wrote $out (${width}x${height}) from $html"
