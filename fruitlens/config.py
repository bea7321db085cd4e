"""Every option of a run as a frozen, typed dataclass, validated once, where it enters.

A pipeline config file (YAML or JSON) holds any of the fields of :class:`PipelineConfig`, at any depth::

    train: {arch: fruit_net, image_size: 32, epochs: 6}      # fruitlens.training.TrainConfig fields
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

import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

Split = Literal["train", "val", "test"]
Selection = Literal["report", "first"]
TaskRunnerName = Literal["thread", "dask"]
PromoteMetric = Literal["accuracy", "macro_f1"]
Plots = Literal["all", "explanation", "none"]
FeatureSelection = Literal["auto", "highest_weights", "forward_selection", "none"]
CamVariant = Literal["gradcam", "gradcam++", "cam"]
Baseline = Literal["mean", "blur"]

CHUNK_SIZE = 16  # images per explanation chunk: one task, one Parquet part, the unit of resume
FAITHFULNESS_STEPS = 20  # steps of the deletion / insertion curves
PALETTE = "jet"  # heatmap colours
HIDE_COLORS = {"mean": None, "white": 1.0, "black": 0.0, "gray": 0.5}
# Small enough that `fruitlens demo` runs in a few minutes on two cores.
DEMO_TRAIN: dict[str, Any] = {"arch": "fruit_net", "image_size": 32, "epochs": 6, "batch_size": 32, "seed": 42}


# ------------------------------------------------------------------------------------ strict building


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, get_args(tp)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` checked against the annotation ``tp`` (lists become tuples; ints are accepted as floats)."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else build(tp, value, where)
    if origin is Literal:
        if value in get_args(tp):
            return value
    elif origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            if option is type(None) and value is None:
                return None
        for option in get_args(tp):
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ValueError:
                continue
    elif origin is tuple:
        if isinstance(value, list | tuple):
            args = get_args(tp)
            item = args[0] if args else Any
            if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
                return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
            if len(args) == len(value):
                return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    elif origin is dict or tp is dict:
        if isinstance(value, Mapping):
            return dict(value)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ValueError(f"{where} {value!r}: expected {_type_name(tp)}")


def build(cls: type, values: Mapping[str, Any] | None, where: str = "") -> Any:
    """An instance of the dataclass ``cls`` from plain values: unknown keys and wrong types are ValueErrors.

    ``where`` prefixes the key names in messages (``explain_options.lime``). Values are checked against the
    field annotations; the class's ``__post_init__`` then checks ranges.
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where or cls.__name__} {values!r}: expected a mapping of {cls.__name__} fields")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(values) - set(names))
    if unknown:
        keys = ", ".join(f"{where}.{k}" if where else str(k) for k in unknown)
        raise ValueError(f"unknown key {keys}; expected one of {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}" if where else str(exc)) from exc


