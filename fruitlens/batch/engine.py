"""One engine for explaining many images, used alike by ``fruitlens explain`` and the pipeline's explain flow.

The images are split into chunks (``plan_chunks``). Each (chunk, method) writes one Parquet part named by its
*content key*: the model's digest, the method's resolved options, the code that computes it and each image's
id and sha256 (``part_key``). So

- a rerun with the same model, options, code and images finds its parts and does nothing;
- another model, other options, edited code or a changed image give other keys, and those chunks are redone;
- an image that could not be read is recorded in a ``failed`` part under the same key, and its chunk is
  retried on the next run;
- ``finish`` joins exactly the parts of the current plan (never what an earlier run with another chunk size or
  model left behind) and deletes the others, so no row is ever doubled; a part that cannot be read (a crash
  mid-write on a full disk) counts as missing and is redone.

A method's model work and its pictures are separate steps (``compute_part``, then the part's ``draw``), and a
part is written only after its PNGs are. ``explain_images`` (``fruitlens explain``) draws each chunk's PNGs in
a second process while the model works on the next chunk; the pipeline's tasks (``explain_chunk``) draw
in their own thread. Pictures that combine methods (side by side) are composed after every method of a chunk
has been drawn (``compose_chunk``). One writer at a time per output folder: ``out_lock``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fruitlens import tables
from fruitlens.batch import pictures
from fruitlens.batch.methods import run_method
from fruitlens.config import ExplainOptions, to_plain
from fruitlens.digests import code_digest, file_digest, text_digest
from fruitlens.layout import FAILED, ExplainLayout
from fruitlens.lifetime import die_with_parent
from fruitlens.locks import folder_lock
from fruitlens.registry import METHODS

log = logging.getLogger(__name__)

Record = dict[str, Any]  # one image: image_id, path, label, mask_path, sha256 (plain values a task can hash)
PartState = Literal["done", "missing", "retry"]


def engine_code() -> str:
    """The code version of every explanation: this module's import closure (methods, explainers, pictures)."""
    return code_digest(__name__)


def plan_chunks(rows: pd.DataFrame, chunk_size: int) -> list[list[Record]]:
    """Rows (``fruitlens.batch.rows``) in chunks of ``chunk_size`` plain records, in image-id order."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size}: expected at least 1")
    records = rows.sort_values("image_id").astype(object).where(rows.notna(), None).to_dict("records")
    return [records[i:i + chunk_size] for i in range(0, len(records), chunk_size)]


def part_key(method: str, options: Any, model_digest: str, chunk: Sequence[Mapping[str, Any]], code: str) -> str:
    """The content key of one method's part of one chunk (24 hex digits)."""
    images = [f"{r['image_id']}:{r['sha256']}" for r in chunk]
    return text_digest(method, json.dumps(to_plain(options), sort_keys=True), model_digest, code, *images)[:24]


