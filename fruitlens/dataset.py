"""Index a folder of labelled images into the `images` table, the class index and a dataset fingerprint.

Layouts: ``DATA_DIR/{Training,Test}/<class>/*``, ``DATA_DIR/{train,validation,test}/<class>/*``
and ``DATA_DIR/<class>/*`` (split by a seeded, stratified holdout). Every file found under a class folder
gets a row; files that cannot be used get a ``status`` other than ``ok`` and a one-line ``error``, and the
run goes on. Checking is cheap but real: JPEGs are decoded at 1/8 scale (draft mode), which still walks the
whole entropy-coded stream and so catches a cut-off file; other formats are decoded in full; ``verify``
decodes everything in full. A re-index into the same output folder reuses the rows of unchanged files
(same path, size and modification time). Whether a file is usable is decided by ``images.open_image``, the
rule predict and explain apply too; before it, a name that is not UTF-8 gets ``bad_name`` and a file whose
real path is outside the root (a symlink) gets ``outside_root``, and neither is opened.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import logging
import multiprocessing
import os
import stat
import time
import unicodedata
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fruitlens import tables
from fruitlens.errors import DatasetError
from fruitlens.images import IMAGE_SUFFIXES, MASK_SUFFIX, ImageRefused, open_image, upright_size
from fruitlens.lifetime import die_with_parent

log = logging.getLogger(__name__)

SPLIT_ALIASES = {  # compared lower-case: Training, TRAIN and training_set all count
    **dict.fromkeys(("training", "train", "training_set", "train_set"), "train"),
    **dict.fromkeys(("validation", "valid", "val", "validation_set", "val_set", "valid_set"), "val"),
    **dict.fromkeys(("test", "testing", "test_set", "testing_set"), "test")}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetIndex:
    """The result of indexing: one row per file, the class index and a content fingerprint."""

    root: Path
    layout: str  # "splits" (Training/Test or train/validation/test folders) or "classes" (holdout)
    table: pd.DataFrame  # the `images` table
    classes: dict[str, int]  # class name -> label index (sorted names)
    fingerprint: str  # sha256 of (path, split, label, bytes, sha256) of every usable image
    warnings: tuple[str, ...] = field(default=())
    seconds: float = 0.0
    reused: int = 0  # rows taken unchanged from a previous index
    split_folders: tuple[tuple[str, str], ...] = field(default=())  # (folder name, split) as read

    @property
    def usable(self) -> pd.DataFrame:
        return self.table[self.table["status"] == "ok"]

    def counts(self) -> pd.DataFrame:
        """Usable images per class (rows) and split (columns)."""
        ok = self.usable
        counts = pd.crosstab(ok["label"], ok["split"]).reindex(columns=[s for s in SPLITS if s in set(ok["split"])])
        return counts.reindex(sorted(self.classes), fill_value=0).fillna(0).astype(int)

    def paths(self, split: str | None = None) -> pd.DataFrame:
        """Usable rows (optionally of one split) with an ``abs_path`` column."""
        rows = self.usable if split is None else self.usable[self.usable["split"] == split]
        return rows.assign(abs_path=[str(self.root / p) for p in rows["path"]])


# ----------------------------------------------------------------------------------------- layout


def _norm(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def split_folders(root: Path) -> dict[str, str]:
    """Top-level folders of ``root`` read as splits: folder name -> train, val or test (case-insensitive)."""
    return {d.name: SPLIT_ALIASES[d.name.lower()] for d in _visible_dirs(root) if d.name.lower() in SPLIT_ALIASES}


def find_class_dirs(root: Path) -> tuple[str, list[tuple[str | None, str, Path]]]:
    """Return the layout name and (split or None, class name, folder) for every class folder."""
    if not root.exists():
        raise DatasetError(f"{root}: no such directory")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory; expected a folder of class folders")
    top = _visible_dirs(root)
    split_dirs = [d for d in top if d.name.lower() in SPLIT_ALIASES]
    if split_dirs:
        found = [(SPLIT_ALIASES[d.name.lower()], _norm(c.name), c) for d in split_dirs for c in _visible_dirs(d)]
        layout = "splits"
    else:
        found = [(None, _norm(c.name), c) for c in top]
        layout = "classes"
    if not found:
        raise DatasetError(
            f"{root}: no class folders found; expected {root}/<class>/* or {root}/{{Training,Test}}/<class>/*"
        )
    return layout, found


def stray_images(root: Path, layout: str) -> list[tuple[str, str | None]]:
    """Images (by suffix; masks and hidden files aside) that lie in no class folder: at the top of ``root``,
    and in the "splits" layout also at the top of a split folder; as (relative path, split or None)."""
    folders = [(root, None)]
    if layout == "splits":
        folders += [(d, SPLIT_ALIASES[d.name.lower()]) for d in _visible_dirs(root) if d.name.lower() in SPLIT_ALIASES]
    found = []
    for folder, split in folders:
        for f in sorted(folder.iterdir()):
            if (not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.endswith(MASK_SUFFIX)
                    and not f.is_dir()):
                found.append((f.relative_to(root).as_posix(), split))
    return found


def select_classes(found: list[tuple[str | None, str, Path]], classes: Sequence[str] | None):
    """Keep the class folders named in ``classes``; an unknown name is an error naming the closest ones."""
    if not classes:
        return found
    existing = sorted({name for _, name, _ in found})
    wanted = [_norm(c.strip()) for c in classes if c.strip()]
    for name in wanted:
        if name not in existing:
            close = difflib.get_close_matches(name, existing, n=3, cutoff=0.5)
            hint = f"; closest: {', '.join(close)}" if close else f"; classes are: {', '.join(existing[:10])}"
            raise DatasetError(f"--classes: no class named {name!r}{hint}")
    keep = set(wanted)
    return [entry for entry in found if entry[1] in keep]


def list_files(found: list[tuple[str | None, str, Path]], root: Path) -> tuple[list[dict], list[str]]:
    """Every file under the class folders, as partial rows; plus warnings for empty class folders."""
    rows, notes = [], []
    root_prefix = len(str(root)) + 1
    for split, label, folder in found:
        n_before = len(rows)
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            names = set(filenames)
            rel_dir = dirpath[root_prefix:].replace(os.sep, "/")
            for name in sorted(filenames):
                if name.endswith(MASK_SUFFIX):
                    continue
                mask = os.path.splitext(name)[0] + MASK_SUFFIX
                rows.append({
                    "path": f"{rel_dir}/{name}",
                    "split": split,
                    "label": label,
                    "mask_path": f"{rel_dir}/{mask}" if mask in names else None,
                })
        if len(rows) == n_before:
            where = f"{folder.parent.name}/{folder.name}" if split else folder.name
            notes.append(f"empty class folder: {where}")
    return rows, notes


# ------------------------------------------------------------------------------------ file checks


def _stat(path: Path) -> tuple[int, int, str | None]:
    """(bytes, mtime_ns, problem) of a file, following symlinks; problem is a status or None."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0, 0, "broken_symlink" if path.is_symlink() else "missing"
    except OSError:
        return 0, 0, "unreadable"
    if not stat.S_ISREG(st.st_mode):
        return 0, st.st_mtime_ns, "not_a_file"
    return st.st_size, st.st_mtime_ns, None


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def check_file(path: str, verify: bool = False) -> dict:
    """Check one file: size, hash, header and a (reduced or full) decode. Never raises."""
    p = Path(path)
    row = {"width": 0, "height": 0, "mode": "", "format": "", "bytes": 0, "sha256": "", "mtime_ns": 0,
           "status": "ok", "error": ""}

    def bad(status: str, error: str) -> dict:
        row.update(status=status, error=error.replace("\n", " ")[:300])
        return row

    if p.name.startswith("."):
        return bad("hidden", "hidden file; skipped")
    row["bytes"], row["mtime_ns"], problem = _stat(p)
    if problem == "broken_symlink":
        return bad(problem, f"symlink to missing target {os.readlink(p)}")
    if problem:
        return bad(problem, "cannot stat file" if problem == "unreadable" else problem.replace("_", " "))
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        return bad("not_image", f"suffix {p.suffix or '(none)'} is not an image type; expected one of "
                   + ", ".join(sorted(IMAGE_SUFFIXES)))
    if row["bytes"] == 0:
        return bad("empty", "zero-byte file")
    try:
        data = _read_bytes(p)
    except OSError as exc:
        return bad("unreadable", f"cannot read: {exc.strerror or exc}")
    row["sha256"] = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(io.BytesIO(data), name=path)
    except ImageRefused as exc:
        return bad(exc.status, exc.reason)
    with img:
        width, height = upright_size(img)  # as a viewer shows it: EXIF orientation 5-8 swaps the axes
        row.update(width=width, height=height, mode=img.mode, format=img.format or "")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if img.format == "JPEG" and not verify:
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            status = "truncated" if "truncated" in str(exc) or "broken data stream" in str(exc) else "corrupt"
            return bad(status, f"decode failed: {exc}")
    return row


