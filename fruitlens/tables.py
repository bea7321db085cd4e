"""Parquet schemas (pyarrow) and atomic writes for every table and file fruitlens produces.

Every writer here goes through a temp file in the destination folder and an ``os.replace``, so a crash
never leaves half a table: readers see the old file or the new one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

IMAGES_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),  # stable hash of the relative path
        ("path", pa.string()),  # relative to the dataset root, POSIX separators
        ("split", pa.string()),  # train | val | test
        ("label", pa.string()),
        ("label_index", pa.int32()),  # -1 when the class has no usable image
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),  # PIL mode as stored: RGB, L, CMYK, RGBA, I;16, P ...
        ("format", pa.string()),  # JPEG, PNG, GIF ...
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
        ("status", pa.string()),  # "ok" or the reason the file is unusable
        ("error", pa.string()),  # one line, empty when ok
        ("mtime_ns", pa.int64()),  # lets a re-index reuse unchanged rows
        ("mask_path", pa.string()),  # evidence mask next to the image (demo data), else null
    ]
)

HISTORY_SCHEMA = pa.schema(
    [
        ("epoch", pa.int32()),
        ("loss", pa.float64()),
        ("accuracy", pa.float64()),
        ("val_loss", pa.float64()),
        ("val_accuracy", pa.float64()),
        ("learning_rate", pa.float64()),
        ("seconds", pa.float64()),
    ]
)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),  # the source file, absolute (README, Tables)
        ("label", pa.string()),  # the true class; null when unknown (as true_label in the explain tables)
        ("pred_label", pa.string()),
        ("pred_prob", pa.float32()),
        ("topk_labels", pa.list_(pa.string())),
        ("topk_probs", pa.list_(pa.float32())),
        ("correct", pa.bool_()),  # null when the label is unknown
    ]
)

LIME_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),  # the source file
        ("true_label", pa.string()),  # null when unknown
        ("label", pa.string()),  # the explained class
        ("label_prob", pa.float32()),
        ("superpixel", pa.int32()),
        ("weight", pa.float64()),
        ("intercept", pa.float64()),
        ("score", pa.float64()),
        ("local_pred", pa.float64()),
        ("num_samples", pa.int32()),  # samples used (adaptive LIME: where the image stopped)
        ("segmenter", pa.string()),
        ("max_samples", pa.int32()),  # the most it could use (num_samples asked for)
        ("stability", pa.float64()),  # max SE(weight) / max |weight| reached (fruitlens.explain.lime)
        ("converged", pa.bool_()),  # stability within the tolerance
    ]
)

GRADCAM_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("true_label", pa.string()),
        ("label", pa.string()),
        ("layer", pa.string()),
        ("heatmap_path", pa.string()),
        ("overlay_path", pa.string()),
        ("peak_y", pa.int32()),
        ("peak_x", pa.int32()),
        ("deletion_auc", pa.float64()),
        ("insertion_auc", pa.float64()),
    ]
)

# one row per explanation method and variant of a run (``fruitlens.batch.ranking``)
FAITHFULNESS_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("variant", pa.string()),
        ("images", pa.int32()),
        ("deletion_auc", pa.float64()),
        ("insertion_auc", pa.float64()),
        ("pointing_game", pa.float64()),  # null: no evidence masks (or LIME)
        ("pointed", pa.int32()),  # images with an evidence mask
        ("rank", pa.int32()),  # 1 = most faithful (mean of the ranks on the three scores)
    ]
)

SANITY_SCHEMA = pa.schema(
    [
        ("method", pa.string()),  # gradcam, gradcam++, lime, or an extra explainer's name
        ("step", pa.int32()),  # 0: the original model; k: the top k weighted layers re-initialised
        ("layer", pa.string()),  # the layer re-initialised at this step ("" at step 0)
        ("layer_kind", pa.string()),  # none | dense | conv
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),  # the class explained at every step
        ("spearman", pa.float64()),  # rank correlation with step 0 (heatmap pixels, or LIME weights)
        ("ssim", pa.float64()),  # SSIM of heatmaps with step 0; null for LIME
        ("top_k_overlap", pa.float64()),  # LIME: share of the top-5 superpixels kept; null for heatmaps
        ("seed", pa.int32()),
        ("options", pa.string()),  # the options the method ran with, in words (fruitlens.explain.sanity)
    ]
)

SHORTCUT_SCHEMA = pa.schema(  # fruitlens.explain.shortcut: per class, where its Grad-CAM evidence sits
    [
        ("label", pa.string()),  # the true class
        ("images", pa.int32()),
        ("border_share", pa.float64()),  # mean share of heat on the outer band of the image
        ("border_area", pa.float64()),  # mean share of the area that band covers
        ("background_share", pa.float64()),  # mean share of heat on plain background reaching the edge
        ("background_area", pa.float64()),
        ("flagged", pa.bool_()),  # the evidence sits mostly on the border or the background
        ("reason", pa.string()),  # why it is flagged; empty when not
    ]
)

NIGHTS_SCHEMA = pa.schema(  # fruitlens.nights: one row per run folder of a models home, the trend across nights
    [
        ("date", pa.timestamp("s", tz="UTC")),  # when the run's row was last written
        ("run", pa.string()),  # the run folder's name
        ("run_dir", pa.string()),  # its absolute path (the row's key)
        ("model_digest", pa.string()),
        ("promoted", pa.bool_()),
        ("accuracy", pa.float64()),
        ("macro_f1", pa.float64()),
        ("drift_share", pa.float64()),  # share of probe images whose evidence moved; null without a current model
        ("sanity", pa.string()),  # "gradcam:pass,lime:fail"; empty when not checked
        ("sanity_failed", pa.int32()),  # methods that failed the randomisation test; null when not checked
        ("evidence_share", pa.float64()),  # mean share of Grad-CAM heat on the evidence masks; null without masks
        ("shortcut_classes", pa.string()),  # flagged classes, comma-separated; empty when none
        ("shortcut_flags", pa.int32()),
        ("seconds", pa.float64()),  # the run's steps, summed
        ("reruns", pa.int32()),  # how many times this run folder's row was rewritten (0: one run)
    ]
)

FAILED_SCHEMA = pa.schema([("image_id", pa.string()), ("path", pa.string()), ("error", pa.string())])

# one row per class: the amortised explainer against the exact method on an audit sample
# (``fruitlens.batch.amortised_audit``)
AMORTISED_AUDIT_SCHEMA = pa.schema(
    [
        ("class", pa.string()),
        ("images", pa.int32()),  # test images predicted as the class (all explained)
        ("audited", pa.int32()),  # of them in the audit sample
        ("rank_correlation", pa.float64()),  # mean Spearman of the patch attributions (null: none audited)
        ("exact_seed_to_seed", pa.float64()),  # the same for the exact method against itself, another seed
        ("top_k_overlap", pa.float64()),  # mean share of the exact top-k patches among the amortised top-k
        ("deletion_auc_amortised", pa.float64()),
        ("deletion_auc_exact", pa.float64()),
        ("insertion_auc_amortised", pa.float64()),  # higher is more faithful (deletion: lower)
        ("insertion_auc_exact", pa.float64()),
        ("trusted", pa.bool_()),  # rank correlation >= amortised_agreement x exact_seed_to_seed (null: none)
        ("explained_by", pa.string()),  # "amortised", or the exact method's name for a class that fell back
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    "failed": FAILED_SCHEMA,
    "faithfulness": FAITHFULNESS_SCHEMA,
    "images": IMAGES_SCHEMA,
    "history": HISTORY_SCHEMA,
    "predictions": PREDICTIONS_SCHEMA,
    # the rows of the explanation methods: each method names one of these (``fruitlens.registry.MethodSpec.table``)
    "lime": LIME_SCHEMA,
    "gradcam": GRADCAM_SCHEMA,
    "sanity": SANITY_SCHEMA,
    "shortcut": SHORTCUT_SCHEMA,
    "nights": NIGHTS_SCHEMA,
    "amortised_audit": AMORTISED_AUDIT_SCHEMA,
}


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc/self/status``).

    Elsewhere it is read by setting and restoring it under a lock (safe against other callers of this
    function, not against threads calling ``os.umask`` themselves).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one rename.

    The temp file keeps the destination's suffix so that writers which pick a format by extension
    (Keras, matplotlib, PIL) still work. On error the temp file is removed and ``path`` is untouched.
    The file gets the mode any new file gets under the process umask (0644 under umask 022), not the
    0600 of ``tempfile.mkstemp``. An ``OSError`` while writing (a full disk) is raised naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    except OSError as exc:  # a full disk, a vanished folder: name the file we were writing, keep the errno
        if exc.filename is not None and Path(exc.filename) == path:
            raise
        raise OSError(exc.errno, f"{exc.strerror or exc} (writing {path}; the previous file is untouched)",
                      str(path)) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_temp_files(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the temp files that writes cut short by a kill left in ``folder`` (and below, if ``recursive``).

    Only :func:`atomic_path`'s names (``.<stem>.<random>.tmp<suffix>``) are touched; call it where no other writer
    is at work (under a lock, before a run starts). Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp*") if recursive else folder.glob(".*.tmp*")
    removed = sorted(p for p in found if p.is_file() and re.fullmatch(r"\..+\.[^.]+\.tmp(\.\w+)?", p.name))
    for path in removed:
        log.warning("removing %s, left by an interrupted write", path)
        path.unlink(missing_ok=True)
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented UTF-8 JSON, atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def to_arrow(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert ``df`` to ``schema``: the schema's columns first (all required), extra columns after."""
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise ValueError(f"table is missing columns {missing}; expected {schema.names}")
    extra = [c for c in df.columns if c not in schema.names]
    fields = list(schema) + [pa.field(c, pa.Table.from_pandas(df[[c]], preserve_index=False).schema[0].type)
                             for c in extra]
    full = pa.schema(fields)
    return pa.Table.from_pandas(df[full.names], schema=full, preserve_index=False)


def write_table(df: pd.DataFrame | pa.Table, path: str | os.PathLike, schema: pa.Schema | str | None = None) -> Path:
    """Write a table to Parquet atomically, checked against ``schema`` (a pyarrow schema or a name in SCHEMAS)."""
    if isinstance(schema, str):
        schema = SCHEMAS[schema]
    if isinstance(df, pd.DataFrame):
        table = to_arrow(df, schema) if schema is not None else pa.Table.from_pandas(df, preserve_index=False)
    else:
        table = df
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Parquet file, or a folder of Parquet parts (a partitioned dataset), into pandas."""
    path = Path(path)
    if path.is_dir():
        parts = sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))
        if not parts:
            return pd.DataFrame()
        return pd.concat([pq.read_table(p).to_pandas() for p in parts], ignore_index=True)
    return pq.read_table(path).to_pandas()
