"""Dataset-level statistics, computed from the manifest and rejects on disk (so they cover every run)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.layout import Layout


def _read_all(layout: Layout, parts: list, columns: list[str] | None = None) -> pa.Table | None:
    tables = [layout.read_table(p, columns) for p in parts]
    # parts written by older versions may lack newer columns: promote them to null instead of failing
    return pa.concat_tables(tables, promote_options="default") if tables else None


def compute_stats(layout: Layout) -> dict[str, Any]:
    manifest = _read_all(layout, layout.manifest_parts())
    rejects = _read_all(layout, layout.reject_parts())
    stats: dict[str, Any] = {"languages": {}, "rejections": {}, "speaker_usage": {}}
    if manifest is not None and manifest.num_rows:
        for lang in sorted(set(manifest.column("language").to_pylist())):
            t = manifest.filter(pc.equal(manifest.column("language"), lang))
            user_s = pc.sum(t.column("user_duration_s")).as_py() or 0.0
            asst_s = pc.sum(t.column("assistant_duration_s")).as_py() or 0.0
            splits = Counter(t.column("split").to_pylist())
            stats["languages"][lang] = {
                "conversations": len(set(t.column("conversation_id").to_pylist())),
                "exchanges": t.num_rows,
                "hours": round((user_s + asst_s) / 3600, 4),
                "user_hours": round(user_s / 3600, 4),
                "assistant_hours": round(asst_s / 3600, 4),
                "exchanges_per_split": dict(sorted(splits.items())),
                "speakers": len(set(t.column("user_speaker_id").to_pylist()) | set(t.column("assistant_speaker_id").to_pylist())),
                "mean_user_error_rate": round(pc.mean(t.column("user_error_rate")).as_py() or 0.0, 4),
                "mean_assistant_error_rate": round(pc.mean(t.column("assistant_error_rate")).as_py() or 0.0, 4),
                "shards": len(set(t.column("shard").to_pylist())),
            }
        # usage counted per conversation for the user voice, per exchange for both sides
        firsts = manifest.filter(pc.equal(manifest.column("exchange_index"), 0))
        stats["content"] = {  # what the kept conversations are about, per conversation
            column: {lang: dict(Counter(v for v, row_lang in zip(firsts.column(column).to_pylist(),
                                                                 firsts.column("language").to_pylist())
                                        if row_lang == lang).most_common())
                     for lang in stats["languages"]}
            for column in ("domain", "scenario", "topic")}
        user_counts = Counter(firsts.column("user_speaker_id").to_pylist())
        stats["speaker_usage"] = {
            "user_conversations": dict(user_counts.most_common()),
            "assistant_exchanges": dict(Counter(manifest.column("assistant_speaker_id").to_pylist()).most_common()),
            "user_balance": usage_balance(user_counts),
        }
    if rejects is not None and rejects.num_rows:
        stats["rejections"] = dict(Counter(rejects.column("reason").to_pylist()).most_common())
    stats["totals"] = {
        "conversations_kept": sum(v["conversations"] for v in stats["languages"].values()),
        "exchanges": sum(v["exchanges"] for v in stats["languages"].values()),
        "hours": round(sum(v["hours"] for v in stats["languages"].values()), 4),
        "conversations_rejected": rejects.num_rows if rejects is not None else 0,
        "speakers": len(set().union(*(stats["speaker_usage"].get(k, {}).keys()
                                      for k in ("user_conversations", "assistant_exchanges")))),
    }
    return stats


def usage_balance(counts: Counter) -> dict[str, Any]:
    """How evenly voices are used: the histogram {conversations: speakers} and the max/mean ratio."""
    if not counts:
        return {}
    mean = sum(counts.values()) / len(counts)
    return {"speakers": len(counts), "mean": round(mean, 3), "min": min(counts.values()), "max": max(counts.values()),
            "max_over_mean": round(max(counts.values()) / mean, 3),
            "histogram": {str(k): v for k, v in sorted(Counter(counts.values()).items())}}


def write_stats(layout: Layout, stats: dict[str, Any]) -> None:
    layout.write_bytes("stats.json", json.dumps(stats, indent=2, sort_keys=True).encode())
