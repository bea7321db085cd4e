"""The images a batch run works on, as rows: image_id, path (absolute), label (None when unknown), mask_path, sha256.

Rows come from an index folder (the pipeline), or from what a user points a command at: a dataset root, a
folder of unlabelled photos (searched recursively), or image files. Either way they are sorted by image id,
so chunks do not depend on the order files were listed in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fruitlens.dataset import IMAGE_SUFFIXES, MASK_SUFFIX, DatasetError, image_id, index_dataset, load_index
from fruitlens.digests import file_digest

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


def is_photo_folder(folder: Path) -> bool:
    """A folder with image files at its top level is a folder of (unlabelled) photos, not a dataset root."""
    return any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)
               and not p.name.startswith(".") for p in folder.iterdir())


def photos_in(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (recursively), hidden files and evidence masks left out, sorted."""
    from fruitlens.images import list_images

    return list_images(folder)


def _file_rows(files: Sequence[Path], root: Path | None = None) -> pd.DataFrame:
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DatasetError(f"{missing[0]}: no such file; expected a dataset folder, a folder of photos or image files")
    paths = [f.resolve() for f in files]
    ids = [image_id(str(p.relative_to(root)) if root is not None else str(p)) for p in paths]
    sha = [file_digest(p) for p in paths]
    return _frame(ids, paths, [None] * len(paths), [None] * len(paths), sha)


def rows_from_inputs(data: Sequence[str | os.PathLike], *, split: str = "test", limit: int | None = None,
                     unlabelled: bool = False) -> pd.DataFrame:
    """The images a command was pointed at.

    Args:
        data: one dataset root (its usable images of ``split``), one folder of photos (every image under it,
            unlabelled; any folder with image files at its top level, or any folder when ``unlabelled``), or
            image files.
        split: the split of a dataset root.
        limit: at most this many rows (the first by image id).
        unlabelled: read a folder as photos even when it looks like a dataset root.

    Raises:
        DatasetError: nothing usable, a missing file, or a split the dataset does not have (the message
            lists the splits present).
    """
    paths = [Path(d) for d in data]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        if unlabelled or is_photo_folder(folder):
            files = photos_in(folder)
            if not files:
                raise DatasetError(f"{folder}: no image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
            df = _file_rows(files, folder.resolve())
            return df.head(limit) if limit is not None else df
        index = index_dataset(folder)
        rows = index.usable[index.usable["split"] == split]
        if rows.empty:
            have = sorted(set(index.usable["split"]))
            raise DatasetError(f"{folder}: no usable images in split {split!r}; splits present: {', '.join(have)}")
        root = index.root
        df = _frame(rows["image_id"], [str(root / p) for p in rows["path"]], rows["label"],
                    _masks(root, rows["mask_path"]), rows["sha256"])
    else:
        dirs = [str(p) for p in paths if p.is_dir()]
        if dirs:
            raise DatasetError(f"{dirs[0]}: a folder among files; expected one folder or image files")
        df = _file_rows(paths)
    return df.head(limit) if limit is not None else df


def evidence_masks(rows: pd.DataFrame, size: tuple[int, int]) -> dict[int, np.ndarray]:
    """Evidence masks (at ``size``) of the rows that have one, by position."""
    from fruitlens.synthetic import read_mask

    return {i: read_mask(m, size) for i, m in enumerate(rows["mask_path"]) if isinstance(m, str) and os.path.isfile(m)}
