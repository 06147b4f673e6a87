"""An IPython extension the stage runner loads into every stage's kernel: the kernel dies with its runner.

jupyter_client starts a kernel in a session of its own, so killing ``stfusion stage`` (kill -9, DVC stopped)
left the kernel running until ipykernel's parent poller noticed, up to a second later: time enough to
rewrite a checkpoint. On Linux the kernel asks the OS for SIGTERM when its parent dies, and takes SIGTERM
as an interrupt: the running cell stops where it is, its ``finally`` blocks remove what it was writing
(``stfusion.io``'s atomic outputs), and the kernel exits at most :data:`GRACE` seconds later, printing nothing
more (the runner reports the stop).
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
    _quiet_shutdown(ipython.kernel)
    runner = int(os.environ.get(RUNNER_VARIABLE) or 0)
    if not sys.platform.startswith("linux") or not runner:
        return  # elsewhere ipykernel's own parent poller ends the kernel
    signal.signal(signal.SIGTERM, _interrupt)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != runner:  # the runner died before the request: no signal would ever come
        os._exit(143)


def _quiet_shutdown(kernel) -> None:
    """A stopped runner interrupts the cell and asks the kernel to shut down at once: the kernel closes its
    sockets while the cell still cleans up, and ipykernel then logs a traceback for the reply it can no
    longer send. The runner reports the stop in one line; from the shutdown on, the kernel prints nothing."""
    shutdown = kernel.do_shutdown

    def do_shutdown(restart):
        _silence()
        return shutdown(restart)

    kernel.do_shutdown = do_shutdown


def _silence() -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stderr__.fileno())


def _interrupt(signum, frame) -> None:
    _silence()
    threading.Timer(GRACE, os._exit, args=(128 + signum,)).start()
    raise KeyboardInterrupt
