"""Any Keras classifier as a fruitlens model: run folders, model files, SavedModels, ImageNet applications.

fruitlens feeds every model NHWC float32 RGB in [0, 1] (every explainer's convention). :class:`ModelSource` loads a
model from wherever it lives and returns it in that form with a :class:`~fruitlens.card.ModelCard`:

- a run folder (``model.keras`` + ``model.json``, written by ``fruitlens train``): loaded as is;
- a ``.keras`` or ``.h5`` file: ``keras.models.load_model(compile=False, safe_mode=True)`` (``unsafe=True``
  allows the Python code of Lambda layers to run);
- a TensorFlow SavedModel folder: a ``keras.layers.TFSMLayer`` inside a functional model (its layers cannot
  be seen: Grad-CAM, activations and filters are not possible, LIME and predict are);
- ``imagenet:<app>``: a ``keras.applications`` network with its ImageNet weights and 1000 class names, taken
  from Keras' cache (``$KERAS_HOME/models`` or ``~/.keras/models``) or downloaded when there is a network;
- a folder holding only a ``model.json`` card whose ``source`` names one of the above (what
  :func:`write_source_card` writes next to outputs, so a rerun needs no options).

A model that expects another input range is *wrapped*: ``Input -> preprocessing layer -> loaded model`` as a
new functional model, so the wrapper takes [0, 1] and explainers still find the layers of the nested model.
``preprocessing`` names what the RAW model expects:

========  =====================================  ===========================================
name      the raw model expects                  layer added in front of it (input x in [0, 1])
========  =====================================  ===========================================
rescale   [0, 1] RGB                              none
none      [0, 255] RGB                            ``Rescaling(255)``
tf        [-1, 1] RGB                             ``Rescaling(2, offset=-1)``
caffe     BGR, 0-255 minus the ImageNet means     ``BackbonePreprocess("caffe")``
torch     RGB, (x - ImageNet mean) / ImageNet std ``Normalization(mean, variance=std**2)``
========  =====================================  ===========================================
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fruitlens import tables
from fruitlens.card import ModelCard
from fruitlens.errors import ModelSourceError
from fruitlens.keras_apps import KERAS_APPS
from fruitlens.keras_cache import cached_file
from fruitlens.layout import CARD_FILE, CURRENT, MODEL_FILE
from fruitlens.modelfiles import (
    MODEL_SUFFIXES,
    check_output,
    file_sha256,
    first_line,
    folder_sha256,
    imagenet_classes,
    input_size,
    load_keras_file,
    load_saved_model,
    read_classes,
    signature_size,
    two_class_model,
)
from fruitlens.modelspec import FITS, KINDS, PREPROCESSINGS, Fit, ModelSpec
from fruitlens.sizes import MAX_IMAGE_SIDE

log = logging.getLogger(__name__)

TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
SAVED_MODEL_FILE = "saved_model.pb"


# ------------------------------------------------------------------------------------ wrapping


def preprocessing_layer(preprocessing: str):
    """The Keras layer taking [0, 1] RGB to what a model of ``preprocessing`` expects (None for rescale)."""
    import keras

    from fruitlens.models import BackbonePreprocess

    layers: dict[str, Callable[[], object]] = {
        "rescale": lambda: None,
        "none": lambda: keras.layers.Rescaling(255.0, name="to_0_255"),
        "tf": lambda: keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1"),
        "caffe": lambda: BackbonePreprocess("caffe", name="to_caffe"),
        "torch": lambda: keras.layers.Normalization(mean=list(TORCH_MEAN), variance=[s * s for s in TORCH_STD],
                                                    name="to_torch"),
    }
    if preprocessing not in layers:
        raise ModelSourceError(f"preprocessing {preprocessing!r}: expected one of {', '.join(PREPROCESSINGS)}")
    return layers[preprocessing]()


def wrap_model(raw, image_size: tuple[int, int], preprocessing: str = "rescale", name: str | None = None):
    """A functional model ``Input(H, W, 3) -> preprocessing layer -> raw`` that takes [0, 1] images.

    ``raw`` is nested unchanged (shared weights), so layer walkers see its layers under ``raw.name/``.
    """
    import keras

    inp = keras.Input((image_size[0], image_size[1], 3), name="image")
    layer = preprocessing_layer(preprocessing)
    out = raw(layer(inp) if layer is not None else inp)
    if isinstance(out, dict):  # a SavedModel signature returns {name: tensor}
        if len(out) != 1:
            raise ModelSourceError(f"model {raw.name!r} has outputs {sorted(out)}; expected one (class scores)")
        out = next(iter(out.values()))
    return keras.Model(inp, out, name=name or f"{raw.name}_from_01")


def _guess_preprocessing(raw) -> str:
    """``none`` when the model starts with Rescaling(1/255) (it takes 0-255), else ``rescale`` (with a warning)."""
    import keras

    first = next((lay for lay in getattr(raw, "layers", []) if not isinstance(lay, keras.layers.InputLayer)), None)
    if isinstance(first, keras.layers.Rescaling) and np.isclose(float(np.ravel(first.scale)[0]), 1 / 255):
        log.info("model %s starts with Rescaling(1/255): feeding it 0-255", raw.name)
        return "none"
    log.warning("model %s: assuming it takes [0, 1] input; pass preprocessing (--preprocessing none|tf|caffe|torch) "
                "if it expects another range", raw.name)
    return "rescale"


def check_layer_access(model, method: str) -> None:
    """Raise when ``method`` (gradcam, activations, filters) needs layers that a SavedModel hides."""
    import keras

    hidden = [lay.name for lay in getattr(model, "layers", []) if isinstance(lay, keras.layers.TFSMLayer)]
    if hidden:
        raise ModelSourceError(f"{method} needs the model's layers, but {model.name!r} is a TensorFlow SavedModel "
                               "whose layers cannot be seen; use lime, or load the .keras/.h5 file instead")


# ------------------------------------------------------------------------------------ the source


@dataclass(frozen=True)
class ModelSource(ModelSpec):
    """A :class:`~fruitlens.modelspec.ModelSpec` that can be loaded: where a model comes from and what fruitlens
    must know to feed it (see the module docstring and the spec's fields)."""

    # -- where the model is

    def resolve(self) -> tuple[str, Path | str]:
        """(kind, location): kind is imagenet, keras, h5, savedmodel or card."""
        if self.spec.startswith("imagenet:"):
            app = self.spec.split(":", 1)[1]
            if app not in KERAS_APPS:
                raise ModelSourceError(f"{self.spec}: unknown application; "
                                       f"expected imagenet:<{'|'.join(KERAS_APPS)}>")
            return "imagenet", app
        path = Path(self.spec).expanduser().absolute()
        if path.is_dir():
            for folder in (path, path / CURRENT):  # a models home (the nightly's) holds its promoted model there
                for name, kind in ((MODEL_FILE, "keras"), (SAVED_MODEL_FILE, "savedmodel"), (CARD_FILE, "card")):
                    if (folder / name).is_file():
                        return kind, (folder / MODEL_FILE if kind == "keras" else folder)
            raise ModelSourceError(f"{path}: no {MODEL_FILE}, {SAVED_MODEL_FILE} or {CARD_FILE} in this folder "
                                   f"(nor in {CURRENT}/); expected {KINDS}")
        if not path.is_file():
            raise ModelSourceError(f"{self.spec}: no such file or folder; expected {KINDS}")
        if path.suffix.lower() not in MODEL_SUFFIXES:
            raise ModelSourceError(f"{path}: unknown model file type {path.suffix!r}; expected {KINDS}")
        return ("keras" if path.suffix.lower() == ".keras" else "h5"), path

    def _card_next_to(self, kind: str, where: Path) -> ModelCard | None:
        """The model.json next to a model file (inside a SavedModel folder), if it describes this file."""
        card_path = (where if kind == "savedmodel" else where.parent) / CARD_FILE
        if not card_path.is_file():
            return None
        card = read_source_card(card_path)
        if card.source and Path(card.source).name != where.name:
            log.info("%s describes %s, not %s: ignored", card_path, card.source, where.name)
            return None
        if not card.source and where.name != MODEL_FILE:
            return None  # a run's card describes the run's model.keras only
        return card

    # -- loading

    def load(self):
        """Load ``(model, card)`` (see ``_load``); a model whose input is larger than ``MAX_IMAGE_SIDE`` per side
        is refused (its batches would not fit in memory)."""
        model, card = self._load()
        if max(card.image_size) > MAX_IMAGE_SIDE:
            raise ModelSourceError(f"{self.spec}: input size {card.image_size[0]}x{card.image_size[1]}; expected at "
                                   f"most {MAX_IMAGE_SIDE} pixels per side")
        return model, card

    def _load(self):
        """Load ``(model, card)``: the model takes (N, H, W, 3) float32 [0, 1] at ``card.image_size``.

        Raises:
            ModelSourceError: one line naming the file or value (bad file, unsafe Lambda layer, missing
                weights, class count not the output width, unknown input size).
        """
        kind, where = self.resolve()
        if kind == "imagenet":
            return self._load_imagenet(str(where))
        if kind == "card":
            return self._follow_card(Path(where)).load()
        if kind == "savedmodel":
            raw = load_saved_model(Path(where))
            fixed = signature_size(raw)
        else:
            raw = load_keras_file(Path(where), self.unsafe)
            fixed = input_size(raw, where)
        return self._finish(raw, kind, Path(where), fixed, self._card_next_to(kind, Path(where)))

    def _follow_card(self, folder: Path) -> ModelSource:
        """The source a card folder's ``model.json`` names (a model, never another card folder)."""
        card = read_source_card(folder / CARD_FILE)
        if not card.source:
            raise ModelSourceError(f"{folder / CARD_FILE}: the card names no model source; expected {KINDS}")
        source = self._from_card(card)
        if source.resolve()[0] == "card":
            raise ModelSourceError(f"{folder / CARD_FILE}: source {card.source} is another card folder; "
                                   "expected the model itself")
        return source

    def _from_card(self, card: ModelCard) -> ModelSource:
        """A source for ``card.source`` with the card's settings, this source's explicit options on top."""
        explicit = self.classes is not None or self.classes_file is not None
        return dataclasses.replace(
            self, spec=card.source,
            classes=self.classes if explicit else card.classes, classes_file=self.classes_file,
            image_size=self.image_size or card.image_size,
            preprocessing=self.preprocessing or (card.preprocessing if card.wrap_preprocessing else None),
            fit=self.fit if self.fit != "resize" else card.fit)

    def _classes(self, card: ModelCard | None, width: int, where: str) -> tuple[str, ...]:
        if self.classes is not None:
            classes = self.classes
        elif self.classes_file is not None:
            classes = read_classes(self.classes_file)
        elif card is not None:
            classes = card.classes
        else:
            log.warning("%s: no class names given; naming them class_0..class_%d (pass classes or classes_file)",
                        where, width - 1)
            classes = tuple(f"class_{i}" for i in range(width))
        if len(classes) != width:
            raise ModelSourceError(f"{where}: {len(classes)} class names but the model outputs {width} scores")
        return tuple(classes)

    def _size(self, fixed: tuple[int, int] | None, card: ModelCard | None, where: str) -> tuple[int, int]:
        if fixed is not None and self.image_size is not None and tuple(self.image_size) != fixed:
            raise ModelSourceError(f"image_size {self.image_size}: the model {where} takes {fixed[0]}x{fixed[1]}")
        size = fixed or self.image_size or (card.image_size if card is not None else None)
        if size is None:
            raise ModelSourceError(f"{where}: the model takes any input size; pass image_size (--image-size HxW)")
        return tuple(size)

    def _finish(self, raw, kind: str, where: Path, fixed, card: ModelCard | None):
        size = self._size(fixed, card, str(where))
        inside = card is not None and not card.wrap_preprocessing and self.preprocessing is None
        preprocessing = "rescale" if inside else (self.preprocessing or (
            card.preprocessing if card is not None
            else "rescale" if kind == "savedmodel" else _guess_preprocessing(raw)))
        needs_wrap = kind == "savedmodel" or preprocessing != "rescale" or fixed is None
        model = wrap_model(raw, size, preprocessing) if needs_wrap else raw
        check_output(model, str(where))
        if int(model.output_shape[-1]) == 1:  # a sigmoid binary classifier: p(class 1), so 1 - p is class 0
            model = two_class_model(model, raw, str(where))
        classes = self._classes(card, int(model.output_shape[-1]), str(where))
        arch = card.arch if card is not None else f"{'savedmodel' if kind == 'savedmodel' else 'keras'}:{raw.name}"
        base = card or ModelCard(classes=classes, image_size=size, arch=arch)
        fit = self.fit if self.fit != "resize" or card is None else card.fit
        return model, dataclasses.replace(
            base, classes=classes, image_size=size, source=str(where), fit=fit,
            preprocessing=base.preprocessing if inside else preprocessing, wrap_preprocessing=not inside)

    def _load_imagenet(self, app_name: str):
        app = KERAS_APPS[app_name]
        what = f"imagenet:{app_name}"
        weights = cached_file(app.weights_file, app.weights_origin, app.weights_hash, f"{what} weights")
        names = imagenet_classes() if self.classes is None and self.classes_file is None else None
        import keras

        raw = getattr(keras.applications, app.constructor)(weights=None, include_top=True, classes=1000)
        try:
            raw.load_weights(weights)
        except (ValueError, OSError, KeyError) as exc:
            raise ModelSourceError(f"{weights}: not the ImageNet weights of {what} ({first_line(exc)}); "
                                   f"fetch {app.weights_origin} again") from exc
        preprocessing = self.preprocessing or app.expects
        size = self._size((app.side, app.side), None, what)
        model = wrap_model(raw, size, preprocessing, name=f"{app_name}_imagenet")
        card = ModelCard(classes=names or ("?",), image_size=size, arch=what, preprocessing=preprocessing,
                         wrap_preprocessing=True, source=what, fit=self.fit)
        classes = self._classes(card if names else None, int(model.output_shape[-1]), what)
        return model, dataclasses.replace(card, classes=classes)

    # -- identity

    def digest(self, card: ModelCard | None = None) -> str:
        """sha256 of the model's content (file bytes; a SavedModel's files; imagenet: app name + weights sha),
        mixed with the options that change the outputs when any is given (a cache key for derived results).

        For a plain run folder this equals ``runs.model_digest`` (the sha256 of its model.keras). With the
        ``card`` that ``load`` returned, the options mixed in are the card's resolved ones, so the same model
        gives the same digest however it was named (flags, a card next to the file, a card folder).
        """
        kind, where = self.resolve()
        if kind == "card":
            return self._follow_card(Path(where)).digest(card)
        if card is not None:
            content = dataclasses.replace(self, classes=None, classes_file=None, image_size=None,
                                          preprocessing=None, fit="resize").digest()
            resolved = {"classes": list(card.classes), "image_size": list(card.image_size),
                        "preprocessing": card.preprocessing, "wrap": card.wrap_preprocessing, "fit": card.fit}
            return hashlib.sha256(f"{content}\n{json.dumps(resolved, sort_keys=True)}".encode()).hexdigest()
        if kind == "imagenet":
            app = KERAS_APPS[str(where)]
            weights = cached_file(app.weights_file, app.weights_origin, app.weights_hash, f"{self.spec} weights")
            content = hashlib.sha256(f"{self.spec}\n{file_sha256(weights)}".encode()).hexdigest()
        elif kind == "savedmodel":
            content = folder_sha256(Path(where))
        else:
            content = file_sha256(Path(where))
        options = {"classes": list(self.classes or (read_classes(self.classes_file) if self.classes_file else ())),
                   "image_size": list(self.image_size or ()), "preprocessing": self.preprocessing or "",
                   "fit": self.fit}
        if options == {"classes": [], "image_size": [], "preprocessing": "", "fit": "resize"}:
            return content
        return hashlib.sha256(f"{content}\n{json.dumps(options, sort_keys=True)}".encode()).hexdigest()


def as_model_source(model) -> ModelSource:
    """A ModelSource as is; a path or ``imagenet:<app>`` string as ``ModelSource(spec)``; a mapping of its
    fields (plain values, as pipeline configs and task parameters hold them) checked and built."""
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, dict):
        from fruitlens.typed import build

        return build(ModelSource, model, "model")
    return ModelSource(str(model))


