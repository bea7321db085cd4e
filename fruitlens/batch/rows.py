"""The images a batch run works on, as rows: image_id, path (absolute), label (None when unknown), mask_path, sha256.

Rows come from an index folder (the pipeline), or from what a user points a command at: a dataset root, a
folder of unlabelled photos (searched recursively), or image files. Either way they are sorted by image id,
so chunks do not depend on the order files were listed in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fruitlens import tables
from fruitlens.dataset import SPLIT_ALIASES, image_id, index_dataset, load_index
from fruitlens.digests import file_digest
from fruitlens.errors import DatasetError
from fruitlens.images import IMAGE_SUFFIXES, MASK_SUFFIX
from fruitlens.layout import ExplainLayout

log = logging.getLogger(__name__)

COLUMNS = ("image_id", "path", "label", "mask_path", "sha256")


def _frame(image_ids, paths, labels, masks, sha256s) -> pd.DataFrame:
    df = pd.DataFrame({"image_id": list(map(str, image_ids)), "path": list(map(str, paths)), "label": list(labels),
                       "mask_path": list(masks), "sha256": list(map(str, sha256s))}, columns=list(COLUMNS))
    df["label"] = df["label"].astype(object).where(df["label"].notna() & (df["label"] != ""), None)
    return df.drop_duplicates("image_id").sort_values("image_id", ignore_index=True)


def _masks(root: Path, masks) -> list[str | None]:
    return [str(root / m) if isinstance(m, str) and m else None for m in masks]


def prioritised(rows: pd.DataFrame, limit: int | None, first: Sequence[str] = ()) -> pd.DataFrame:
    """At most ``limit`` rows: the image ids in ``first`` (in that order) before the others, by image id."""
    if limit is None:
        return rows
    rank = {image: i for i, image in enumerate(dict.fromkeys(first))}
    order = rows["image_id"].map(lambda i: rank.get(i, len(rank)))
    picked = rows.assign(_order=order).sort_values(["_order", "image_id"], kind="stable").head(limit)
    return picked.drop(columns="_order").sort_values("image_id", ignore_index=True)


def rows_from_index(index_dir: str | os.PathLike, split: str = "test", limit: int | None = None,
                    first: Sequence[str] = ()) -> pd.DataFrame:
    """The usable images of ``split`` in an index folder; with ``limit``, those in ``first`` taken first."""
    index = load_index(index_dir)
    rows = index.usable[index.usable["split"] == split]
    root = index.root
    df = _frame(rows["image_id"], [str(root / p) for p in rows["path"]], rows["label"],
                _masks(root, rows["mask_path"]), rows["sha256"])
    return prioritised(df, limit, first)


READ_AS = ("auto", "dataset", "photos")

FOLDER_RULE = ("a folder with split folders (Training/Test, train/validation/test) or with class folders (no image "
               "at its top level, at least two subfolders with images directly in them) is read as a labelled "
               "dataset; any other folder as photos (every image under it, unlabelled); --read-as dataset|photos "
               "overrides")


@dataclass(frozen=True)
class FolderReading:
    """How a folder is read (``kind``: dataset or photos) and why, in words for messages."""

    kind: Literal["dataset", "photos"]
    why: str


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)
               and not p.name.startswith(".") for p in folder.iterdir())


def read_folder_as(folder: str | os.PathLike, read_as: str = "auto") -> FolderReading:
    """What ``folder`` is, by the one rule every command applies (:data:`FOLDER_RULE`).

    Args:
        folder: an existing folder.
        read_as: ``auto`` (the rule), or ``dataset`` / ``photos`` to override it.

    Raises:
        DatasetError: ``read_as`` is not one of :data:`READ_AS`.
    """
    if read_as not in READ_AS:
        raise DatasetError(f"--read-as {read_as}: expected one of {', '.join(READ_AS)}")
    folder = Path(folder)
    if read_as != "auto":
        return FolderReading(read_as, f"--read-as {read_as}")
    dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    splits = [d.name for d in dirs if d.name.lower() in SPLIT_ALIASES]
    if splits:
        return FolderReading("dataset", f"it has split folders ({', '.join(splits)})")
    if _has_images(folder):
        return FolderReading("photos", "it has images at its top level")
    classes = [d.name for d in dirs if _has_images(d)]
    if len(classes) >= 2:
        shown = ", ".join(classes[:4]) + (", ..." if len(classes) > 4 else "")
        return FolderReading("dataset", f"it has {len(classes)} class folders with images ({shown})")
    return FolderReading("photos", "it has no split folders and fewer than two subfolders with images directly in them")


def is_photo_folder(folder: Path) -> bool:
    """Whether the rule (:func:`read_folder_as`) reads ``folder`` as photos."""
    return read_folder_as(folder).kind == "photos"


def photos_in(folder: Path, follow_external_links: bool = False) -> list[Path]:
    """Every image file under ``folder`` (recursively), hidden files and evidence masks left out, sorted.

    The dataset root's rule holds here too: a link whose target is outside ``folder`` is reported and never
    read (unless ``follow_external_links``), and a name that is not UTF-8, a link loop or a broken link is one
    warning naming the file, never the end of the whole folder.
    """
    from fruitlens.dataset import _refusal, printable
    from fruitlens.images import list_images, regular_file_problem

    folder = Path(folder)
    root = folder.expanduser().resolve()
    found = []
    for path in list_images(folder):
        refusal = _refusal(str(path.relative_to(folder)), root, follow_external_links)
        problem = regular_file_problem(path) if refusal is None else None
        if problem is not None:
            refusal = problem, {"missing": "a broken link", "unreadable": "a link loop or unreadable",
                                "not_a_file": "not a regular file"}[problem] + "; not read"
        if refusal is not None:  # (the index's hint about its own flag does not apply here)
            log.warning("skipping %s: %s (%s)", printable(str(path)), refusal[1].split(" (fruitlens index")[0],
                        refusal[0])
            continue
        found.append(path)
    return found


def _file_rows(files: Sequence[Path], root: Path | None = None) -> pd.DataFrame:
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: no such file; expected a dataset folder, a folder of photos or image files")
    paths = [f.resolve() for f in files]
    ids = [image_id(str(p.relative_to(root)) if root is not None else str(p)) for p in paths]
    sha = [file_digest(p) for p in paths]
    return _frame(ids, paths, [None] * len(paths), [None] * len(paths), sha)


def rows_from_inputs(data: Sequence[str | os.PathLike], *, split: str = "test", limit: int | None = None,
                     unlabelled: bool = False, read_as: str = "auto") -> pd.DataFrame:
    """The images a command was pointed at.

    Args:
        data: one folder, read by :data:`FOLDER_RULE` as a dataset (its usable images of ``split``, labelled)
            or as photos (every image under it, unlabelled), or image files.
        split: the split of a dataset.
        limit: at most this many rows (the first by image id).
        unlabelled: the same as ``read_as="photos"`` (kept for callers of the older flag).
        read_as: ``auto`` (the rule), ``dataset`` or ``photos``.

    Raises:
        DatasetError: nothing usable, a missing file, or a split the dataset does not have (the message
            says why the folder was read as a dataset, the splits present, and how to read it as photos).
    """
    paths = [Path(d) for d in data]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        reading = read_folder_as(folder, "photos" if unlabelled else read_as)
        if reading.kind == "photos":
            files = photos_in(folder)
            if not files:
                raise DatasetError(f"{folder}: read as photos ({reading.why}) but no usable image files under it "
                                   f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))}; skipped files are named "
                                   f"above); rule: {FOLDER_RULE}")
            df = _file_rows(files, folder.resolve())
            return df.head(limit) if limit is not None else df
        try:
            index = index_dataset(folder)
        except DatasetError as exc:
            raise DatasetError(f"{exc} (read as a dataset: {reading.why}; rule: {FOLDER_RULE})") from exc
        rows = index.usable[index.usable["split"] == split]
        if rows.empty:
            have = sorted(set(index.usable["split"]))
            raise DatasetError(f"{folder}: read as a dataset ({reading.why}), but no usable images in split "
                               f"{split!r}; splits present: {', '.join(have) or 'none'}; pass --split, or "
                               f"--read-as photos to take every image under it unlabelled (rule: {FOLDER_RULE})")
        root = index.root
        df = _frame(rows["image_id"], [str(root / p) for p in rows["path"]], rows["label"],
                    _masks(root, rows["mask_path"]), rows["sha256"])
    else:
        dirs = [str(p) for p in paths if p.is_dir()]
        if dirs:
            raise DatasetError(f"{dirs[0]}: a folder among files; expected one folder or image files")
        df = _file_rows(paths)
    return df.head(limit) if limit is not None else df


def files_and_labels(data: Sequence[str | os.PathLike], read_as: str = "auto") -> tuple[list[Path], list[str | None]]:
    """Image files and their labels for commands without a split (predict): each folder read by
    :data:`FOLDER_RULE` (a dataset: the usable images of every split, labelled by their class folder; photos:
    every image under it, unlabelled); files as given, unlabelled."""
    files: list[Path] = []
    labels: list[str | None] = []
    for item in map(Path, data):
        if not item.is_dir():
            files.append(item)
            labels.append(None)
            continue
        if read_folder_as(item, read_as).kind == "photos":
            found = photos_in(item)
            files += found
            labels += [None] * len(found)
            continue
        index = index_dataset(item)
        files += [index.root / p for p in index.table["path"]]  # unusable files get their error row
        labels += [str(v) for v in index.table["label"]]
    return files, labels


def evidence_masks(rows: pd.DataFrame, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Evidence masks (at ``size``) of the rows that have one, by position."""
    from fruitlens.synthetic import read_mask

    return {i: read_mask(m, size) for i, m in enumerate(rows["mask_path"]) if isinstance(m, str) and os.path.isfile(m)}


def probe_content(rows: pd.DataFrame) -> list[str]:
    """What a cache key needs of probe images: ``<image id>:<sha256>`` of each, in order."""
    return [f"{i}:{s}" for i, s in zip(rows["image_id"], rows["sha256"], strict=True)]


def probe_rows(index_dir: str | os.PathLike, split: str, explain_dir: str | os.PathLike, n: int) -> pd.DataFrame:
    """The probe set: the first ``n`` (by image id) of the images explained in ``explain_dir``, with their
    index rows (path, label, mask_path, sha256); every usable image of ``split`` when none was explained.

    Drift and LIME stability work on it, and their cache keys read it: nothing here imports TensorFlow.
    """
    rows = rows_from_index(index_dir, split)
    ids: set[str] = set()
    for method in ("gradcam", "lime"):
        path = ExplainLayout(Path(explain_dir)).table(method)
        if path.is_file():
            ids |= set(tables.read_table(path)["image_id"].astype(str))
    if ids:
        rows = rows[rows["image_id"].astype(str).isin(ids)]
    return rows.sort_values("image_id", ignore_index=True).head(n)
