"""Pipeline configuration: one frozen dataclass, read from a YAML or JSON file, with demo-sized defaults.

A config file holds any of the fields of :class:`PipelineConfig`; ``train`` holds the fields of
``fruitlens.training.TrainConfig`` (checked by the training step). Example (YAML)::

    train: {arch: fruit_net, image_size: 32, epochs: 6}
    methods: [lime, gradcam]
    explain_limit: 30          # explain 30 test images (those the report shows first); null for all
    chunk_size: 8
    explain_options: {lime: {num_samples: 300, seed: 0}, gradcam: {}}

The cache of the Prefect tasks lives under :func:`cache_dir` (``$FRUITLENS_CACHE``, else
``$FRUITLENS_HOME/cache``, else ``~/.fruitlens/cache``). This module never imports Prefect.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

TaskRunnerName = Literal["thread", "dask"]
Selection = Literal["report", "first"]
SELECTIONS = ("report", "first")
TASK_RUNNERS = ("thread", "dask")
METRICS = ("accuracy", "macro_f1")

# Small enough that `fruitlens demo` runs in a few minutes on two cores.
DEMO_TRAIN: dict[str, Any] = {"arch": "fruit_net", "image_size": 32, "epochs": 6, "batch_size": 32, "seed": 42}
DEMO_EXPLAIN_OPTIONS: dict[str, dict[str, Any]] = {"lime": {"num_samples": 300, "seed": 0, "plots": "explanation"},
                                                     "gradcam": {}}


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs besides the data and the output folder.

    Attributes:
        train: fields of ``fruitlens.training.TrainConfig`` (arch, image_size, epochs, ...).
        split: the split that is evaluated and explained.
        methods: explanation methods (names in ``fruitlens.explain.runner.METHODS``).
        explain_limit: explain at most N images of ``split``; None for all of them.
        explain_select: which images when limited: "report" (those the report shows: the most confused
            pairs' mistakes and a few per class, from ``fruitlens.report.images_to_explain``, then the first
            by image id up to the limit) or "first" (the first N by image id).
        chunk_size: images per explanation chunk (one task and one Parquet part each).
        explain_options: per-method keyword options for the methods' ``explain_chunk``.
        visualize: write activation and filter grids for the first test image.
        report: write report.html.
        promote_metric: the metric the new model must not be worse on to become "current".
        models_home: where the "current" model lives (default: ``<out>/../models``).
        task_runner: "thread" (default) or "dask" for the explanation chunks.
        dask_address: scheduler address for "dask"; None starts a local cluster.
    """

    train: dict[str, Any] = field(default_factory=lambda: dict(DEMO_TRAIN))
    split: str = "test"
    methods: tuple[str, ...] = ("lime", "gradcam")
    explain_limit: int | None = 30
    explain_select: Selection = "report"
    chunk_size: int = 8
    explain_options: dict[str, dict[str, Any]] = field(default_factory=lambda: copy.deepcopy(DEMO_EXPLAIN_OPTIONS))
    visualize: bool = True
    report: bool = True
    promote_metric: str = "accuracy"
    models_home: str | None = None
    task_runner: TaskRunnerName = "thread"
    dask_address: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "train", dict(self.train))
        object.__setattr__(self, "explain_options", {k: dict(v) for k, v in self.explain_options.items()})
        if not self.methods:  # names are checked against fruitlens.explain.runner.METHODS when the run starts
            raise ValueError("methods: expected at least one of lime, gradcam")
        if self.explain_limit is not None and self.explain_limit < 1:
            raise ValueError(f"explain_limit {self.explain_limit}: expected at least 1 or null")
        if self.explain_select not in SELECTIONS:
            raise ValueError(f"explain_select {self.explain_select!r}: expected one of {', '.join(SELECTIONS)}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size {self.chunk_size}: expected at least 1")
        if self.task_runner not in TASK_RUNNERS:
            raise ValueError(f"task_runner {self.task_runner!r}: expected one of {', '.join(TASK_RUNNERS)}")
        if self.promote_metric not in METRICS:
            raise ValueError(f"promote_metric {self.promote_metric!r}: expected one of {', '.join(METRICS)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (lists for tuples), the form flows take as a parameter."""
        out = asdict(self)
        out["methods"] = list(self.methods)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PipelineConfig:
        """Build from plain values; unknown keys are a ValueError naming them and the valid ones."""
        d = dict(d or {})
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(unknown)}; expected some of {', '.join(valid)}")
        base = cls()
        if "train" in d:  # a partial train section overrides the defaults field by field
            d["train"] = {**base.train, **(d["train"] or {})}
        if "explain_options" in d:
            d["explain_options"] = {**base.explain_options, **(d["explain_options"] or {})}
        return cls(**d)

    def replace(self, **changes: Any) -> PipelineConfig:
        return PipelineConfig.from_dict({**self.to_dict(), **changes})


def load_config(path: str | os.PathLike | None) -> PipelineConfig:
    """Read a YAML (.yaml/.yml) or JSON config file; None gives the defaults.

    Raises:
        ValueError: missing or unreadable file, or unknown keys (named).
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
    except Exception as exc:  # noqa: BLE001 - yaml and json raise their own error types
        raise ValueError(f"{p}: unreadable config ({type(exc).__name__}: {exc})") from exc
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{p}: expected a mapping of config keys, got {type(data).__name__}")
    try:
        return PipelineConfig.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{p}: {exc}") from exc


def fruitlens_home() -> Path:
    """``$FRUITLENS_HOME`` or ``~/.fruitlens``."""
    return Path(os.environ.get("FRUITLENS_HOME") or Path.home() / ".fruitlens").expanduser()


def cache_dir() -> Path:
    """Where the pipeline's task cache and results live: ``$FRUITLENS_CACHE`` or ``<home>/cache``."""
    env = os.environ.get("FRUITLENS_CACHE")
    return Path(env).expanduser() if env else fruitlens_home() / "cache"


def code_version(modules: Sequence[str]) -> str:
    """Digest of the source files of ``modules`` (without importing them) and the package version.

    A module that does not exist contributes its name only, so the digest changes when it appears.
    """
    from fruitlens import __version__

    h = hashlib.sha256(__version__.encode())
    for name in sorted(modules):
        h.update(name.encode())
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and os.path.isfile(spec.origin):
            h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()[:16]