def load_model_source(spec: str | os.PathLike, **kwargs):
    """``ModelSource(spec, **kwargs).load()``: (model taking [0, 1] images, card)."""
    return ModelSource(str(spec), **kwargs).load()


def read_source_card(path: str | os.PathLike) -> ModelCard:
    """A ``model.json`` card; unreadable JSON or fields are one ModelSourceError line."""
    try:
        return ModelCard.from_json(tables.read_json(path))
    except (ValueError, TypeError, OSError) as exc:
        raise ModelSourceError(f"{path}: unreadable model card ({first_line(exc)})") from exc


def write_source_card(out_dir: str | os.PathLike, card: ModelCard) -> Path:
    """Write ``card`` as ``out_dir/model.json``; ``ModelSource(out_dir)`` then loads the same model again.

    Raises:
        ModelSourceError: the card names no source, or ``out_dir`` holds another model whose card it would
            replace (a run folder).
    """
    if not card.source:
        raise ModelSourceError("card without a source: expected the card returned by ModelSource.load()")
    out = Path(out_dir)
    for name in (MODEL_FILE, SAVED_MODEL_FILE):
        model_path = out.absolute() / name
        if model_path.is_file() and Path(card.source).expanduser().absolute() not in (model_path, out.absolute()):
            raise ModelSourceError(f"{out}: holds {name} of another model; write the card of {card.source} "
                                   "to another folder")
    return tables.write_json(out / CARD_FILE, card.to_json())


