"""Which training checkpoint a resume may trust: whole files, and a state that agrees with itself.

Every epoch writes ``best.keras`` (when it improved), ``last.keras`` and then ``state.json``, whose
``checksums`` hold the sha256 of the checkpoint files it goes with. :func:`resumable_state` accepts a
checkpoint only if ``state.json`` reads as a state, its epoch count agrees with its history, and each file it
names has that checksum (checkpoints from before checksums: ``last.keras`` must be a whole zip). Anything else
is set aside in ``checkpoints/set-aside/`` (never deleted), said in one warning naming the file, and training
starts fresh: a rerun never fails again and again on the same broken file.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

from fruitlens.digests import file_digest

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
CHECKPOINT_FILES = ("best.keras", "last.keras")
SET_ASIDE = "set-aside"


def checksums(ckpt_dir: str | os.PathLike) -> dict[str, str]:
    """sha256 of each checkpoint file present in ``ckpt_dir`` (recorded in ``state.json``)."""
    ckpt = Path(ckpt_dir)
    return {name: file_digest(ckpt / name) for name in CHECKPOINT_FILES if (ckpt / name).is_file()}


def _problem(ckpt: Path) -> tuple[str, dict[str, Any] | None]:
    """("", state) for a checkpoint a resume may trust, else (what is wrong, None)."""
    state_path = ckpt / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{state_path} cannot be read ({type(exc).__name__})", None
    if not isinstance(state, dict) or not {"epoch", "history", "config", "classes"} <= set(state):
        return f"{state_path} is not a training state (expected epoch, history, config, classes)", None
    epoch, history = state["epoch"], state["history"]
    epochs = [row.get("epoch") if isinstance(row, dict) else None for row in history] \
        if isinstance(history, list) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1 or epochs != list(range(1, epoch + 1)):
        return (f"{state_path} says epoch {str(epoch)[:20]} but its history holds "
                f"{len(history) if isinstance(history, list) else 'no'} epochs"), None
    recorded = state.get("checksums")
    if isinstance(recorded, dict):
        if "last.keras" not in recorded:
            return f"{state_path} records no checksum of last.keras", None
        for name, digest in recorded.items():
            path = ckpt / str(name)
            if not path.is_file():
                return f"{path} is missing", None
            if file_digest(path) != digest:
                return f"{path} does not match the checksum state.json recorded (damaged or replaced)", None
    else:  # written before checksums were recorded: at least a whole zip
        try:
            with zipfile.ZipFile(ckpt / "last.keras") as zf:
                bad = zf.testzip()
        except (OSError, zipfile.BadZipFile) as exc:
            return f"{ckpt / 'last.keras'} cannot be read ({type(exc).__name__})", None
        if bad is not None:
            return f"{ckpt / 'last.keras'} is damaged ({bad})", None
    return "", state


def set_aside(ckpt_dir: str | os.PathLike) -> Path:
    """Move the checkpoint files and state into ``checkpoints/set-aside/`` (replacing what an earlier run put
    there); returns that folder."""
    ckpt = Path(ckpt_dir)
    aside = ckpt / SET_ASIDE
    aside.mkdir(exist_ok=True)
    for name in (*CHECKPOINT_FILES, STATE_FILE):
        if (ckpt / name).exists():
            os.replace(ckpt / name, aside / name)
    return aside


def resumable_state(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The saved state of the checkpoint in ``ckpt_dir`` if a resume may trust it; else None (a fresh start),
    with one warning saying why and where the files were set aside."""
    ckpt = Path(ckpt_dir)
    if not (ckpt / STATE_FILE).is_file() or not (ckpt / "last.keras").is_file():
        if (ckpt / STATE_FILE).exists() or (ckpt / "last.keras").exists():
            log.warning("--resume: %s has %s but not %s; starting a fresh run (the files are set aside in %s)",
                        ckpt, *(("state.json", "last.keras") if (ckpt / STATE_FILE).exists()
                                else ("last.keras", "state.json")), set_aside(ckpt))
        else:
            log.warning("--resume: no checkpoint in %s; starting a fresh run", ckpt)
        return None
    problem, state = _problem(ckpt)
    if problem:
        log.warning("--resume: %s; starting a fresh run (the checkpoint is set aside in %s)", problem, set_aside(ckpt))
        return None
    return state
