"""Screenshot a run report in headless Chromium (Debian's `chromium`), e.g. for docs/.

    python scripts/report_screenshot.py RUN_DIR OUT.png [--section why] [--width 1400] [--height 1800]

``--section`` shows only that section (dataset, training, metrics, confusion, mistakes, why, explanations,
visualize, comparison, run): the page is copied with the other sections and the header hidden.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--section", default="")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=1800)
    args = parser.parse_args()
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    page = args.run_dir / "report.html"
    if exe is None or not page.is_file():
        print(f"needs chromium on PATH and {page}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        if args.section:  # beside the original, so relative picture paths (--no-embed) still resolve
            only = (f"<style>header, nav, .toc, main > section:not(#{args.section}) {{display: none !important}}"
                    "</style></head>")
            copy = page.with_name(f".{args.section}.screenshot.html")
            copy.write_text(page.read_text(encoding="utf-8").replace("</head>", only, 1), encoding="utf-8")
            page = copy
        url = page.resolve().as_uri()
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}",
                        "--virtual-time-budget=10000", f"--screenshot={args.out.resolve()}", url],
                       check=True, capture_output=True, timeout=120)
    if args.section:
        page.unlink()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
