"""SIGTERM stops a run at once, as Ctrl-C does (installed by rules/common.smk's `onstart`).

Snakemake's own handler waits for running jobs to finish (a `measure` job can take an hour); this one passes the
signal to every process of the run, whose `finally` blocks tear the servers down and keep what was measured, then
lets Snakemake clean up as after Ctrl-C. psutil is imported only when the signal comes: parsing the workflow stays
light.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import NoReturn


def stop_now(signum: int, frame: FrameType | None) -> NoReturn:
    """The SIGTERM handler: SIGTERM to every descendant process, then KeyboardInterrupt in this one."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    raise KeyboardInterrupt
