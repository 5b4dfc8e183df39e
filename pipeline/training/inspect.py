"""`speechchat inspect out/<dataset>`: what the shards hold, in the units a trainer budgets.

Per shard and per language: exchanges, user/assistant hours, speech tokens at the encoder rate (50/s) before
and after affinity pooling, text tokens (with a tokenizer; otherwise an estimate, marked "~"), and how many
batches the data makes at a token budget with and without pooling.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.io.layout import Layout
from pipeline.training.features import SAMPLE_RATE, log_mel
from pipeline.training.loader import (
    Featurizer,
    _samples,
    _warn,
    batches_at_budget,
    decode_flac,
    load_tokenizer,
)


@dataclass
class Totals:
    exchanges: int = 0
    user_s: float = 0.0
    assistant_s: float = 0.0
    speech_tokens: int = 0
    pooled_tokens: int = 0
    text_tokens: int = 0
    raw_costs: list[int] = field(default_factory=list)
    pooled_costs: list[int] = field(default_factory=list)

    def add(self, other: Totals) -> None:
        for name in ("exchanges", "user_s", "assistant_s", "speech_tokens", "pooled_tokens", "text_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.raw_costs += other.raw_costs
        self.pooled_costs += other.pooled_costs

    def as_dict(self, budget: int, max_batch: int) -> dict[str, Any]:
        return {"exchanges": self.exchanges, "user_hours": round(self.user_s / 3600, 4),
                "assistant_hours": round(self.assistant_s / 3600, 4), "speech_tokens": self.speech_tokens,
                "pooled_speech_tokens": self.pooled_tokens, "text_tokens": self.text_tokens,
                "pooled_over_raw": round(self.pooled_tokens / self.speech_tokens, 4) if self.speech_tokens else None,
                "batches_raw": batches_at_budget(self.raw_costs, budget, max_batch),
                "batches_pooled": batches_at_budget(self.pooled_costs, budget, max_batch)}


def estimate_text_tokens(text: str, language: str) -> int:
    """Without a tokenizer: ~4 characters per token for English, ~1 per character for Chinese."""
    return max(1, math.ceil(len(text) / 4)) if language == "en" else max(1, len(text))


def inspect_dataset(folder: Path, tokenizer: str | None = None, pool_threshold: float = 0.97, token_budget: int = 8192,
                    max_batch_size: int = 64, max_samples: int | None = None, progress: bool = True) -> dict[str, Any]:
    layout = Layout(folder)
    if not layout.local:
        raise ValueError(f"{folder}: inspect reads a local folder; copy the output down first "
                         "(aws s3 sync), or run verify-output for a check in place")
    shards = layout.shards()
    if not shards:
        raise FileNotFoundError(f"{folder}: no shards under data/ (is this a speechchat output folder?)")
    tok = load_tokenizer(tokenizer) if tokenizer else None
    featurizer = Featurizer(tok, pool_threshold=pool_threshold)
    per_shard: dict[str, Totals] = {}
    per_language: dict[str, Totals] = defaultdict(Totals)
    seen = 0
    bar = tqdm(total=max_samples, unit="exchange", disable=not progress, desc="inspect")
    for shard in shards:
        rel = str(shard.relative_to(layout.root))
        lang = shard.parent.parent.name
        totals = Totals()
        for sample in _samples([str(shard)], _warn):
            if max_samples is not None and seen >= max_samples:
                break
            meta = json.loads(sample["json"])
            user, rate = decode_flac(sample["user.flac"])
            if rate != SAMPLE_RATE:
                from pipeline.audio import resample

                user = resample(user, rate, SAMPLE_RATE)
            raw, pooled = featurizer.speech_tokens(log_mel(user))
            if tok is not None:
                text = len(featurizer.text_ids(meta)[0])
            else:
                text = estimate_text_tokens((meta.get("history") or "") + meta["assistant"]["display_text"], lang)
            totals.exchanges += 1
            totals.user_s += meta["user"]["duration_s"]
            totals.assistant_s += meta["assistant"]["duration_s"]
            totals.speech_tokens += raw
            totals.pooled_tokens += pooled
            totals.text_tokens += text
            totals.raw_costs.append(raw + text)
            totals.pooled_costs.append(pooled + text)
            seen += 1
            bar.update(1)
        per_shard[rel] = totals
        per_language[lang].add(totals)
        if max_samples is not None and seen >= max_samples:
            break
    bar.close()
    overall = Totals()
    for t in per_language.values():
        overall.add(t)
    return {"folder": str(layout.root), "tokenizer": tokenizer, "text_tokens_estimated": tok is None,
            "pool_threshold": pool_threshold, "token_budget": token_budget, "max_batch_size": max_batch_size,
            "shards": {k: v.as_dict(token_budget, max_batch_size) for k, v in per_shard.items()},
            "languages": {k: v.as_dict(token_budget, max_batch_size) for k, v in sorted(per_language.items())},
            "total": overall.as_dict(token_budget, max_batch_size)}


def format_report(report: dict[str, Any]) -> str:
    approx = "~" if report["text_tokens_estimated"] else ""
    width = max([len(n) for n in report["shards"]] + [len("language xx"), 10])
    head = (f"{'':{width}} {'exch':>6} {'user h':>8} {'asst h':>8} {'speech tok':>11} {'pooled':>9} {'ratio':>6} "
            f"{'text tok':>9} {'batches raw/pooled':>19}")
    lines = [f"{report['folder']}  (affinity pooling threshold {report['pool_threshold']}, budget "
             f"{report['token_budget']} tokens/batch, max {report['max_batch_size']} per batch)", head]

    def row(name: str, d: dict[str, Any]) -> str:
        ratio = f"{d['pooled_over_raw']:.3f}" if d["pooled_over_raw"] is not None else "-"
        return (f"{name:{width}} {d['exchanges']:>6} {d['user_hours']:>8.4f} {d['assistant_hours']:>8.4f} "
                f"{d['speech_tokens']:>11} {d['pooled_speech_tokens']:>9} {ratio:>6} {approx + str(d['text_tokens']):>9} "
                f"{str(d['batches_raw']) + '/' + str(d['batches_pooled']):>19}")

    lines += [row(name, d) for name, d in report["shards"].items()]
    lines += [row(f"language {lang}", d) for lang, d in report["languages"].items()]
    lines.append(row("total", report["total"]))
    t = report["total"]
    if t["pooled_over_raw"] is not None:
        lines.append(f"affinity pooling keeps {t['pooled_over_raw']:.1%} of speech tokens "
                     f"({t['speech_tokens'] - t['pooled_speech_tokens']} fewer); batches {t['batches_raw']} -> "
                     f"{t['batches_pooled']} at the budget")
    return "\n".join(lines)
