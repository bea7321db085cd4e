"""The model spec: which model to load and what fruitlens must know to feed it (a value object, no Keras)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

from fruitlens.errors import ModelSourceError
from fruitlens.sizes import MAX_IMAGE_SIDE

Preprocessing = Literal["rescale", "none", "tf", "caffe", "torch"]
PREPROCESSINGS: tuple[str, ...] = get_args(Preprocessing)
Fit = Literal["resize", "crop"]
FITS: tuple[str, ...] = get_args(Fit)
KINDS = "a run folder, a .keras or .h5 file, a SavedModel folder, a folder with a model.json card, or imagenet:<app>"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and what fruitlens must know to feed it (``fruitlens.modelio.ModelSource``
    loads it; this value object only holds and checks the fields, so the config can check them without Keras).

    Attributes:
        spec: a run folder, a .keras/.h5 file, a SavedModel folder, a folder with a model.json card, or
            ``imagenet:<app>`` (one of ``fruitlens.keras_apps.KERAS_APPS``).
        classes: names in output order when the file does not say.
        classes_file: txt (one per line) or json (list, ``{"0": "cat"}``, ImageNet class index).
        image_size: (height, width) when the model's input is not fixed and no card says.
        preprocessing: what the RAW model expects (rescale [0, 1], none [0, 255], tf, caffe, torch).
        fit: how a photo of another aspect becomes the input size (``fit_photo``): resize or crop.
        unsafe: allow Lambda layers' Python code to run on loading (``safe_mode=False``).

    Options given here win over a card (``model.json``) next to the model; an explicit ``preprocessing`` always
    wraps, even a run folder's model. ``fit="resize"`` (the default) keeps a card's ``fit``.
    """

    spec: str
    classes: tuple[str, ...] | None = None
    classes_file: str | None = None
    image_size: tuple[int, int] | None = None
    preprocessing: Preprocessing | None = None
    fit: Fit = "resize"
    unsafe: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str | os.PathLike) or not str(self.spec):
            raise ModelSourceError(f"model {self.spec!r}: expected {KINDS}")
        object.__setattr__(self, "spec", str(self.spec))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
            if not self.classes or len(set(self.classes)) != len(self.classes):
                raise ModelSourceError(f"classes {list(self.classes)}: expected unique names in output order")
        if self.classes is not None and self.classes_file is not None:
            raise ModelSourceError("classes and classes_file both given; pass one")
        if self.classes_file is not None:
            object.__setattr__(self, "classes_file", str(self.classes_file))
        if self.image_size is not None:
            size = tuple(int(v) for v in self.image_size)
            if len(size) != 2 or min(size) < 1:
                raise ModelSourceError(f"image_size {self.image_size}: expected (height, width) > 0")
            if max(size) > MAX_IMAGE_SIDE:  # the training limit holds for models that take any size too
                raise ModelSourceError(f"image_size {size[0]}x{size[1]}: expected at most {MAX_IMAGE_SIDE} pixels "
                                       "per side")
            object.__setattr__(self, "image_size", size)
        if self.preprocessing is not None and self.preprocessing not in PREPROCESSINGS:
            raise ModelSourceError(f"preprocessing {self.preprocessing!r}: expected one of {', '.join(PREPROCESSINGS)}")
        if self.fit not in FITS:
            raise ModelSourceError(f"fit {self.fit!r}: expected one of {', '.join(FITS)}")
