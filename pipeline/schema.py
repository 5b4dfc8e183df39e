"""The data model: the conversation and turn records, and every on-disk schema derived from them.

A conversation flows through the stages as one row of `CONVERSATION_SCHEMA` (Arrow is the transport;
`Conversation` and `Turn` are the same records typed for Python). Columns are filled progressively
(plan -> generate -> text -> voices -> tts -> verify); a rejected conversation keeps flowing with its
`reject_*` columns set, so the shard stage records it exactly once, beside the kept ones.

Everything written to disk is derived here, in one place: the text cache (`TEXT_CACHE_SCHEMA`), the plan file
(`SPEC_SCHEMA`), the manifest (`MANIFEST_SCHEMA`, `manifest_rows`), the rejects table (`REJECTS_SCHEMA`,
`rejects_rows`), the small outcome rows the driver counts (`OUTCOME_SCHEMA`), the sample JSON of every
WebDataset sample (`conversation_samples`, `SAMPLE_SCHEMA_VERSION`) and the Hugging Face features that
describe it (`SAMPLE_FIELDS`, read by the dataset card).
"""

from __future__ import annotations

import json
from typing import Any, TypedDict

import pyarrow as pa

from pipeline.ids import sample_key
from pipeline.reasons import Failure

# --- the records ---------------------------------------------------------------------------------------


class Turn(TypedDict):
    role: str                 # "user" | "assistant"
    display_text: str         # as the LLM wrote it
    spoken_text: str | None   # normalised for speech (what TTS reads and ASR is scored against)
    speaker_id: str | None
    audio_flac: bytes | None  # 16-bit FLAC, mono
    sample_rate: int | None
    duration_s: float | None
    asr_text: str | None
    error_rate: float | None
    dnsmos_ovrl: float | None  # DNSMOS overall 1-5 (verify.dnsmos); null when not measured
    dnsmos_sig: float | None
    dnsmos_bak: float | None
    dnsmos_p808: float | None
    speaker_similarity: float | None  # cosine to the assigned voice (verify.speaker_consistency)
    tts_attempts: int | None  # syntheses of the kept audio's TTS call (1 = first try; more: retries after errors)
    # audio checks (pipeline/quality/audio_checks.py), measured on the kept audio; null when not measured
    leading_silence_s: float | None
    trailing_silence_s: float | None
    max_pause_s: float | None
    clipped_fraction: float | None
    loudness_lufs: float | None
    speech_rate: float | None  # words/s (en) or characters/s (zh) over the speech span
    # re-synthesis (verify.resynthesis_rounds)
    synthesis_attempts: int | None  # every synthesis of this turn: TTS retries and re-syntheses (1 = first try)
    synthesis_seed: int | None      # the seed of the synthesis whose audio the turn holds
    resyntheses: int | None         # times verify sent this turn back to TTS (0: passed at once)
    verified: bool | None           # passed every verify check (a turn with audio and False awaits verify)
    failed_attempts: list[dict[str, Any]] | None  # pipeline.reasons.Failure rows of its syntheses that failed verify
    asr_words: list[dict[str, Any]] | None  # ASR word timings {word, start, end} (duplex interruptions need them)
    clean_audio_flac: bytes | None  # the audio before user-side augmentation (then audio_flac is augmented)
    augmentation: str | None  # the augmentation recipe as JSON (pipeline.render.augment), with augmented DNSMOS


class Conversation(TypedDict):
    conversation_id: str
    plan_index: int
    dataset: str
    language: str
    split: str
    domain: str
    topic: str
    scenario: str
    persona: str
    num_exchanges: int
    seed: int
    text_digest: str
    llm_model: str | None
    llm_requests: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    user_speaker_id: str | None
    assistant_speaker_id: str | None
    tts_model: str | None
    asr_model: str | None
    source_messages: list[dict[str, str]] | None  # a source dialogue to rewrite (source.kind: dataset)
    turns: list[Turn] | None
    personal_data: list[dict[str, Any]] | None  # {kind, found, replaced} per kind found (personal_data stage)
    near_dup_signature: list[int] | None  # MinHash of the spoken text (near_dup stage; kept under state/ by shard)
    judge_scores: dict[str, int] | None  # JUDGE_CRITERIA -> 1-5, -1 each when the judge could not score
    judge_model: str | None
    reject_stage: str | None
    reject_reason: str | None  # a code of pipeline.reasons.REASONS
    reject_details: str | None
    reject_failures: list[dict[str, Any]] | None  # pipeline.reasons.Failure rows
    tts_busy_s: float | None     # seconds TTS workers spent on this conversation (every synthesis)
    verify_busy_s: float | None  # seconds verify workers spent on it (every round)
    backchannels: list[dict[str, Any]] | None  # duplex: {role, text, audio_flac, sample_rate} in each side's voice
    duplex_json: str | None   # duplex: the timeline (pipeline.render.duplex), JSON
    duplex_flac: bytes | None  # duplex: stereo 16 kHz FLAC, channel 0 user, channel 1 assistant
    reject_duplicate_of: str | None  # near_duplicate: the conversation this one copies


