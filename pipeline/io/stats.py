"""Dataset-level statistics, computed from the manifest and rejects on disk (so they cover every run)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.io.layout import Layout
from pipeline.schema import JUDGE_CRITERIA


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
        stats["judge"] = judge_stats(firsts)
    if rejects is not None and rejects.num_rows:
        stats["rejections"] = dict(Counter(rejects.column("reason").to_pylist()).most_common())
    stats["personal_data"] = personal_data_stats(
        manifest.filter(pc.equal(manifest.column("exchange_index"), 0)) if manifest is not None else None, rejects)
    stats["totals"] = {
        "conversations_kept": sum(v["conversations"] for v in stats["languages"].values()),
        "exchanges": sum(v["exchanges"] for v in stats["languages"].values()),
        "hours": round(sum(v["hours"] for v in stats["languages"].values()), 4),
        "conversations_rejected": rejects.num_rows if rejects is not None else 0,
        "speakers": len(set().union(*(stats["speaker_usage"].get(k, {}).keys()
                                      for k in ("user_conversations", "assistant_exchanges")))),
    }
    return stats


def judge_stats(firsts: pa.Table) -> dict[str, Any]:
    """Per language: conversations scored, not scored (-1: the judge failed), the mean and histogram per criterion."""
    if f"judge_{JUDGE_CRITERIA[0]}" not in firsts.column_names:
        return {}
    out: dict[str, Any] = {}
    languages = firsts.column("language").to_pylist()
    columns = {c: firsts.column(f"judge_{c}").to_pylist() for c in JUDGE_CRITERIA}
    for lang in sorted(set(languages)):
        rows = [i for i, row_lang in enumerate(languages) if row_lang == lang]
        judged = [i for i in rows if columns[JUDGE_CRITERIA[0]][i] is not None]
        if not judged:
            continue
        scored = [i for i in judged if all(columns[c][i] is not None and columns[c][i] > 0 for c in JUDGE_CRITERIA)]
        out[lang] = {
            "scored": len(scored), "not_scored": len(judged) - len(scored),
            "mean": {c: round(sum(columns[c][i] for i in scored) / len(scored), 3) if scored else None
                     for c in JUDGE_CRITERIA},
            "histogram": {c: {str(k): v for k, v in sorted(Counter(columns[c][i] for i in scored).items())}
                          for c in JUDGE_CRITERIA},
        }
    return out


def personal_data_stats(firsts: pa.Table | None, rejects: pa.Table | None) -> dict[str, Any]:
    """Personal data per kind: found and replaced in kept conversations, and conversations rejected for it."""
    found: Counter = Counter()
    replaced: Counter = Counter()
    conversations = 0
    if firsts is not None and "personal_data" in firsts.column_names:
        for items in firsts.column("personal_data").to_pylist():
            conversations += bool(items)
            for item in items or []:
                found[item["kind"]] += item["found"]
                replaced[item["kind"]] += item["replaced"]
    rejected: Counter = Counter()
    if rejects is not None and rejects.num_rows and "metric" in rejects.column_names:
        for reason, metric in zip(rejects.column("reason").to_pylist(), rejects.column("metric").to_pylist()):
            if reason == "personal_data":
                rejected[metric or "?"] += 1
    return {"found_in_kept": dict(sorted(found.items())), "replaced_in_kept": dict(sorted(replaced.items())),
            "kept_conversations_with_findings": conversations, "rejected_conversations": dict(sorted(rejected.items()))}


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


def cost_section(*, kept: int, rejected: int, kept_audio_s: float, llm_requests: int, prompt_tokens: int,
                 completion_tokens: int, busy_s: dict[str, float], gpu_share: dict[str, float]) -> dict[str, Any]:
    """What the kept audio of one run cost and where it went: busy seconds per stage (summed over the
    conversations, kept and rejected alike, so waste is counted), GPU-seconds (busy seconds times the stage's
    GPU share), the keep rate and kept audio-hours per TTS actor-hour and per GPU-hour.

    Busy time is the time a worker spent on a conversation (every synthesis and every verify round), not an
    actor's idle or start-up time; `actor-hours` below are busy hours."""
    kept_h = kept_audio_s / 3600
    gpu_s = {stage: s * gpu_share.get(stage, 0.0) for stage, s in busy_s.items() if gpu_share.get(stage, 0.0) > 0}
    tts_h, verify_h, gpu_h = busy_s.get("tts", 0.0) / 3600, busy_s.get("verify", 0.0) / 3600, sum(gpu_s.values()) / 3600
    done = kept + rejected

    def per(hours: float) -> float | None:
        return round(kept_h / hours, 4) if hours > 0 else None

    return {
        "llm": {"requests": llm_requests, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "tokens_per_kept_audio_hour": round((prompt_tokens + completion_tokens) / kept_h) if kept_h else None},
        "busy_s": {stage: round(s, 2) for stage, s in sorted(busy_s.items())},
        "gpu_s": {stage: round(s, 2) for stage, s in sorted(gpu_s.items())},
        "keep_rate": round(kept / done, 4) if done else None,
        "kept_audio_hours": round(kept_h, 5),
        "kept_audio_h_per_tts_actor_h": per(tts_h),
        "kept_audio_h_per_verify_actor_h": per(verify_h),
        "kept_audio_h_per_gpu_h": per(gpu_h),
    }
