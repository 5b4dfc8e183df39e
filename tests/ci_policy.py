"""pytest plugin (loaded by tests/conftest.py): in CI (CI=true) a skipped test is a failed test.

CI installs everything the suite needs (Chromium, FFmpeg, torch, datasets, the Coqui extra, root for the
tmpfs), so a skip there means a claim went untested while the run looked green. Locally a skip stays a
skip, with its reason in `-ra`. An expected failure (xfail) is not a skip and is left alone.
"""

from __future__ import annotations

import os

import pytest

TRUE = {"1", "true", "yes", "on"}


def ci_mode() -> bool:
    return os.environ.get("CI", "").strip().lower() in TRUE


def pytest_report_header(config):
    if ci_mode():
        return "CI=true: skipped tests count as failures (tests/ci_policy.py)"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not ci_mode() or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"CI=true: {item.nodeid} was skipped ({reason}); in CI everything the suite needs is "
                       f"installed, so a skip is a claim left untested: install what it names or fix the test")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (pytest.importorskip at the top) fails in CI too."""
    outcome = yield
    report = outcome.get_result()
    if ci_mode() and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: {collector.nodeid} was skipped at collection ({reason}); install what it names"
