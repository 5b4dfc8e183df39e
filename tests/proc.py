"""Subprocesses for tests, bounded in time, with the whole process tree killed when time runs out.

A pipeline run started by a test is a driver plus Ray's GCS, raylet and workers (Chromium has its own
helpers): killing only the driver on a timeout left those behind. Every test subprocess goes through
`run` or `popen` here (tests/test_hygiene.py checks that), and `kill_tree` ends the process, its descendants
and anything left in its session (a child that lost its parent is adopted by init, not by the driver).
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import psutil


def family(pid: int) -> list[psutil.Process]:
    """The process, its descendants, and every process left in its session (it leads one: start_new_session)."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        procs[pid] = root
        procs.update({c.pid: c for c in root.children(recursive=True)})
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and os.getsid(p.pid) == pid:
                procs.setdefault(p.pid, p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return list(procs.values())


def kill_tree(pid: int, timeout_s: float = 30.0) -> list[int]:
    """SIGKILL the process tree and session of `pid`; returns the pids that were killed."""
    victims = family(pid)
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(victims, timeout=timeout_s)
    if alive:
        raise RuntimeError(f"processes survived SIGKILL: {[p.pid for p in alive]}")
    return [p.pid for p in victims]


def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen in a session of its own, so that `kill_tree` finds everything it starts."""
    return subprocess.Popen(cmd, start_new_session=True, **kwargs)


def run(cmd: list[str], *, timeout: float, check: bool = False, capture_output: bool = False, text: bool = False,
        **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run, except that a timeout kills the whole tree (then raises TimeoutExpired with the output)."""
    if capture_output:
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = popen(cmd, text=text, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, timeout, output=out, stderr=err) from None
    except BaseException:
        kill_tree(proc.pid)
        raise
    result = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if check:
        result.check_returncode()
    return result
