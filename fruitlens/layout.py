"""Every path of a run folder and of an explanation folder, in one place.

A run folder (``fruitlens run --out RUN``, ``fruitlens train --out RUN``)::

    RUN/
      run.json  report.html  comparison.parquet
      index/        images.parquet, classes.json, index.json
      model.keras  model.json  history.parquet  curves.png
      checkpoints/  best.keras, last.keras, state.json
      eval/         predictions.parquet, metrics.json, confusion.parquet, confusion.png, mistakes.png
      eval_current/ the current model evaluated on the same split (nightly comparison)
      explain/      see ExplainLayout
      visualize/    activations/<layer>.png, filters/<layer>.png
      sanity/       sanity.parquet, sanity.png, verdicts.json (``fruitlens sanity --out RUN/sanity``, the nightly)
      evidence/     class_evidence.parquet, class_evidence.png, shortcut.parquet
      drift/        drift.parquet, pictures/ (nightly, against the current model)
      trend/        nights.parquet, trend.png (nightly: the models home's history up to this run)

Readers take the names from here, and so do the run-level writers (training, the batch engine, the report,
the flows). ``fruitlens.inference`` writes ``predictions.parquet``, ``metrics.json`` and ``confusion.*`` into any
``--out`` folder by those same names; ``RunLayout`` names them where they sit in a run (``eval/``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MODEL_FILE = "model.keras"
CARD_FILE = "model.json"
REPORT_FILE = "report.html"
RUN_RECORD_FILE = "run.json"
PREDICTIONS_FILE = "predictions.parquet"  # in an evaluation folder (RUN/eval, or `fruitlens evaluate --out`)
METRICS_FILE = "metrics.json"
SHORTCUT_FILE = "shortcut.parquet"  # in the evidence folder (RUN/evidence): fruitlens.explain.shortcut
NIGHTS_FILE = "nights.parquet"  # in a models home and in RUN/trend: one row per run (fruitlens.nights)
FAILED = "failed"  # the pseudo-method whose table lists the images that could not be read
CURRENT = "current"  # in a models home: the promoted model's folder (fruitlens.promotion)
LOCK_FILE = ".fruitlens.lock"  # in every folder a command writes: one writer at a time (fruitlens.locks)


@dataclass(frozen=True)
class ExplainLayout:
    """An explanation folder (``fruitlens explain --out DIR``, or ``RUN/explain``).

    ``<method>.parquet`` is the consolidated table of a method; ``<method>.parts/part-<key>.parquet`` the
    parts it is joined from (one per chunk, named by the chunk's content key); ``<method>/`` its PNGs;
    ``side_by_side/`` the composed pictures; ``failed.parquet`` the unreadable images.
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def table(self, method: str) -> Path:
        return self.root / f"{method}.parquet"

    def parts_dir(self, method: str) -> Path:
        return self.root / f"{method}.parts"

    def part(self, method: str, key: str) -> Path:
        return self.parts_dir(method) / f"part-{key}.parquet"

    def pictures_dir(self, method: str) -> Path:
        return self.root / method

    def picture(self, method: str, stem: str, kind: str) -> Path:
        """A method's PNG of one image: ``<method>/<stem>_<kind>.png`` (stem from :func:`picture_stem`).

        LIME writes kinds ``outline`` (the explanation on the photo), ``block``, ``boundaries``, ``density``;
        Grad-CAM ``overlay`` and ``heatmap``.
        """
        return self.pictures_dir(method) / f"{stem}_{kind}.png"

    @property
    def side_by_side_dir(self) -> Path:
        return self.root / "side_by_side"

    def side_by_side(self, stem: str) -> Path:
        """The photo and every method's explanation of one image, in titled panels."""
        return self.side_by_side_dir / f"{stem}.png"

    @property
    def stability(self) -> Path:
        """LIME under two seeds for a sample of the images (``fruitlens.batch.stability``)."""
        return self.root / "stability.parquet"

    @property
    def amortised_audit(self) -> Path:
        """The amortised explainer against the exact method, per class (``fruitlens.batch.amortised_audit``)."""
        return self.root / "amortised_audit.parquet"

    @property
    def amortised_maps(self) -> Path:
        """The whole split's patch attributions (amortised, or the exact method's for classes that fell back)."""
        return self.root / "amortised_maps.npz"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_FILE

    @property
    def model_record(self) -> Path:
        """Which model's explanations the folder holds (its digest): tables of two models are never mixed."""
        return self.root / ".explained-model.json"


@dataclass(frozen=True)
class SanityLayout:
    """A sanity-check folder (``fruitlens sanity --out DIR``, or ``RUN/sanity``): the ``sanity`` table, the
    cascade figure and the verdicts."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def table(self) -> Path:
        return self.root / "sanity.parquet"

    @property
    def figure(self) -> Path:
        return self.root / "sanity.png"

    @property
    def verdicts(self) -> Path:
        return self.root / "verdicts.json"

    @property
    def files(self) -> tuple[Path, ...]:
        return self.table, self.figure, self.verdicts


@dataclass(frozen=True)
class RunLayout:
    """The files of one run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # ---- index
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def index_json(self) -> Path:
        return self.index_dir / "index.json"

    @property
    def images_table(self) -> Path:
        return self.index_dir / "images.parquet"

    @property
    def classes_json(self) -> Path:
        return self.index_dir / "classes.json"

    # ---- training
    @property
    def model(self) -> Path:
        return self.root / MODEL_FILE

    @property
    def card(self) -> Path:
        return self.root / CARD_FILE

    @property
    def history(self) -> Path:
        return self.root / "history.parquet"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    # ---- evaluation
    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def eval_current_dir(self) -> Path:
        return self.root / "eval_current"

    @property
    def predictions(self) -> Path:
        return self.eval_dir / PREDICTIONS_FILE

    @property
    def metrics(self) -> Path:
        return self.eval_dir / METRICS_FILE

    @property
    def confusion_png(self) -> Path:
        return self.eval_dir / "confusion.png"

    @property
    def mistakes_png(self) -> Path:
        return self.eval_dir / "mistakes.png"

    # ---- explanation, visualisation
    @property
    def explain_dir(self) -> Path:
        return self.root / "explain"

    @property
    def explain(self) -> ExplainLayout:
        return ExplainLayout(self.explain_dir)

    @property
    def visualize_dir(self) -> Path:
        return self.root / "visualize"

    def visualize_kind_dir(self, kind: str) -> Path:
        """``visualize/activations`` or ``visualize/filters``: one PNG per layer."""
        return self.visualize_dir / kind

    @property
    def sanity(self) -> SanityLayout:
        return SanityLayout(self.root / "sanity")

    @property
    def evidence_dir(self) -> Path:
        """class_evidence.parquet and class_evidence.png: where the model looks, per class (``explain.evidence``)."""
        return self.root / "evidence"

    @property
    def class_evidence(self) -> Path:
        return self.evidence_dir / "class_evidence.parquet"

    @property
    def class_evidence_png(self) -> Path:
        return self.evidence_dir / "class_evidence.png"

    @property
    def shortcut(self) -> Path:
        """Per class, the share of Grad-CAM heat on the border and on plain background (``explain.shortcut``)."""
        return self.evidence_dir / SHORTCUT_FILE

    @property
    def trend_dir(self) -> Path:
        """nights.parquet (the models home's history up to this run) and trend.png (``fruitlens.nights``)."""
        return self.root / "trend"

    @property
    def trend_table(self) -> Path:
        return self.trend_dir / NIGHTS_FILE

    @property
    def trend_png(self) -> Path:
        return self.trend_dir / "trend.png"

    @property
    def drift_dir(self) -> Path:
        """drift.parquet and pictures/<photo>-<id>.png: the evidence of the new vs the current model (nightly)."""
        return self.root / "drift"

    @property
    def drift(self) -> Path:
        return self.drift_dir / "drift.parquet"

    # ---- the run as a whole
    @property
    def comparison(self) -> Path:
        return self.root / "comparison.parquet"

    @property
    def run_record(self) -> Path:
        return self.root / RUN_RECORD_FILE

    @property
    def report(self) -> Path:
        return self.root / REPORT_FILE


EVAL_FILES = (PREDICTIONS_FILE, METRICS_FILE, "confusion.parquet", "confusion.png", "mistakes.png")

# Top-level names of a run folder that a report does not show (its digest leaves them out).
NOT_REPORTED = (REPORT_FILE, "checkpoints", "logs", "eval_current", "cache")

# run.json keys that describe one invocation of the pipeline (its seconds, its decision), not what the run
# folder holds. The report's digest leaves them out, so a rerun that changed nothing keeps the report as it is;
# the report shows those of the run that built it, and says so.
PER_INVOCATION_KEYS = ("timings", "total_seconds", "promoted", "decision")


def picture_stem(path: str | os.PathLike, image_id: str, max_len: int = 40) -> str:
    """A file-name stem a person can trace back to the photo: ``<readable stem>-<image id>``.

    ``cat.4002.jpg`` with id ``1c5939ef...`` gives ``cat.4002-1c5939ef``. Anything but letters, digits, dot,
    dash and underscore becomes ``_`` (so no output path can leave its folder), and the id keeps two photos
    with the same name apart.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(path)).stem).strip("._") or "image"
    return f"{stem[:max_len]}-{str(image_id)[:8]}"
