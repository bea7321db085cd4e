"""What every command shares: the one-line error, list and size arguments, options built from flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fruitlens.errors import FruitlensError, OptionError
from fruitlens.keras_apps import APP_NAMES

DEFAULT_DEMO_DIR = "data/demo"
DEFAULT_DEMO_OUT = "artifacts/demo"


class CommandError(Exception):
    """A one-line reason a command cannot run (bad path, bad value)."""


def count(n: int, noun: str) -> str:
    """``count(1, "image")`` -> "1 image", ``count(3, "image")`` -> "3 images" (thousands separated)."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def check_output_folder(path: Path | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file, lies under a file, or cannot be written."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CommandError(f"{flag} {path}: is a file; expected a folder")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"{flag} {path}: {existing} is a file; expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"{flag} {path}: {existing} is not writable; expected a folder you can write to")


def check_data_folder(path: Path, flag: str = "--data") -> None:
    """Refuse, before anything slow is imported, a data folder that does not exist or is not a folder."""
    if not Path(path).exists():
        raise CommandError(f"{flag} {path}: no such folder; expected a dataset root")
    if not Path(path).is_dir():
        raise CommandError(f"{flag} {path}: not a folder; expected a dataset root")


def check_out_apart_from_data(out: Path | None, data, flag: str = "--data") -> None:
    """Refuse an output folder inside a data folder (the next index would take the PNGs written there as
    labelled photos) or a data folder inside the output folder (the outputs would be read as data next time).

    ``data``: a path or a list of paths (files are checked by their folder only when they are the folder
    itself: a photo next to ``--out`` is fine).
    """
    if out is None or data is None:
        return
    out_abs = Path(out).expanduser().resolve()
    for item in data if isinstance(data, (list, tuple)) else [data]:
        path = Path(item).expanduser()
        if not path.is_dir():
            continue
        data_abs = path.resolve()
        if out_abs == data_abs or data_abs in out_abs.parents:
            raise CommandError(f"--out {out}: inside {flag} {item}; the outputs would be read as data next time. "
                               "Expected an output folder outside the data")
        if out_abs in data_abs.parents:
            raise CommandError(f"{flag} {item}: inside --out {out}; expected data outside the output folder")


