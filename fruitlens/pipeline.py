"""Plain helpers the Prefect tasks and flows call: content digests, chunking, metrics tables, promotion.

Nothing here imports Prefect: the tasks in ``tasks/`` stay thin wrappers around these functions and the
library steps (training, evaluation, explanation, report).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fruitlens import tables
from fruitlens.dataset import load_index

log = logging.getLogger(__name__)

CURRENT = "current"  # models_home/current/ holds the promoted model; models_home/current.json says which run


# ------------------------------------------------------------------------------------ digests


def tree_digest(data_dir: str | os.PathLike) -> str:
    """Cheap digest of a folder tree: relative path, size and mtime of every file (no file is read).

    A cache key for indexing: any added, removed, rewritten or touched file changes it.
    """
    root = Path(data_dir).expanduser().resolve()
    h = hashlib.sha256(str(root).encode())
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                st = os.stat(path)
            except OSError:
                st = None
            entries.append(f"{os.path.relpath(path, root)}\t{st.st_size if st else -1}\t{st.st_mtime_ns if st else -1}")
    for entry in sorted(entries):
        h.update(entry.encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def rows_digest(rows: pd.DataFrame) -> str:
    """Digest of (path, split, label, sha256) of ``rows`` in path order."""
    h = hashlib.sha256()
    for row in rows.sort_values("path")[["path", "split", "label", "sha256"]].itertuples(index=False):
        h.update("\t".join(map(str, row)).encode("utf-8") + b"\n")
    return h.hexdigest()


def split_digests(index_dir: str | os.PathLike) -> dict[str, str]:
    """Content digests of an index written by ``write_index``: ``fit`` (train and val rows) and one per split.

    Training depends only on ``fit``; evaluation and explanation only on their split, so changing a test
    image leaves the model alone.
    """
    index = load_index(index_dir)
    ok = index.usable
    out = {"fit": rows_digest(ok[ok["split"].isin(["train", "val"])]), "all": index.fingerprint}
    for split in sorted(set(ok["split"])):
        out[split] = rows_digest(ok[ok["split"] == split])
    return out


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


RUN_DIGEST_SKIP = ("run.json", "report.html", "checkpoints", "logs", "eval_current")


def run_digest(run_dir: str | os.PathLike, skip: Sequence[str] = RUN_DIGEST_SKIP) -> str:
    """Digest of the contents of every file in a run folder, leaving out the top-level names in ``skip``
    and the ``*.parts`` folders (what a report shows, without the run record that changes every run)."""
    root = Path(run_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root)
        if rel.parts[0] in skip or any(part.endswith(".parts") or part.startswith(".") for part in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\t{file_digest(path)}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------ explanation chunks


def explain_rows(index_dir: str | os.PathLike, split: str = "test", limit: int | None = None,
                 first: Sequence[str] = ()) -> pd.DataFrame:
    """The images of ``split`` to explain, from an index folder: the ``select_images`` columns plus sha256.

    With a ``limit``, the images in ``first`` (ids, e.g. those a report shows) are taken before the others;
    the rows come back sorted by image id (stable whatever the listing order).
    """
    index = load_index(index_dir)
    rows = index.usable[index.usable["split"] == split].sort_values("image_id", ignore_index=True)
    if limit is not None:
        rank = pd.Series(range(len(first)), index=list(dict.fromkeys(first)), dtype="int64")
        order = rows["image_id"].map(rank).fillna(len(rank)).to_numpy()
        rows = rows.iloc[sorted(range(len(rows)), key=lambda i: (order[i], i))[:limit]]
        rows = rows.sort_values("image_id", ignore_index=True)
    root = index.root
    return pd.DataFrame({
        "image_id": rows["image_id"].astype(str),
        "path": [str(root / p) for p in rows["path"]],
        "label": rows["label"].astype(str),
        "mask_path": [str(root / m) if isinstance(m, str) and m else None for m in rows["mask_path"]],
        "sha256": rows["sha256"].astype(str),
    })


def chunk_records(rows: pd.DataFrame, chunk_size: int) -> list[list[dict[str, Any]]]:
    """Split rows into chunks of plain dicts (task inputs Prefect can hash)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size}: expected at least 1")
    records = rows.to_dict("records")
    return [records[i:i + chunk_size] for i in range(0, len(records), chunk_size)]


def prune_parts(out_dir: str | os.PathLike, method: str, chunks: Sequence[Sequence[str]]) -> list[Path]:
    """Delete the parts of ``method`` that belong to none of ``chunks`` (lists of image ids).

    Parts are left behind when the test set or the chunking changed; without pruning, their rows would be
    joined twice. A chunk's part is named by the ids it explained: the chunk's ids less its unreadable ones.
    Returns the deleted paths.
    """
    from fruitlens.explain.runner import FAILED, done_ids, part_path, parts_dir

    failed = done_ids(out_dir, FAILED) if method != FAILED else set()
    keep = {part_path(out_dir, method, [i for i in ids if i not in failed]).name for ids in chunks}
    folder = parts_dir(out_dir, method)
    gone = []
    if folder.is_dir():
        for part in sorted(folder.glob("part-*.parquet")):
            if part.name not in keep:
                part.unlink()
                gone.append(part)
    return gone


# ------------------------------------------------------------------------------------ metrics tables


