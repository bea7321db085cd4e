"""Keras' download cache, in one place: where it is, whether the network is there, fetching a file into it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from fruitlens.errors import ModelSourceError


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models``, else ``~/.keras/models``."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(base) / "models"


def network_available(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_file(name: str, origin: str, file_hash: str | None, what: str) -> Path:
    """``keras_cache_dir()/name``; downloaded through ``keras.utils.get_file`` when absent and online.

    A file already in the cache is used as it is (Keras would re-download a file whose hash differs).

    Raises:
        ModelSourceError: absent and no network, or the download failed (says which file to fetch, where).
    """
    path = keras_cache_dir() / name
    if path.is_file():
        return path
    hint = f"fetch {origin} and put it at {path} (or set KERAS_HOME to a folder with models/{name})"
    if not network_available():
        raise ModelSourceError(f"{what}: {path} not found and no network to download it; {hint}")
    import keras

    try:
        return Path(keras.utils.get_file(name, origin, cache_subdir="models", file_hash=file_hash,
                                         cache_dir=str(path.parent.parent)))
    except Exception as exc:  # get_file raises a plain Exception for URL and HTTP failures
        raise ModelSourceError(f"{what}: download failed ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                               f"{hint}") from exc
