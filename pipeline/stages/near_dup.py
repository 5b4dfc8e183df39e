"""Near-duplicates: one actor holds a MinHash LSH index of the whole output and rejects a conversation that nearly
copies one seen before it (`near_duplicate`, the copied ID in the rejects table's `duplicate_of`), or that
repeats one of its own turns word for word (`repeated_turn`).

It runs on the spoken text (after the text stage), before voices and TTS, where the cost is. The index starts
with the signatures of what earlier runs into this output kept (state/near_dup/, written by the shard stage),
so a near-copy of yesterday's conversation is caught today; then every conversation that passes is added as it
streams by. Rows of one batch are checked in plan order; which of two near-copies in different batches wins is
the one that reaches this actor first (on the rewrite path the source records are also checked in file order
inside the one sequential read, before any LLM call: `stages/source.py`). The MinHash code is
`pipeline/quality/near_dup.py`; docs/quality.md has the design and the bench figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.faults import checkpoint, inject
from pipeline.io.layout import Layout
from pipeline.io.near_dup_state import read_signatures
from pipeline.quality.near_dup import Signer, make_index, redis_problem, repeated_turn, settings_of
from pipeline.reasons import Failure
from pipeline.schema import is_rejected, reject, rows_to_table, table_to_rows
from pipeline.stages.base import Resources, RunContext, Stage

log = logging.getLogger(__name__)


def spoken_texts(row: dict[str, Any]) -> list[str]:
    return [t.get("spoken_text") or t.get("display_text") or "" for t in row.get("turns") or []]


class NearDupStage(Stage):
    name = "near_dup"
    # one actor sees every conversation of the run (first seen wins); its own batch size keeps it out of the
    # fused shard-writer actor, which sits after TTS
    resources = Resources(num_cpus=0.0, actors=1, single=True)

    def __init__(self, cfg: DedupConfig, out_dir: Path | str | Layout | None = None, dataset: str = "speechchat"):
        super().__init__()
        self.cfg, self.out_dir, self.dataset = cfg, out_dir, dataset
        self.batch_size = cfg.batch_size
        self.settings = settings_of(cfg)
        self.index: Any = None
        self.preloaded = 0

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        if ctx.cfg.dedup.storage == "redis":
            problem = redis_problem(ctx.cfg.dedup)
            return [problem] if problem else []
        return []

    @classmethod
    def build(cls, ctx: RunContext) -> NearDupStage:
        return cls(ctx.cfg.dedup, ctx.layout() if ctx.out_dir is not None else None, ctx.cfg.dataset)

    def setup(self) -> None:
        """The index, with what earlier runs kept (an actor restarted after a crash preloads again: what this run
        had passed but not yet written is then not in its index, so a near-copy of it can pass once)."""
        self.signer = Signer(self.settings)
        self.index = make_index(self.cfg, f"speechchat:{self.dataset}")
        if self.out_dir is not None:
            layout = self.out_dir if isinstance(self.out_dir, Layout) else Layout(self.out_dir)
            ids, signatures = read_signatures(layout, self.settings.tag(), exclude=layout.rejected_ids())
            if ids:
                self.preloaded = self.index.preload(ids, signatures)
                log.info("near_dup: %d signatures of earlier runs preloaded", self.preloaded)

    def process_batch(self, batch: pa.Table) -> pa.Table:
        rows = table_to_rows(batch)
        live = sorted((r for r in rows if not is_rejected(r)), key=lambda r: (r["plan_index"], r["conversation_id"]))
        if live:
            checkpoint(self.name)
            self.check_rows(live)
        return rows_to_table(rows)

    def check_rows(self, rows: list[dict[str, Any]]) -> None:
        candidates: list[tuple[dict[str, Any], list[str]]] = []
        for row in rows:
            inject(self.name, row["conversation_id"])
            texts = spoken_texts(row)
            repeat = repeated_turn(texts, row["language"], self.cfg.repeat_min_tokens) if self.cfg.repeated_turns else None
            if repeat is not None:
                earlier, later = repeat
                reject(row, self.name, "repeated_turn", f"turn {later} repeats turn {earlier} word for word",
                       [Failure(turn=later, role=row["turns"][later]["role"], metric="repeats_turn", value=earlier)])
                continue
            candidates.append((row, texts))
        if not candidates:
            return
        signatures = self.signer.signatures([texts for _, texts in candidates], [r["language"] for r, _ in candidates])
        verdicts = self.index.check_many([r["conversation_id"] for r, _ in candidates], signatures)
        for (row, _), signature, copied in zip(candidates, signatures, verdicts):
            # its own ID: a conversation whose signature a crashed run stored before writing it comes through again
            if copied is not None and copied != row["conversation_id"]:
                reject(row, self.name, "near_duplicate", f"nearly copies {copied} (MinHash LSH at dedup.threshold "
                       f"{self.cfg.threshold})", duplicate_of=copied)
            else:
                row["near_dup_signature"] = signature.tolist()
