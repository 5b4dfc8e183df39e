"""The suite's own rules, tested: caches in the test temp folder and the Hub offline, no connection beyond
127.0.0.1, every subprocess's whole tree killed on a timeout, a skip failing in CI, and the fast tier refusing
what belongs to the integration tier. The plugins are run on small test files in a child pytest."""

import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest
from proc import family
from proc import run as run_proc

from pipeline.config import REPO_ROOT

TESTS = Path(__file__).resolve().parent


def test_caches_live_in_the_test_temp_folder_and_the_hub_is_offline(isolated_caches, tmp_path_factory):
    import huggingface_hub.constants as hub

    from pipeline.assets import cache_dir

    base = tmp_path_factory.getbasetemp()
    assert base in Path(hub.HF_HOME).parents and hub.HF_HUB_OFFLINE
    assert base in cache_dir().parents  # the joined Whisper base and other derived model files
    for var in ("HF_HOME", "SPEECHCHAT_CACHE", "RAY_TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME"):
        assert base in Path(os.environ[var]).parents, var
    assert str(Path.home() / ".cache") not in " ".join(str(p) for p in isolated_caches.values())


@pytest.mark.integration
def test_ray_keeps_its_session_in_the_test_temp_folder(ray_session, tmp_path_factory):
    session = Path(ray_session._private.worker._global_node.get_session_dir_path())
    assert tmp_path_factory.getbasetemp() in session.parents, session


def test_a_connection_beyond_the_loopback_fails_the_test():
    import socket

    from pytest_socket import SocketConnectBlockedError

    with socket.socket() as s, pytest.raises(SocketConnectBlockedError, match="10.255.255.1"):
        s.connect(("10.255.255.1", 80))
    with socket.socket() as server:  # the loopback stays open: every server in the tests listens there
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=5):
            pass


def test_a_subprocess_timeout_kills_the_whole_tree(tmp_path):
    """A child that starts a grandchild (as a pipeline run starts Ray) and hangs: on the timeout both are gone."""
    pid_file = tmp_path / "grandchild.pid"
    code = textwrap.dedent(f"""
        import subprocess, sys, time
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # noqa: proc (the child)
        open({str(pid_file)!r}, "w").write(str(g.pid))
        time.sleep(120)
    """)
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired):
        run_proc([sys.executable, "-c", code], timeout=5)
    grandchild = int(pid_file.read_text())
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    assert not family(grandchild)


def test_every_subprocess_in_the_tests_goes_through_proc():
    import re

    calls = re.compile(r"\bsubprocess\.(run|Popen|call|check_call|check_output)\(")
    offenders = [f"{p.name}:{n}" for p in sorted(TESTS.glob("*.py")) if p.name not in ("proc.py",)
                 for n, line in enumerate(p.read_text().splitlines(), 1) if calls.search(line)
                 and "# noqa: proc" not in line]
    assert not offenders, f"use tests/proc.py (kills the tree on a timeout): {offenders}"


def child_pytest(tmp_path, source, *args, env=None):
    (tmp_path / "test_child.py").write_text(textwrap.dedent(source))
    full_env = {**{k: v for k, v in os.environ.items() if k != "CI"}, **(env or {}),
                "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO_ROOT)])}
    return run_proc([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull, "--rootdir",
                     str(tmp_path), "-o", "markers=integration", *args, str(tmp_path / "test_child.py")],
                    cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=300)


SKIPPING = """
    import pytest

    def test_needs_chromium():
        pytest.skip("/usr/bin/chromium is not installed")

    def test_fine():
        assert True
"""


def test_in_ci_a_skip_is_a_failure(tmp_path):
    res = child_pytest(tmp_path, SKIPPING, "-p", "ci_policy", env={"CI": "true"})
    assert res.returncode == 1, res.stdout
    assert "1 failed, 1 passed" in res.stdout
    assert "CI=true: test_child.py::test_needs_chromium was skipped (Skipped: /usr/bin/chromium is not installed)" \
        in res.stdout


def test_outside_ci_a_skip_stays_a_skip(tmp_path):
    res = child_pytest(tmp_path, SKIPPING, "-p", "ci_policy", "-ra")
    assert res.returncode == 0 and "1 passed, 1 skipped" in res.stdout, res.stdout


def test_in_ci_a_module_skipped_at_import_is_a_failure(tmp_path):
    res = child_pytest(tmp_path, "import pytest\npytest.importorskip('no_such_module_here')\n\ndef test_x():\n    pass\n",
                       "-p", "ci_policy", env={"CI": "true"})
    assert res.returncode != 0 and "was skipped at collection" in res.stdout, res.stdout


TOUCHING_A_MODEL = """
    import onnxruntime
    import pytest

    def test_unmarked_loads_a_model():
        try:
            onnxruntime.InferenceSession("missing.onnx")
        except Exception:
            pass  # even swallowed, the guard's record fails the test

    @pytest.fixture(scope="module")
    def model():
        try:
            onnxruntime.InferenceSession("missing.onnx")
        except Exception:
            pass

    def test_unmarked_uses_a_module_fixture_that_loads_one(model):
        pass

    @pytest.mark.integration
    def test_marked_may_load_one():
        with pytest.raises(Exception, match="missing.onnx"):  # onnxruntime's own error: the guard let it through
            onnxruntime.InferenceSession("missing.onnx")
"""


def test_the_fast_tier_refuses_models_ray_and_servers(tmp_path):
    res = child_pytest(tmp_path, TOUCHING_A_MODEL, "-p", "unit_tier", "-ra")
    assert res.returncode == 1 and "1 failed, 1 passed, 1 error" in res.stdout, res.stdout
    assert "ERROR test_child.py::test_unmarked_uses_a_module_fixture_that_loads_one" in res.stdout
    assert ("test_child.py::test_unmarked_loads_a_model loads an ONNX model (DNSMOS, Piper) but is not marked "
            "integration: add @pytest.mark.integration") in res.stdout
