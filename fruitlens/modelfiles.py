"""Model files, their class names and ImageNet applications: the low-level loading under fruitlens.modelio.

Every failure is one :class:`ModelSourceError` line naming the file or value and what was expected.
Keras' own messages are confusing for several bad files (a truncated or non-zip ``.keras`` file is reported
as "File not found"), so files are checked before Keras sees them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

from fruitlens.errors import ModelSourceError
from fruitlens.keras_cache import cached_file

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


# ------------------------------------------------------------------------------------ ImageNet class names


CLASS_INDEX_FILE = "imagenet_class_index.json"
CLASS_INDEX_ORIGIN = "https://storage.googleapis.com/download.tensorflow.org/data/imagenet_class_index.json"
CLASS_INDEX_HASH = "c2c37ea517e94d9795004a39431a14cb"


def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet class names in output order, from Keras' ``imagenet_class_index.json``.

    Names that occur twice in the index (``crane``, ``maillot``) get their WordNet id appended.
    """
    path = cached_file(CLASS_INDEX_FILE, CLASS_INDEX_ORIGIN, CLASS_INDEX_HASH, "ImageNet class names")
    return read_classes(path)


# ------------------------------------------------------------------------------------ class names


def _classes_from_json(obj, path: Path) -> list[str]:
    if isinstance(obj, list) and all(isinstance(v, str) for v in obj):
        return obj
    if not isinstance(obj, dict) or not obj:
        raise ModelSourceError(f"{path}: expected a list of names or a mapping index -> name")
    if all(isinstance(v, int) for v in obj.values()):  # {"cat": 0}: Keras' class_indices
        obj = {str(v): k for k, v in obj.items()}
    try:
        pairs = sorted((int(k), v) for k, v in obj.items())
    except ValueError as exc:
        raise ModelSourceError(f"{path}: keys must be class indices 0..C-1 ({exc})") from exc
    if [k for k, _ in pairs] != list(range(len(pairs))):
        raise ModelSourceError(f"{path}: class indices are not 0..{len(pairs) - 1}")
    values = [v for _, v in pairs]
    if all(isinstance(v, list) and len(v) == 2 for v in values):  # ImageNet: {"0": ["n01440764", "tench"]}
        counts = {}
        for _, name in values:
            counts[name] = counts.get(name, 0) + 1
        return [name if counts[name] == 1 else f"{name} ({wnid})" for wnid, name in values]
    if not all(isinstance(v, str) for v in values):
        raise ModelSourceError(f"{path}: expected class names as strings (or [wnid, name] pairs)")
    return values


MAX_CLASSES_FILE_BYTES = 4 << 20  # a class names file (ImageNet's index is 35 kB); larger is refused


def check_classes_file(path: str | os.PathLike) -> Path:
    """``path`` if it is a regular file of at most ``MAX_CLASSES_FILE_BYTES``; else one line, before any open
    (a FIFO would block, ``/dev/zero`` never ends)."""
    import stat

    path = Path(path).expanduser()
    try:
        st = path.stat()
    except OSError as exc:
        raise ModelSourceError(f"{path}: cannot read class names ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ModelSourceError(f"{path}: not a regular file (a device, pipe or folder); expected a .txt or .json "
                               "file of class names")
    if st.st_size > MAX_CLASSES_FILE_BYTES:
        raise ModelSourceError(f"{path}: {st.st_size} bytes; expected a class names file of at most "
                               f"{MAX_CLASSES_FILE_BYTES} bytes")
    return path


def read_classes(path: str | os.PathLike) -> tuple[str, ...]:
    """Class names from a text file (one per line, blank lines skipped) or a JSON file.

    JSON: a list of names, ``{"0": "cat", ...}``, Keras' ``{"cat": 0, ...}``, or the ImageNet class index
    ``{"0": ["n01440764", "tench"], ...}``.

    Raises:
        ModelSourceError: missing or unreadable file, indices not 0..C-1, duplicate or empty names.
    """
    path = check_classes_file(path)
    try:
        with open(path, "rb") as fh:  # read no more than the limit, whatever the file grew to since the check
            data = fh.read(MAX_CLASSES_FILE_BYTES + 1)
        if len(data) > MAX_CLASSES_FILE_BYTES:
            raise ModelSourceError(f"{path}: more than {MAX_CLASSES_FILE_BYTES} bytes; expected a class names file")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelSourceError(f"{path}: cannot read class names ({exc})") from exc
    if path.suffix.lower() == ".json":
        try:
            names = _classes_from_json(json.loads(text), path)
        except json.JSONDecodeError as exc:
            raise ModelSourceError(f"{path}: not valid JSON ({exc})") from exc
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelSourceError(f"{path}: no class names")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelSourceError(f"{path}: class names must be unique; repeated: {', '.join(dupes[:5])}")
    return tuple(names)


# ------------------------------------------------------------------------------------ loading files


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().strip("'\"")
    return text.splitlines()[0] if text else type(exc).__name__


