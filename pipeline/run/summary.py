"""What a run did: counters over the outcome rows the shard stage returns, and the console summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class RunSummary:
    planned: int = 0
    skipped: int = 0
    kept: int = 0
    generated: int = 0  # text-only runs: conversations written to the text cache
    rejected: Counter = field(default_factory=Counter)
    audio_s: float = 0.0
    speakers: set = field(default_factory=set)
    llm_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    shards: set = field(default_factory=set)

    def add(self, outcome: dict[str, Any]) -> None:
        self.llm_requests += outcome["llm_requests"] or 0
        self.prompt_tokens += outcome["prompt_tokens"] or 0
        self.completion_tokens += outcome["completion_tokens"] or 0
        if outcome["outcome"] == "generated":
            self.generated += 1
        elif outcome["outcome"] == "kept":
            self.kept += 1
            self.audio_s += outcome["audio_s"] or 0.0
            self.speakers.update({outcome["user_speaker_id"], outcome["assistant_speaker_id"]})
            self.shards.add(outcome["shard"])
        else:
            self.rejected[f"{outcome['reject_stage']}/{outcome['reject_reason']}"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "skipped_already_done": self.skipped, "kept": self.kept,
                "text_only": self.generated,
                "rejected": sum(self.rejected.values()), "rejected_by_reason": dict(self.rejected.most_common()),
                "audio_hours": round(self.audio_s / 3600, 4), "speakers_used": len(self.speakers),
                "shards_written": len(self.shards), "llm_requests": self.llm_requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def print_summary(stats: dict[str, Any], out_dir: Path) -> None:
    last, totals = stats["last_run"], stats["totals"]
    lines = [
        "", f"speechchat run {last['run_id']} finished in {last['wall_s']} s",
        f"  this run: planned {last['planned']}, already done {last['skipped_already_done']}, "
        f"kept {last['kept']}, rejected {last['rejected']}"
        + (f", text only {last['text_only']}" if last["text_only"] else ""),
    ]
    for reason, n in last["rejected_by_reason"].items():
        lines.append(f"    rejected {n:>5}  {reason}")
    lines += [
        f"  this run: {last['audio_hours'] * 60:.2f} min of audio, {last['speakers_used']} speakers, "
        f"{last['shards_written']} shards, {last['llm_requests']} LLM requests "
        f"({last['prompt_tokens']} prompt + {last['completion_tokens']} completion tokens)",
        f"  dataset: {totals['conversations_kept']} conversations, {totals['exchanges']} exchanges, "
        f"{totals['hours']} h, {totals['speakers']} speakers, {totals['conversations_rejected']} rejected in all",
        f"  output: {out_dir}", "",
    ]
    print("\n".join(lines), flush=True)
