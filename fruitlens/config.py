"""Every option of a run as a frozen, typed dataclass, validated once, where it enters.

A pipeline config file (YAML or JSON) holds any of the fields of :class:`PipelineConfig`, at any depth::

    train: {arch: fruit_net, image_size: 32, epochs: 5}      # fruitlens.config.TrainConfig fields
    methods: [lime, gradcam]
    explain_limit: 30                                          # null: all images of the split
    chunk_size: 16
    explain_options: {lime: {num_samples: 300}, gradcam: {variant: gradcam++}}

:func:`load_config` reads it and every unknown key, wrong type or bad value, however deep, is a ``ValueError``
that names the key (``explain_options.lime.num_sample``) and what was expected, before any work starts. The
command line builds these same dataclasses (``from_dict``), so it validates nothing of its own.

Where the Prefect task cache lives: :func:`cache_dir` (``$FRUITLENS_CACHE``, else ``$FRUITLENS_HOME/cache``,
else ``~/.fruitlens/cache``). This module never imports Prefect.
"""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from fruitlens.archs import (
    AUGMENT_POLICIES,
    OPTIMIZERS,
    SCHEDULES,
    TRAIN_MODES,
    parse_arch,
)
from fruitlens.augment import AugmentConfig
from fruitlens.errors import OptionError, short
from fruitlens.lime_options import (
    LimeOptions,
)
from fruitlens.registry import METHODS
from fruitlens.sizes import DEFAULT_MEMORY_LIMIT, MAX_IMAGE_SIDE, as_size
from fruitlens.typed import build, check, check_value_count, to_plain

Split = Literal["train", "val", "test"]
Selection = Literal["report", "first"]
TaskRunnerName = Literal["thread", "dask"]
PromoteMetric = Literal["accuracy", "macro_f1"]

CHUNK_SIZE = 16  # images per explanation chunk: one task, one Parquet part, the unit of resume
# Small enough that `fruitlens demo` runs in a few minutes on two cores, and leaves the demo's fruit_net a few
# mistakes for the report to explain (5 epochs, not 6; benchmarks/README.md, "Figures once kept in the code").
DEMO_TRAIN: dict[str, Any] = {"arch": "fruit_net", "image_size": 32, "epochs": 5, "batch_size": 32, "seed": 42}


# ------------------------------------------------------------------------------------ explanation methods


def _of(self, method: str):
    """The options of ``method`` (a name in ``fruitlens.registry.METHODS``)."""
    return getattr(self, method)


#: The options of each explanation method, by method name: one field per ``fruitlens.registry.METHODS`` entry,
#: its type the method's options class, its default that class's defaults.
ExplainOptions = make_dataclass(
    "ExplainOptions", [(name, spec.options, field(default_factory=spec.options)) for name, spec in METHODS.items()],
    frozen=True, namespace={"of": _of, "__doc__": "The options of each explanation method, by method name "
                            "(one field per method of ``fruitlens.registry.METHODS``)."})
ExplainOptions.__module__ = __name__  # pickles by name, as a class written out here would



