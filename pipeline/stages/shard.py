"""Shard: write kept conversations as WebDataset tars (one sample per exchange) plus manifest and rejects.

One call = one batch of conversations = at most one tar per (language, split), named after a hash of the
conversation IDs it holds, so a retried batch rewrites the same file instead of adding a duplicate.
Order of commits: [duplex tar -> duplex manifest part ->] tar (atomic rename) -> its manifest part (atomic)
-> rejects part (atomic); the tar and manifest protocol is `pipeline.io.shard_writer`'s. Returns one small outcome row per conversation (no audio)
to the driver, which counts them.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.faults import inject
from pipeline.io.layout import Layout
from pipeline.io.near_dup_state import write_signatures
from pipeline.io.shard_writer import write_duplex_shard, write_shard
from pipeline.quality.near_dup import settings_of
from pipeline.schema import (
    OUTCOME_SCHEMA,
    REJECTS_SCHEMA,
    is_rejected,
    rejects_rows,
    resynthesis_counts,
    rows_to_table,
    table_to_rows,
    usage,
)
from pipeline.stages.base import Resources, RunContext, Stage


class ShardStage(Stage):
    """Consumes conversation rows and returns outcome rows (`schema.OUTCOME_SCHEMA`): kept, rejected, or
    generated (a text-only run, which records rejections and writes no tars)."""

    name = "shard"

    def __init__(self, out_dir: Path | str | Layout, run_id: str, license_tags: list[str], write_samples: bool = True,
                 keep_clean: bool = False, signature_settings: str = ""):
        super().__init__()
        self.layout = out_dir if isinstance(out_dir, Layout) else Layout(out_dir)
        self.run_id, self.license_tags = run_id, list(license_tags)
        self.write_samples = write_samples
        self.keep_clean = keep_clean  # augment.keep_clean: augmented samples also hold user_clean.flac
        self.signature_settings = signature_settings  # the near-duplicate signatures' ShingleSettings tag

    @classmethod
    def build(cls, ctx: RunContext) -> ShardStage:
        stage = cls(ctx.layout(), ctx.run_id, ctx.cfg.license_tags, write_samples=ctx.write_samples,
                    keep_clean=ctx.cfg.augment.enabled and ctx.cfg.augment.keep_clean,
                    signature_settings=settings_of(ctx.cfg.dedup).tag())
        stage.resources = Resources(num_cpus=ctx.cfg.shard.num_cpus, actors=1, single=True)
        stage.batch_size = ctx.cfg.shard.conversations_per_shard
        return stage

    def batch_name(self, rows: list[dict[str, Any]]) -> str:
        ids = "\n".join(sorted(r["conversation_id"] for r in rows))
        return f"{self.run_id}-{hashlib.sha256(ids.encode()).hexdigest()[:12]}"

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = table_to_rows(batch)
        for row in rows:
            inject(self.name, row["conversation_id"])
        kept, rejected = [r for r in rows if not is_rejected(r)], [r for r in rows if is_rejected(r)]
        groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for row in kept:
            groups[(row["language"], row["split"])].append(row)
        outcomes = []
        if not self.write_samples:
            # the next run's near-duplicate index knows them (written before anything says they are done)
            write_signatures(self.layout, f"text-{self.batch_name(kept)}", kept, self.signature_settings)
            outcomes += [{**usage(r), "conversation_id": r["conversation_id"], "language": r["language"],
                          "outcome": "generated", "exchanges": r["num_exchanges"], "audio_s": 0.0} for r in kept]
            groups.clear()
        for (language, split), group in sorted(groups.items()):
            name = f"shard-{self.batch_name(group)}"
            write_signatures(self.layout, name, group, self.signature_settings)
            # the duplex subset first: the main manifest part, written last, finishes both
            write_duplex_shard(self.layout, name, group, language, split)
            shard_rel, _ = write_shard(self.layout, name, group, language, split, self.license_tags,
                                       keep_clean=self.keep_clean)
            for row in group:
                outcomes.append({**usage(row), **work(row),
                    "conversation_id": row["conversation_id"], "language": language, "outcome": "kept",
                    "exchanges": len(row["turns"]) // 2, "audio_s": sum(t["duration_s"] or 0 for t in row["turns"]),
                    "user_speaker_id": row["user_speaker_id"], "assistant_speaker_id": row["assistant_speaker_id"],
                    "shard": shard_rel})
        if rejected:
            table = rows_to_table(rejects_rows(rejected), REJECTS_SCHEMA)
            self.layout.write_parquet(f"rejects/part-{self.batch_name(rejected)}.parquet", table,
                                      fault_point="shard.mid_rejects_part")
            outcomes += [{**usage(r), **work(r), "conversation_id": r["conversation_id"], "language": r["language"],
                          "outcome": "rejected", "reject_stage": r["reject_stage"], "reject_reason": r["reject_reason"],
                          "exchanges": 0, "audio_s": 0.0} for r in rejected]
        return rows_to_table(outcomes, OUTCOME_SCHEMA)


def work(row: dict[str, Any]) -> dict[str, Any]:
    """The audio work a conversation cost (busy seconds, syntheses, re-synthesised turns), for the run's stats."""
    return {"tts_busy_s": row.get("tts_busy_s") or 0.0, "verify_busy_s": row.get("verify_busy_s") or 0.0,
            **resynthesis_counts(row)}
