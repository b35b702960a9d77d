#!/usr/bin/env python
"""Screenshot a run's report.html in headless Chromium at 1280 px wide, and say whether its tables fit.

    python scripts/screenshot_report.py RUN_DIR OUT.png [--width 1280] [--max-height 1600] [--rerender]

The PNG is the top --max-height px of the page (0: all of it). Prints the page's and each table's width
and exits 1 when a table or the page sticks out sideways. --rerender first writes RUN_DIR/report.html again from
the run folder, as the pipeline's last step does (to see a change to the report's code on an existing run).
docs/report_1280.png: a --recipe cai run of the embedded model (4 prompts, 32 new tokens, 2 steps), taken with
    python scripts/screenshot_report.py RUN_DIR docs/report_1280.png --max-height 2150 (every table on it)
Needs Debian's chromium and chromium-driver and selenium, as the browser tests do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=1600)
    ap.add_argument("--rerender", action="store_true")
    args = ap.parse_args()
    from rlaif.evaluation import browser
    from rlaif.store.folder import Run

    if why := browser.missing():
        print(f"screenshot_report: {why}", file=sys.stderr)
        return 2
    run = Run(args.run_dir)
    if args.rerender:
        from rlaif.evaluation import run_report

        run_report.write(run)
    if not run.report.exists():
        print(f"screenshot_report: {run.report} does not exist", file=sys.stderr)
        return 2
    with browser.chromium(args.width, 900) as driver:
        layout = browser.open_file(driver, run.report)
        browser.screenshot(driver, args.out, args.width, args.max_height or None)
    print(f"page: scrollWidth {layout['scrollWidth']}, clientWidth {layout['clientWidth']}, "
          f"window {layout['innerWidth']}, height {layout['scrollHeight']}")
    for t in layout["tables"]:
        print(f"table {t['index']} ({t['section']}): {t['columns']} columns, {t['width']:.0f} px wide, "
              f"right edge {t['right']:.0f} px")
    bad = browser.overflows(layout)
    for line in bad:
        print(f"screenshot_report: {line}", file=sys.stderr)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
