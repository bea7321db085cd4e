"""TensorFlow imported without its start-up lines (unless ``--verbose``).

``TF_CPP_MIN_LOG_LEVEL`` silences most of them, but not all: on CPUs where oneDNN is on by default (Intel Xeon
here) TensorFlow 2.21 writes "oneDNN custom operations are on ..." twice while ``import tensorflow`` runs, before
its logging reads any level, straight to file descriptor 2. The only switch, ``TF_ENABLE_ONEDNN_OPTS=0``, turns
oneDNN's faster kernels off, too high a price for a line. So the first ``import tensorflow`` (whichever module
or thread does it) runs with descriptor 2 sent to a temporary file, and what it caught is written back to
stderr afterwards without the known start-up lines: nothing else is lost, other threads' lines of those seconds
only come a little later.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile
from contextlib import contextmanager

#: lines TensorFlow writes at import that say nothing a user of fruitlens can act on
STARTUP_NOISE = re.compile(r"oneDNN custom operations are on|All log messages before absl::InitializeLog|"
                           r"cpu_feature_guard|To enable the following instructions|"
                           r"This TensorFlow binary is optimized")


@contextmanager
def stderr_filtered(noise: re.Pattern = STARTUP_NOISE):
    """Descriptor 2 goes to a temporary file in the block; afterwards its lines but ``noise`` go to stderr."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            kept = [line for line in caught.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        try:
            with stderr_filtered():
                self.loader.exec_module(module)
        finally:  # the module keeps its own loader (importlib.resources and reloads use it)
            module.__loader__ = module.__spec__.loader = self.loader


class _QuietTensorFlowFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders from here on
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_tensorflow_import() -> None:
    """Make the first ``import tensorflow`` of this process drop TensorFlow's start-up lines."""
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowFinder())