def per_class_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (true or predicted) from a `predictions` table."""
    labels = sorted(set(predictions["label"]) | set(predictions["pred_label"]))
    counts = pd.crosstab(predictions["label"], predictions["pred_label"]).reindex(index=labels, columns=labels,
                                                                                 fill_value=0)
    tp = pd.Series(counts.to_numpy().diagonal(), index=labels, dtype=float)
    support, predicted = counts.sum(axis=1).astype(float), counts.sum(axis=0).astype(float)
    precision = (tp / predicted).where(predicted > 0, 0.0)
    recall = (tp / support).where(support > 0, 0.0)
    f1 = (2 * precision * recall / (precision + recall)).where(precision + recall > 0, 0.0)
    return pd.DataFrame({"class": labels, "precision": precision.round(4).to_numpy(),
                         "recall": recall.round(4).to_numpy(), "f1": f1.round(4).to_numpy(),
                         "support": support.astype(int).to_numpy()})


def confusion_counts(predictions: pd.DataFrame) -> pd.DataFrame:
    """Non-zero (true, predicted, count) triples, most frequent mistakes first after the diagonal."""
    counts = predictions.groupby(["label", "pred_label"]).size().reset_index(name="count")
    counts = counts.rename(columns={"label": "true"})
    counts["correct"] = counts["true"] == counts["pred_label"]
    return counts.sort_values(["correct", "count", "true"], ascending=[False, False, True], ignore_index=True)


def headline_metrics(predictions: pd.DataFrame) -> dict[str, float]:
    """accuracy and macro F1 of a `predictions` table (the numbers models are compared on)."""
    if predictions.empty:
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0}
    pc = per_class_metrics(predictions)
    acc = float((predictions["label"] == predictions["pred_label"]).mean())
    return {"accuracy": round(acc, 6), "macro_f1": round(float(pc["f1"].mean()), 6), "n": int(len(predictions))}


# ------------------------------------------------------------------------------------ current model


def current_dir(models_home: str | os.PathLike) -> Path:
    return Path(models_home) / CURRENT


def compare_models(new: Mapping[str, float], current: Mapping[str, float] | None,
                   metric: str = "accuracy") -> tuple[pd.DataFrame, bool]:
    """A table new vs current on each metric, and whether the new model is promoted.

    The new model is promoted when there is no current one, or when it is not worse on ``metric``.
    """
    names = [m for m in ("accuracy", "macro_f1", "n") if m in new]
    rows = []
    for name in names:
        cur = None if current is None else current.get(name)
        rows.append({"metric": name, "new": float(new[name]), "current": None if cur is None else float(cur),
                     "delta": None if cur is None else round(float(new[name]) - float(cur), 6)})
    promote = current is None or float(new[metric]) >= float(current[metric])
    return pd.DataFrame(rows, columns=["metric", "new", "current", "delta"]), promote


def promote_model(run_dir: str | os.PathLike, models_home: str | os.PathLike, info: Mapping[str, Any]) -> Path:
    """Copy the run's model.keras and model.json to ``models_home/current/`` (swapped in whole).

    ``models_home/current.json`` records which run it came from and ``info`` (metrics, digest, time).
    """
    from fruitlens.runs import CARD_FILE, MODEL_FILE

    home = Path(models_home)
    home.mkdir(parents=True, exist_ok=True)
    staging = home / f".{CURRENT}.{os.getpid()}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    for name in (MODEL_FILE, CARD_FILE):
        shutil.copy2(Path(run_dir) / name, staging / name)
    target = current_dir(home)
    old = home / f".{CURRENT}.{os.getpid()}.old"
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
    tables.write_json(home / f"{CURRENT}.json", {"run_dir": str(Path(run_dir).resolve()),
                                                 "promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                 **dict(info)})
    return target


# ------------------------------------------------------------------------------------ run summary


def thumbnail_uri(path: str | os.PathLike, max_size: int = 240) -> str:
    """A PNG thumbnail of an image file as a ``data:`` URI (for markdown artifacts)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((max_size, max_size))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def explanation_pngs(explain_dir: str | os.PathLike, methods: Sequence[str], per_method: int = 2) -> list[Path]:
    """The first few explanation PNGs of each method (sorted by name, so stable)."""
    out: list[Path] = []
    for method in methods:
        folder = Path(explain_dir) / method
        if folder.is_dir():
            out.extend(sorted(folder.glob("*.png"))[:per_method])
    return out


def summary_markdown(title: str, metrics: Mapping[str, Any], lines: Sequence[str],
                     images: Sequence[tuple[str, str | os.PathLike]], max_size: int = 240) -> str:
    """Markdown with the headline numbers, a few lines and thumbnails embedded as data URIs."""
    md = [f"# {title}", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    md += ["", *lines, ""]
    for caption, path in images:
        if Path(path).is_file():
            md += [f"**{caption}**", "", f"![{caption}]({thumbnail_uri(path, max_size)})", ""]
    return "\n".join(md)


def write_run_json(run_dir: str | os.PathLike, *, config: Mapping[str, Any], timings: Mapping[str, float],
                   extra: Mapping[str, Any] | None = None) -> Path:
    """``run_dir/run.json``: the resolved config, library versions, seconds per step and ``extra``."""
    import importlib.metadata as md

    from fruitlens.runs import library_versions

    versions = library_versions()
    for name in ("prefect", "prefect-dask", "scikit-image", "lime"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return tables.write_json(Path(run_dir) / "run.json", {
        "config": dict(config), "versions": versions,
        "timings": {k: round(float(v), 3) for k, v in timings.items()},
        "total_seconds": round(float(sum(timings.values())), 3), **dict(extra or {})})