def to_plain(obj: Any) -> Any:
    """A config dataclass as JSON-able values (tuples as lists, nested dataclasses as dicts)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in fields(obj) if f.init}
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def _check(checks: list[tuple[bool, str, Any, str]]) -> None:
    for ok, name, value, expected in checks:
        if not ok:
            raise ValueError(f"{name} {value!r}: expected {expected}")


# ------------------------------------------------------------------------------------ explanation methods


@dataclass(frozen=True)
class LimeOptions:
    """LIME in batch runs (see ``fruitlens.explain.lime.explain_lime`` for the meaning of each).

    ``segmenter_params`` holds the segmenter's own parameters (slic: n_superpixels, compactness, sigma,
    max_num_iter; quickshift: kernel_size, max_dist, ratio, sigma; felzenszwalb: scale, sigma, min_size).
    ``hide_color``: "mean", "white", "black", "gray", a number or an RGB triple in [0, 1].
    ``plots``: which PNGs: all, explanation (no weight density), none.
    """

    num_samples: int = 1000
    seed: int = 0
    segmenter: str = "slic"
    segmenter_params: dict[str, float] = field(default_factory=dict)
    hide_color: str | float | tuple[float, float, float] = "mean"
    top_labels: int = 1
    num_features: int | None = None
    feature_selection: FeatureSelection = "auto"
    batch_size: int | None = None
    threshold: float = 0.0
    display_features: int = 5
    plots: Plots = "all"
    faithfulness_steps: int = FAITHFULNESS_STEPS

    def __post_init__(self) -> None:
        from fruitlens.explain.segmentation import make_segmenter

        _check([
            (self.num_samples >= 2, "num_samples", self.num_samples, "at least 2"),
            (self.top_labels >= 1, "top_labels", self.top_labels, "at least 1"),
            (self.num_features is None or self.num_features >= 1, "num_features", self.num_features,
             "at least 1 or null"),
            (self.batch_size is None or self.batch_size >= 1, "batch_size", self.batch_size, "at least 1 or null"),
            (self.threshold >= 0, "threshold", self.threshold, ">= 0"),
            (self.display_features >= 1, "display_features", self.display_features, "at least 1"),
            (self.faithfulness_steps >= 0, "faithfulness_steps", self.faithfulness_steps, ">= 0 (0: off)"),
            (self.feature_selection in get_args(FeatureSelection), "feature_selection", self.feature_selection,
             "one of " + ", ".join(get_args(FeatureSelection))),
            (self.plots in get_args(Plots), "plots", self.plots, "one of " + ", ".join(get_args(Plots))),
        ])
        hide = self.hide_color
        if isinstance(hide, str):
            _check([(hide in HIDE_COLORS, "hide_color", hide, f"{', '.join(HIDE_COLORS)}, a number or R,G,B")])
        else:
            values = hide if isinstance(hide, tuple) else (hide,)
            _check([(all(0.0 <= float(v) <= 1.0 for v in values), "hide_color", hide, "values in [0, 1]")])
        try:
            make_segmenter(self.segmenter, **self.segmenter_params)
        except ValueError as exc:
            raise ValueError(f"segmenter {self.segmenter!r}: {exc}") from exc
        object.__setattr__(self, "segmenter_params", dict(sorted(self.segmenter_params.items())))

    @property
    def fill(self) -> float | tuple[float, ...] | None:
        """``hide_color`` as ``explain_lime`` takes it (None: each superpixel's mean colour)."""
        return HIDE_COLORS[self.hide_color] if isinstance(self.hide_color, str) else self.hide_color

    def __hash__(self) -> int:  # segmenter_params is a dict
        return hash(json.dumps(to_plain(self), sort_keys=True))


@dataclass(frozen=True)
class CamOptions:
    """Grad-CAM (and its variants) in batch runs.

    ``layer``: conv layer name or path (``backbone/block5_conv3``), null for the last conv layer.
    ``palette`` and ``alpha``: heatmap colours (a matplotlib colormap) and the most opaque the overlay gets.
    ``faithfulness_steps`` and ``baseline``: the deletion / insertion curves.
    """

    variant: CamVariant = "gradcam"
    layer: str | None = None
    palette: str = PALETTE
    alpha: float = 0.6
    faithfulness_steps: int = FAITHFULNESS_STEPS
    baseline: Baseline = "mean"
    batch_size: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        import matplotlib

        _check([
            (self.variant in get_args(CamVariant), "variant", self.variant,
             "one of " + ", ".join(get_args(CamVariant))),
            (self.palette in matplotlib.colormaps, "palette", self.palette, "a matplotlib colormap (jet, viridis...)"),
            (0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "an opacity in [0, 1]"),
            (self.faithfulness_steps >= 0, "faithfulness_steps", self.faithfulness_steps, ">= 0 (0: off)"),
            (self.baseline in get_args(Baseline), "baseline", self.baseline, "one of mean, blur"),
            (self.batch_size >= 1, "batch_size", self.batch_size, "at least 1"),
        ])


@dataclass(frozen=True)
class ExplainOptions:
    """The options of each explanation method, by method name."""

    lime: LimeOptions = field(default_factory=LimeOptions)
    gradcam: CamOptions = field(default_factory=CamOptions)

    def of(self, method: str) -> LimeOptions | CamOptions:
        return getattr(self, method)


METHODS: tuple[str, ...] = tuple(f.name for f in fields(ExplainOptions))


def parse_methods(methods: str | typing.Sequence[str]) -> tuple[str, ...]:
    """'lime,gradcam' or a list -> ('lime', 'gradcam'); an unknown or missing name is a ValueError."""
    names = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else [str(m).strip() for m in methods]
    names = list(dict.fromkeys(m for m in names if m))
    bad = [m for m in names if m not in METHODS]
    if bad or not names:
        raise ValueError(f"method {', '.join(bad) or '(none)'}: expected one or more of {', '.join(METHODS)}")
    return tuple(names)


# ------------------------------------------------------------------------------------ the pipeline


def _train_config(values: Mapping[str, Any] | Any):
    from fruitlens.training import TrainConfig

    if isinstance(values, TrainConfig):
        return values
    if not isinstance(values, Mapping):
        raise ValueError(f"train {values!r}: expected a mapping of training options")
    values = {**DEMO_TRAIN, **values}
    if isinstance(values.get("classes"), str):  # "A,B" as on the command line
        values["classes"] = [c.strip() for c in values["classes"].split(",") if c.strip()]
    return build(TrainConfig, values, "train")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs besides the data and the output folder.

    Attributes:
        train: a ``fruitlens.training.TrainConfig`` (a mapping of its fields in files: the demo's defaults
            for fields not given).
        split: the split that is evaluated and explained.
        methods: explanation methods (``METHODS``).
        explain_limit: explain at most N images of ``split``; None for all of them.
        explain_select: which images when limited: "report" (the images the report shows: the most confused
            pairs' mistakes first, then across classes; ``fruitlens.selection.images_to_explain``) or "first"
            (the first N by image id).
        chunk_size: images per explanation chunk (one task and one Parquet part each).
        explain_options: options of each method.
        visualize: write activation and filter grids for the first explained image.
        report: write report.html.
        promote_metric: the metric the new model must not be worse on to become "current".
        models_home: where the "current" model lives (default: ``<out>/../models``).
        task_runner: "thread" (default) or "dask" for the explanation chunks.
        dask_address: scheduler address for "dask"; None starts a local cluster.
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "train", _train_config(self.train))
        object.__setattr__(self, "methods", parse_methods(self.methods))
        _check([
            (self.explain_limit is None or self.explain_limit >= 1, "explain_limit", self.explain_limit,
             "at least 1 or null"),
            (self.chunk_size >= 1, "chunk_size", self.chunk_size, "at least 1"),
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
            base = to_plain(cls().explain_options)
            given = values["explain_options"] or {}
            if not isinstance(given, Mapping):
                raise ValueError(f"explain_options {given!r}: expected a mapping of method -> options")
            unknown = sorted(set(given) - set(METHODS))
            if unknown:
                raise ValueError(f"unknown key {', '.join('explain_options.' + k for k in unknown)}; "
                                 f"expected one of {', '.join(METHODS)}")
            # a partial section overrides the pipeline's defaults field by field
            values["explain_options"] = {m: {**base[m], **(given.get(m) or {})} for m in METHODS}
        return build(cls, values)

    def replace(self, **changes: Any) -> PipelineConfig:
        return PipelineConfig.from_dict({**self.to_dict(), **changes})


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
