"""Property-based tests (hypothesis) of the parts that take data from outside: config overrides, speaker
manifests, LLM JSON, source records, text normalisation, IDs and paths. Each property says what must hold
for every input, not for the handful of examples a person thought of; hypothesis shrinks a failure to the
smallest input that breaks it. Example counts: the `ci` profile below (HYPOTHESIS_PROFILE=ci, set by .ci/run)
runs more; `pytest --hypothesis-show-statistics` prints them per test."""

from __future__ import annotations

import json
import os
import re
import string
from pathlib import Path

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pipeline.config import REPO_ROOT, SAFE_NAME, ConfigError, LLMConfig, load_config
from pipeline.ids import conversation_id, id_to_u64, sample_key, split_for
from pipeline.io.layout import Layout
from pipeline.llm.parse import parse_conversation
from pipeline.normalize.en import normalize_en
from pipeline.normalize.zh import normalize_zh
from pipeline.reasons import Rejected
from pipeline.stages.source import exchanges_of, to_messages, unsuitable_for_speech
from pipeline.voices.pool import ReferenceClip, load_pool, reference_path

settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

BASE = REPO_ROOT / "configs/base.yaml"
SAFE = st.from_regex(SAFE_NAME, fullmatch=True)
WORDS = st.lists(st.sampled_from(["hello", "the", "market", "opens", "at", "nine", "tomorrow", "coffee", "please",
                                  "what", "is", "your", "favourite", "book", "I", "think", "so"]), min_size=1, max_size=12)
NUMBERISH = st.one_of(st.integers(0, 10**9).map(str), st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.2f}"),
                      st.sampled_from(["$5", "£3.50", "€12", "45%", "3rd", "1999", "10:30", "7 km", "5kg", "2-4",
                                       "1,000,000", "2023-05-01", "3/4", "+", "&", "#1", "°C"]))


# --- config overrides --------------------------------------------------------------------------------


def config_keys() -> list[str]:
    import yaml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in ("exchanges", "languages", "splits", "engine_kwargs"):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"
    return sorted(flat(yaml.safe_load(BASE.read_text())))


KEYS = config_keys()


@given(key=st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=30)),
       value=st.one_of(st.text(max_size=40), st.integers(), st.floats(allow_nan=True), st.booleans(),
                       st.lists(st.integers(), max_size=3)))
@example(key="plan.num_conversations", value="-5")
@example(key="tts.max_actors", value="[1, {")
@example(key="dataset", value="../../etc")
def test_any_override_is_a_valid_config_or_a_config_error(key, value, tmp_path_factory):
    text = f"{key}={value if isinstance(value, str) else json.dumps(value)}"
    try:
        cfg = load_config(BASE, [text], tmp_path_factory.getbasetemp() / "out")
    except ConfigError as exc:  # never a traceback: a message naming the command line or the override
        message = str(exc)
        assert "command line" in message or "override" in message, message
        return
    # a config that loads is safe to use: its output folder and dataset name never leave their places
    assert SAFE_NAME.match(cfg.dataset) and all(SAFE_NAME.match(s) for s in cfg.shard.splits)


@given(n=st.integers(1, 10**7), seed=st.integers(0, 2**31 - 1))
def test_numeric_overrides_arrive_as_given(n, seed):
    cfg = load_config(BASE, [f"plan.num_conversations={n}", f"plan.seed={seed}"])
    assert (cfg.plan.num_conversations, cfg.plan.seed) == (n, seed)


# --- speaker manifests -------------------------------------------------------------------------------

JSONISH = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                       max_leaves=10)
SPEAKER_FIELDS = {"speaker_id": st.one_of(SAFE, st.text(max_size=70)), "language": st.sampled_from(["en", "zh", ""]),
                  "source": st.text(max_size=10), "license": st.text(max_size=10),
                  "backend": st.sampled_from(["piper", "vits", "xtts", "espeak"]),
                  "references": st.lists(st.fixed_dictionaries({"path": st.text(max_size=30),
                                                                "duration_s": st.floats(-1, 30),
                                                                "sample_rate": st.integers(-1, 48000)}), max_size=2)}