FAILURE_TYPE = pa.struct([("turn", pa.int32()), ("role", pa.string()), ("metric", pa.string()),
                          ("value", pa.float64()), ("limit", pa.float64()), ("reason", pa.string()),
                          ("attempt", pa.int32()), ("seed", pa.int64())])

# what the judge scores (pipeline/llm/judge.py asks for exactly these, 1-5)
JUDGE_CRITERIA = ("speech_naturalness", "coherence", "helpfulness", "safety")
JUDGE_TYPE = pa.struct([(c, pa.int32()) for c in JUDGE_CRITERIA])
# personal data found in one conversation, per kind (pipeline/quality/personal_data.py KINDS)
PERSONAL_DATA_TYPE = pa.list_(pa.struct([("kind", pa.string()), ("found", pa.int32()), ("replaced", pa.int32())]))

TURN_TYPE = pa.struct([
    ("role", pa.string()), ("display_text", pa.string()), ("spoken_text", pa.string()), ("speaker_id", pa.string()),
    ("audio_flac", pa.binary()), ("sample_rate", pa.int32()), ("duration_s", pa.float64()), ("asr_text", pa.string()),
    ("error_rate", pa.float64()), ("dnsmos_ovrl", pa.float64()), ("dnsmos_sig", pa.float64()),
    ("dnsmos_bak", pa.float64()), ("dnsmos_p808", pa.float64()), ("speaker_similarity", pa.float64()),
    ("tts_attempts", pa.int32()),
    ("leading_silence_s", pa.float64()), ("trailing_silence_s", pa.float64()), ("max_pause_s", pa.float64()),
    ("clipped_fraction", pa.float64()), ("loudness_lufs", pa.float64()), ("speech_rate", pa.float64()),
    ("synthesis_attempts", pa.int32()), ("synthesis_seed", pa.int64()), ("resyntheses", pa.int32()),
    ("verified", pa.bool_()), ("failed_attempts", pa.list_(FAILURE_TYPE)),
    ("asr_words", pa.list_(pa.struct([("word", pa.string()), ("start", pa.float64()), ("end", pa.float64())]))),
    ("clean_audio_flac", pa.binary()), ("augmentation", pa.string()),
])
BACKCHANNEL_TYPE = pa.struct([("role", pa.string()), ("text", pa.string()), ("audio_flac", pa.binary()),
                              ("sample_rate", pa.int32())])

CONVERSATION_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("plan_index", pa.int64()), ("dataset", pa.string()), ("language", pa.string()),
    ("split", pa.string()), ("domain", pa.string()), ("topic", pa.string()), ("scenario", pa.string()),
    ("persona", pa.string()), ("num_exchanges", pa.int32()), ("seed", pa.int64()), ("text_digest", pa.string()),
    ("llm_model", pa.string()), ("llm_requests", pa.int32()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("tts_model", pa.string()), ("asr_model", pa.string()),
    ("source_messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("turns", pa.list_(TURN_TYPE)),
    ("personal_data", PERSONAL_DATA_TYPE), ("near_dup_signature", pa.list_(pa.uint32())),
    ("judge_scores", JUDGE_TYPE), ("judge_model", pa.string()),
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("reject_details", pa.string()),
    ("reject_failures", pa.list_(FAILURE_TYPE)), ("reject_duplicate_of", pa.string()),
    ("tts_busy_s", pa.float64()), ("verify_busy_s", pa.float64()),
    ("backchannels", pa.list_(BACKCHANNEL_TYPE)), ("duplex_json", pa.string()), ("duplex_flac", pa.binary()),
])

TURN_FIELDS = [f.name for f in TURN_TYPE]
BUSY_COLUMNS = frozenset(name for name in CONVERSATION_SCHEMA.names if name.endswith("_busy_s"))


def _columns(names: tuple[str, ...], schema: pa.Schema = CONVERSATION_SCHEMA) -> list[pa.Field]:
    return [schema.field(name) for name in names]