def parse_methods(methods: str | typing.Sequence[str]) -> tuple[str, ...]:
    """'lime,gradcam' or a list -> ('lime', 'gradcam'); an unknown or missing name is a ValueError."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m).strip() for m in methods]
    names = list(dict.fromkeys(m for m in names if m))
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise OptionError("methods", ", ".join(bad) or "(none)", f"one or more of {', '.join(METHODS)}")
    return tuple(names)


# ------------------------------------------------------------------------------------ training

ClassWeights = Literal["none", "balanced"]
Monitor = Literal["val_accuracy", "val_loss"]
Keep = Literal["best", "last"]
KEEPS: tuple[str, ...] = get_args(Keep)
@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (recorded in the model card and in run.json).

    Attributes:
        arch: ``seed_cnn`` | ``fruit_net`` | ``small_convnet`` | ``lenet`` | ``transfer:<b>[,<b>...]``.
        image_size: side (int) or (height, width).
        epochs, batch_size, seed: as usual; same seed, same run.
        classes: class names to train on (None: all).
        weights: transfer only: ``imagenet`` | ``none`` | a ``.weights.h5`` file per backbone (comma-separated).
        mode: transfer only: ``bottleneck`` | ``frozen`` | ``finetune``.
        alpha: mobilenet_v2 width multiplier.
        learning_rate: None: the architecture's default (see ``models.default_optimizer``).
        augment: random flips/rotations/shifts/shear/zoom on training batches (``augment_options`` tunes them).
        early_stopping: patience in epochs on ``monitor`` (0: off).
        class_weights: ``balanced`` weighs each class by n / (C * n_class) in the loss.
        tensorboard: write TensorBoard logs to ``run_dir/logs``.
        val_fraction: share of training images carved out for validation when the data has no val split
            (0 <= v < 1; the command line's ``--val-split``). 0: no holdout, every training image is trained on
            and the last epoch is kept (there is nothing to pick a best epoch on).
        monitor: the validation metric that picks the best epoch.
        optimizer, schedule: ``default`` (the architecture's: the tutorials' for the tutorial models, Adam with
            warm-up + cosine for ``seed_cnn``, AdamW with it for ``photo_resnet``), ``tutorial`` (the
            architecture's tutorial's), or adam | adamw | rmsprop | sgd, constant | cosine | warmup_cosine
            (see :mod:`fruitlens.recipes`).
        warmup_epochs: linear warm-up of ``warmup_cosine`` (epochs, may be fractional; at most half the run).
        weight_decay: AdamW's decoupled weight decay.
        label_smoothing: None: the architecture's (0.1 for ``photo_resnet``, else 0).
        augment_policy: with ``augment``: ``classic`` (the tutorials' flips/rotations/shifts/shear/zoom) or
            ``photo`` (random resized crop down to ``crop_scale`` of the area, flip, colour jitter by
            ``jitter``); None: the architecture's (photo for ``photo_resnet``).
        mixup, cutmix: Beta(alpha, alpha) mixing of each batch with itself reversed (0: off; both: one of
            the two per batch).
        keep: which epoch's weights become the model: ``best`` (by ``monitor``; the last epoch when there are
            no validation images) or ``last`` (the fixed-epoch model: ``epochs`` decides).
        refit: after the run with its validation holdout, train a fresh model (same seed, same recipe) on the
            training and validation images together for as many epochs as the kept epoch, and save that as the
            model: the holdout picks the epoch, every image trains the final model. Nothing to do without
            validation images (``val_fraction`` 0: every image was trained on already).
    """

    arch: str = "seed_cnn"
    image_size: int | tuple[int, int] = 20
    epochs: int = 10
    batch_size: int = 32
    classes: tuple[str, ...] | None = None
    seed: int = 42
    weights: str = "imagenet"
    mode: Literal["bottleneck", "frozen", "finetune"] = "frozen"
    alpha: float = 1.0
    learning_rate: float | None = None
    augment: bool = False
    augment_options: tuple[tuple[str, Any], ...] | dict[str, Any] = ()  # AugmentConfig fields; kept as sorted pairs
    early_stopping: int = 0
    class_weights: ClassWeights = "none"
    tensorboard: bool = False
    val_fraction: float = 0.15
    monitor: Monitor = "val_accuracy"
    memory_limit: int = DEFAULT_MEMORY_LIMIT
    keep: Keep = "best"
    optimizer: str = "default"
    schedule: str = "default"
    warmup_epochs: float = 2.0
    weight_decay: float = 0.004
    label_smoothing: float | None = None
    augment_policy: str | None = None
    crop_scale: float = 0.35
    jitter: float = 0.2
    mixup: float = 0.0
    cutmix: float = 0.0
    refit: bool = False

    def __post_init__(self) -> None:
        parse_arch(self.arch)
        size = as_size(self.image_size)
        if max(size) > MAX_IMAGE_SIDE:
            raise OptionError("image_size", self.image_size, f"at most {MAX_IMAGE_SIDE} pixels per side")
        object.__setattr__(self, "image_size", size[0] if size[0] == size[1] else size)
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "augment_options", tuple(sorted(dict(self.augment_options).items())))
        try:
            AugmentConfig(**dict(self.augment_options))  # validates names and values
        except TypeError as exc:
            valid = ", ".join(AugmentConfig.__dataclass_fields__)
            raise OptionError("augment_options", dict(self.augment_options), f"keys among {valid}") from exc
        checks = [
            (self.epochs >= 1, "epochs", self.epochs, "at least 1"),
            (self.batch_size >= 1, "batch_size", self.batch_size, "at least 1"),
            (self.mode in TRAIN_MODES, "mode", self.mode, f"one of {', '.join(TRAIN_MODES)}"),
            (self.class_weights in ("none", "balanced"), "class_weights", self.class_weights, "none or balanced"),
            (self.monitor in ("val_accuracy", "val_loss"), "monitor", self.monitor, "val_accuracy or val_loss"),
            (self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in SCHEDULES, "schedule", self.schedule, f"one of {', '.join(SCHEDULES)}"),
            (self.warmup_epochs >= 0, "warmup_epochs", self.warmup_epochs, ">= 0 (at most half the run is used)"),
            (0 <= self.weight_decay < 1, "weight_decay", self.weight_decay, "in [0, 1)"),
            (self.label_smoothing is None or 0 <= self.label_smoothing < 1, "label_smoothing",
             self.label_smoothing, "in [0, 1) or null (the architecture's default)"),
            (self.augment_policy is None or self.augment_policy in AUGMENT_POLICIES, "augment_policy",
             self.augment_policy, f"one of {', '.join(AUGMENT_POLICIES)} or null (the architecture's default)"),
            (0 < self.crop_scale <= 1, "crop_scale", self.crop_scale, "a share of the image area in (0, 1]"),
            (0 <= self.jitter < 1, "jitter", self.jitter, "in [0, 1)"),
            (self.mixup >= 0, "mixup", self.mixup, "a Beta parameter >= 0 (0: off)"),
            (self.cutmix >= 0, "cutmix", self.cutmix, "a Beta parameter >= 0 (0: off)"),
            (0.0 <= self.val_fraction < 1.0, "val_fraction", self.val_fraction,
             "a fraction in [0, 1) (0: no holdout, train on every training image)"),
            (self.keep in KEEPS, "keep", self.keep, f"one of {', '.join(KEEPS)}"),
            (self.early_stopping >= 0, "early_stopping", self.early_stopping, "a patience >= 0 (0: off)"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", self.learning_rate, "> 0"),
            (self.alpha > 0, "alpha", self.alpha, "> 0"),
            (self.augment or self.augment_policy is None, "augment_policy", self.augment_policy,
             "null unless augment is on (--augment): without it nothing is augmented"),
        ]
        check(checks)
        if self.augment and self.mode == "bottleneck" and self.arch.startswith("transfer:"):
            raise ValueError("augment with mode bottleneck: features are computed once, so nothing would be "
                             "augmented; use mode frozen or finetune")

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return as_size(self.image_size)

    @property
    def is_bottleneck(self) -> bool:
        return self.arch.startswith("transfer:") and self.mode == "bottleneck"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["image_size"] = self.image_size if isinstance(self.image_size, int) else list(self.image_size)
        d["classes"] = list(self.classes) if self.classes is not None else None
        d["augment_options"] = dict(self.augment_options)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict (e.g. a pipeline config file); unknown keys are a ValueError naming them."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        d = dict(d)
        if isinstance(d.get("image_size"), list):
            d["image_size"] = tuple(d["image_size"])
        if isinstance(d.get("classes"), str):
            d["classes"] = tuple(c.strip() for c in d["classes"].split(",") if c.strip())
        return cls(**d)


def _train_config(values: Mapping[str, Any] | Any):
    if isinstance(values, TrainConfig):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(f"train {short(values)}: expected a mapping of training options")
    values = {**DEMO_TRAIN, **values}
    if isinstance(values.get("classes"), str):  # "A,B" as on the command line
        values["classes"] = [c.strip() for c in values["classes"].split(",") if c.strip()]
    return build(TrainConfig, values, "train")


MAX_AUDIT_IMAGES = 10_000  # the amortised audit's exact explanations (grid^2 + 1 classifier passes each)
MAX_SANITY_IMAGES = 64  # the nightly's randomisation test is a spot check, not a second explanation run


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs besides the data and the output folder.

    Attributes:
        train: a ``fruitlens.config.TrainConfig`` (a mapping of its fields in files: the demo's defaults
            for fields not given).
        split: the split that is evaluated and explained.
        methods: explanation methods (names in ``fruitlens.registry.METHODS``).
        explain_limit: explain at most N images of ``split``; None for all of them. With explain_select
            "report" it is raised to the number of classes, so every class gets an explained example.
        explain_select: which images when limited: "report" (the images the report shows: the most confused
            pairs' mistakes first, then across classes; ``fruitlens.selection.images_to_explain``) or "first"
            (the first N by image id).
        chunk_size: images per explanation chunk (one task and one Parquet part each).
        explain_options: options of each method.
        visualize: write activation and filter grids for the first explained image.
        report: write report.html.
        promote_metric: the metric the new model must not be worse on to become "current".
        models_home: where the "current" model lives (default: ``<out>/../models/<out's name>``, one per run
            folder; ``fruitlens.promotion.default_models_home``).
        task_runner: "thread" (default) or "dask" for the explanation chunks.
        dask_address: scheduler address for "dask"; None starts a local cluster.
        model: explain an existing model instead of training one: a spec (``pets.keras``, ``imagenet:vgg16``,
            a run folder) or a mapping of ``fruitlens.modelspec.ModelSpec`` fields (spec, classes,
            classes_file, image_size, preprocessing, fit); no training, no comparison, no promotion.
        class_evidence: the mean Grad-CAM heatmap per class over its right predictions and its mistakes, with the
            pointing game and evidence share per class where masks exist (``fruitlens.explain.evidence``).
        stability_images: explained images LIME explains again under a second seed (top-5 agreement and rank
            correlation, ``fruitlens.batch.stability``); 0: off.
        drift_probe: images (of those explained) both the new and the current model explain with Grad-CAM to
            see whether the evidence moved (``fruitlens.explain.drift``); 0: off.
        max_drift: hold the new model back when more than this share of the probe images' evidence moved
            (0..1); None (default): drift is reported, never decides.
        sanity_images: explained images the randomisation test (``fruitlens.explain.sanity``) runs on with the
            run's own Grad-CAM and LIME options, written to ``RUN/sanity``; 0: off; at most
            ``MAX_SANITY_IMAGES`` (each image is explained once per layer and method).
        amortised_audit: train the amortised explainer (``explain_options.amortised``) on the training split
            right after the classifier, add ``amortised`` to the explained methods, explain the whole split with
            it and audit this many random images against KernelSHAP on the same patch grid
            (``fruitlens.batch.amortised_audit``); 0 (default): off.
        amortised_agreement: a class falls back to the exact method when its mean rank correlation with it in
            the audit is below this share of the exact method's own seed-to-seed correlation on the same images
            (0..2; 1, the default, is the bar of issue 30: as close to it as it is to itself; 0: never falls back).
        amortised_top_k: patches compared by the audit's top-k overlap.
    """

    train: Any = field(default_factory=lambda: _train_config({}))
    split: Split = "test"
    methods: tuple[str, ...] = ("lime", "gradcam")
    explain_limit: int | None = 30
    explain_select: Selection = "report"
    chunk_size: int = CHUNK_SIZE
    explain_options: ExplainOptions = field(default_factory=lambda: ExplainOptions(
        lime=LimeOptions(num_samples=300, plots="explanation")))
    visualize: bool = True
    report: bool = True
    promote_metric: PromoteMetric = "accuracy"
    models_home: str | None = None
    task_runner: TaskRunnerName = "thread"
    dask_address: str | None = None
    model: str | dict[str, Any] | None = None
    class_evidence: bool = True
    stability_images: int = 6
    drift_probe: int = 12
    max_drift: float | None = None
    sanity_images: int = 4
    amortised_audit: int = 0
    amortised_agreement: float = 1.0
    amortised_top_k: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _train_config(self.train))
        if self.model is not None:
            object.__setattr__(self, "model", model_source_fields(self.model))
        object.__setattr__(self, "methods", parse_methods(self.methods))
        check([
            (self.explain_limit is None or self.explain_limit >= 1, "explain_limit", self.explain_limit,
             "at least 1 or null"),
            (self.chunk_size >= 1, "chunk_size", self.chunk_size, "at least 1"),
            (self.drift_probe >= 0, "drift_probe", self.drift_probe, "at least 0 (0: off)"),
            (self.stability_images >= 0, "stability_images", self.stability_images, "at least 0 (0: off)"),
            (self.max_drift is None or 0.0 <= self.max_drift <= 1.0, "max_drift", self.max_drift,
             "a share in [0, 1] or null"),
            (0 <= self.sanity_images <= MAX_SANITY_IMAGES, "sanity_images", self.sanity_images,
             f"0 (off) to {MAX_SANITY_IMAGES}"),
            (0 <= self.amortised_audit <= MAX_AUDIT_IMAGES, "amortised_audit", self.amortised_audit,
             f"0 (off) to {MAX_AUDIT_IMAGES} images"),
            (0.0 <= self.amortised_agreement <= 2.0, "amortised_agreement", self.amortised_agreement,
             "a share of the exact method's seed-to-seed agreement in [0, 2] (0: never fall back)"),
            (1 <= self.amortised_top_k <= 1024, "amortised_top_k", self.amortised_top_k, "1 to 1024 patches"),
        ])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, the form flows take as a parameter and run.json records."""
        out = to_plain(self)
        out["train"] = self.train.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> PipelineConfig:
        """Build from plain values; an unknown key or a bad value, at any depth, is a ValueError naming it."""
        values = dict(values or {})
        if "explain_options" in values:
            defaults = cls().explain_options
            base = to_plain(defaults) | {"lime": defaults.lime.overridable()}  # LIME's floor follows its budget
            given = values["explain_options"] or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"explain_options {short(given)}: expected a mapping of method -> options")
            unknown = sorted(set(given) - set(METHODS))
            if unknown:
                raise OptionError(", ".join("explain_options." + k for k in unknown), None, ", ".join(METHODS),
                              unknown=True)
            # a partial section overrides the pipeline's defaults field by field
            values["explain_options"] = {m: {**base[m], **(given.get(m) or {})} for m in METHODS}
        return build(cls, values)

    def replace(self, **changes: Any) -> PipelineConfig:
        return PipelineConfig.from_dict({**self.to_dict(), **changes})


def model_source_fields(model: str | Mapping[str, Any]) -> dict[str, Any]:
    """A model spec or ModelSource fields, checked (without loading anything): the fields as plain values."""
    from fruitlens.modelspec import ModelSpec

    values = {"spec": model} if isinstance(model, str) else dict(model)
    try:
        return to_plain(build(ModelSpec, values, "model"))
    except OptionError as exc:
        raise (exc if exc.key.startswith("model") else exc.at("model")) from exc
    except (TypeError, ValueError) as exc:  # ModelSpec's own checks (ModelSourceError): one line naming the value
        raise ValueError(f"model: {exc}") from exc


MAX_CONFIG_BYTES = 1 << 20  # a config file is a few hundred bytes; anything this large is not one


def load_config(path: str | os.PathLike | None) -> PipelineConfig:
    """Read a YAML (.yaml/.yml) or JSON config file; None gives the defaults.

    Raises:
        ValueError: missing or unreadable file, unknown keys or bad values (named, with the file).
    """
    if path is None:
        return PipelineConfig()
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{p}: no such config file; expected a YAML or JSON file")
    if p.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{p}: {p.stat().st_size} bytes; expected a config file of at most {MAX_CONFIG_BYTES}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except (ValueError, ImportError) as exc:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{p}: unreadable config ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError and friends
        raise ValueError(f"{p}: unreadable config ({type(exc).__name__}: {exc})") from exc
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    check_value_count(data, str(p))  # a YAML alias bomb: refused before anything walks or prints it
    try:
        return PipelineConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: {exc}") from exc


# ------------------------------------------------------------------------------------ where things live


def fruitlens_home() -> Path:
    """``$FRUITLENS_HOME`` or ``~/.fruitlens``."""
    return Path(os.environ.get("FRUITLENS_HOME") or Path.home() / ".fruitlens").expanduser()


def cache_dir() -> Path:
    """Where the pipeline's task cache and results live: ``$FRUITLENS_CACHE`` or ``<home>/cache``."""
    env = os.environ.get("FRUITLENS_CACHE")
    return Path(env).expanduser() if env else fruitlens_home() / "cache"


CACHE_MARKER = ".fruitlens-cache"  # written into a cache folder when fruitlens creates or uses it


def mark_cache(path: str | os.PathLike) -> Path:
    """Create the cache folder ``path`` (if missing) and mark it as fruitlens' own when fruitlens created it
    (or found it empty): only a marked folder is ever deleted by ``fruitlens cache clear``, so a folder that
    held anything else (``--cache-dir $HOME``) is used but never marked."""
    folder = Path(path)
    fresh = not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / CACHE_MARKER
    if fresh and not folder.is_symlink():
        marker.write_text("a fruitlens task cache: `fruitlens cache clear` may delete this folder\n")
    return folder


def is_marked_cache(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder fruitlens marked as its cache (``mark_cache``), not a link to one."""
    folder = Path(path)
    return folder.is_dir() and not folder.is_symlink() and (folder / CACHE_MARKER).is_file()
