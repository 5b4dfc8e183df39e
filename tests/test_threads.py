"""Threads per model actor (pipeline/threads.py): counts follow the CPU reservation, models given a thread count
build sessions with it and produce the same output as with the libraries' defaults. Real Piper, DNSMOS and
faster-whisper; a local Ray only for the verify pool's size."""

import subprocess
import sys

import numpy as np
import pytest
from test_tts_verify import conversation

from pipeline.config import REPO_ROOT, ConfigError, VerifyConfig, load_config
from pipeline.schema import rows_to_table
from pipeline.stages.tts import TTSStage
from pipeline.stages.verify import VerifyStage
from pipeline.threads import threads_for
from pipeline.voices.pool import load_pool


@pytest.mark.parametrize(("num_cpus", "explicit", "threads"),
                         [(0.1, None, 1), (0.5, None, 1), (1, None, 1), (1.5, None, 2), (2, None, 2), (4, None, 4),
                          (0.5, 3, 3), (8, 1, 1)])
def test_threads_follow_the_cpu_reservation_unless_set(num_cpus, explicit, threads):
    assert threads_for(num_cpus, explicit) == threads


def test_config_keys_and_defaults():
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", [], None)
    assert (cfg.tts.cpu_threads, cfg.verify.cpu_threads, cfg.verify.max_actors) == (None, None, "auto")
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml", ["verify.max_actors=3", "verify.cpu_threads=2",
                                                         "tts.cpu_threads=1"], None)
    assert (cfg.verify.max_actors, cfg.verify.cpu_threads, cfg.tts.cpu_threads) == (3, 2, 1)
    for bad in ("verify.max_actors=0", "verify.max_actors=many", "verify.cpu_threads=0", "tts.cpu_threads=-1"):
        with pytest.raises(ConfigError, match=bad.split("=")[0].replace(".", r"\.")):
            load_config(REPO_ROOT / "configs/smoke.yaml", [bad], None)


def test_limit_threads_caps_blas_and_the_environment():
    """In a fresh process (the limit is process-wide): BLAS pools and the variables for later libraries."""
    code = ("import os, numpy; from threadpoolctl import threadpool_info; from pipeline.threads import limit_threads; "
            "limit_threads(1); print(os.environ['OMP_NUM_THREADS'], max(p['num_threads'] for p in threadpool_info()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                         timeout=120, env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["1", "1"]


@pytest.fixture(scope="module")
def good_row():
    return conversation("en-threads", [("Where is the station?",) * 2,
                                       ("It is two streets away, next to the bank.",) * 2])


def test_piper_with_one_thread_speaks_the_same_audio(good_row):
    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    noise = {"noise_scale": 0.0, "noise_w_scale": 0.0}
    one = TTSStage("piper", None, pool, backend_options=noise, threads=1)
    default = TTSStage("piper", None, pool, backend_options=noise)
    a = one(rows_to_table([good_row])).to_pylist()[0]
    b = default(rows_to_table([good_row])).to_pylist()[0]
    assert one.backend.threads == 1 and default.backend.threads is None
    voice = next(iter(one.backend._voices.values()))
    assert voice.session.get_session_options().intra_op_num_threads == 1
    assert a["reject_reason"] is None and b["reject_reason"] is None
    for ta, tb in zip(a["turns"], b["turns"]):
        assert ta["duration_s"] == pytest.approx(tb["duration_s"], abs=0.02) and ta["duration_s"] > 0.5


def test_verify_with_one_thread_hears_and_scores_like_the_default(good_row):
    pool = load_pool(REPO_ROOT / "speakers/piper_en.jsonl")
    spoken = TTSStage("piper", None, pool, backend_options={"noise_scale": 0.0, "noise_w_scale": 0.0})(
        rows_to_table([good_row])).to_pylist()[0]
    one = VerifyStage(VerifyConfig(), None, threads=1)
    a = one(rows_to_table([spoken])).to_pylist()[0]
    b = VerifyStage(VerifyConfig(), None)(rows_to_table([spoken])).to_pylist()[0]
    assert one.dnsmos._model.onnx_sess.get_session_options().intra_op_num_threads == 1
    assert a["reject_reason"] is None and "station" in a["turns"][0]["asr_text"].lower()
    for ta, tb in zip(a["turns"], b["turns"]):
        assert ta["asr_text"] == tb["asr_text"]
        assert np.isclose(ta["dnsmos_ovrl"], tb["dnsmos_ovrl"], atol=0.01)


def test_verify_pool_auto_fills_the_cluster_cpus(ray_session):
    from pipeline.executor.ray_data import actor_pool as verify_pool

    cpus = int(ray_session.cluster_resources()["CPU"])
    auto = verify_pool("auto", 1)
    assert auto.min_size == auto.max_size == cpus
    assert verify_pool("auto", cpus + 1).min_size == 1  # never zero actors
    grown = verify_pool(3, 1)
    assert (grown.min_size, grown.max_size) == (1, 3)


@pytest.mark.parametrize("gpus, share, actors", [(2, 0.25, 8), (1, 0.1, 10), (1, 0.3, 3), (0, 0.5, 1)])
def test_verify_pool_auto_with_a_gpu_share_counts_gpus_not_cpus(monkeypatch, gpus, share, actors):
    """With verify.num_gpus the pool is as many actors as the shares fit on the GPUs. The cluster's resource
    table is a stand-in here (the test machine has no GPU); the pool arithmetic is the real code."""
    import ray

    from pipeline.executor.ray_data import actor_pool as verify_pool

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": float(gpus)})
    pool = verify_pool("auto", 1, share)
    assert (pool.min_size, pool.max_size) == (actors, actors)