@given(records=st.lists(st.one_of(st.fixed_dictionaries({}, optional=SPEAKER_FIELDS), JSONISH,
                                  st.text(max_size=30)), min_size=0, max_size=5))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_any_speaker_manifest_loads_or_names_its_line(records, tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    try:
        pool = load_pool(path)
    except ConfigError as exc:
        assert str(path) in str(exc) and (re.search(r" line \d+: ", str(exc)) or "speaker pool is empty" in str(exc))
        return
    ids = [s.speaker_id for s in pool]
    assert ids and len(ids) == len(set(ids)) and all(SAFE_NAME.match(i) for i in ids)  # never a path


@given(clip=st.one_of(st.text(max_size=40), st.lists(st.sampled_from(["..", ".", "a", "b", "~", ""]), min_size=1,
                                                     max_size=6).map("/".join)))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_reference_clip_never_resolves_outside_the_pool_folder(clip, tmp_path):
    assume("\x00" not in clip)
    pool_file = tmp_path / "pool" / "pool.jsonl"
    pool_file.parent.mkdir(exist_ok=True)
    ref = ReferenceClip(path=clip, duration_s=1.0, sample_rate=16000)
    try:
        resolved = reference_path(pool_file, ref)
    except ConfigError as exc:
        assert "escapes the pool folder" in str(exc)
        return
    assert Path(clip).is_absolute() or pool_file.parent.resolve() in resolved.parents


# --- LLM JSON --------------------------------------------------------------------------------------

LLM_REASONS = {"llm_not_json", "llm_wrong_shape", "llm_wrong_exchange_count", "llm_control_characters",
               "llm_turn_too_short", "llm_turn_too_long", "llm_turn_not_prose", "llm_json_in_text", "llm_meta_text",
               "llm_wrong_language"}
TURN_TEXT = st.one_of(WORDS.map(" ".join), st.text(max_size=60), st.just(""), st.text(min_size=400, max_size=450))
EXCHANGES = st.lists(st.fixed_dictionaries({"user": TURN_TEXT, "assistant": TURN_TEXT}), max_size=4)


@given(content=st.one_of(
    st.text(max_size=200),
    EXCHANGES.map(lambda ex: json.dumps({"exchanges": ex})),
    EXCHANGES.map(lambda ex: "Sure! Here it is:\n```json\n" + json.dumps({"exchanges": ex}) + "\n```"),
    JSONISH.map(json.dumps)), n=st.integers(1, 4))
def test_any_llm_answer_becomes_valid_turns_or_a_registered_reason(content, n):
    cfg = LLMConfig()
    try:
        turns = parse_conversation(content, n, cfg, "en")
    except Rejected as exc:
        assert exc.reason in LLM_REASONS and exc.details is not None
        return
    assert [t["role"] for t in turns] == ["user", "assistant"] * n
    for t in turns:
        text = t["display_text"]
        assert cfg.min_turn_chars <= len(text) <= cfg.max_turn_chars and text == " ".join(text.split())
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", text)


# --- source records --------------------------------------------------------------------------------

SOURCE = st.one_of(
    JSONISH,
    st.fixed_dictionaries({"instruction": st.text(max_size=40), "output": st.text(max_size=60)},
                          optional={"input": st.text(max_size=20)}),
    st.fixed_dictionaries({"conversations": st.lists(st.fixed_dictionaries(
        {"from": st.sampled_from(["human", "gpt", "system", "user", "bot", 3]), "value": st.one_of(st.text(max_size=40),
                                                                                                  st.integers())}),
        max_size=5)}),
    st.fixed_dictionaries({"messages": st.one_of(st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool"]), "content": st.text(max_size=40)}), max_size=5),
        st.text(max_size=5))}))
SOURCE_REASONS = {"source_bad_shape", "source_no_exchange", "source_empty_turn", "source_has_code", "source_has_table",
                  "source_has_math", "source_answer_too_long"}


@given(record=SOURCE, max_exchanges=st.integers(1, 4))
def test_any_source_record_becomes_exchanges_or_a_registered_reason(record, max_exchanges):
    try:
        messages = exchanges_of(to_messages(record), max_exchanges)
    except Rejected as exc:
        assert exc.reason in SOURCE_REASONS
        return
    assert 2 <= len(messages) <= 2 * max_exchanges and len(messages) % 2 == 0
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    problem = unsuitable_for_speech(messages, 2000)
    assert problem is None or problem[0] in SOURCE_REASONS


# --- text normalisation ----------------------------------------------------------------------------


@given(text=st.one_of(st.lists(st.one_of(WORDS.map(" ".join), NUMBERISH, st.sampled_from(
    [".", ",", "!", "?", " - ", "**", "# ", "(", ")", "_", ":", "e.g"])), min_size=1, max_size=8).map(" ".join),
    st.text(max_size=60)))
@example(text="0_")   # found by this property: a digit next to an underscore was never spoken
@example(text="0:")   # found by this property: the final ':' was stripped, the next pass added '.'
@example(text="e.g")  # found by this property: the abbreviation ate the full stop strip_markup had added
def test_english_normalisation_is_idempotent(text):
    once = normalize_en(text)
    assert normalize_en(once) == once


@given(words=WORDS, noise=st.lists(st.one_of(NUMBERISH, st.sampled_from(["**", "`", "#", "https://x.io/a", "🙂"])),
                                   max_size=4))
def test_english_speech_never_normalises_to_nothing(words, noise):
    text = " ".join(noise[:2] + words + noise[2:])
    spoken = normalize_en(text)
    assert sum(c.isalpha() for c in spoken) >= sum(len(w) for w in words) // 2, (text, spoken)


HAN = st.text(alphabet="我你他们今天明早上去北京买了本书很好吗的是个人年月日时分元块", min_size=1, max_size=12)
ZH_NUMBERS = st.one_of(st.integers(0, 10**12).map(str), st.sampled_from(
    ["3.5", "2023年5月1日", "2023-05-01", "10:30", "50%", "￥20", "$3", "1/2", "3-5", "１２３", "٣", "13800138000",
     "第3", "2.5公斤", "-7", "0.05", "100km", "3×4", "No.5", "10²"]))


@given(parts=st.lists(st.one_of(HAN, ZH_NUMBERS, st.sampled_from(["，", "。", "？", " ", "abc", "**"])), min_size=1,
                      max_size=8))
def test_chinese_spoken_text_has_no_digits_left(parts):
    spoken = normalize_zh("".join(parts))
    assert not re.search(r"\d", spoken), ("".join(parts), spoken)


@given(parts=st.lists(st.one_of(HAN, ZH_NUMBERS, st.sampled_from(["，", "。", "？"])), min_size=1, max_size=8))
def test_chinese_normalisation_is_idempotent_and_keeps_the_speech(parts):
    text = "".join(parts)
    once = normalize_zh(text)
    assert normalize_zh(once) == once, (text, once)
    if re.search(r"[\u4e00-\u9fff]", text):
        assert re.search(r"[\u4e00-\u9fff]", once), (text, once)  # Chinese speech never normalises to nothing


# --- IDs and paths ---------------------------------------------------------------------------------


@given(dataset=SAFE, language=st.sampled_from(["en", "zh", "de"]), index=st.integers(0, 10**9),
       digest=st.text(alphabet=string.hexdigits, min_size=1, max_size=16), exchange=st.integers(0, 999))
def test_ids_and_keys_are_plain_names(dataset, language, index, digest, exchange):
    cid = conversation_id(dataset, language, index, digest)
    assert re.fullmatch(rf"{language}-[0-9a-f]{{16}}", cid)
    assert id_to_u64(cid) == int(cid.split("-")[1], 16)
    assert re.fullmatch(rf"{cid}_\d{{3}}", sample_key(cid, exchange)) and "." not in sample_key(cid, exchange)
    assert split_for(cid, {"train": 0.9, "test": 0.1}) in ("train", "test")


@given(name=st.text(max_size=80))
def test_a_dataset_or_split_name_that_could_leave_the_output_is_refused(name):
    escapes = "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith(".") or "\x00" in name
    try:
        cfg = load_config(BASE, [f"dataset={json.dumps(name)}", f"shard.splits={{{json.dumps(name)}: 1.0}}"])
    except ConfigError:
        return
    assert not escapes
    root = cfg.output_dir()
    assert root.parent == (REPO_ROOT / "out").resolve() and root.name == name
    shard_dir = Layout(root).shard_dir("en", name).resolve()
    assert root in shard_dir.parents


@given(dataset=SAFE, split=SAFE, language=SAFE)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_every_file_the_layout_names_is_inside_the_output(dataset, split, language, tmp_path):
    root = (tmp_path / dataset).resolve()
    layout = Layout(root)
    for path in (layout.shard_dir(language, split), layout.manifest, layout.rejects, layout.state, layout.data):
        assert root == path.resolve() or root in path.resolve().parents
