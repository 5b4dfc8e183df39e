"""pytest plugin (loaded by tests/conftest.py): the marker `integration` means what it says.

A test without it is in the fast tier (`./run.sh test -m "not integration"`, minutes on 2 cores) and may not
start Ray or a server, or load a model; if it does, it fails and names what it touched, so the marker gets
added instead of the fast tier slowly growing slow. The entry points below are wrapped once (in this process,
not in subprocesses) and refuse while a fast-tier test runs; a refusal is also recorded, so a test whose code
swallows the exception still fails. Setup of module and session fixtures counts as part of the first test
that uses them (a fixture that loads a model makes its tests integration tests). Coqui is caught by its import: a fast-tier test that imports TTS builds or
loads a Coqui model (importing TTS only to wrap it would cost every fast run torch's start-up).
"""

from __future__ import annotations

import importlib
import sys

import pytest

# (module, attribute path, what calling it means)
HEAVY = [
    ("ray", "init", "starts Ray"),
    ("faster_whisper", "WhisperModel.__init__", "loads a faster-whisper model"),
    ("piper", "PiperVoice.load", "loads a Piper voice"),
    ("onnxruntime", "InferenceSession.__init__", "loads an ONNX model (DNSMOS, Piper)"),
    ("subprocess", "Popen.__init__", "starts the llama.cpp server"),  # only that command is refused
]
# wrapped once their package is imported (a Coqui test file imports TTS at collection, before any test runs)
IF_LOADED = [
    ("TTS", "TTS.tts.models.xtts", "Xtts.__init__", "builds or loads a Coqui XTTS model"),
    ("TTS", "TTS.tts.models.vits", "Vits.__init__", "builds or loads a Coqui VITS model"),
    ("resemblyzer", "resemblyzer", "VoiceEncoder.__init__", "loads the Resemblyzer speaker encoder"),
]
IMPORTS = {"TTS": "imports Coqui TTS (builds or loads a Coqui model)",
           "resemblyzer": "imports Resemblyzer (loads its speaker encoder)"}
_current: dict[str, object] = {"test": None, "violations": []}
_IMPORTED = pytest.StashKey[set]()
_REPORTED = pytest.StashKey[bool]()


class UnitTierViolation(BaseException):
    """Not an Exception, so that `except Exception` in the code under test does not turn it into a result."""


def _message(nodeid: str, what: str) -> str:
    return (f"{nodeid} {what} but is not marked integration: add @pytest.mark.integration "
            f"(the fast tier runs no Ray, no servers, no models)")


def _wrap(original, what: str):
    def guarded(*args, **kwargs):
        test = _current["test"]
        if test is not None and what.startswith("starts the llama.cpp"):
            cmd = args[1] if len(args) > 1 else kwargs.get("args")
            if "llama_cpp.server" not in " ".join(map(str, cmd if isinstance(cmd, (list, tuple)) else [cmd])):
                test = None
        if test is not None:
            _current["violations"].append(what)
            raise UnitTierViolation(_message(str(test), what))
        return original(*args, **kwargs)

    guarded.__wrapped__ = original
    return guarded


def _install() -> None:
    entries = HEAVY + [(module, path, what) for package, module, path, what in IF_LOADED if package in sys.modules]
    for module_name, path, what in entries:
        try:
            owner = importlib.import_module(module_name)
            *owners, attr = path.split(".")
            for name in owners:
                owner = getattr(owner, name)
        except (ImportError, AttributeError):
            continue
        if not hasattr(getattr(owner, attr), "__wrapped__"):
            setattr(owner, attr, _wrap(getattr(owner, attr), what))


def _unit(item) -> bool:
    return item.get_closest_marker("integration") is None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Guard the whole test, setup of module and session fixtures included (they load models too)."""
    if not _unit(item):
        yield
        return
    _install()
    item.stash[_IMPORTED] = set(sys.modules)
    _current.update(test=item.nodeid, violations=[])
    try:
        yield
    finally:
        _current["test"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not _unit(item) or report.when == "teardown" or item.stash.get(_REPORTED, False):
        return
    violations = list(_current["violations"]) if _current["test"] == item.nodeid else []
    if report.when == "call":
        before = item.stash.get(_IMPORTED, set(sys.modules))
        violations += [what for name, what in IMPORTS.items() if name in sys.modules and name not in before]
    if violations:
        item.stash[_REPORTED] = True  # one report per test
        if not report.failed:
            report.outcome = "failed"
            report.longrepr = _message(item.nodeid, violations[0])
