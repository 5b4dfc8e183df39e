"""The judge: an LLM scores each conversation for speech-naturalness, coherence, helpfulness and safety.

Prompts are per language files (prompts/<lang>/judge_system.jinja, judge_user.jinja, judge_repair.jinja;
names from the `judge` config section); the answer is strict JSON (a schema the server can enforce, as for
generation) and is validated here: every criterion an integer 1-5, nothing else but a short reason. What is
not valid raises `JudgeAnswerError` with a reason code, which the caller turns into a repair request and,
after `judge.repair_attempts`, into an unscored conversation (or a rejection, by `judge.on_error`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CRITERIA = ("speech_naturalness", "coherence", "helpfulness", "safety")
MIN_SCORE, MAX_SCORE = 1, 5
NOT_SCORED = -1  # the sample JSON's convention for "not measured" (as for error_rate and DNSMOS)


class JudgeAnswerError(ValueError):
    """The judge's answer cannot be used: `reason` is a short code, `details` says what was wrong."""

    def __init__(self, reason: str, details: str = ""):
        super().__init__(f"{reason}: {details}" if details else reason)
        self.reason, self.details = reason, details


class _Judgement(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    speech_naturalness: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    coherence: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    helpfulness: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    safety: int = Field(ge=MIN_SCORE, le=MAX_SCORE)
    reason: str = Field("", max_length=400)


@dataclass(frozen=True)
class JudgePrompts:
    system: jinja2.Template
    user: jinja2.Template
    repair: jinja2.Template

    @classmethod
    def load(cls, prompts_dir: Path, language: str, system: str = "judge_system.jinja",
             user: str = "judge_user.jinja", repair: str = "judge_repair.jinja") -> JudgePrompts:
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(prompts_dir / language)),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        return cls(*(env.get_template(name) for name in (system, user, repair)))


def judge_messages(prompts: JudgePrompts, turns: list[dict[str, Any]], language: str) -> list[dict[str, str]]:
    """Chat messages asking for the scores of one conversation (its display text, as the trainer sees it)."""
    shown = [{"role": t["role"], "text": " ".join(str(t.get("display_text") or "").split())} for t in turns]
    fields = {"turns": shown, "num_turns": len(shown), "language": language}
    return [{"role": "system", "content": prompts.system.render(**fields).strip()},
            {"role": "user", "content": prompts.user.render(**fields).strip()}]


def repair_messages(prompts: JudgePrompts, messages: list[dict[str, str]], answer: str,
                    error: JudgeAnswerError) -> list[dict[str, str]]:
    again = prompts.repair.render(error=error.reason.replace("_", " ")).strip()
    return messages[:2] + [{"role": "assistant", "content": (answer or "")[:2000]}, {"role": "user", "content": again}]


def judge_schema() -> dict[str, Any]:
    score = {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE}
    return {"type": "object",
            "properties": {**{c: score for c in CRITERIA}, "reason": {"type": "string", "maxLength": 400}},
            "required": [*CRITERIA, "reason"], "additionalProperties": False}


def judge_response_format(kind: str) -> dict[str, Any] | None:
    """The same three modes as generation (llm.response_format): llama.cpp's schema-constrained json_object,
    OpenAI-style json_schema, or none (validation only)."""
    if kind == "json_object_schema":
        return {"type": "json_object", "schema": judge_schema()}
    if kind == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "judgement", "schema": judge_schema(), "strict": True}}
    return None


def parse_judgement(content: str) -> dict[str, int]:
    """The judge's answer -> {criterion: score 1-5}, or `JudgeAnswerError`."""
    match = re.search(r"\{.*\}", content or "", re.S)
    if not match:
        raise JudgeAnswerError("judge_not_json", f"no JSON object in {len(content or '')} characters")
    try:
        data = json.loads(match.group(0), strict=False)
    except json.JSONDecodeError as exc:
        raise JudgeAnswerError("judge_not_json", str(exc)) from None
    if isinstance(data, dict):  # some models write 4.0 for 4: a whole float is a whole number
        data = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in data.items()}
    try:
        judgement = _Judgement.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "answer"
        raise JudgeAnswerError("judge_wrong_shape", f"{where}: {err['msg']}") from None
    return {c: getattr(judgement, c) for c in CRITERIA}


def below_threshold(scores: dict[str, int], min_scores: dict[str, float]) -> list[tuple[str, int, float]]:
    """(criterion, score, limit) for every criterion under its configured minimum, in CRITERIA order."""
    return [(c, scores[c], min_scores[c]) for c in CRITERIA
            if c in min_scores and scores.get(c, NOT_SCORED) != NOT_SCORED and scores[c] < min_scores[c]]