class Renamed(argparse.Action):
    """A flag that now has another name: using it is refused in one line naming the new flag (never silently
    taken for what the name means in another command). Hidden from --help."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest="renamed_flags", nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        said = getattr(namespace, "renamed_flags", [])
        namespace.renamed_flags = [*said, f"{option_string}: renamed; expected {self.new}"]


def add_renamed(p, old: str, new: str) -> None:
    """``old`` refused on this command with a line naming ``new`` (e.g. ``--opacity (the overlay's opacity)``)."""
    p.add_argument(old, action=Renamed, new=new)


def check_renamed(args) -> None:
    """The first renamed flag the user typed, as one line."""
    said = getattr(args, "renamed_flags", None)
    if said:
        raise CommandError(said[0])


def merge_data_argument(args) -> None:
    """``index DATA`` / ``predict FILES``: the data positionally or as ``--data`` (as every other command
    takes it), once; the result in ``args.data``."""
    if not hasattr(args, "data_positional"):
        return
    positional, flagged = args.data_positional, args.data
    name = getattr(args, "data_metavar", "FILES" if isinstance(positional, list) else "DATA_DIR")
    if positional and flagged:
        def shown(value):
            return " ".join(map(str, value)) if isinstance(value, list) else str(value)

        raise CommandError(f"{name} {shown(positional)} and --data {shown(flagged)}: the data given twice; "
                           f"expected {name} or --data, not both")
    if not positional and not flagged:
        raise CommandError(f"no data given; expected {name} or --data {name}")
    args.data = flagged or positional


def check_shared_flags(args) -> None:
    """The checks every command's common flags get, wherever they appear: the data (positional or --data),
    --out (a writable folder apart from the data) and --workers."""
    merge_data_argument(args)
    check_output_folder(getattr(args, "out", None))
    if not getattr(args, "out_may_be_in_data", False):  # index: tables only, no image a later index would read
        check_out_apart_from_data(getattr(args, "out", None), getattr(args, "data", None))
    workers = getattr(args, "workers", None)
    if workers is not None and workers < 1:
        raise CommandError(f"--workers {workers}: expected at least 1")


def _csv(value: str | None) -> list[str] | None:
    """'a,b' -> ['a', 'b']; None or '' -> None; a list with no name (',') is an error."""
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise CommandError(f"{value!r}: expected comma-separated names")
    return names


def _image_size(text: str, flag: str = "--image-size") -> int | tuple[int, int]:
    try:
        parts = [int(v) for v in str(text).lower().replace("x", ",").split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise CommandError(f"{flag} {text}: expected a positive side like 20, or HxW like 32x48")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


#: option keys whose flag is not ``--key-with-dashes`` (what the user typed for them)
FLAGS: dict[str, str] = {"methods": "--method", "variant": "--gradcam-variant",
                         "segmenter_params": "--segmenter-param"}


def as_typed(exc: OptionError, typed: Mapping[str, str] | None = None) -> OptionError:
    """The one translation of an option error into what the user typed: ``typed`` maps option keys (or field
    names) to a flag (``--num-samples``) or a ``--set`` key (``lime.num_samples``); other keys of a command's
    options become ``--key-with-dashes`` (``FLAGS`` where that differs); keys of a config file stay as they are."""
    typed = dict(typed or {})
    if exc.key.startswith("-"):  # already what the user typed
        return exc
    field = exc.key.rsplit(".", 1)[-1]
    name = typed.get(exc.key) or typed.get(field)
    if name is None and exc.key == field:
        name = FLAGS.get(field, "--" + field.replace("_", "-"))
    if name is None:
        return exc
    if exc.unknown:
        return OptionError(name, None, f"one of {exc.expected}" if name.startswith("--") else exc.expected,
                           unknown=True)
    return OptionError(name, exc.value, exc.expected)


def build_options(cls: type, values: dict[str, Any], typed: Mapping[str, str] | None = None):
    """The options dataclass ``cls`` from the values the user gave; a bad value names what they typed
    (``typed``: option field -> flag or ``--set`` key, see :func:`as_typed`)."""
    from fruitlens.typed import build

    try:
        return build(cls, values)
    except OptionError as exc:
        raise as_typed(exc, typed) from exc


def one_line(exc: BaseException) -> str:
    """What the command prints for an error: an option error as the user typed it, else the first line."""
    if isinstance(exc, OptionError):
        exc = as_typed(exc)
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def is_ours(exc: BaseException) -> bool:
    """A reason the user can act on (a command or fruitlens error), not a bug to show with a traceback."""
    return isinstance(exc, CommandError | FruitlensError)


def add_read_as_argument(p) -> None:
    """--read-as: the one override of the rule that says whether a folder is a dataset or photos."""
    from fruitlens.batch.rows import FOLDER_RULE, READ_AS

    p.add_argument("--read-as", choices=READ_AS, default="auto",
                   help=f"how a folder given as data is read; auto: {FOLDER_RULE}")


MODEL_HELP = ("a run folder, a Keras model file (.keras, .h5) or SavedModel folder, or imagenet:<application> "
              f"({', '.join(APP_NAMES)})")


def add_model_arguments(p) -> None:
    """--model and what a model file may not say about itself."""
    from fruitlens.modelspec import FITS, PREPROCESSINGS

    p.add_argument("--model", required=True, help=MODEL_HELP)
    g = p.add_argument_group("model files that do not say (a model.json card next to the file is read first)")
    g.add_argument("--classes", help="class names in output order, comma-separated")
    g.add_argument("--classes-file", type=Path, help="class names: a .txt (one per line) or .json file")
    g.add_argument("--image-size", dest="model_image_size", metavar="PX",
                   help="the model's input size: a side in pixels or HxW (when the file does not fix it)")
    g.add_argument("--preprocessing", choices=PREPROCESSINGS,
                   help="what the model expects: rescale ([0, 1]), none ([0, 255]), tf ([-1, 1]), caffe, torch")
    g.add_argument("--fit", choices=FITS, default=None,
                   help="photos of another aspect: resize (squeeze, default) or crop (centre)")
    g.add_argument("--unsafe-load-code", action="store_true",
                   help="allow Lambda layers: RUNS PYTHON CODE stored in the model file; only for files you trust")


def model_source(args):
    """The ``ModelSource`` of --model and its flags (checked by the dataclass)."""
    from fruitlens.modelfiles import check_classes_file
    from fruitlens.modelio import ModelSource

    size = _image_size(args.model_image_size) if args.model_image_size else None
    if args.classes_file is not None:
        try:
            check_classes_file(args.classes_file)  # a FIFO or /dev/zero: one line, before anything is loaded
        except ValueError as exc:
            raise CommandError(f"--classes-file {exc}") from exc
    values = {"spec": str(args.model), "classes": _csv(args.classes),
              "classes_file": str(args.classes_file) if args.classes_file else None,
              "image_size": (size, size) if isinstance(size, int) else size, "preprocessing": args.preprocessing,
              "unsafe": bool(args.unsafe_load_code)}
    if args.fit:
        values["fit"] = args.fit
    return ModelSource(**values)


def load_model(args):
    """(model, card, digest) of --model; a bad file is one line."""
    source = model_source(args)
    model, card = source.load()
    return model, card, source.digest(card)


class Progress:
    """Progress of a long command on stderr: a bar on a terminal; in a log or pipe, one line
    (``fruitlens.progress.progress_line``) every ``every`` seconds and at the end, as ``train`` prints epochs."""

    def __init__(self, total: int, what: str, unit: str = "images", every: float = 10.0, stream=None):
        import sys
        import time

        self.total, self.what, self.unit, self.every = total, what, unit, every
        self.stream = stream or sys.stderr
        self.done, self.start, self.last = 0, time.perf_counter(), time.perf_counter()
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=what, file=self.stream)

    def update(self, n: int = 1) -> None:
        import time

        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            self._line(now)

    def advance_to(self, done: int, total: int) -> None:
        """``done`` of ``total`` (a total known only once the work starts)."""
        self.total = total
        if self.bar is not None:
            self.bar.total = total
        self.update(done - self.done)

    def _line(self, now: float) -> None:
        from fruitlens.progress import progress_line

        print(progress_line(self.what, self.done, self.total, now - self.start, self.unit), file=self.stream,
              flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        import time

        if self.bar is not None:
            self.bar.close()
        elif exc[0] is None and self.total:
            self._line(time.perf_counter())