# --- derived on-disk schemas ----------------------------------------------------------------------------

# text/part-*.parquet: a generated conversation's spec and turns (role + display text), before any audio
TEXT_TURN_TYPE = pa.struct([TURN_TYPE.field("role"), TURN_TYPE.field("display_text")])
TEXT_CACHE_SCHEMA = pa.schema(_columns((
    "conversation_id", "plan_index", "dataset", "language", "domain", "topic", "scenario", "persona", "num_exchanges",
    "seed", "text_digest", "llm_model", "llm_requests", "prompt_tokens", "completion_tokens",
)) + [pa.field("turns", pa.list_(TEXT_TURN_TYPE))])

# `speechchat plan --out specs.parquet`: one row per planned conversation
SPEC_COLUMNS = ("conversation_id", "plan_index", "dataset", "language", "split", "topic", "domain", "scenario",
                "persona", "num_exchanges", "seed", "text_digest")
SPEC_SCHEMA = pa.schema(_columns(SPEC_COLUMNS))

# manifest/shard-*.parquet: one row per sample (exchange)
MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("conversation_id", pa.string()), ("exchange_index", pa.int32()),
    ("exchange_count", pa.int32()), ("language", pa.string()), ("split", pa.string()), ("domain", pa.string()),
    ("topic", pa.string()), ("scenario", pa.string()),
    ("shard", pa.string()), ("shard_sha256", pa.string()), ("offset", pa.int64()),
    ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("user_duration_s", pa.float64()), ("assistant_duration_s", pa.float64()),
    ("user_error_rate", pa.float64()), ("assistant_error_rate", pa.float64()),
    # added with sample schema 2 (older manifest parts lack them; readers promote to null)
    ("user_dnsmos_ovrl", pa.float64()), ("assistant_dnsmos_ovrl", pa.float64()),
    ("user_speaker_similarity", pa.float64()), ("assistant_speaker_similarity", pa.float64()),
    # added with sample schema 3: syntheses per side (TTS retries and re-syntheses; 1 = first try)
    ("user_synthesis_attempts", pa.int32()), ("assistant_synthesis_attempts", pa.int32()),
    # also sample schema 3: the judge's scores (null: no judge; -1: it could not score) and the personal
    # data found in the conversation (both per conversation, repeated on each of its exchanges)
    *[(f"judge_{c}", pa.int32()) for c in JUDGE_CRITERIA], ("personal_data", PERSONAL_DATA_TYPE),
])

# state/near_dup/<shard name>.parquet: the MinHash signature of every conversation a run kept (or generated, in a
# text-only run), preloaded by the next run's near-duplicate index
SIGNATURE_SCHEMA = pa.schema([("conversation_id", pa.string()), ("settings", pa.string()),
                              ("signature", pa.list_(pa.uint32()))])

# rejects/part-*.parquet: one row per rejected conversation. turn..limit are the primary failure, `failures`
# every measured one (columns added after schema 2's first parts; readers promote missing ones to null)
REJECTS_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("language", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("details", pa.string()), ("topic", pa.string()),
    ("turn", pa.int32()), ("role", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("limit", pa.float64()), ("failures", pa.list_(FAILURE_TYPE)),
    ("duplicate_of", pa.string()),  # near_duplicate: the conversation (or source record) it copies
])

# what the shard stage returns to the driver: one small row per conversation (no audio)
OUTCOME_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("language", pa.string()),
    ("outcome", pa.string()),  # "kept" | "rejected" | "generated" (a text-only run)
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("exchanges", pa.int32()),
    ("audio_s", pa.float64()), ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("shard", pa.string()), ("llm_requests", pa.int32()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    # cost and re-synthesis bookkeeping (last_run.cost and last_run.resynthesis in stats.json)
    ("tts_busy_s", pa.float64()), ("verify_busy_s", pa.float64()),
    ("synthesis_attempts", pa.int32()),    # over the conversation's turns
    ("turns_resynthesised", pa.int32()),   # turns verify sent back to TTS at least once
    ("turns_recovered", pa.int32()),       # of those, turns that then passed verify
])


# --- rows ---------------------------------------------------------------------------------------------------


def empty_turn(role: str, display_text: str) -> dict[str, Any]:
    turn = {name: None for name in TURN_FIELDS}
    turn.update(role=role, display_text=display_text)
    return turn


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema = CONVERSATION_SCHEMA) -> pa.Table:
    """Build a table with the fixed schema (missing columns become null) so batches always concatenate."""
    # column lists: a third of the time of `from_pylist` over row dicts (the shard writer builds one per shard)
    return pa.Table.from_pydict({name: [row.get(name) for row in rows] for name in schema.names}, schema=schema)


