"""Source "dataset": existing instructions/dialogues -> conversation specs for the LLM to rewrite for speech.

How Ke-SpeechChat was made: an instruct model rewrote text instructions into spoken style, and records
unsuitable for speech (code, tables, math notation, very long answers) were dropped. Each record becomes
one conversation; a record that cannot be used is a rejection with a reason, never a crash.

A record that nearly copies an earlier record of the source (a changed word, punctuation, case) is rejected as
`near_duplicate` before the LLM is paid for it (`dedup.source_records`). The check runs inside the one
sequential read of the records, in file order, so the first of two near-copies always wins; every record is
read on every run (finished ones are skipped after the check), so a rerun gives the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.config import DedupConfig
from pipeline.ids import conversation_id, is_done, split_for
from pipeline.io.inputs import local_source
from pipeline.io.source_reader import SourceError, iter_records, source_files
from pipeline.quality.near_dup import NearDupIndex, Signer, settings_of
from pipeline.reasons import Rejected
from pipeline.schema import reject, rows_to_table
from pipeline.stages.base import ReadStage, ReadTask, RunContext

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "system": "system"}

_CODE = re.compile(r"```|^\s*(def |class |import |#include|public static|function\s*\(|SELECT .* FROM )|[{};]\s*$",
                   re.M | re.I)
_TABLE = re.compile(r"^\s*\|.*\|\s*$\n^\s*\|?\s*:?-{3,}", re.M)
_MATH = re.compile(r"\$[^$\n]+\$|\\\(|\\\[|\\frac|\\sum|\\int|\\sqrt|\^\{|_\{|\b[a-z]\s*=\s*[-+]?\d+\s*[-+*/^]\s*\d")


def to_messages(record: Any, fmt: str = "auto") -> list[dict[str, str]]:
    """ShareGPT (`conversations` with from/value), OpenAI messages (`messages` with role/content) or Alpaca
    (`instruction`, `input`, `output`) -> [{"role", "content"}], system prompts dropped."""
    if not isinstance(record, dict):
        raise Rejected("source_bad_shape", f"record is a {type(record).__name__}, not an object")
    if fmt == "auto":
        fmt = ("sharegpt" if "conversations" in record else "messages" if "messages" in record
               else "alpaca" if "instruction" in record else "")
        if not fmt:
            raise Rejected("source_bad_shape", f"no conversations/messages/instruction field (keys: {sorted(record)[:8]})")
    if fmt == "alpaca":
        prompt = str(record.get("instruction") or "").strip()
        extra = str(record.get("input") or "").strip()
        messages = [{"role": "user", "content": f"{prompt}\n{extra}".strip()},
                    {"role": "assistant", "content": str(record.get("output") or "").strip()}]
    else:
        items = record.get("conversations" if fmt == "sharegpt" else "messages")
        if not isinstance(items, list):
            raise Rejected("source_bad_shape", f"`{'conversations' if fmt == 'sharegpt' else 'messages'}` is not a list")
        messages = []
        for item in items:
            if not isinstance(item, dict):
                raise Rejected("source_bad_shape", "a turn is not an object")
            role = SHAREGPT_ROLES.get(str(item.get("from" if fmt == "sharegpt" else "role", "")).lower())
            content = item.get("value" if fmt == "sharegpt" else "content")
            if role is None or not isinstance(content, str):
                raise Rejected("source_bad_shape", f"turn with role {item.get('from', item.get('role'))!r}")
            if role != "system":
                messages.append({"role": role, "content": content.strip()})
    return messages


def exchanges_of(messages: list[dict[str, str]], max_exchanges: int) -> list[dict[str, str]]:
    """Leading user/assistant pairs, in order, up to `max_exchanges`."""
    pairs: list[dict[str, str]] = []
    for i in range(0, len(messages) - 1, 2):
        user, assistant = messages[i], messages[i + 1]
        if (user["role"], assistant["role"]) != ("user", "assistant"):
            break
        pairs += [user, assistant]
        if len(pairs) // 2 >= max_exchanges:
            break
    if not pairs:
        raise Rejected("source_no_exchange", "no user turn followed by an assistant answer")
    return pairs


def unsuitable_for_speech(messages: list[dict[str, str]], max_answer_chars: int) -> tuple[str, str] | None:
    """(reason, details) when a record cannot become natural speech, else None."""
    for m in messages:
        text = m["content"]
        if not text:
            return "source_empty_turn", f"empty {m['role']} turn"
        if _CODE.search(text):
            return "source_has_code", f"{m['role']}: {text[:80]!r}"
        if _TABLE.search(text):
            return "source_has_table", f"{m['role']}: {text[:80]!r}"
        if _MATH.search(text):
            return "source_has_math", f"{m['role']}: {text[:80]!r}"
        if m["role"] == "assistant" and len(text) > max_answer_chars:
            return "source_answer_too_long", f"{len(text)} chars > {max_answer_chars}"
    return None


@dataclass
class SourcePlanStage(ReadStage):
    """Reads the source dataset's records in order and maps each (source_index, record JSON) to a conversation
    row carrying the source turns to rewrite (or rejected with the reason it cannot become speech)."""

    name = "source"

    dataset: str
    language: str
    source_name: str
    text_digest: str
    splits: dict[str, float]
    fmt: str
    max_exchanges: int
    max_answer_chars: int
    done_ids: np.ndarray
    path: Path | str | None = None   # what is read (source.path: local, or a URL fetched by each node that reads)
    storage_env: dict[str, str] | None = None
    limit: int | None = None   # source.limit
    block_rows: int = 8        # records per block (the LLM's batch size)
    near_dup: DedupConfig | None = None  # check the records for near-copies of earlier ones (None: off)

    def __post_init__(self) -> None:
        self._ready = False

    @classmethod
    def check(cls, ctx: RunContext) -> list[str]:
        try:
            source_files(local_source(ctx.cfg.resolve_location(ctx.cfg.source.path), ctx.cfg.storage.env_names()))
        except (SourceError, OSError) as exc:
            return [str(exc)]
        return []

    @classmethod
    def build(cls, ctx: RunContext) -> SourcePlanStage:
        cfg, src = ctx.cfg, ctx.cfg.source
        path = cfg.resolve_location(src.path)
        return cls(dataset=cfg.dataset, language=src.language, source_name=str(path).rstrip("/").rsplit("/", 1)[-1], text_digest=cfg.text_digest(),
                   splits=dict(cfg.shard.splits), fmt=src.format, max_exchanges=src.max_exchanges,
                   max_answer_chars=src.max_answer_chars,
                   done_ids=ctx.done_ids if ctx.plan_skip is None else ctx.plan_skip, path=path, limit=src.limit,
                   block_rows=cfg.llm.batch_size,
                   near_dup=cfg.dedup if cfg.dedup.enabled and cfg.dedup.source_records else None,
                   storage_env=cfg.storage.env_names())

    def read_tasks(self, parallelism: int) -> list[ReadTask]:
        """One sequential read of every record (the record number is part of the conversation ID; the near-copy
        check needs the records in order)."""
        return [ReadTask(_record_blocks(self.path, self.limit, max(1, self.block_rows), self.copies_finder(),
                                       self.storage_env),
                         input_files=(str(self.path),))]

    def conversation_id(self, index: int) -> str:
        return conversation_id(self.dataset, self.language, f"{self.source_name}:{index}", self.text_digest)

    def copies_finder(self):
        """A function (source index, record) -> the ID of the earlier record it nearly copies, or None, with its
        own index over the records it has seen (made in the read task: one per read). Records that cannot
        become speech are neither checked nor remembered."""
        if self.near_dup is None:
            return None
        cfg = self.near_dup

        def finder():
            index, signer = NearDupIndex(cfg.threshold, settings_of(cfg)), Signer(settings_of(cfg))

            def copies(source_index: int, record: Any) -> str | None:
                try:
                    pairs = exchanges_of(to_messages(record, self.fmt), self.max_exchanges)
                except Rejected:
                    return None
                if unsuitable_for_speech(pairs, self.max_answer_chars):
                    return None
                signature = signer.signature([m["content"] for m in pairs], self.language)
                return index.check(self.conversation_id(source_index), signature)
            return copies
        return finder

    def row(self, index: int, record_text: str, duplicate_of: str | None = None) -> dict[str, Any] | None:
        conv_id = self.conversation_id(index)
        if is_done(self.done_ids, conv_id):
            return None
        row: dict[str, Any] = {"conversation_id": conv_id, "plan_index": index, "dataset": self.dataset,
                               "language": self.language, "split": split_for(conv_id, self.splits),
                               "domain": "source", "scenario": "rewrite", "persona": "", "seed": index,
                               "text_digest": self.text_digest, "topic": "", "num_exchanges": 0}
        try:
            if record_text.startswith("!"):  # the reader could not parse this record
                raise Rejected("source_not_json", record_text[1:])
            pairs = exchanges_of(to_messages(json.loads(record_text), self.fmt), self.max_exchanges)
            row.update(topic=" ".join(pairs[0]["content"].split())[:80], num_exchanges=len(pairs) // 2,
                       source_messages=pairs)
            problem = unsuitable_for_speech(pairs, self.max_answer_chars)
            if problem:
                raise Rejected(*problem)
            if duplicate_of is not None:
                raise Rejected("near_duplicate", f"source record {index} nearly copies an earlier record "
                               f"({duplicate_of}); caught before any LLM call", duplicate_of=duplicate_of)
        except Rejected as exc:
            reject(row, "near_dup" if exc.reason == "near_duplicate" else "source", exc.reason, exc.details,
                   exc.failures, exc.duplicate_of)
        return row

    def process_batch(self, batch: pa.Table) -> pa.Table:
        copies = (batch.column("duplicate_of").to_pylist() if "duplicate_of" in batch.column_names
                  else [None] * batch.num_rows)
        rows = [self.row(i, r, d) for i, r, d in zip(batch.column("source_index").to_pylist(),
                                                      batch.column("record").to_pylist(), copies)]
        return rows_to_table([r for r in rows if r is not None])


def _record_blocks(path: Path | str, limit: int | None, block_rows: int, copies_finder=None,
                   storage_env: dict[str, str] | None = None):
    """(source_index, record as JSON text, ID of the earlier record it nearly copies) in blocks; a line that is
    not JSON becomes "!<why>". `copies_finder()` makes the near-copy check (None: no check)."""
    def read() -> Iterator[pa.Table]:
        copies = copies_finder() if copies_finder is not None else None
        buf: list[tuple[int, str, str | None]] = []
        for index, record in iter_records(local_source(path, storage_env), limit):
            if isinstance(record, SourceError):
                buf.append((index, f"!{record}", None))
            else:
                buf.append((index, json.dumps(record, ensure_ascii=False, default=str),
                            copies(index, record) if copies is not None else None))
            if len(buf) >= block_rows:
                yield _block(buf)
                buf = []
        if buf:
            yield _block(buf)
    return read


def _block(rows: list[tuple[int, str, str | None]]) -> pa.Table:
    return pa.table({"source_index": pa.array([r[0] for r in rows], pa.int64()),
                     "record": pa.array([r[1] for r in rows], pa.string()),
                     "duplicate_of": pa.array([r[2] for r in rows], pa.string())})
