"""The three entry points (script, module, console script) and their error handling; no Ray is started."""

import json
import os
import sys
from pathlib import Path

import pytest
from proc import run as run_proc

from pipeline.config import REPO_ROOT

ENTRY_POINTS = {
    "script": [sys.executable, "pipeline/main.py"],
    "module": [sys.executable, "-m", "pipeline"],
    "console": [str(Path(sys.executable).parent / "speechchat")],
}


def cli(entry, *args, cwd=REPO_ROOT):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return run_proc([*ENTRY_POINTS[entry], *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_validates_a_config(entry, tmp_path):
    if entry == "console" and not Path(ENTRY_POINTS["console"][0]).exists():
        pytest.fail("the `speechchat` console script is not installed (pip install -e .)")
    res = cli(entry, "check-config", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"),
              "plan.num_conversations=5")
    assert res.returncode == 0, res.stderr
    assert "num_conversations: 5" in res.stdout and f"out_dir: {tmp_path / 'o'}" in res.stdout
    assert "sk-" not in res.stdout


def test_script_works_from_another_directory(tmp_path):
    res = run_proc([sys.executable, str(REPO_ROOT / "pipeline/main.py"), "check-config", "--config",
                          str(REPO_ROOT / "configs/smoke.yaml")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert res.returncode == 0, res.stderr


def test_bad_config_exits_2_with_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"base: {REPO_ROOT / 'configs/base.yaml'}\nverify: {{max_wer: 2}}\nplan: {{num_conversation: 3}}\n")
    res = cli("script", "run", "--config", str(bad))
    assert res.returncode == 2
    assert "bad.yaml: verify.max_wer: Input should be less than or equal to 1 (got 2)" in res.stderr
    assert "bad.yaml: plan.num_conversation: unknown key" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_model_files_stop_before_work(tmp_path):
    res = cli("script", "run", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"),
              "tts.piper_voice=/nonexistent/voice.onnx", "voices.pool=speakers/none.jsonl")
    assert res.returncode == 2
    assert "tts.piper_voice: /nonexistent/voice.onnx does not exist" in res.stderr
    assert "speaker pool not found" in res.stderr
    assert not (tmp_path / "o").exists()  # nothing was started or written


@pytest.mark.parametrize("stages, message", [
    ("tts,shard", "tts, verify and shard run together"),
    ("generate,bogus", "unknown stage(s) ['bogus']"),
    ("text", "nothing to run"),
])
def test_bad_stage_selections_exit_2(stages, message, tmp_path):
    res = cli("script", "run", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"), "--stages", stages)
    assert res.returncode == 2 and message in res.stderr


def test_audio_only_run_without_cached_text_says_what_to_do(tmp_path):
    res = cli("script", "run", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"), "--stages",
              "tts,verify,shard")
    assert res.returncode == 2 and "no cached text" in res.stderr and "run the generate stage first" in res.stderr


def test_zh_full_run_without_weights_stops_before_work_saying_what_to_download(tmp_path):
    res = cli("script", "run", "--config", "configs/zh.yaml", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and not (tmp_path / "o").exists()
    assert "XTTS-v2 weights not found at models/XTTS-v2: download coqui/XTTS-v2" in res.stderr
    assert "set tts.model=" in res.stderr and "speaker pool not found" in res.stderr
    assert "speechchat speakers import" in res.stderr
    piper = cli("script", "check-config", "--config", "configs/zh.yaml", "tts.backend=piper", "tts.num_gpus=0",
                "voices.pool=speakers/piper_en.jsonl", "voices.assistant_speaker=piper-en_US-joe-medium")
    assert piper.returncode == 2 and "tts.backend piper" in piper.stderr and "--stages generate" in piper.stderr
    ok = cli("script", "check-config", "--config", "configs/zh.yaml", "--stages", "generate")
    assert ok.returncode == 0, ok.stderr


def test_stages_plan_alone_plans_and_calls_no_llm(tmp_path):
    """`--stages plan` is the planner alone: every spec to <out>/plan/specs.parquet, no LLM (its address is dead)."""
    import pyarrow.parquet as pq

    res = cli("script", "run", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"), "--stages", "plan",
              "plan.num_conversations=5", "llm.base_url=http://127.0.0.1:9/v1")
    assert res.returncode == 0, res.stderr
    specs = pq.read_table(tmp_path / "o/plan/specs.parquet").to_pylist()
    assert len(specs) == 5 and len({s["conversation_id"] for s in specs}) == 5
    assert "5 conversation specs" in res.stdout and not (tmp_path / "o/text").exists()
    # the plan marks the output as the pipeline's: a later run there needs no --adopt-output, another dataset does
    marker = json.loads((tmp_path / "o/.speechchat-output.json").read_text())
    assert marker["dataset"] == "speechchat-smoke"
    assert cli("script", "check-config", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o")).returncode == 0
    other = cli("script", "check-config", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"), "dataset=other")
    assert other.returncode == 2 and "holds the dataset 'speechchat-smoke'" in other.stderr and "--adopt-output" in other.stderr


@pytest.mark.parametrize("stages", ["text", "voices", "text,voices"])
def test_text_or_voices_alone_say_what_they_run_with(stages, tmp_path):
    res = cli("script", "run", "--config", "configs/smoke.yaml", "--out", str(tmp_path / "o"), "--stages", stages)
    assert res.returncode == 2 and "run with tts,verify,shard" in res.stderr and "generate for text only" in res.stderr