def _check_file(path: Path) -> None:
    """Fail early, with a clear reason, on files Keras reports confusingly (it says "File not found")."""
    if path.stat().st_size == 0:
        raise ModelSourceError(f"{path}: empty file (0 bytes); expected a Keras model")
    if path.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelSourceError(f"{path}: not a .keras zip archive (truncated, or not a model file)")
        with zipfile.ZipFile(path) as archive:
            if "config.json" not in archive.namelist():
                raise ModelSourceError(f"{path}: zip archive without config.json; not a Keras model")
    elif not _has_hdf5_signature(path):
        raise ModelSourceError(f"{path}: not an HDF5 file; expected a model saved with model.save(.h5)")


def _has_hdf5_signature(path: Path) -> bool:
    """The HDF5 signature at offset 0, 512, 1024, 2048, ... (after a user block), as the format allows."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        offset = 0
        while offset + 8 <= size and offset <= 1 << 20:
            fh.seek(offset)
            if fh.read(8) == HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def load_keras_file(path: Path, unsafe: bool = False):
    """``keras.models.load_model`` of a .keras/.h5 file, every failure one ModelSourceError line."""
    import keras

    import fruitlens.models  # noqa: F401  (registers fruitlens' serialisable layers)

    _check_file(path)
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe)
    except ValueError as exc:
        if "No model config found" in str(exc):
            raise ModelSourceError(f"{path}: holds weights only, no model; expected a whole model saved with "
                                   "model.save()") from exc
        if "safe_mode" in str(exc) or "unsafe_deserialization" in str(exc):
            raise ModelSourceError(f"{path}: holds a Lambda layer whose Python code would run on loading; pass "
                                   "unsafe=True (--unsafe-load-code) only if you trust the file") from exc
        raise ModelSourceError(f"{path}: cannot load the Keras model ({first_line(exc)})") from exc
    except (OSError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise ModelSourceError(f"{path}: cannot load the Keras model ({first_line(exc)})") from exc


def signature_size(layer) -> tuple[int, int] | None:
    """(H, W) of a TFSMLayer's serving signature when fixed (reads the reloaded object: Keras internals)."""
    fn = getattr(layer, "call_endpoint_fn", None)
    spec = getattr(fn, "structured_input_signature", None)
    if not spec:
        return None
    specs = [*spec[0], *spec[1].values()]
    shape = tuple(specs[0].shape) if len(specs) == 1 else ()
    return (int(shape[1]), int(shape[2])) if len(shape) == 4 and shape[1] and shape[2] else None


def load_saved_model(path: Path):
    """A SavedModel folder as ``keras.layers.TFSMLayer`` (endpoint serving_default, else serve)."""
    import keras
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    errors = []
    for endpoint in ("serving_default", "serve"):
        try:
            return keras.layers.TFSMLayer(str(path), call_endpoint=endpoint, name="saved_model")
        except (ValueError, OSError, KeyError, TypeError, DecodeError, tf.errors.OpError) as exc:
            errors.append(first_line(exc))
    raise ModelSourceError(f"{path}: cannot load the SavedModel ({errors[-1]})")


def input_size(raw, where) -> tuple[int, int] | None:
    """(H, W) of a loaded Keras model's single input when fixed; checks it takes 3 channels."""
    inputs = getattr(raw, "inputs", None) or []
    if len(inputs) != 1:
        raise ModelSourceError(f"{where}: the model has {len(inputs)} inputs; expected one image input")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or shape[-1] not in (3, None):
        raise ModelSourceError(f"{where}: input shape {shape}; expected (N, H, W, 3) RGB images")
    return (int(shape[1]), int(shape[2])) if shape[1] and shape[2] else None


def check_output(model, where: str) -> None:
    shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else ()
    if len(shape) != 2 or not shape[1]:
        raise ModelSourceError(f"{where}: output shape {model.output_shape}; expected (N, classes) class scores")


def two_class_model(model, raw, where: str):
    """A one-unit sigmoid classifier as the two-class model it is: outputs ``[1 - p, p]``.

    A single unit that is not a sigmoid (a logit, a regression) cannot be read as class scores: refused, never
    taken for a classifier of one class (which would call every photo that class).
    """
    import keras

    last = raw.layers[-1] if getattr(raw, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if activation != "sigmoid":
        raise ModelSourceError(f"{where}: one output unit ({activation or 'unknown'} activation); expected one "
                               "score per class, or a single sigmoid unit (a binary classifier: two classes)")
    inp = keras.Input(model.input_shape[1:], name="image")
    p = model(inp)
    return keras.Model(inp, keras.layers.Concatenate(name="two_classes")(
        [keras.layers.Rescaling(-1.0, offset=1.0, name="not_p")(p), p]), name=f"{model.name}_two_classes")


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_sha256(folder: Path) -> str:
    """sha256 over a folder's files (relative paths and bytes, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder).as_posix()}\n{file_sha256(path)}\n".encode())
    return h.hexdigest()
