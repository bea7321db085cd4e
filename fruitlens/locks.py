"""One writer at a time per output folder: every command that writes a folder (train, evaluate, predict,
explain, run) holds ``<folder>/.fruitlens.lock`` while it writes there.

The lock is ``flock`` on that file: the kernel drops it when its holder dies (kill -9 included), so a crashed
writer never leaves a stale lock. A second writer is refused at once with one line instead of waiting.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fruitlens.layout import LOCK_FILE


class FolderBusy(ValueError):
    """Another fruitlens command holds the folder's lock."""


@contextmanager
def folder_lock(folder: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """Hold ``folder`` (created if missing) for one writer; a second one gets a one-line :class:`FolderBusy`."""
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(f"{flag} {root}: another fruitlens run is writing here; wait for it to finish or "
                             f"choose another {flag}") from exc
        try:
            yield root
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
