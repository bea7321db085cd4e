"""Index the 20,701 images of Fruits-360: cold and warm, images per second, one core vs all cores.

    python benchmarks/bench_index.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import FRUITS360, drop_page_cache, write_result  # noqa: E402
from fruitlens.dataset import index_dataset, index_or_load  # noqa: E402


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    if not FRUITS360.is_dir():
        sys.exit(f"{FRUITS360} not found")
    rows = {}
    cache_dropped = drop_page_cache()
    with tempfile.TemporaryDirectory() as out:
        seconds, index = timed(lambda: index_or_load(FRUITS360, out))
        n = len(index.table)
        rows["cold (page cache dropped)" if cache_dropped else "first run"] = seconds
        seconds, again = timed(lambda: index_or_load(FRUITS360, out))
        assert again.reused == n
        rows["warm (re-index, unchanged rows reused)"] = seconds
    rows["no reuse, files in page cache, all cores"] = timed(lambda: index_dataset(FRUITS360))[0]
    rows["no reuse, files in page cache, 1 core"] = timed(lambda: index_dataset(FRUITS360, workers=1))[0]
    rows["--verify (full decode), all cores"] = timed(lambda: index_dataset(FRUITS360, verify=True))[0]
    print(f"{n} images")
    for name, seconds in rows.items():
        print(f"{name:45s} {seconds:6.2f} s  {n / seconds:8.0f} images/s")
    write_result("index", {"images": n, "seconds": rows, "images_per_second": {k: n / v for k, v in rows.items()}})


if __name__ == "__main__":
    main()
