"""Fault-injection checkpoints for the crash tests (tests/test_kill_resume.py).

`checkpoint("tts")` does nothing unless SPEECHCHAT_FAULT_AT names that point; then, once the point has
been passed SPEECHCHAT_FAULT_AFTER times in this process, it creates the file named by
SPEECHCHAT_FAULT_MARKER and waits, so the test can kill -9 the whole job at exactly that point.
Off by default and nearly free when off (one environment lookup).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

_passes: Counter = Counter()


def checkpoint(name: str) -> None:
    if os.environ.get("SPEECHCHAT_FAULT_AT") != name:
        return
    _passes[name] += 1
    if _passes[name] <= int(os.environ.get("SPEECHCHAT_FAULT_AFTER", "0")):
        return
    marker = os.environ.get("SPEECHCHAT_FAULT_MARKER")
    if marker:
        Path(marker).touch()
    time.sleep(float(os.environ.get("SPEECHCHAT_FAULT_WAIT_S", "120")))  # the test kills the job meanwhile