# ------------------------------------------------------------------------------------ photos to input size


def fit_photo(photo: np.ndarray, size: tuple[int, int], fit: Fit = "resize"
              ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Bring a photo to the model's input size.

    Args:
        photo: (H0, W0, 3) uint8, or float in [0, 1] (taken to 8 bits, as ``images.read_rgb`` reads files).
        size: (height, width) of the model input.
        fit: ``resize`` squeezes the whole photo; ``crop`` cuts the largest centred box of the input's aspect
            ratio, then resizes (no distortion; the borders are left out).

    Returns:
        (image, box): (height, width, 3) float32 in [0, 1] (bilinear, PIL; the same pixels as
        ``read_rgb(path, size)`` for ``resize``), and the box (y0, x0, y1, x1) of the photo it shows
        (ends exclusive), to draw explanations back on the photo.
    """
    from PIL import Image

    if fit not in FITS:
        raise ValueError(f"fit {fit!r}: expected one of {', '.join(FITS)}")
    if photo.ndim != 3 or photo.shape[-1] != 3 or min(photo.shape[:2]) < 1:
        raise ValueError(f"photo of shape {photo.shape}: expected (H, W, 3)")
    h0, w0 = photo.shape[:2]
    h, w = int(size[0]), int(size[1])
    y0, x0, y1, x1 = 0, 0, h0, w0
    if fit == "crop":
        if w0 * h > h0 * w:  # wider than the input: cut the sides
            cw = max(1, round(h0 * w / h))
            x0 = (w0 - cw) // 2
            x1 = x0 + cw
        else:
            ch = max(1, round(w0 * h / w))
            y0 = (h0 - ch) // 2
            y1 = y0 + ch
    u8 = photo if photo.dtype == np.uint8 else (np.clip(photo, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(u8[y0:y1, x0:x1]), mode="RGB")
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0, (y0, x0, y1, x1)


def read_fitted(paths: Sequence[str | os.PathLike], size: tuple[int, int], fit: Fit = "resize"
                ) -> tuple[np.ndarray, list[str]]:
    """Read image files as (N, H, W, 3) float32 [0, 1] at ``size`` with ``fit``; errors[i] is "" or the reason.

    ``resize`` goes through ``inputs.decode_images`` (the training pixels); ``crop`` reads each photo and
    applies :func:`fit_photo`. An unreadable file leaves zeros and its one-line reason.
    """
    from fruitlens.images import read_uint8
    from fruitlens.inputs import decode_images

    if fit == "resize":
        images_u8, errors = decode_images(paths, size)
        return images_u8.astype(np.float32) / 255.0, list(errors)
    out = np.zeros((len(paths), size[0], size[1], 3), np.float32)
    errors = []
    for i, path in enumerate(paths):
        try:
            out[i] = fit_photo(read_uint8(path), size, fit)[0]  # 8 bits: a quarter of float32's memory
            errors.append("")
        except ValueError as exc:
            errors.append(str(exc))
    return out, errors
