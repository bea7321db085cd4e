"""Every error fruitlens raises on purpose, in one place (nothing here imports anything of fruitlens).

All are ``FruitlensError``; all but ``FruitlensError`` itself are also ``ValueError`` (bad input), so a caller
that catches ``ValueError`` keeps working. :class:`OptionError` carries its structure (``key``, ``value``,
``expected``): the command line names the flag or config key the user typed from ``key``, without reading
the message.
"""

from __future__ import annotations

import reprlib
from typing import Any

MAX_SHOWN = 80  # characters of a value an error message shows (a YAML alias bomb must not be printed whole)

_SHORT = reprlib.Repr()  # Python 3.11's Repr takes no arguments
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxset = 3, 6, 6, 6, 6
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = MAX_SHOWN, MAX_SHOWN, 40


def short(value: Any) -> str:
    """``repr(value)`` cut to about ``MAX_SHOWN`` characters, in bounded time whatever its size or nesting."""
    text = _SHORT.repr(value)
    return text if len(text) <= MAX_SHOWN + 10 else text[:MAX_SHOWN] + "..."


class FruitlensError(Exception):
    """The base of fruitlens' own errors: one line naming the bad value and what was expected."""


class OptionError(FruitlensError, ValueError):
    """A bad option value or an unknown option.

    Attributes:
        key: the option's path (``explain_options.lime.num_samples``, ``num_samples``); for an unknown key,
            the key as given.
        value: the value given (``None`` for an unknown key).
        expected: what would have been accepted.
        unknown: True when the key itself is not an option.
    """

    def __init__(self, key: str, value: Any, expected: str, *, unknown: bool = False):
        self.key, self.value, self.expected, self.unknown = key, value, expected, unknown
        super().__init__(self._text())

    def _text(self) -> str:
        if self.unknown:
            return f"unknown key {self.key}; expected one of {self.expected}"
        return f"{self.key} {short(self.value)}: expected {self.expected}"

    def at(self, prefix: str) -> OptionError:
        """The same error with ``prefix.`` in front of its key (an option of a section)."""
        return OptionError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.expected,
                           unknown=self.unknown)

    def __reduce__(self):  # picklable across processes with its structure
        return (_rebuild, (self.key, self.value, self.expected, self.unknown))


def _rebuild(key, value, expected, unknown) -> OptionError:
    return OptionError(key, value, expected, unknown=unknown)


class RunError(FruitlensError, ValueError):
    """A run folder that cannot be used (missing model, unreadable card)."""


class ModelSourceError(RunError):
    """A model that cannot be loaded as asked (one line naming the file or value and what was expected)."""


class ModelError(FruitlensError, ValueError):
    """An architecture that cannot be built as asked (unknown name, weights not available, bad size)."""


class DatasetError(FruitlensError, ValueError):
    """A dataset that cannot be indexed at all (missing folder, no classes, unknown class name)."""
