"""An IPython extension the stage runner loads into every stage's kernel: the kernel dies with its runner.

jupyter_client starts a kernel in a session of its own, so killing ``stfusion stage`` (kill -9, DVC stopped)
left the kernel running until ipykernel's parent poller noticed, up to a second later: time enough to
rewrite a checkpoint. On Linux the kernel asks the OS for SIGTERM when its parent dies, and takes SIGTERM
as an interrupt: the running cell stops where it is, its ``finally`` blocks remove what it was writing
(``stfusion.io``'s atomic outputs), and the kernel exits at most :data:`GRACE` seconds later.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

RUNNER_VARIABLE = "STFUSION_STAGE_RUNNER"
"""The runner's process id, which the kernel checks its parent against."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h
GRACE = 2.0
"""Seconds the interrupted cell has to clean up before the kernel exits regardless."""


def load_ipython_extension(ipython) -> None:
    runner = int(os.environ.get(RUNNER_VARIABLE) or 0)
    if not sys.platform.startswith("linux") or not runner:
        return  # elsewhere ipykernel's own parent poller ends the kernel
    signal.signal(signal.SIGTERM, _interrupt)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != runner:  # the runner died before the request: no signal would ever come
        os._exit(143)


def _interrupt(signum, frame) -> None:
    threading.Timer(GRACE, os._exit, args=(128 + signum,)).start()
    raise KeyboardInterrupt
