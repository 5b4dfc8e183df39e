"""Fault-injection points for the crash tests (tests/run/test_kill_resume.py, tests/run/test_run_faults.py).

`checkpoint("tts")` does nothing unless SPEECHCHAT_FAULT_AT names that point; then, once the point has
been passed SPEECHCHAT_FAULT_AFTER times in this process, it creates the file named by
SPEECHCHAT_FAULT_MARKER and waits, so the test can kill -9 the whole job at exactly that point.

`inject("tts", conversation_id)` does nothing unless SPEECHCHAT_CRASH_AT names that point and
SPEECHCHAT_CRASH_ID that conversation (or is `*`: whichever conversation gets there first); then it either ends the worker process at once (os._exit, a hard
crash like a segfault or an OOM kill: SPEECHCHAT_CRASH_MODE=exit) or raises (mode raise). With
SPEECHCHAT_CRASH_MARKER set it fires once (the marker file is created atomically by the firing process);
without it, it fires every time (a crash loop).
SPEECHCHAT_CRASH_ID=@FILE means the conversation whose ID `note` wrote to FILE (e.g. the one that filled the
quota: `note("quota.filled", conversation_id)` writes it when SPEECHCHAT_NOTE_AT=quota.filled and
SPEECHCHAT_NOTE_FILE=FILE), so a test can crash one stage's actor on what another stage decided.
`armed("shard.mid_tar")` says whether SPEECHCHAT_FAULT_AT names a point, for writers that then take a
slower path which stops half-way through a file (a torn `.tmp` on disk): shard.mid_tar, shard.mid_rejects_part,
text_cache.mid_part.
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


def armed(name: str) -> bool:
    return os.environ.get("SPEECHCHAT_FAULT_AT") == name


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


def note(name: str, key: str) -> None:
    if os.environ.get("SPEECHCHAT_NOTE_AT") != name or not os.environ.get("SPEECHCHAT_NOTE_FILE"):
        return
    path = Path(os.environ["SPEECHCHAT_NOTE_FILE"])
    path.with_name(path.name + ".part").write_text(key)
    os.replace(path.with_name(path.name + ".part"), path)  # readers see the whole ID or none


def _crash_id() -> str | None:
    wanted = os.environ.get("SPEECHCHAT_CRASH_ID")
    if wanted and wanted.startswith("@"):
        try:
            return Path(wanted[1:]).read_text().strip()
        except FileNotFoundError:
            return None
    return wanted


def inject(name: str, key: str | None) -> None:
    if os.environ.get("SPEECHCHAT_CRASH_AT") != name or key is None or _crash_id() not in (key, "*"):
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