def read_chunk(rows: pd.DataFrame, size: tuple[int, int], fit: str = "resize"
               ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Read the images of ``rows`` at ``size`` (``fit``: resize or centre-crop photos of another aspect).

    Returns (images, rows read, failures with an ``error`` column).
    """
    from fruitlens.images import read_rgb, read_uint8
    from fruitlens.modelio import fit_photo

    images, ok, failed = [], [], []
    for i, path in enumerate(rows["path"]):
        try:
            images.append(read_rgb(path, size) if fit == "resize" else fit_photo(read_uint8(path), size, fit)[0])
            ok.append(i)
        except ValueError as exc:
            log.warning("skipping %s", exc)
            failed.append((rows["image_id"].iloc[i], path, str(exc)))
    stack = np.stack(images) if images else np.zeros((0, *size, 3), np.float32)
    return stack, rows.iloc[ok].reset_index(drop=True), pd.DataFrame(failed, columns=["image_id", "path", "error"])


def read_first(rows: pd.DataFrame, limit: int, size: tuple[int, int], fit: str = "resize"
               ) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """The first ``limit`` readable images of ``rows`` in order (unreadable ones are skipped and returned as
    failures, so a broken file does not shrink a ``--limit N`` sample); reads no more rows than it needs."""
    parts, start = [], 0
    while start < len(rows) and sum(len(p[1]) for p in parts) < limit:
        want = limit - sum(len(p[1]) for p in parts)
        parts.append(read_chunk(rows.iloc[start:start + want], size, fit))
        start += want
    if not parts:
        return read_chunk(rows.iloc[:0], size, fit)
    images = np.concatenate([p[0] for p in parts])
    ok = pd.concat([p[1] for p in parts], ignore_index=True)
    return images, ok, pd.concat([p[2] for p in parts], ignore_index=True)


def checksum_path(part: Path) -> Path:
    """Where a part's sha256 is recorded when it is written: ``part-<key>.parquet.sha256`` beside it."""
    return part.with_name(part.name + ".sha256")


def _whole(part: Path) -> bool:
    """Whether ``part`` is the file that was written: its recorded sha256; a part written before checksums
    were recorded is read in full (every page decoded) and, if whole, gets its checksum now."""
    record = checksum_path(part)
    if record.is_file():
        try:
            return record.read_text().strip() == file_digest(part)
        except OSError:
            return False
    try:
        pq.read_table(part)
    except (OSError, pa.ArrowException):
        return False
    tables.write_bytes(record, file_digest(part).encode())
    return True


def set_part_aside(part: Path) -> Path:
    """Move a damaged part out of the plan's way (``part-<key>.parquet.damaged``, replacing an older one)."""
    aside = part.with_name(part.name + ".damaged")
    os.replace(part, aside)
    checksum_path(part).unlink(missing_ok=True)
    return aside


def part_state(out: ExplainLayout, method: str, key: str) -> PartState:
    """``done`` (a whole part, nothing failed), ``retry`` (some image failed last time) or ``missing``.

    A part that is not the file that was written (its checksum, a crash mid-write, bytes changed on disk) is
    named in a warning, set aside, and counts as missing: its chunk is redone.
    """
    part = out.part(method, key)
    if out.part(FAILED, key).exists():
        return "retry"
    if not part.exists():
        return "missing"
    if _whole(part):
        return "done"
    log.warning("%s is damaged (a crash while it was written, or changed on disk): set aside as %s; redoing its "
                "chunk", part, set_part_aside(part).name)
    return "missing"


@dataclass
class Part:
    """One method's part of one chunk, computed but not yet written: its rows, the images that could not be
    read, and the drawing of its PNGs (written before the part, so that a part on disk has its pictures)."""

    method: str
    key: str
    frame: pd.DataFrame
    failed: pd.DataFrame
    draw: Callable[[], object]


def check_draws(methods: Sequence[str], options: Any, size: tuple[int, int]) -> None:
    """Refuse, before any work, a method whose draws for one image exceed ``MAX_DRAW_BYTES`` at ``size``
    (``options``: ExplainOptions or {method: options})."""
    for method in methods:
        opts = options[method] if isinstance(options, Mapping) else options.of(method)
        check = getattr(opts, "check_memory", None)
        if check is not None:
            check(tuple(size), method)


def compute_part(model, card, chunk: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, method: str,
                 options: Any, key: str, read: tuple[np.ndarray, pd.DataFrame, pd.DataFrame] | None = None) -> Part:
    """The model's work of one method on one chunk (``read``: the chunk as ``read_chunk`` returned it)."""
    out = ExplainLayout(out_dir)
    check_draws([method], {method: options}, card.image_size)
    if read is None:
        read = read_chunk(pd.DataFrame(list(chunk)), card.image_size, getattr(card, "fit", "resize"))
    images, ok, failed = read
    if len(ok):
        frame, draw = run_method(method, model, card, images, ok, options, out)
    else:
        frame, draw = tables.SCHEMAS[METHODS[method].table].empty_table().to_pandas(), no_drawing
    return Part(method, key, frame, failed, draw)


def no_drawing() -> None:
    """The drawing of a part without pictures (a chunk none of whose images could be read)."""


def write_part(out_dir: str | os.PathLike, part: Part) -> dict[str, int]:
    """Write a computed part (after its drawing ran) and its failures; the rows and failures written."""
    out = ExplainLayout(out_dir)
    path = out.part(part.method, part.key)
    checksum_path(path).unlink(missing_ok=True)  # no stale checksum is ever paired with a new part
    tables.write_table(part.frame, path, tables.SCHEMAS[METHODS[part.method].table])
    tables.write_bytes(checksum_path(path), file_digest(path).encode())
    failed_part = out.part(FAILED, part.key)
    if len(part.failed):
        tables.write_table(part.failed, failed_part, tables.FAILED_SCHEMA)
    elif failed_part.exists():
        failed_part.unlink()
    return {"rows": int(len(part.frame)), "failed": int(len(part.failed))}


def explain_chunk(model, card, chunk: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, method: str,
                  options: Any, key: str) -> dict[str, int]:
    """Explain one chunk with one method, draw its PNGs and write its part (and its failures) under ``key``.

    Returns the rows written and the images that could not be read.
    """
    part = compute_part(model, card, chunk, out_dir, method, options, key)
    part.draw()
    return write_part(out_dir, part)


def draw_chunk(draws: Sequence[Callable[[], object]], chunk: Sequence[Mapping[str, Any]],
               out_dir: str | os.PathLike, force: bool) -> int:
    """Every method's PNGs of a chunk, then its side-by-side pictures (``compose_chunk``); how many of those."""
    for draw in draws:
        draw()
    return compose_chunk(chunk, out_dir, force=force)


def compose_chunk(chunk: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, *, force: bool = True) -> int:
    """Side-by-side pictures of a chunk's images from every method's PNGs; how many were written.

    ``force=False`` writes only the missing ones (a run that stopped between a chunk and its composition).
    """
    return len(pictures.write_side_by_side(ExplainLayout(out_dir), pd.DataFrame(list(chunk)), force=force))


def _join(paths: Sequence[Path], schema: pa.Schema, dest: Path) -> Path:
    tabs = [pq.read_table(p) for p in paths if p.exists()]
    table = pa.concat_tables(tabs, promote_options="default").sort_by("image_id") if tabs else schema.empty_table()
    return tables.write_table(table, dest)


def _prune(folder: Path, keep: set[str]) -> int:
    gone = 0
    if folder.is_dir():
        for part in folder.glob("part-*.parquet"):
            if part.name not in keep:
                part.unlink(missing_ok=True)
                checksum_path(part).unlink(missing_ok=True)
                gone += 1
        for record in folder.glob("part-*.parquet.sha256"):  # a checksum whose part is gone
            if not record.with_suffix("").exists():
                record.unlink(missing_ok=True)
    return gone


def finish(out_dir: str | os.PathLike, keys: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """Join each method's parts of the current plan into ``<method>.parquet`` and delete every other part.

    ``keys`` maps each method to its chunks' part keys. ``failed.parquet`` lists the images that could not be
    read (once each, whatever the number of methods); ``faithfulness.parquet`` ranks every method table of the
    folder (``fruitlens.batch.ranking``). Returns the table paths by method (and ``failed``, ``faithfulness``).
    """
    out = ExplainLayout(out_dir)
    paths: dict[str, Path] = {}
    for method, method_keys in keys.items():
        names = {out.part(method, k).name for k in method_keys}
        _prune(out.parts_dir(method), names)
        paths[method] = _join([out.part(method, k) for k in method_keys], tables.SCHEMAS[METHODS[method].table],
                               out.table(method))
    all_keys = {k for ks in keys.values() for k in ks}
    _prune(out.parts_dir(FAILED), {out.part(FAILED, k).name for k in all_keys})
    failed = [out.part(FAILED, k) for k in sorted(all_keys)]
    tabs = [pq.read_table(p) for p in failed if p.exists()]
    table = pa.concat_tables(tabs).to_pandas().drop_duplicates("image_id") if tabs else pd.DataFrame(
        columns=tables.FAILED_SCHEMA.names)
    paths[FAILED] = tables.write_table(table.sort_values("image_id"), out.table(FAILED), tables.FAILED_SCHEMA)
    from fruitlens.batch.ranking import FAITHFULNESS, write_faithfulness

    paths[FAITHFULNESS] = write_faithfulness(out.root)  # every method table of the folder, ranked
    return paths


@contextmanager
def out_lock(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the output folder for one writer (``fruitlens.locks``); a second one gets a one-line ValueError.

    Temporary files a killed writer left are removed once the lock is held (none is at work then).
    """
    out = ExplainLayout(out_dir)
    with folder_lock(out.root):
        tables.remove_temp_files(out.root, recursive=True)
        yield out.root


def claim_folder(out_dir: str | os.PathLike, model_digest: str) -> list[str]:
    """Make ``out_dir`` hold one model's explanations: ``model_digest``'s (call it under ``out_lock``).

    A folder whose record names another model (or whose record cannot be read) is started clean: every
    method's table, parts and PNGs, the side-by-side pictures and the ranking are removed, so that
    ``faithfulness.parquet`` never ranks two models' methods together. Returns what was removed (empty when
    nothing was), and logs it as a warning.
    """
    import shutil

    from fruitlens.batch.ranking import FAITHFULNESS

    out = ExplainLayout(out_dir)
    previous: str | None = model_digest
    if out.model_record.exists():
        try:
            previous = json.loads(out.model_record.read_text())["model_digest"]
        except (OSError, ValueError, KeyError, TypeError):
            previous = None
    removed: list[str] = []
    if previous != model_digest:
        for method in (*METHODS, FAILED, FAITHFULNESS):
            for path in (out.table(method), out.parts_dir(method), out.pictures_dir(method)):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
                else:
                    continue
                removed.append(path.name)
        for path in (out.side_by_side_dir, out.stability):
            if path.is_dir():
                shutil.rmtree(path)
                removed.append(path.name)
            elif path.exists():
                path.unlink()
                removed.append(path.name)
        if removed:
            log.warning("%s held the explanations of another model (%s): removed %s and started clean", out.root,
                        f"digest {previous[:12]}" if previous else "unreadable record", ", ".join(sorted(removed)))
    tables.write_json(out.model_record, {"model_digest": model_digest})
    return removed


def plan_keys(chunks: Sequence[Sequence[Mapping[str, Any]]], methods: Sequence[str], options: ExplainOptions,
              model_digest: str, code: str) -> dict[str, list[str]]:
    """The part key of every (method, chunk)."""
    return {m: [part_key(m, options.of(m), model_digest, c, code) for c in chunks] for m in methods}


class PictureProcessDied(ChildProcessError):
    """The picture process ended without a result (killed: by the OOM killer, by hand)."""


@contextmanager
def picture_process() -> Iterator[ProcessPoolExecutor]:
    """One process that draws the PNGs (numpy, PIL, zlib: no TensorFlow in it) while this one runs the model.

    Threads could not do it: drawing holds the GIL most of the time, and the model's calls are short. A fresh
    interpreter (spawn, never fork: TensorFlow's threads do not survive a fork) takes about a second to start,
    which the first chunk's model work hides. It dies with this process (``fruitlens.lifetime``), and its own
    death is one :class:`PictureProcessDied` line: the chunks it had not drawn have no part, so a rerun redoes them.
    """
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BrokenProcessPool as exc:
        pool.shutdown(wait=True, cancel_futures=True)
        raise PictureProcessDied("the picture process died (killed, or out of memory?); the chunks it had not "
                                 "drawn were not written: rerun the same command to redo only those") from exc
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def explain_images(model, card, model_digest: str, rows: pd.DataFrame, out_dir: str | os.PathLike,
                   methods: Sequence[str], options: ExplainOptions, *, chunk_size: int,
                   progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Explain ``rows`` with ``methods``, chunk by chunk, redoing only what is not done.

    The model works here, chunk after chunk; each chunk's PNGs are drawn in a second process
    (``picture_process``) while the model works on the next one, and its parts are written once its
    pictures are, so a part on disk always has its PNGs. At most two chunks are in memory.

    Args:
        model, card: the model (takes [0, 1] images) and its card (classes, input size).
        model_digest: content digest of the model (part keys).
        rows: images to explain (``fruitlens.batch.rows``).
        out_dir: explanation folder (tables, parts, PNGs).
        methods: names in ``METHODS``.
        options: every method's options.
        chunk_size: images per chunk (memory, resume granularity).
        progress: called with the number of images finished after each chunk.

    Returns:
        Rows written per method in this call, ``failed`` images and ``skipped`` images (already done).
    """
    check_draws(methods, options, card.image_size)
    totals = {m: 0 for m in methods} | {FAILED: 0, "skipped": 0}
    out = ExplainLayout(out_dir)
    pending: deque[tuple[Future, list[Part], int]] = deque()

    def land() -> None:  # the oldest chunk: its pictures drawn, then its parts written
        drawing, parts, size = pending.popleft()
        drawing.result()  # the drawing's errors surface here
        for part in parts:
            totals[part.method] += write_part(out.root, part)["rows"]
        if not parts:
            totals["skipped"] += size
        if progress:
            progress(size)

    with out_lock(out.root), picture_process() as painter:
        claim_folder(out.root, model_digest)
        chunks = plan_chunks(rows, chunk_size)
        keys = plan_keys(chunks, methods, options, model_digest, engine_code())
        for i, chunk in enumerate(chunks):
            todo = [m for m in methods if part_state(out, m, keys[m][i]) != "done"]
            read = read_chunk(pd.DataFrame(list(chunk)), card.image_size, getattr(card, "fit", "resize")) \
                if todo else None
            parts = [compute_part(model, card, chunk, out.root, m, options.of(m), keys[m][i], read) for m in todo]
            pending.append((painter.submit(draw_chunk, [p.draw for p in parts], chunk, out.root, bool(todo)),
                            parts, len(chunk)))
            if len(pending) > 1:
                land()
        while pending:
            land()
        paths = finish(out.root, keys)
    totals[FAILED] = int(pq.read_metadata(paths[FAILED]).num_rows)
    return totals
