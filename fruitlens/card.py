"""The model card (``model.json``): what a saved model needs to be used again. A value object with its reader
and writer; loading the model it describes is ``fruitlens.modelio``'s job."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fruitlens import tables
from fruitlens.errors import RunError
from fruitlens.layout import CARD_FILE
from fruitlens.modelspec import PREPROCESSINGS


@dataclass(frozen=True)
class ModelCard:
    """What a saved model needs to be used again: classes, input size, how it was made and how it did."""

    classes: tuple[str, ...]  # class names in output order
    image_size: tuple[int, int]  # (height, width) the model takes
    arch: str  # architecture name, e.g. "seed_cnn" or "transfer:vgg16"
    # what the model FILE expects, a fruitlens.modelspec.PREPROCESSINGS keyword (rescale: [0, 1] itself)
    preprocessing: str = "rescale"
    fingerprint: str = ""  # dataset fingerprint it was trained on
    seed: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the resolved training config
    versions: dict[str, str] = field(default_factory=dict)
    # False: the saved model does `preprocessing` itself (fruitlens train). True: the model file expects
    # `preprocessing` (a fruitlens.modelio name) and fruitlens wraps it to take [0, 1] (any outside model).
    wrap_preprocessing: bool = False
    source: str = ""  # where the model was loaded from (a path or imagenet:<app>); "" in a run folder's card
    fit: str = "resize"  # how photos of another aspect are brought to image_size (modelio.fit_photo)
    scaling: str = ""  # for people: what a fruitlens-trained model does inside to its [0, 1] input

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "image_size", tuple(int(v) for v in self.image_size))
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"image_size {self.image_size}: expected (height, width) > 0")
        if self.preprocessing not in PREPROCESSINGS:
            raise ValueError(f"preprocessing {self.preprocessing!r}: expected one of {', '.join(PREPROCESSINGS)} "
                             "(what the model file expects; a description goes to scaling)")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ModelCard:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in obj.items() if k in known}
        if values.get("preprocessing", "rescale") not in PREPROCESSINGS:  # a card written before scaling existed
            values["scaling"] = values.get("scaling") or values["preprocessing"]
            values["preprocessing"] = "rescale"  # the trained model scales inside: its file takes [0, 1]
        return cls(**values)


def library_versions() -> dict[str, str]:
    """Versions worth recording in a model card."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("fruitlens", "tensorflow-cpu", "tensorflow", "keras", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def write_card(run_dir: str | os.PathLike, card: ModelCard) -> Path:
    return tables.write_json(Path(run_dir) / CARD_FILE, card.to_json())


def read_card(run_dir: str | os.PathLike) -> ModelCard:
    path = Path(run_dir) / CARD_FILE
    if not path.is_file():
        raise RunError(f"{path}: no model card; expected a run folder written by `fruitlens train`")
    try:
        return ModelCard.from_json(tables.read_json(path))
    except (ValueError, TypeError) as exc:
        raise RunError(f"{path}: unreadable model card ({exc})") from exc
