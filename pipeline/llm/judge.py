"""The judge: an LLM scores each conversation for speech-naturalness, coherence, helpfulness and safety.

Prompts are per language files (prompts/<lang>/judge_system.jinja, judge_user.jinja, judge_repair.jinja;
names from the `judge` config section); the answer is strict JSON (a schema the server can enforce, as for
generation) and is validated here: every criterion an integer 1-5, nothing else but a short reason. What is
not valid raises `JudgeAnswerError` with a reason code, which the caller turns into a repair request and,
after `judge.repair_attempts`, into an unscored conversation (or a rejection, by `judge.on_error`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.schema import JUDGE_CRITERIA

if TYPE_CHECKING:
    from pipeline.config import JudgeConfig

CRITERIA = JUDGE_CRITERIA  # the schema's judge columns
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
            "properties": {**{c: score for c in CRITERIA}, "reason": {"type": "string", "maxLength": 160}},
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


class JudgeUnavailable(RuntimeError):
    """The judge's server cannot be reached at all (connection refused or cut on every retry)."""


class OpenAICompatibleJudge:
    """Scores conversations through any OpenAI-compatible server, with the retries (backoff on 429/5xx/timeouts,
    from the openai client) and repair requests of generation. A conversation it cannot score gets `NOT_SCORED`
    for every criterion and the reason why; nothing here raises for one bad answer or one slow server."""

    def __init__(self, cfg: JudgeConfig, base_url: str, prompts_dir: Path, default_model: str,
                 default_response_format: str):
        self.cfg, self.base_url, self.prompts_dir = cfg, base_url, prompts_dir
        self.model = cfg.model or default_model
        self.response_format = judge_response_format(cfg.response_format or default_response_format)
        self._prompts: dict[str, JudgePrompts] = {}

    def prompts(self, language: str) -> JudgePrompts:
        if language not in self._prompts:
            self._prompts[language] = JudgePrompts.load(self.prompts_dir, language, self.cfg.system_prompt,
                                                        self.cfg.user_prompt, self.cfg.repair_prompt)
        return self._prompts[language]

    def score_batch(self, rows: list[dict[str, Any]]) -> list[tuple[dict[str, int], str | None]]:
        """(scores, why they are missing or None) per row, in order."""
        return asyncio.run(self._score_all(rows))

    async def _score_all(self, rows: list[dict[str, Any]]) -> list[tuple[dict[str, int], str | None]]:
        import openai

        # the key is read here, in the worker, from the environment; it never enters config, rows or logs
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.cfg.api_key_env) or "no-key",
                                    max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s)
        limit = asyncio.Semaphore(self.cfg.concurrency)
        down: list[str] = []

        async def one(row: dict[str, Any]) -> tuple[dict[str, int], str | None]:
            async with limit:
                if down:  # unreachable: the rest of the batch is not worth its retries
                    return unscored(), down[0]
                try:
                    return await self._score_one(client, row), None
                except JudgeUnavailable as exc:
                    down.append(str(exc))
                    return unscored(), str(exc)
                except JudgeAnswerError as exc:
                    return unscored(), str(exc)
                except Exception as exc:  # noqa: BLE001 - the judge never fails the run; the reason is kept
                    return unscored(), f"{type(exc).__name__}: {exc}"

        try:
            return list(await asyncio.gather(*(one(r) for r in rows)))
        finally:
            await client.close()

    async def _score_one(self, client: Any, row: dict[str, Any]) -> dict[str, int]:
        import openai

        messages = judge_messages(self.prompts(row["language"]), row["turns"] or [], row["language"])
        last: JudgeAnswerError | None = None
        for _attempt in range(1 + self.cfg.repair_attempts):
            kwargs: dict[str, Any] = dict(model=self.model, messages=messages, temperature=self.cfg.temperature,
                                          max_tokens=self.cfg.max_tokens, seed=int(row.get("seed") or 0))
            if self.response_format is not None:
                kwargs["response_format"] = self.response_format
            try:
                resp = await client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                raise JudgeAnswerError("judge_timeout", f"no answer within {self.cfg.timeout_s}s after "
                                       f"{self.cfg.max_retries} retries") from None
            except openai.APIConnectionError as exc:
                raise JudgeUnavailable(f"judge_unreachable: {self.base_url} after {self.cfg.max_retries} retries "
                                       f"({type(exc).__name__})") from None
            except openai.APIStatusError as exc:
                raise JudgeAnswerError("judge_http_error", f"HTTP {exc.status_code} after {self.cfg.max_retries} "
                                       "retries") from None
            content = (resp.choices[0].message.content if resp.choices else "") or ""
            try:
                return parse_judgement(content)
            except JudgeAnswerError as exc:
                last = exc
                messages = repair_messages(self.prompts(row["language"]), messages, content, exc)
        assert last is not None
        raise last


def unscored() -> dict[str, int]:
    return {c: NOT_SCORED for c in CRITERIA}
