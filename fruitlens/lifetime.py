"""No helper process outlives the command that started it.

A process fruitlens starts for itself (the picture process of ``fruitlens explain``, the workers that check or
decode files) calls :func:`die_with_parent` first thing: the kernel then sends it SIGKILL when its parent ends,
however the parent ends (kill -9, the OOM killer). multiprocessing's resource tracker ends by itself once every
process holding its pipe has ended, so it follows.
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux; elsewhere a no-op, False).

    ``parent_pid``: the pid the parent had when it started this process; if the parent has already gone
    (this process was adopted before it could ask), it exits now.
    """
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the request: nobody is waiting for this process
    return True