def _check_many(paths: list[str], verify: bool) -> list[dict]:
    return [check_file(p, verify) for p in paths]


def check_files(paths: list[str], *, verify: bool = False, workers: int | None = None) -> list[dict]:
    """check_file over many paths, on ``workers`` processes (default: all cores)."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < 256:
        return _check_many(paths, verify)
    chunk = max(64, len(paths) // (workers * 8))
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    # forkserver: the caller may have TensorFlow loaded, and forking a threaded process can deadlock.
    ctx = multiprocessing.get_context("forkserver")
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent) as pool:
            results = pool.map(_check_many, chunks, [verify] * len(chunks))
            return [row for part in results for row in part]
    except BrokenProcessPool as exc:  # e.g. a __main__ the workers cannot import (code piped to python)
        log.warning("checking files in one process: the worker pool failed (%s)", exc)
        return _check_many(paths, verify)


# ------------------------------------------------------------------------------------ the index


def image_id(rel_path: str) -> str:
    """Stable id of an image: a hash of its path relative to the dataset root."""
    return hashlib.sha1(rel_path.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _holdout(df: pd.DataFrame, seed: int, val_fraction: float, test_fraction: float) -> pd.Series:
    """Seeded, stratified train/val/test assignment, independent of file-system order.

    Within each class, files are ordered by a seeded hash of their path; the first ``test_fraction`` go to
    test, the next ``val_fraction`` to val. Usable files are counted apart from bad ones so every split gets
    its share of usable images.
    """
    key = [hashlib.sha1(f"{seed}:{p}".encode()).hexdigest() for p in df["path"]]
    ordered = df.assign(_key=key, _ok=df["status"] == "ok").sort_values(["label", "_ok", "_key"])
    split = pd.Series("train", index=df.index)
    for _, group in ordered.groupby(["label", "_ok"], sort=False):
        n = len(group)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        split[group.index[:n_test]] = "test"
        split[group.index[n_test:n_test + n_val]] = "val"
    return split


def fingerprint_of(table: pd.DataFrame) -> str:
    """Digest of paths, splits, labels, sizes and contents of the usable images."""
    ok = table[table["status"] == "ok"].sort_values("path")
    h = hashlib.sha256()
    for row in ok[["path", "split", "label", "bytes", "sha256"]].itertuples(index=False):
        h.update("\t".join(map(str, row)).encode("utf-8") + b"\n")
    return h.hexdigest()


def index_dataset(
    data_dir: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    seed: int = 42,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    verify: bool = False,
    workers: int | None = None,
    previous: pd.DataFrame | None = None,
    follow_external_links: bool = False,
) -> DatasetIndex:
    """Index ``data_dir`` into the `images` table.

    Args:
        data_dir: dataset root in one of the layouts above.
        classes: keep only these class names (error naming the closest ones if one does not exist).
        seed, val_fraction, test_fraction: the holdout for the single-folder layout.
        verify: decode every image in full instead of the cheaper reduced-size JPEG decode.
        workers: processes used to check files (default: all cores).
        previous: an earlier `images` table of the same root; rows of unchanged files are reused.
        follow_external_links: read files whose real path (after symlinks) is outside ``data_dir``; by
            default they get status ``outside_root`` and are neither opened nor hashed.

    Raises:
        DatasetError: missing folder, no class folders, or an unknown class name.
    """
    start = time.perf_counter()
    root = Path(data_dir).expanduser().resolve()
    layout, found = find_class_dirs(root)
    found = select_classes(found, classes)
    rows, notes = list_files(found, root)
    refused = [_refusal(row["path"], root, follow_external_links) for row in rows]
    for rel, split in stray_images(root, layout):  # in no class folder: listed as bad, never silently skipped
        rows.append({"path": rel, "split": split, "label": None, "mask_path": None})
        refused.append(("no_class", "image outside any class folder, so its class is unknown; move it into a "
                                    "class folder (not read)"))
    for row in rows:  # names that are not UTF-8 (refused above) stored escaped: parquet takes only UTF-8
        row.update({k: printable(v) for k, v in row.items() if isinstance(v, str)})
    df = pd.DataFrame(rows, columns=["path", "split", "label", "mask_path"])

    todo = np.array([r is None for r in refused], dtype=bool)
    checked, reused = _check_with_reuse(df[todo], root, verify, workers, previous)
    bad_rows = pd.DataFrame([_refused_row(*r) for r in refused if r is not None], index=df.index[~todo],
                            columns=_CHECK_COLS)
    checked = _typed(pd.concat([checked, bad_rows]).loc[df.index]) if len(bad_rows) else checked
    df = pd.concat([df.reset_index(drop=True), checked.reset_index(drop=True)], axis=1)
    if layout == "classes":
        df["split"] = _holdout(df, seed, val_fraction, test_fraction) if len(df) else pd.Series(dtype=str)
    df["image_id"] = [image_id(p) for p in df["path"]]

    usable_labels = sorted(set(df.loc[df["status"] == "ok", "label"]))
    class_index = {name: i for i, name in enumerate(usable_labels)}
    df["label_index"] = df["label"].map(class_index).fillna(-1).astype("int32")
    for name in sorted(set(df["label"].dropna()) - set(usable_labels)):
        notes.append(f"class {name!r} has no usable image; left out of the class index")
    if "train" in set(df["split"]):
        missing = sorted(set(usable_labels) - set(df.loc[(df["status"] == "ok") & (df["split"] == "train"), "label"]))
        notes.extend(f"class {name!r} has no usable training image" for name in missing)
    if not usable_labels:
        notes.append("no usable image found")

    table = df[tables.IMAGES_SCHEMA.names].sort_values(["split", "label", "path"], ignore_index=True)
    return DatasetIndex(root=root, layout=layout, table=table, classes=class_index,
                        fingerprint=fingerprint_of(table), warnings=tuple(notes),
                        seconds=time.perf_counter() - start, reused=reused,
                        split_folders=tuple(split_folders(root).items()) if layout == "splits" else ())


_CHECK_COLS = ["width", "height", "mode", "format", "bytes", "sha256", "status", "error", "mtime_ns"]


def printable(name: str) -> str:
    """A path as a storable string: bytes that are not UTF-8 (surrogate escapes) written as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _refusal(rel_path: str, root: Path, follow_external_links: bool) -> tuple[str, str] | None:
    """(status, error) for a file refused before anything is opened: a non-UTF-8 name, or a link out of root."""
    if printable(rel_path) != rel_path:
        return "bad_name", "file name is not valid UTF-8; rename the file (not read)"
    if not follow_external_links:
        real = os.path.realpath(root / rel_path)
        if not Path(real).is_relative_to(root):
            return "outside_root", (f"links to {printable(real)}, outside the dataset root; not read "
                                    "(fruitlens index --follow-external-links reads it)")
    return None


