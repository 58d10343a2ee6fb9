"""SIGTERM to Snakemake's main process stops the run at once (prefixbench.interrupt, installed by rules/common.smk)."""

from __future__ import annotations

import subprocess
import sys

from helpers import ROOT

PROBE = """
import subprocess, sys
from prefixbench.interrupt import stop_now
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
try:
    stop_now(15, None)
except KeyboardInterrupt:
    print("interrupted", child.wait(timeout=30))
"""


def test_stop_now_passes_sigterm_to_every_child_and_interrupts_the_run():
    """In a process of its own (it signals every child of the process it runs in)."""
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT / "scripts", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["interrupted", "-15"]  # the child ended by SIGTERM, then KeyboardInterrupt here


def test_the_workflow_installs_it():
    assert "signal.signal(signal.SIGTERM, interrupt.stop_now)" in (ROOT / "rules/common.smk").read_text()