def table_to_rows(batch: pa.Table | dict) -> list[dict[str, Any]]:
    if isinstance(batch, pa.Table):
        return batch.to_pylist()
    # Ray may hand a dict of numpy arrays when a batch format is not forced; normalise it.
    return pa.Table.from_pydict({k: list(v) for k, v in batch.items()}).to_pylist()


def is_rejected(row: dict[str, Any]) -> bool:
    return row.get("reject_reason") is not None


def awaits_synthesis(turn: dict[str, Any]) -> bool:
    """A turn with no audio yet: never synthesised, or sent back by verify for re-synthesis."""
    return turn.get("audio_flac") is None


def has_pending_turns(row: dict[str, Any]) -> bool:
    """A live conversation with a turn to synthesise or verify still (the re-synthesis loop goes on for it)."""
    return not is_rejected(row) and any(awaits_synthesis(t) or not t.get("verified") for t in row.get("turns") or [])


def batch_has_pending_turns(batch: pa.Table) -> bool:
    """`has_pending_turns` for any row of a table, read from two turn fields without converting the audio."""
    import pyarrow.compute as pc

    turns = batch.column("turns").combine_chunks()
    if len(turns) == 0:
        return False
    flat = pc.list_flatten(turns)
    waiting = pc.or_(pc.is_null(flat.field("audio_flac")), pc.invert(pc.fill_null(flat.field("verified"), False)))
    rows = set(pc.filter(pc.list_parent_indices(turns), waiting).to_pylist())
    live = pc.is_null(batch.column("reject_reason")).to_pylist()
    return any(live[i] for i in rows)


def resynthesis_counts(row: dict[str, Any]) -> dict[str, int]:
    """Syntheses over a conversation's turns, turns re-synthesised, and those that then passed verify."""
    turns = row.get("turns") or []
    again = [t for t in turns if t.get("resyntheses")]
    return {"synthesis_attempts": sum(t.get("synthesis_attempts") or 0 for t in turns),
            "turns_resynthesised": len(again), "turns_recovered": sum(1 for t in again if t.get("verified"))}


def reject(row: dict[str, Any], stage: str, reason: str, details: str = "",
           failures: list[Failure] | tuple[Failure, ...] = (), duplicate_of: str | None = None) -> dict[str, Any]:
    """Mark a conversation rejected (first reason wins) and drop its audio to keep the stream light."""
    if not is_rejected(row):
        row["reject_stage"], row["reject_reason"], row["reject_details"] = stage, reason, details[:2000]
        row["reject_failures"] = [f.as_row() for f in failures] or None
        row["reject_duplicate_of"] = duplicate_of
    for turn in row.get("turns") or []:
        turn["audio_flac"] = turn["clean_audio_flac"] = None
    row["backchannels"] = row["duplex_flac"] = None
    return row


def usage(row: dict[str, Any]) -> dict[str, int]:
    """The LLM usage a conversation cost (zero for one spoken from the text cache)."""
    return {k: row.get(k) or 0 for k in ("llm_requests", "prompt_tokens", "completion_tokens")}


