#!/usr/bin/env bash
# test_report_browser.sh: the HTML evaluation report (model/report.h) in a real browser. Runs the
# built test_report (the ctest working directory is the build folder) into its own folder to make
# the page, its panels and the values it must show, then has headless Chromium render the page to
# a PNG and dump its DOM, and checks: the screenshot is not blank (many colours, enough non-white
# pixels), the panels load (the turbo heat maps' bright greens appear in a tall screenshot, also
# those of the category named with '<', '&', '"' and spaces, found by their percent-encoded path),
# and the DOM holds every table value, the escaped category name, one <svg> per chart and one
# <img> per image. Skipped (77) without chromium / chromium-browser / google-chrome or PIL.
set -u
browser=""
for b in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$b" >/dev/null 2>&1; then browser=$(command -v "$b"); break; fi
done
if [ -z "$browser" ]; then
    echo "skipped: no chromium, chromium-browser or google-chrome on PATH (Debian: apt-get install chromium)"
    exit 77
fi
py="${DRDC_PYTHON:-/usr/bin/python3}"
if ! "$py" -c "import PIL" 2>/dev/null; then
    echo "skipped: $py has no PIL (Debian: apt-get install python3-pil)"
    exit 77
fi
if [ ! -x ./test_report ]; then
    echo "FAIL: ./test_report is not built here ($(pwd)); run from the build folder (ctest does)"
    exit 1
fi
root="${DRDC_TEST_TMP:-/tmp/drdc-test-$$}/report_browser"
rm -rf "$root" && mkdir -p "$root" || exit 1
# its own DRDC_TEST_TMP: no race with ctest running test_report itself in parallel
DRDC_TEST_TMP="$root" ./test_report >"$root/test_report.log" 2>&1 || {
    echo "FAIL: test_report failed:"; cat "$root/test_report.log"; exit 1; }
dir="$root/test_report"
html="$dir/report.html"
[ -f "$html" ] || { echo "FAIL: test_report wrote no $html"; exit 1; }

run_browser() { # args...: headless chromium with a throwaway profile, no network use
    timeout 120 "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --no-first-run --disable-background-networking --disable-extensions \
        --user-data-dir="$root/profile" "$@" "file://$html"
}
run_browser --window-size=1200,1600 --screenshot="$root/screenshot.png" >"$root/chromium.log" 2>&1
[ -s "$root/screenshot.png" ] || { echo "FAIL: no screenshot; chromium said:"; tail -20 "$root/chromium.log"; exit 1; }
run_browser --window-size=1200,4000 --screenshot="$root/screenshot_tall.png" >>"$root/chromium.log" 2>&1
run_browser --dump-dom >"$root/dom.html" 2>>"$root/chromium.log"
[ -s "$root/dom.html" ] || { echo "FAIL: empty DOM dump; chromium said:"; tail -20 "$root/chromium.log"; exit 1; }

"$py" - "$root" "$dir/values.txt" <<'EOF'
import sys
from PIL import Image

root, values_path = sys.argv[1], sys.argv[2]
bad = []

def pixels(path):
    im = Image.open(path).convert("RGB")
    return im, list(im.getdata())

im, px = pixels(root + "/screenshot.png")
colours = len(set(px))
non_white = sum(1 for p in px if min(p) < 235) / len(px)
print(f"screenshot {im.size[0]}x{im.size[1]}: {colours} colours, {100 * non_white:.1f}% non-white")
if colours < 32:
    bad.append(f"the screenshot has only {colours} colours: blank or unstyled?")
if not 0.03 < non_white < 0.9:
    bad.append(f"non-white share {non_white:.3f} is outside (0.03, 0.9)")

# the panels' turbo heat maps are the only bright greens on the page
im, px = pixels(root + "/screenshot_tall.png")
green = sum(1 for r, g, b in px if g > 200 and r < 120 and b < 200)
print(f"tall screenshot {im.size[0]}x{im.size[1]}: {green} bright green panel pixels")
# the 4 open panels (misses and false alarms) give about 3200; without the two of the category
# whose name needs percent-encoding about 1700, without any 0
if green < 2500:
    bad.append(f"only {green} bright green pixels: not every panel loaded")

dom = open(root + "/dom.html", encoding="utf-8").read()
values = [v.strip() for v in open(values_path) if v.strip()]
missing = [v for v in values if v not in dom]
print(f"DOM: {len(dom)} characters, {len(values) - len(missing)} of {len(values)} table values")
if missing:
    bad.append("values missing from the DOM: " + " ".join(missing))
for needle, want in (("<svg", 6), ("<img", 7), ("screw &lt;M&amp;M&gt;", None),
                     ("panels/screw%20%3CM%26M%3E%20%22x%22/scratch%20%26%20dent/002.png", 1)):
    n = dom.count(needle)
    if (want is None and n == 0) or (want is not None and n != want):
        bad.append(f"the DOM has {n} of {needle!r}, want {want if want is not None else 'some'}")
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
EOF
rc=$?
[ $rc = 0 ] && echo "report renders in $("$browser" --version 2>/dev/null | head -1): $root/screenshot.png"
exit $rc
