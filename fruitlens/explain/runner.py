"""Explaining many images: streaming in chunks, resumable, one bad image reported and skipped.

Each explanation method is a module with a chunk function::

    explain_chunk(model, card, images, rows, out_dir, **options) -> pd.DataFrame

``images`` is (N, H, W, 3) float32 in [0, 1] at the model's input size; ``rows`` has ``image_id``,
``path`` (absolute), ``label`` ("" when unknown) and ``mask_path`` (absolute or None); PNGs go under
``out_dir/<method>/``; the returned frame holds the rows of the method's table (schema ``method`` in
``fruitlens.tables.SCHEMAS``).

Every chunk's rows are written as one Parquet part in ``out_dir/<method>.parts/`` (atomically); images
that cannot be read go to ``out_dir/failed.parts/``. A rerun skips every image already in a part, so a
killed run resumes where it stopped, neither duplicating nor losing rows. ``consolidate`` joins the parts
into ``out_dir/<method>.parquet``. Memory stays constant: one chunk of images at a time.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.dataset import DatasetError, image_id, index_dataset
from fruitlens.images import read_rgb

log = logging.getLogger(__name__)

METHODS = {"lime": "fruitlens.explain.lime", "gradcam": "fruitlens.explain.gradcam"}
FAILED = "failed"
FAILED_SCHEMA = tables.pa.schema([("image_id", tables.pa.string()), ("path", tables.pa.string()),
                                  ("error", tables.pa.string())])


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    """'lime,gradcam' -> ['lime', 'gradcam']; an unknown name is a ValueError naming the valid ones."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    names = [m for m in names if m]
    for name in names:
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    if not names:
        raise ValueError(f"no method given; expected one of {', '.join(METHODS)}")
    return names


def chunk_function(method: str) -> Callable[..., pd.DataFrame]:
    return importlib.import_module(METHODS[method]).explain_chunk


def select_images(data: Sequence[str | os.PathLike], *, split: str = "test", limit: int | None = None) -> pd.DataFrame:
    """The images to explain: one dataset folder (usable images of ``split``) or a list of files.

    Returns a frame with image_id, path (absolute), label ("" for loose files) and mask_path.
    """
    data = [Path(d) for d in data]
    if len(data) == 1 and data[0].is_dir():
        index = index_dataset(data[0])
        rows = index.paths(split)
        if rows.empty:
            have = sorted(set(index.usable["split"]))
            raise DatasetError(f"{data[0]}: no usable images in split {split!r}; splits present: {', '.join(have)}")
        root = index.root
        out = pd.DataFrame({
            "image_id": rows["image_id"].to_numpy(),
            "path": rows["abs_path"].to_numpy(),
            "label": rows["label"].to_numpy(),
            "mask_path": [str(root / m) if isinstance(m, str) else None for m in rows["mask_path"]],
        })
    else:
        missing = [str(d) for d in data if not d.is_file()]
        if missing:
            raise DatasetError(f"{missing[0]}: no such file; expected a dataset folder or image files")
        paths = [str(d.resolve()) for d in data]
        out = pd.DataFrame({"image_id": [image_id(p) for p in paths], "path": paths, "label": "",
                            "mask_path": None})
        out = out.drop_duplicates("image_id")
    out = out.sort_values("image_id", ignore_index=True)  # a stable order, independent of the listing
    return out.head(limit) if limit is not None else out