def _refused_row(status: str, error: str) -> list:
    return [0, 0, "", "", 0, "", status, error, 0]


def _check_with_reuse(df, root, verify, workers, previous) -> tuple[pd.DataFrame, int]:
    cols = _CHECK_COLS
    result = pd.DataFrame(index=df.index, columns=cols)
    todo = list(df.index)
    reused = 0
    if previous is not None and len(previous) and len(df):
        stats = pd.DataFrame([_stat(root / p)[:2] for p in df["path"]], columns=["bytes", "mtime_ns"],
                             index=df.index)
        prev = previous.drop_duplicates("path").set_index("path")
        prev = prev[prev["status"] != "unreadable"].reindex(df["path"])
        same = ((prev["bytes"].to_numpy() == stats["bytes"].to_numpy())
                & (prev["mtime_ns"].to_numpy() == stats["mtime_ns"].to_numpy()))
        keep = df.index[same]
        result.loc[keep, cols] = prev.loc[df.loc[keep, "path"], cols].to_numpy()
        todo = list(df.index[~same])
        reused = len(keep)
    if todo:
        checked = check_files([str(root / p) for p in df.loc[todo, "path"]], verify=verify, workers=workers)
        result.loc[todo, cols] = pd.DataFrame(checked, columns=cols).to_numpy()
    return _typed(result), reused