def rejects_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rejected conversations as rows of REJECTS_SCHEMA."""
    out = []
    for r in rows:
        failures = r.get("reject_failures") or []
        primary = failures[0] if failures else {}
        out.append({"conversation_id": r["conversation_id"], "language": r["language"], "stage": r["reject_stage"],
                    "reason": r["reject_reason"], "details": r["reject_details"] or "", "topic": r["topic"],
                    **{k: primary.get(k) for k in ("turn", "role", "metric", "value", "limit")},
                    "failures": failures or None, "duplicate_of": r.get("reject_duplicate_of")})
    return out


# --- the sample contract: one WebDataset sample per exchange -------------------------------------------

SAMPLE_SCHEMA_VERSION = 3  # 2: per-side dnsmos_* and speaker_similarity; 3: per-side audio checks,
# synthesis_attempts and augmentation, the optional {key}.user_clean.flac; judge, personal_data_replaced,
# models.judge

# user-side augmentation (pipeline.render.augment); on a side that was not augmented: seed -1, no kinds, -1 scores
AUGMENTATION_FIELDS: list[tuple[str, Any, str]] = [
    ("seed", "int64", "the recipe's seed; -1: not augmented"),
    ("kinds", ("list", "string"), "steps applied, in order: reverb, noise, telephone, codec, gain"),
    ("snr_db", "float64", "signal-to-noise ratio of the added noise (RMS over the clip); -1: no noise"),
    ("rt60_s", "float64", "RT60 of the simulated room; -1: no room"),
    ("codec", "string", "telephone (mulaw, gsm at 8 kHz) or lossy (opus, mp3) codec; empty: none"),
    ("gain_db", "float64", "level change; 0: none"),
    ("dnsmos_ovrl", "float64", "DNSMOS overall of the augmented audio (the side's dnsmos_* score the clean); -1"),
    ("dnsmos_sig", "float64", "DNSMOS signal quality of the augmented audio; -1 if not measured"),
    ("dnsmos_bak", "float64", "DNSMOS background of the augmented audio; -1 if not measured"),
    ("dnsmos_p808", "float64", "DNSMOS P.808 of the augmented audio; -1 if not measured"),
    ("recipe", "string", "the whole recipe as JSON (room geometry, noise kind and file, bitrate, ...); empty: none"),
]

# The sample's JSON as `conversation_samples` writes it: (name, type, meaning), where a type is a `datasets`
# dtype, a list of fields (a struct) or ("list", dtype). The dataset card's features and field table come
# from it; a test compares it with real samples, so a field added below without one here fails loudly.
SIDE_FIELDS: list[tuple[str, Any, str]] = [
    ("display_text", "string", "the turn as the LLM wrote it"),
    ("spoken_text", "string", "normalised for speech: what the TTS model read"),
    ("asr_text", "string", "what the ASR model heard in the audio"),
    ("error_rate", "float64", "WER (English) or CER (Chinese) of asr_text against spoken_text; -1 if not measured"),
    ("speaker_id", "string", "voice from the speaker pool"),
    ("duration_s", "float64", "audio duration in seconds"),
    ("sample_rate", "int64", "audio sample rate in Hz"),
    ("dnsmos_ovrl", "float64", "DNSMOS overall quality (1-5); -1 if not measured"),
    ("dnsmos_sig", "float64", "DNSMOS speech signal quality (1-5); -1 if not measured"),
    ("dnsmos_bak", "float64", "DNSMOS background noise (1-5, 5 = clean); -1 if not measured"),
    ("dnsmos_p808", "float64", "DNSMOS P.808 MOS estimate (1-5); -1 if not measured"),
    ("speaker_similarity", "float64", "Resemblyzer cosine similarity to the assigned voice; -1 if not measured"),
    ("leading_silence_s", "float64", "silence before the first speech (Silero VAD), after trimming; -1 if not measured"),
    ("trailing_silence_s", "float64", "silence after the last speech, after trimming; -1 if not measured"),
    ("max_pause_s", "float64", "longest silence between two stretches of speech; -1 if not measured"),
    ("clipped_fraction", "float64", "fraction of samples at full scale; -1 if not measured"),
    ("loudness_lufs", "float64", "integrated loudness (ITU-R BS.1770), after normalisation; -100 if not measured"),
    ("speech_rate", "float64", "words (en) or characters (zh) per second of speech span; -1 if not measured"),
    ("synthesis_attempts", "int64", "syntheses this turn took: TTS retries and re-syntheses after failed "
                                    "verification (1 = the first synthesis passed)"),
    ("augmentation", AUGMENTATION_FIELDS, "user-side acoustic augmentation of this side's audio (the user only)"),
]
SAMPLE_FIELDS: list[tuple[str, Any, str]] = [
    ("schema_version", "int64", f"sample schema version ({SAMPLE_SCHEMA_VERSION})"),
    ("key", "string", "`{conversation_id}_{exchange:03d}`, the sample's WebDataset key"),
    ("conversation_id", "string", "content-addressed conversation ID"),
    ("exchange_index", "int64", "position of this exchange in the conversation (0-based)"),
    ("exchange_count", "int64", "exchanges in the conversation"),
    ("language", "string", "language code"),
    ("split", "string", "split name"),
    ("domain", "string", "topic domain from the taxonomy (`source` for rewritten datasets)"),
    ("topic", "string", "conversation topic"),
    ("scenario", "string", "conversation scenario (`rewrite` for rewritten datasets)"),
    ("persona", "string", "the user persona the LLM played"),
    ("history", "string", "earlier turns, one `role: display text` per line (empty for the first exchange)"),
    ("user", SIDE_FIELDS, "the user turn"),
    ("assistant", SIDE_FIELDS, "the assistant turn"),
    ("models", [("llm", "string", "text model"), ("tts", "string", "speech model, version and voice"),
                ("asr", "string", "verification model, version and compute type"),
                ("judge", "string", "the judge model that scored the text (empty: no judge)")], "models used"),
    ("judge", [(c, "int64", f"judge score for {c.replace('_', ' ')} (1-5); -1 if not scored")
               for c in JUDGE_CRITERIA], "the LLM judge's scores of the conversation's text (judge.enabled)"),
    ("personal_data_replaced", ("list", "string"),
     "kinds of personal data the pipeline replaced by placeholders in this conversation (phone, email, ...)"),
    ("config_digest", "string", "digest of the text-side config and prompts"),
    ("licenses", ("list", "string"), "licence tags of the models and corpora used"),
]
AUDIO_FILES = {"user.flac": "user speech, 16-bit FLAC, mono",
               "assistant.flac": "assistant speech, 16-bit FLAC, mono, at the TTS model's rate"}
SAMPLE_PARTS = {"json", *AUDIO_FILES}  # the members of every sample: {key}.json, {key}.user.flac, ...
# with augment.keep_clean, an augmented sample also holds the user audio before augmentation
OPTIONAL_AUDIO_FILES = {"user_clean.flac": "user speech before augmentation, 16-bit FLAC, 16 kHz mono"}


def _score(value: float | None) -> float:
    return float(value) if value is not None else -1.0  # -1: not measured (same convention as error_rate)


def side_json(turn: dict[str, Any]) -> dict[str, Any]:
    # No nulls: `datasets` infers column types from the first samples, and a null there breaks later rows.
    return {
        "display_text": turn["display_text"] or "",
        "spoken_text": turn["spoken_text"] or "",
        "asr_text": turn["asr_text"] or "",
        "error_rate": float(turn["error_rate"] if turn["error_rate"] is not None else -1.0),
        "speaker_id": turn["speaker_id"] or "",
        "duration_s": round(float(turn["duration_s"] or 0.0), 3),
        "sample_rate": int(turn["sample_rate"] or 0),
        **{k: _score(turn.get(k)) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808",
                                            "speaker_similarity", "leading_silence_s", "trailing_silence_s",
                                            "max_pause_s", "clipped_fraction", "speech_rate")},
        "loudness_lufs": float(turn["loudness_lufs"]) if turn.get("loudness_lufs") is not None else -100.0,
        "synthesis_attempts": int(turn.get("synthesis_attempts") or turn.get("tts_attempts") or 1),
        "augmentation": augmentation_json(turn.get("augmentation")),
    }


def augmentation_json(recipe_json: str | None) -> dict[str, Any]:
    """The sample's fixed-shape view of an augmentation recipe (AUGMENTATION_FIELDS), the full recipe inside."""
    recipe = json.loads(recipe_json) if recipe_json else {}
    dnsmos = recipe.get("dnsmos") or {}
    return {"seed": int(recipe.get("seed", -1)), "kinds": list(recipe.get("kinds", [])),
            "snr_db": float(recipe.get("snr_db", -1.0)), "rt60_s": float(recipe.get("rt60_s", -1.0)),
            "codec": recipe.get("codec") or "", "gain_db": float(recipe.get("gain_db", 0.0)),
            **{f"dnsmos_{k}": float(dnsmos.get(k, -1.0)) for k in ("ovrl", "sig", "bak", "p808")},
            "recipe": recipe_json or ""}


