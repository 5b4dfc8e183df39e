"""The data model: one Arrow schema for a conversation row as it flows through the stages.

Every stage reads and returns tables of CONVERSATION_SCHEMA. Columns are filled progressively
(plan -> generate -> text -> voices -> tts -> verify); a rejected conversation keeps flowing with
`reject_stage`/`reject_reason` set so the shard stage records it exactly once, beside the kept ones.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

TURN_TYPE = pa.struct([
    ("role", pa.string()),            # "user" | "assistant"
    ("display_text", pa.string()),    # as the LLM wrote it
    ("spoken_text", pa.string()),     # normalised for speech (what TTS reads and ASR is scored against)
    ("speaker_id", pa.string()),
    ("audio_flac", pa.binary()),      # 16-bit FLAC, mono
    ("sample_rate", pa.int32()),
    ("duration_s", pa.float64()),
    ("asr_text", pa.string()),
    ("error_rate", pa.float64()),
    ("dnsmos_ovrl", pa.float64()),    # DNSMOS overall 1-5 (verify.dnsmos); null when not measured
    ("dnsmos_sig", pa.float64()),
    ("dnsmos_bak", pa.float64()),
    ("dnsmos_p808", pa.float64()),
    ("speaker_similarity", pa.float64()),  # cosine to the assigned voice (verify.speaker_consistency); null: not measured
    ("tts_attempts", pa.int32()),     # syntheses this turn took (1 = first try; retries after a failed synthesis)
])

CONVERSATION_SCHEMA = pa.schema([
    ("conversation_id", pa.string()),
    ("plan_index", pa.int64()),
    ("dataset", pa.string()),
    ("language", pa.string()),
    ("split", pa.string()),
    ("domain", pa.string()),
    ("topic", pa.string()),
    ("scenario", pa.string()),
    ("persona", pa.string()),
    ("num_exchanges", pa.int32()),
    ("seed", pa.int64()),
    ("text_digest", pa.string()),
    ("llm_model", pa.string()),
    ("llm_requests", pa.int32()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
    ("user_speaker_id", pa.string()),
    ("assistant_speaker_id", pa.string()),
    ("tts_model", pa.string()),
    ("asr_model", pa.string()),
    ("source_messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),  # to rewrite
    ("turns", pa.list_(TURN_TYPE)),
    ("reject_stage", pa.string()),
    ("reject_reason", pa.string()),
    ("reject_details", pa.string()),
])

TURN_FIELDS = [f.name for f in TURN_TYPE]

# What the shard stage returns to the driver: one small row per sample or rejection (no audio).
OUTCOME_SCHEMA = pa.schema([
    ("conversation_id", pa.string()),
    ("language", pa.string()),
    ("outcome", pa.string()),          # "kept" | "rejected"
    ("reject_stage", pa.string()),
    ("reject_reason", pa.string()),
    ("exchanges", pa.int32()),
    ("audio_s", pa.float64()),
    ("user_speaker_id", pa.string()),
    ("assistant_speaker_id", pa.string()),
    ("shard", pa.string()),
    ("llm_requests", pa.int32()),
    ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()),
])


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


def reject(row: dict[str, Any], stage: str, reason: str, details: str = "") -> dict[str, Any]:
    """Mark a conversation rejected (first reason wins) and drop its audio to keep the stream light."""
    if not is_rejected(row):
        row["reject_stage"], row["reject_reason"], row["reject_details"] = stage, reason, details[:2000]
    for turn in row.get("turns") or []:
        turn["audio_flac"] = None
    return row