def _typed(result: pd.DataFrame) -> pd.DataFrame:
    return result.astype({"width": "int32", "height": "int32", "bytes": "int64", "mtime_ns": "int64",
                          "mode": str, "format": str, "sha256": str, "status": str, "error": str})


# ------------------------------------------------------------------------------------ read/write


def write_index(index: DatasetIndex, out_dir: str | os.PathLike) -> Path:
    """Write ``images.parquet``, ``classes.json`` and ``index.json`` (fingerprint, counts, warnings)."""
    out = Path(out_dir)
    tables.write_table(index.table, out / "images.parquet", tables.IMAGES_SCHEMA)
    tables.write_json(out / "classes.json", index.classes)
    counts = index.counts()
    bad = index.table[index.table["status"] != "ok"]
    tables.write_json(out / "index.json", {
        "root": str(index.root),
        "layout": index.layout,
        "fingerprint": index.fingerprint,
        "num_files": int(len(index.table)),
        "num_ok": int(len(index.usable)),
        "num_bad": int(len(bad)),
        "bad_by_status": {k: int(v) for k, v in bad["status"].value_counts().sort_index().items()},
        "counts": {split: {k: int(v) for k, v in counts[split].items()} for split in counts.columns},
        "warnings": list(index.warnings),
        "seconds": round(index.seconds, 3),
        "reused": index.reused,
        "split_folders": dict(index.split_folders),
    })
    return out


