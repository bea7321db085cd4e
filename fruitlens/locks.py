"""One writer at a time per output folder: every command that writes a folder (train, evaluate, predict,
explain, run) holds ``<folder>/.fruitlens.lock`` while it writes there.

The lock is ``flock`` on that file: the kernel drops it when its holder dies (kill -9 included), so a crashed
writer never leaves a stale lock. A second writer is refused at once with one line instead of waiting.
The holder removes the file when it is done (also when it fails), while it still holds the lock; a writer that
locked a file which was removed meanwhile sees that its path now names another file (or none) and tries again,
so two writers never hold two files of one name. Only a writer killed with -9 leaves the (empty, unlocked)
file behind; the next writer takes it over.
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
    path = root / LOCK_FILE
    for _ in range(100):  # another holder removing its file between our open and flock: open again
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            fh.close()
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise FolderBusy(f"{flag} {root}: another fruitlens run is writing here; wait for it to finish or "
                             f"choose another {flag}") from exc
        if _same_file(path, fh):
            break
        fh.close()
    else:  # pragma: no cover - a folder whose lock file keeps vanishing
        raise FolderBusy(f"{flag} {root}: its lock file keeps changing; expected one writer at a time")
    try:
        yield root
    finally:
        try:
            path.unlink(missing_ok=True)  # still locked: nobody can take the file between unlink and unlock
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()


def _same_file(path: Path, fh) -> bool:
    """Whether ``path`` still names the open file ``fh`` (not removed or replaced since it was opened)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fh.fileno())
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)
