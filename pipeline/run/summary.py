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
    busy_s: Counter = field(default_factory=Counter)  # stage -> worker seconds over every conversation
    resynthesis: Counter = field(default_factory=Counter)

    def add(self, outcome: dict[str, Any]) -> None:
        self.llm_requests += outcome["llm_requests"] or 0
        self.prompt_tokens += outcome["prompt_tokens"] or 0
        self.completion_tokens += outcome["completion_tokens"] or 0
        for stage in ("tts", "verify"):
            self.busy_s[stage] += outcome.get(f"{stage}_busy_s") or 0.0
        again = outcome.get("turns_resynthesised") or 0
        self.resynthesis["turns_resynthesised"] += again
        self.resynthesis["turns_recovered"] += outcome.get("turns_recovered") or 0
        if outcome["outcome"] == "kept":
            self.resynthesis["conversations_recovered"] += again > 0
            self.resynthesis["kept_synthesis_attempts"] += outcome.get("synthesis_attempts") or 0
        elif outcome["outcome"] == "rejected":
            self.resynthesis["conversations_rejected_after_resynthesis"] += again > 0
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
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "resynthesis": {k: int(self.resynthesis[k]) for k in RESYNTHESIS_KEYS}}

    def cost(self, gpu_share: dict[str, float]) -> dict[str, Any]:
        from pipeline.io.stats import cost_section

        return cost_section(kept=self.kept, rejected=sum(self.rejected.values()), kept_audio_s=self.audio_s,
                            llm_requests=self.llm_requests, prompt_tokens=self.prompt_tokens,
                            completion_tokens=self.completion_tokens,
                            busy_s={k: v for k, v in self.busy_s.items() if v}, gpu_share=gpu_share)


# last_run.resynthesis in stats.json: turns verify sent back to TTS, those that then passed, kept conversations
# that needed it, the syntheses of the kept turns (the manifest's *_synthesis_attempts summed), and conversations
# rejected although a turn was re-synthesised
RESYNTHESIS_KEYS = ("turns_resynthesised", "turns_recovered", "conversations_recovered", "kept_synthesis_attempts",
                    "conversations_rejected_after_resynthesis")


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
    ]
    resynth, cost = last.get("resynthesis") or {}, last.get("cost") or {}
    if resynth.get("turns_resynthesised"):
        lines.append(f"  re-synthesis: {resynth['turns_resynthesised']} turns redone, {resynth['turns_recovered']} "
                     f"recovered, {resynth['conversations_recovered']} conversations kept thanks to it")
    if cost.get("busy_s"):
        lines.append("  cost: busy " + ", ".join(f"{k} {v:.0f} s" for k, v in cost["busy_s"].items())
                     + (f"; keep rate {cost['keep_rate']:.2f}" if cost.get("keep_rate") is not None else "")
                     + (f"; {cost['kept_audio_h_per_tts_actor_h']:.2f} kept audio-h per TTS actor-h"
                        if cost.get("kept_audio_h_per_tts_actor_h") else ""))
    lines += [
        f"  dataset: {totals['conversations_kept']} conversations, {totals['exchanges']} exchanges, "
        f"{totals['hours']} h, {totals['speakers']} speakers, {totals['conversations_rejected']} rejected in all",
        f"  output: {out_dir}", "",
    ]
    print("\n".join(lines), flush=True)
