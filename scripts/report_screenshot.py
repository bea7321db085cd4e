"""Screenshot a run report in headless Chromium (Debian's `chromium`), e.g. for docs/.

    python scripts/report_screenshot.py RUN_DIR OUT.png [--section why] [--width 1400] [--height 1800]

``--section`` scrolls to a section's anchor (dataset, training, metrics, confusion, mistakes, why,
explanations, visualize, comparison, run) before the shot.
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
    url = page.resolve().as_uri() + (f"#{args.section}" if args.section else "")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={args.width},{args.height}",
                        "--virtual-time-budget=10000", f"--screenshot={args.out.resolve()}", url],
                       check=True, capture_output=True, timeout=120)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