def read_chunk(rows: pd.DataFrame, size: tuple[int, int]) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Read the images of ``rows``; returns (images, rows read, failures with an ``error`` column)."""
    images, ok, failed = [], [], []
    for i, path in enumerate(rows["path"]):
        try:
            images.append(read_rgb(path, size))
            ok.append(i)
        except ValueError as exc:
            log.warning("skipping %s", exc)
            failed.append((rows["image_id"].iloc[i], path, str(exc)))
    stack = np.stack(images) if images else np.zeros((0, *size, 3), np.float32)
    return stack, rows.iloc[ok].reset_index(drop=True), pd.DataFrame(failed, columns=["image_id", "path", "error"])


def parts_dir(out_dir: str | os.PathLike, method: str) -> Path:
    return Path(out_dir) / f"{method}.parts"


def part_path(out_dir: str | os.PathLike, method: str, image_ids: Sequence[str]) -> Path:
    """The part file for a chunk: named by a digest of its image ids, so reruns find it again."""
    digest = hashlib.sha1("\n".join(image_ids).encode()).hexdigest()[:16]
    return parts_dir(out_dir, method) / f"part-{digest}.parquet"


def done_ids(out_dir: str | os.PathLike, method: str) -> set[str]:
    """Image ids already explained by ``method`` (or already known to be unreadable)."""
    done: set[str] = set()
    for name in (method, FAILED):
        folder = parts_dir(out_dir, name)
        if folder.is_dir():
            for part in folder.glob("part-*.parquet"):
                done.update(tables.pq.read_table(part, columns=["image_id"]).column(0).to_pylist())
    return done


def explain_part(model, card, rows: pd.DataFrame, out_dir: str | os.PathLike, methods: Sequence[str],
                 options: dict[str, dict] | None = None, done: dict[str, set[str]] | None = None) -> dict[str, int]:
    """Explain one chunk with each method, leaving out images in ``done[method]``; one part per method.

    Returns the number of rows each method wrote, and ``failed`` images.
    """
    out = Path(out_dir)
    options, done = options or {}, done or {}
    images, ok_rows, failed = read_chunk(rows, card.image_size)
    counts = {FAILED: len(failed)}
    if len(failed):
        tables.write_table(failed, part_path(out, FAILED, list(failed["image_id"])), FAILED_SCHEMA)
    for method in methods:
        todo = ~ok_rows["image_id"].isin(done.get(method, set())).to_numpy()
        if not todo.any():
            counts[method] = 0
            continue
        sub = ok_rows[todo].reset_index(drop=True)
        result = chunk_function(method)(model, card, images[todo], sub, out, **options.get(method, {}))
        tables.write_table(result, part_path(out, method, list(sub["image_id"])), tables.SCHEMAS.get(method))
        counts[method] = len(result)
    return counts


def consolidate(out_dir: str | os.PathLike, method: str) -> Path:
    """Join a method's parts into ``out_dir/<method>.parquet`` (atomically), sorted by image id."""
    parts = sorted(parts_dir(out_dir, method).glob("part-*.parquet"))
    path = Path(out_dir) / f"{method}.parquet"
    if not parts:
        fallback = tables.pa.schema([("image_id", tables.pa.string())])
        schema = FAILED_SCHEMA if method == FAILED else tables.SCHEMAS.get(method, fallback)
        tables.write_table(schema.empty_table(), path)
        return path
    table = tables.pa.concat_tables([tables.pq.read_table(p) for p in parts], promote_options="default")
    table = table.sort_by([("image_id", "ascending")])
    tables.write_table(table, path)
    return path


def explain_images(run_dir: str | os.PathLike, rows: pd.DataFrame, out_dir: str | os.PathLike,
                   methods: Sequence[str], *, chunk_size: int = 32, options: dict[str, dict] | None = None,
                   progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Explain ``rows`` (from ``select_images``) with ``methods``, chunk by chunk, skipping what is done.

    Args:
        run_dir: run folder with the model.
        rows: images to explain.
        out_dir: where parts, tables and PNGs go.
        methods: names in METHODS.
        chunk_size: images per chunk (memory and resume granularity).
        options: per-method keyword options for the chunk functions.
        progress: called with the number of images finished after each chunk (for a progress bar).

    Returns:
        Rows written per method in this call, ``failed`` images, ``skipped`` (already done) images.
    """
    from fruitlens.runs import load_run

    methods = parse_methods(methods)
    out = Path(out_dir)
    done = {m: done_ids(out, m) for m in methods}
    todo = rows[~rows["image_id"].map(lambda i: all(i in done[m] for m in methods))]
    totals = {m: 0 for m in methods} | {FAILED: 0, "skipped": len(rows) - len(todo)}
    if progress and totals["skipped"]:
        progress(totals["skipped"])
    if len(todo):
        model, card = load_run(run_dir)
        for start in range(0, len(todo), chunk_size):
            chunk = todo.iloc[start:start + chunk_size]
            counts = explain_part(model, card, chunk, out, methods, options, done)
            for key, n in counts.items():
                totals[key] += n
            if progress:
                progress(len(chunk))
    for method in [*methods, FAILED]:
        consolidate(out, method)
    return totals
