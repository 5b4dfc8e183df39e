"""Fault-injection points for the crash tests (tests/run/test_kill_resume.py, tests/run/test_run_faults.py).

`checkpoint("tts")` does nothing unless SPEECHCHAT_FAULT_AT names that point; then, once the point has
been passed SPEECHCHAT_FAULT_AFTER times in this process, it creates the file named by
SPEECHCHAT_FAULT_MARKER and waits, so the test can kill -9 the whole job at exactly that point.

`inject("tts", conversation_id)` does nothing unless SPEECHCHAT_CRASH_AT names that point and
SPEECHCHAT_CRASH_ID that conversation; then it either ends the worker process at once (os._exit, a hard
crash like a segfault or an OOM kill: SPEECHCHAT_CRASH_MODE=exit) or raises (mode raise). With
SPEECHCHAT_CRASH_MARKER set it fires once (the marker file is created atomically by the firing process);
without it, it fires every time (a crash loop).
Both are off by default and nearly free when off (one environment lookup).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

_passes: Counter = Counter()


class InjectedFault(RuntimeError):
    """The Python exception `inject` raises in mode raise."""


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


def inject(name: str, key: str | None) -> None:
    if os.environ.get("SPEECHCHAT_CRASH_AT") != name or key != os.environ.get("SPEECHCHAT_CRASH_ID"):
        return
    marker = os.environ.get("SPEECHCHAT_CRASH_MARKER")
    if marker:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))  # only the first process to get here fires
        except FileExistsError:
            return
    if os.environ.get("SPEECHCHAT_CRASH_MODE", "exit") == "raise":
        raise InjectedFault(f"injected fault at {name} for {key}")
    os._exit(137)  # no cleanup, no exception: what a segfault or the OOM killer leaves behind