def judge_json(scores: dict[str, int | None] | None) -> dict[str, int]:
    """The sample JSON's `judge`: every criterion, -1 where there is no score (no nulls: see side_json)."""
    return {c: int(scores[c]) if scores and scores.get(c) is not None else -1 for c in JUDGE_CRITERIA}


def conversation_samples(row: dict[str, Any], license_tags: list[str],
                         keep_clean: bool = False) -> list[dict[str, Any]]:
    """One WebDataset sample per exchange: {key}.json, {key}.user.flac, {key}.assistant.flac (and, for an
    augmented user turn with `keep_clean`, {key}.user_clean.flac)."""
    turns = row["turns"]
    count = len(turns) // 2
    samples = []
    for ex in range(count):
        user, assistant = turns[2 * ex], turns[2 * ex + 1]
        history = [f"{t['role']}: {t['display_text']}" for t in turns[: 2 * ex]]
        meta = {
            "schema_version": SAMPLE_SCHEMA_VERSION,
            "key": sample_key(row["conversation_id"], ex),
            "conversation_id": row["conversation_id"],
            "exchange_index": ex,
            "exchange_count": count,
            "language": row["language"],
            "split": row["split"],
            "domain": row["domain"] or "",
            "topic": row["topic"],
            "scenario": row["scenario"],
            "persona": row["persona"],
            "history": "\n".join(history),
            "user": side_json(user),
            "assistant": side_json(assistant),
            "models": {"llm": row["llm_model"] or "", "tts": row["tts_model"] or "", "asr": row["asr_model"] or "",
                       "judge": row.get("judge_model") or ""},
            "judge": judge_json(row.get("judge_scores")),
            "personal_data_replaced": sorted(p["kind"] for p in row.get("personal_data") or [] if p["replaced"]),
            "config_digest": row["text_digest"],
            "licenses": list(license_tags),
        }
        sample = {"__key__": meta["key"], "json": json.dumps(meta, ensure_ascii=False).encode(),
                  "user.flac": user["audio_flac"], "assistant.flac": assistant["audio_flac"]}
        if keep_clean and user.get("clean_audio_flac"):
            sample["user_clean.flac"] = user["clean_audio_flac"]
        samples.append(sample)
    return samples


