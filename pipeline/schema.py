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
    tts_attempts: int | None  # syntheses this turn took (1 = first try)


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
    reject_stage: str | None
    reject_reason: str | None  # a code of pipeline.reasons.REASONS
    reject_details: str | None
    reject_failures: list[dict[str, Any]] | None  # pipeline.reasons.Failure rows


FAILURE_TYPE = pa.struct([("turn", pa.int32()), ("role", pa.string()), ("metric", pa.string()),
                          ("value", pa.float64()), ("limit", pa.float64())])

TURN_TYPE = pa.struct([
    ("role", pa.string()), ("display_text", pa.string()), ("spoken_text", pa.string()), ("speaker_id", pa.string()),
    ("audio_flac", pa.binary()), ("sample_rate", pa.int32()), ("duration_s", pa.float64()), ("asr_text", pa.string()),
    ("error_rate", pa.float64()), ("dnsmos_ovrl", pa.float64()), ("dnsmos_sig", pa.float64()),
    ("dnsmos_bak", pa.float64()), ("dnsmos_p808", pa.float64()), ("speaker_similarity", pa.float64()),
    ("tts_attempts", pa.int32()),
])

CONVERSATION_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("plan_index", pa.int64()), ("dataset", pa.string()), ("language", pa.string()),
    ("split", pa.string()), ("domain", pa.string()), ("topic", pa.string()), ("scenario", pa.string()),
    ("persona", pa.string()), ("num_exchanges", pa.int32()), ("seed", pa.int64()), ("text_digest", pa.string()),
    ("llm_model", pa.string()), ("llm_requests", pa.int32()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("tts_model", pa.string()), ("asr_model", pa.string()),
    ("source_messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("turns", pa.list_(TURN_TYPE)),
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("reject_details", pa.string()),
    ("reject_failures", pa.list_(FAILURE_TYPE)),
])

TURN_FIELDS = [f.name for f in TURN_TYPE]


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
])

# rejects/part-*.parquet: one row per rejected conversation. turn..limit are the primary failure, `failures`
# every measured one (columns added after schema 2's first parts; readers promote missing ones to null)
REJECTS_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("language", pa.string()), ("stage", pa.string()),
    ("reason", pa.string()), ("details", pa.string()), ("topic", pa.string()),
    ("turn", pa.int32()), ("role", pa.string()), ("metric", pa.string()), ("value", pa.float64()),
    ("limit", pa.float64()), ("failures", pa.list_(FAILURE_TYPE)),
])

# what the shard stage returns to the driver: one small row per conversation (no audio)
OUTCOME_SCHEMA = pa.schema([
    ("conversation_id", pa.string()), ("language", pa.string()),
    ("outcome", pa.string()),  # "kept" | "rejected" | "generated" (a text-only run)
    ("reject_stage", pa.string()), ("reject_reason", pa.string()), ("exchanges", pa.int32()),
    ("audio_s", pa.float64()), ("user_speaker_id", pa.string()), ("assistant_speaker_id", pa.string()),
    ("shard", pa.string()), ("llm_requests", pa.int32()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
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


def reject(row: dict[str, Any], stage: str, reason: str, details: str = "",
           failures: list[Failure] | tuple[Failure, ...] = ()) -> dict[str, Any]:
    """Mark a conversation rejected (first reason wins) and drop its audio to keep the stream light."""
    if not is_rejected(row):
        row["reject_stage"], row["reject_reason"], row["reject_details"] = stage, reason, details[:2000]
        row["reject_failures"] = [f.as_row() for f in failures] or None
    for turn in row.get("turns") or []:
        turn["audio_flac"] = None
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
                    "failures": failures or None})
    return out


# --- the sample contract: one WebDataset sample per exchange -------------------------------------------

SAMPLE_SCHEMA_VERSION = 2  # 2: per-side dnsmos_* and speaker_similarity

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
                ("asr", "string", "verification model, version and compute type")], "models used"),
    ("config_digest", "string", "digest of the text-side config and prompts"),
    ("licenses", ("list", "string"), "licence tags of the models and corpora used"),
]
AUDIO_FILES = {"user.flac": "user speech, 16-bit FLAC, mono",
               "assistant.flac": "assistant speech, 16-bit FLAC, mono, at the TTS model's rate"}
SAMPLE_PARTS = {"json", *AUDIO_FILES}  # the members of every sample: {key}.json, {key}.user.flac, ...


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
                                            "speaker_similarity")},
    }


def conversation_samples(row: dict[str, Any], license_tags: list[str]) -> list[dict[str, Any]]:
    """One WebDataset sample per exchange: {key}.json, {key}.user.flac, {key}.assistant.flac."""
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
            "models": {"llm": row["llm_model"] or "", "tts": row["tts_model"] or "", "asr": row["asr_model"] or ""},
            "config_digest": row["text_digest"],
            "licenses": list(license_tags),
        }
        samples.append({"__key__": meta["key"], "json": json.dumps(meta, ensure_ascii=False).encode(),
                        "user.flac": user["audio_flac"], "assistant.flac": assistant["audio_flac"]})
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
            })
    return manifest