def load_index(out_dir: str | os.PathLike) -> DatasetIndex:
    """Read back what ``write_index`` wrote."""
    out = Path(out_dir)
    meta = tables.read_json(out / "index.json")
    return DatasetIndex(root=Path(meta["root"]), layout=meta["layout"],
                        table=tables.read_table(out / "images.parquet"),
                        classes=tables.read_json(out / "classes.json"), fingerprint=meta["fingerprint"],
                        warnings=tuple(meta["warnings"]), seconds=meta["seconds"], reused=meta.get("reused", 0),
                        split_folders=tuple(meta.get("split_folders", {}).items()))


def index_or_load(data_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, **kwargs) -> DatasetIndex:
    """Index ``data_dir``, reusing unchanged rows from ``out_dir/images.parquet`` and writing back there."""
    previous = None
    if out_dir is not None and (Path(out_dir) / "images.parquet").exists():
        try:
            meta = tables.read_json(Path(out_dir) / "index.json")
            if meta["root"] == str(Path(data_dir).expanduser().resolve()):
                previous = tables.read_table(Path(out_dir) / "images.parquet")
        except (OSError, KeyError, ValueError) as exc:
            log.warning("ignoring previous index in %s: %s", out_dir, exc)
    index = index_dataset(data_dir, previous=previous, **kwargs)
    if out_dir is not None:
        write_index(index, out_dir)
    return index


def split_validation(rows: pd.DataFrame, fraction: float = 0.15, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve a seeded, stratified validation set out of training rows (for layouts without one)."""
    split = _holdout(rows.assign(status="ok"), seed, val_fraction=fraction, test_fraction=0.0)
    return rows[split == "train"], rows[split == "val"]


def format_summary(index: DatasetIndex, max_bad: int = 50) -> str:
    """Per-class counts per split, bad files with their reasons, and warnings, for the console."""
    counts = index.counts()
    lines = [f"{index.root}  layout={index.layout}  classes={len(index.classes)}  "
             f"files={len(index.table)}  ok={len(index.usable)}  bad={len(index.table) - len(index.usable)}"]
    if index.split_folders:
        lines.append("splits from folders: " + ", ".join(f"{name} -> {split}" for name, split in index.split_folders))
    if len(counts):
        counts.loc["TOTAL"] = counts.sum()
        lines.append(counts.to_string())
    bad = index.table[index.table["status"] != "ok"]
    for row in bad.head(max_bad).itertuples():
        lines.append(f"bad: {row.path}: {row.status}: {row.error}")
    if len(bad) > max_bad:
        lines.append(f"... and {len(bad) - max_bad} more bad files (see images.parquet)")
    lines += [f"warning: {w}" for w in index.warnings]
    lines.append(f"fingerprint {index.fingerprint[:16]}  ({index.seconds:.2f}s, {index.reused} rows reused)")
    return "\n".join(lines)
