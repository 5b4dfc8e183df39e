"""Stops: a run ends early only for causes outside the data, with a reason the user can act on.

A worker crash loop, the LLM server gone, a full disk: each becomes a `JobStopped` saying what happened and
that rerunning the same command resumes (finished shards stay; nothing half-written is left in place).
A Python exception on one conversation is not a stop: that conversation is rejected with a reason.
"""

from __future__ import annotations

import errno
import re
from typing import Any

from pipeline.config import RunConfig
from pipeline.llm.base import LLMUnavailable
from pipeline.redact import redact

RESUME = "finished shards are kept and nothing half-written was left in place; rerun the same command to resume"


class JobStopped(RuntimeError):
    """The run stopped early for a reason outside the data (a worker crash loop, the LLM server gone, a full
    disk). Finished shards stay; nothing half-written is left in place; rerunning the same command resumes."""


def causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (Python chaining and Ray's `.cause`)."""
    seen: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseException) and not any(e is s for s in seen):
            seen.append(e)
            stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return seen


def explain_stop(exc: BaseException, cfg: RunConfig) -> str | None:
    """A one-paragraph reason for a stop the user can act on, or None for an unexpected error (re-raised as is).

    The exception types are matched where they survive; an error raised in a Ray worker can reach the driver
    only as text (Ray re-raises it wrapped), so the names are also looked for in the text of the chain."""
    chain = causes(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in chain)
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain) or "No space left on device" in text:
        return (f"disk full: no space left on device while writing to {cfg.output_location()}; free space there "
                f"(or choose another --out), then {RESUME}")
    outage = next((str(e) for e in chain if type(e) is LLMUnavailable), None)
    if outage is None:
        found = re.search(r"LLMUnavailable: (LLM server \S+ (?:unreachable|unusable)[^\n]*)", text)
        outage = found.group(1) if found else None
    if outage:
        return redact(f"{outage}; the conversations generated so far are in the text cache, the rest were not "
                      f"recorded as rejected; make sure the server answers (llm.base_url; the embedded one is "
                      f"restarted by the rerun), then {RESUME}")
    if "ActorDiedError" in text or "ActorUnavailableError" in text:
        w = cfg.workers
        return (f"a worker process (TTS, ASR, LLM client or shard writer) kept crashing: its batch failed after "
                f"workers.max_task_retries={w.max_task_retries} retries (workers.max_restarts={w.max_restarts}); "
                f"the worker log above says why (out of memory, a broken model file, a native crash); "
                f"{RESUME}")
    return None
