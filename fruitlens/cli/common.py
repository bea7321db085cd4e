"""What every command shares: the one-line error, list and size arguments, options built from flags."""

from __future__ import annotations

import re
from typing import Any

DEFAULT_DEMO_DIR = "data/demo"
DEFAULT_DEMO_OUT = "artifacts/demo"


class CommandError(Exception):
    """A one-line reason a command cannot run (bad path, bad value)."""


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


def build_options(cls: type, values: dict[str, Any], flags: dict[str, str] | None = None):
    """The options dataclass ``cls`` from flag values; its ValueError becomes a CommandError naming the flag.

    ``flags`` maps field names to flag names where they differ from ``--field-name``.
    """
    from fruitlens.config import build

    try:
        return build(cls, values)
    except ValueError as exc:
        text = str(exc)
        for field in sorted(values, key=len, reverse=True):
            flag = (flags or {}).get(field, "--" + field.replace("_", "-"))
            new = re.sub(rf"(^|[\s.:]){re.escape(field)}\b", rf"\g<1>{flag}", text, count=1)
            if new != text:
                text = new
                break
        raise CommandError(text) from exc