def manifest_rows(rows: list[dict[str, Any]], language: str, split: str, shard: str, offsets: dict[str, int],
                  digest: str) -> list[dict[str, Any]]:
    """Rows of MANIFEST_SCHEMA for the conversations written to one shard (`offsets`: each key's byte offset)."""
    manifest = []
    for row in rows:
        turns = row["turns"]
        for ex in range(len(turns) // 2):
            key, user, assistant = sample_key(row["conversation_id"], ex), turns[2 * ex], turns[2 * ex + 1]
            manifest.append({
                "key": key, "conversation_id": row["conversation_id"], "exchange_index": ex,
                "exchange_count": len(turns) // 2, "language": language, "split": split,
                "domain": row["domain"] or "", "topic": row["topic"], "scenario": row["scenario"],
                "shard": shard, "shard_sha256": digest, "offset": offsets[key],
                "user_speaker_id": user["speaker_id"], "assistant_speaker_id": assistant["speaker_id"],
                "user_duration_s": user["duration_s"], "assistant_duration_s": assistant["duration_s"],
                "user_error_rate": user["error_rate"], "assistant_error_rate": assistant["error_rate"],
                "user_dnsmos_ovrl": user.get("dnsmos_ovrl"), "assistant_dnsmos_ovrl": assistant.get("dnsmos_ovrl"),
                "user_speaker_similarity": user.get("speaker_similarity"),
                "assistant_speaker_similarity": assistant.get("speaker_similarity"),
                "user_synthesis_attempts": user.get("synthesis_attempts"),
                "assistant_synthesis_attempts": assistant.get("synthesis_attempts"),
                **{f"judge_{c}": (row.get("judge_scores") or {}).get(c) for c in JUDGE_CRITERIA},
                "personal_data": row.get("personal_data"),
            })
    return manifest


# --- the duplex subset: one WebDataset sample per conversation (duplex.enabled) -------------------------

DUPLEX_SCHEMA_VERSION = 1
DUPLEX_SEGMENT_FIELDS: list[tuple[str, Any, str]] = [
    ("channel", "int64", "0 the user, 1 the assistant"),
    ("role", "string", "user or assistant"),
    ("kind", "string", "turn, backchannel or interrupted_turn"),
    ("start", "float64", "seconds from the start of the recording"),
    ("end", "float64", "seconds; an interrupted turn ends at its cut"),
    ("text", "string", "what is heard (an interrupted turn: the spoken part only)"),
    ("turn", "int64", "the conversation turn (a backchannel: the turn it is said during)"),
    ("speaker_id", "string", "voice from the speaker pool"),
    ("unspoken_text", "string", "interrupted_turn: the rest of the turn, never said; empty otherwise"),
    ("cut_s", "float64", "interrupted_turn: where the turn's audio stops, from its own start; -1 otherwise"),
    ("interrupted_at", "float64", "interrupted_turn: when the user started speaking; -1 otherwise"),
]
DUPLEX_RATE_FIELDS: list[tuple[str, Any, str]] = [
    (name, kind, meaning) for name, kind, meaning in [
        ("seed", "int64", "duplex.seed"), ("gap_median_s", "float64", ""), ("gap_sigma", "float64", ""),
        ("gap_min_s", "float64", ""), ("gap_max_s", "float64", ""), ("overlap_rate", "float64", ""),
        ("overlap_min_s", "float64", ""), ("overlap_max_s", "float64", ""), ("backchannel_rate", "float64", ""),
        ("backchannel_roles", ("list", "string"), ""), ("backchannel_min_turn_s", "float64", ""),
        ("backchannel_min_pause_s", "float64", ""), ("backchannel_max_per_turn", "int64", ""),
        ("backchannel_max_s", "float64", ""), ("backchannel_texts", ("list", "string"), "this language's"),
        ("interruption_rate", "float64", ""), ("interruption_min_turn_s", "float64", ""),
        ("interruption_min_spoken_s", "float64", ""), ("interruption_min_unspoken_s", "float64", ""),
        ("interruption_reaction_min_s", "float64", ""), ("interruption_reaction_max_s", "float64", ""),
        ("pause_detector", "string", ""), ("lead_in_s", "float64", ""), ("tail_s", "float64", ""),
        ("sample_rate", "int64", "")]]
DUPLEX_COUNT_FIELDS: list[tuple[str, Any, str]] = [
    (name, "int64", meaning) for name, meaning in [
        ("transitions", "turn changes that were not interruptions"), ("overlaps", "of those, overlapping"),
        ("interruption_opportunities", "assistant turns a user turn could interrupt"),
        ("interruptions", "interrupted assistant turns"),
        ("backchannel_opportunities", "pauses eligible for a backchannel"), ("backchannels", "backchannels said")]]
DUPLEX_FIELDS: list[tuple[str, Any, str]] = [
    ("schema_version", "int64", f"duplex sample schema version ({DUPLEX_SCHEMA_VERSION})"),
    ("conversation_id", "string", "the conversation (its exchanges are in the main subset)"),
    ("language", "string", "language code"),
    ("split", "string", "split name"),
    ("sample_rate", "int64", "16000"),
    ("duration_s", "float64", "length of the stereo recording"),
    ("channels", ("list", "string"), "channel roles: [user, assistant]"),
    ("segments", ("list", DUPLEX_SEGMENT_FIELDS), "every segment of the timeline, by start time"),
    ("recipe", [("seed", "int64", "this conversation's timeline seed (from duplex.seed and the ID)"),
                ("rates", DUPLEX_RATE_FIELDS, "the duplex config the timeline was drawn with"),
                ("counts", DUPLEX_COUNT_FIELDS, "opportunities and events drawn")], "how the timeline was made"),
]
DUPLEX_AUDIO_FILES = {"duplex.flac": "stereo 16-bit FLAC, 16 kHz: channel 0 the user, channel 1 the assistant"}
DUPLEX_PARTS = {"json", *DUPLEX_AUDIO_FILES}

# manifest/duplex/shard-*.parquet: one row per duplex sample (written after its tar, before the main manifest part)
DUPLEX_MANIFEST_SCHEMA = pa.schema([
    ("key", pa.string()), ("conversation_id", pa.string()), ("language", pa.string()), ("split", pa.string()),
    ("shard", pa.string()), ("shard_sha256", pa.string()), ("offset", pa.int64()), ("duration_s", pa.float64()),
    ("segments", pa.int32()), ("overlaps", pa.int32()), ("backchannels", pa.int32()), ("interruptions", pa.int32()),
])


def duplex_sample(row: dict[str, Any]) -> dict[str, Any] | None:
    """A kept conversation's duplex sample ({conversation_id}.json + .duplex.flac), None when it has none."""
    if not row.get("duplex_flac") or not row.get("duplex_json"):
        return None
    timeline = json.loads(row["duplex_json"])
    meta = {"schema_version": DUPLEX_SCHEMA_VERSION, "conversation_id": row["conversation_id"],
            "language": row["language"], "split": row["split"], **timeline}
    return {"__key__": row["conversation_id"], "json": json.dumps(meta, ensure_ascii=False).encode(),
            "duplex.flac": row["duplex_flac"]}


def duplex_manifest_rows(rows: list[dict[str, Any]], language: str, split: str, shard: str,
                         offsets: dict[str, int], digest: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row["conversation_id"] not in offsets:
            continue
        timeline = json.loads(row["duplex_json"])
        counts = timeline["recipe"]["counts"]
        out.append({"key": row["conversation_id"], "conversation_id": row["conversation_id"], "language": language,
                    "split": split, "shard": shard, "shard_sha256": digest, "offset": offsets[row["conversation_id"]],
                    "duration_s": timeline["duration_s"], "segments": len(timeline["segments"]),
                    "overlaps": counts["overlaps"], "backchannels": counts["backchannels"],
                    "interruptions": counts["interruptions"]})
    return out
