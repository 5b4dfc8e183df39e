"""Generate: an LLM writes each planned conversation as strict JSON through an OpenAI-compatible API.

Prompt building, the response schema and parsing/validation are plain functions so that every backend
(openai client here, in-cluster vLLM later) shares them. Retries with backoff on 429/5xx/timeouts and
Retry-After come from the openai client (`max_retries`); a response that fails validation gets
`repair_attempts` follow-up requests quoting the problem, then the conversation is rejected with a reason.
A server that cannot be reached at all (connection refused or cut on every retry) is an outage, not a
property of the conversation: the batch raises `LLMUnavailable`, the run stops, and a rerun resumes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.config import LLMConfig
from pipeline.normalize.en import fix_contractions
from pipeline.normalize.langid import wrong_language
from pipeline.records import empty_turn, reject
from pipeline.stages.base import Rejected, Stage

# --- prompts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSet:
    system: jinja2.Template
    user: jinja2.Template
    repair: jinja2.Template
    rewrite_system: jinja2.Template
    rewrite_user: jinja2.Template

    @classmethod
    def load(cls, prompts_dir: Path, language: str) -> "PromptSet":
        env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(prompts_dir / language)),
                                 undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        names = ("system", "user", "repair", "rewrite_system", "rewrite_user")
        return cls(*(env.get_template(f"{name}.jinja") for name in names))


def build_messages(prompts: PromptSet, spec: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for one conversation: written from the taxonomy, or rewritten from a source dialogue."""
    if spec.get("source_messages"):
        source = [{"role": m["role"], "content": m["content"]} for m in spec["source_messages"]]
        fields = {"num_exchanges": spec["num_exchanges"], "language": spec["language"],
                  "source_json": json.dumps(source, ensure_ascii=False)}
        return [{"role": "system", "content": prompts.rewrite_system.render(**fields).strip()},
                {"role": "user", "content": prompts.rewrite_user.render(**fields).strip()}]
    fields = {k: spec[k] for k in ("topic", "scenario", "persona", "num_exchanges", "language")}
    return [{"role": "system", "content": prompts.system.render(**fields).strip()},
            {"role": "user", "content": prompts.user.render(**fields).strip()}]


def response_schema(num_exchanges: int, cfg: LLMConfig) -> dict[str, Any]:
    text = {"type": "string", "minLength": cfg.min_turn_chars, "maxLength": cfg.max_turn_chars}
    return {
        "type": "object",
        "properties": {"exchanges": {
            "type": "array", "minItems": num_exchanges, "maxItems": num_exchanges,
            "items": {"type": "object", "properties": {"user": text, "assistant": text},
                      "required": ["user", "assistant"], "additionalProperties": False}}},
        "required": ["exchanges"], "additionalProperties": False,
    }


def response_format(num_exchanges: int, cfg: LLMConfig) -> dict[str, Any] | None:
    schema = response_schema(num_exchanges, cfg)
    if cfg.response_format == "json_object_schema":  # llama.cpp server: grammar from the schema
        return {"type": "json_object", "schema": schema}
    if cfg.response_format == "json_schema":  # OpenAI, vLLM, SGLang
        return {"type": "json_schema", "json_schema": {"name": "conversation", "schema": schema, "strict": True}}
    return None


# --- parsing and validation ---------------------------------------------------------------------


class _Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str


class _Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exchanges: list[_Exchange]


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# the model stepping out of the conversation (refusals, talk about prompts, injected instructions)
_META_TEXT = re.compile(r"as an ai (language )?model|ignore (all |any )?(the )?(previous|prior|above) instructions|"
                        r"system prompt|\bjson (object|format)\b|作为(一个)?(人工智能|AI)(语言)?模型|忽略(之前|以上)(的)?(所有)?指令",
                        re.I)
# pieces of the JSON envelope leaking into a turn: {"user": ..., ]}, etc.
# ... and of a JSON list of strings inside one turn: "Sure.', 'I was wondering ..." (a list seam)
_JSON_DEBRIS = re.compile(r"""[{\[]\s*['"](?:user|assistant|exchanges)['"]|['"](?:user|assistant|exchanges)['"]\s*:"""
                          r"""|[\]}]\s*[,}\]]"""
                          r"""|[.!?,。！？，]\s*['"]\s*,\s*['"]\s*\S""")
# a turn that names a role instead of speaking ("The user.", "Assistant:"), or narrates ("The user asks ...")
_ROLE_AS_TEXT = re.compile(r"^(?:the\s+)?(?:user|assistant|human|ai|bot|customer|speaker)\s*[.!?:]?$|"
                           r"^the\s+(?:user|assistant)\s+(?:says|asks|replies|responds|wants|answers)\b|"
                           r"^(?:用户|助手|语音助手)[。！？.:：]?$", re.I)
# stray punctuation or a role label before the first word (". Sure", "Assistant: Sure"): dropped, not rejected
_LEADING_DEBRIS = re.compile(r"""^(?:[.,;:!?)\]}。，；：！？、]+\s*|['"]\s*,\s*['"]?\s*|"""
                             r"(?:user|assistant|用户|助手)\s*[:：]\s*)+", re.I)


def parse_conversation(content: str, num_exchanges: int, cfg: LLMConfig, language: str) -> list[dict[str, Any]]:
    """LLM output -> turns (user first, alternating) or `Rejected` with the reason code and details."""
    match = re.search(r"\{.*\}", content or "", re.S)  # tolerate prose or code fences around the object
    if not match:
        raise Rejected("llm_not_json", f"no JSON object in {len(content or '')} characters of output")
    try:
        # strict=False: raw newlines/tabs inside strings are common in LLM JSON and harmless here
        convo = _Conversation.model_validate(json.loads(match.group(0), strict=False))
    except json.JSONDecodeError as exc:
        raise Rejected("llm_not_json", str(exc)) from None
    except ValidationError as exc:
        raise Rejected("llm_wrong_shape", exc.errors()[0]["msg"] + " at " + ".".join(map(str, exc.errors()[0]["loc"]))) from None
    if len(convo.exchanges) != num_exchanges:
        raise Rejected("llm_wrong_exchange_count", f"asked for {num_exchanges}, got {len(convo.exchanges)}")
    turns = []
    for i, ex in enumerate(convo.exchanges):
        for role, text in (("user", ex.user), ("assistant", ex.assistant)):
            if _CONTROL.search(text):
                raise Rejected("llm_control_characters", f"exchange {i} {role}")
            text = _LEADING_DEBRIS.sub("", " ".join(text.split()))
            if language == "en":
                text = fix_contractions(text)
            where = f"exchange {i} {role}"
            if len(text) < cfg.min_turn_chars:
                raise Rejected("llm_turn_too_short", f"{where}: {len(text)} chars < {cfg.min_turn_chars}: {text!r}")
            if len(text) > cfg.max_turn_chars:
                raise Rejected("llm_turn_too_long", f"{where}: {len(text)} chars > {cfg.max_turn_chars}: {text[:80]!r}...")
            visible = [c for c in text if not c.isspace()]
            if sum(c.isalpha() for c in visible) < 0.5 * len(visible):
                raise Rejected("llm_turn_not_prose", f"{where}: mostly digits or symbols: {text[:80]!r}")
            if _JSON_DEBRIS.search(text):
                raise Rejected("llm_json_in_text", f"{where}: {text[:80]!r}")
            if _META_TEXT.search(text) or _ROLE_AS_TEXT.search(text):
                raise Rejected("llm_meta_text", f"{where}: {text[:80]!r}")
            turns.append(empty_turn(role, text))
    problem = wrong_language([t["display_text"] for t in turns], language)
    if problem:
        raise Rejected("llm_wrong_language", problem)
    return turns


# --- the stage ----------------------------------------------------------------------------------


class LLMUnavailable(RuntimeError):
    """The LLM server stopped answering (connection refused/reset after every retry). Rejecting the rest of the
    plan as `llm_unreachable` would record an outage as a property of each conversation and skip them forever;
    stopping instead keeps them for the rerun (conversations generated so far are in the text cache)."""


class GenerateStage(Stage):
    name = "generate"

    def __init__(self, cfg: LLMConfig, base_url: str, prompts_dir: Path):
        super().__init__()
        self.cfg, self.base_url, self.prompts_dir = cfg, base_url, prompts_dir
        self._prompts: dict[str, PromptSet] = {}

    def prompts(self, language: str) -> PromptSet:
        if language not in self._prompts:
            self._prompts[language] = PromptSet.load(self.prompts_dir, language)
        return self._prompts[language]

    def process_rows(self, rows: list[dict[str, Any]]) -> None:
        asyncio.run(self._generate_all(rows))

    async def _generate_all(self, rows: list[dict[str, Any]]) -> None:
        import openai

        # The key is read here, in the worker, from the environment; it never enters config or rows.
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.cfg.api_key_env) or "no-key",
                                    max_retries=self.cfg.max_retries, timeout=self.cfg.timeout_s)
        limit = asyncio.Semaphore(self.cfg.concurrency)
        outage: list[LLMUnavailable] = []

        async def one(row: dict[str, Any]) -> None:
            async with limit:
                if outage:  # the server is gone: do not spend every row's retries on it
                    return
                try:
                    await self._generate_one(client, row)
                except LLMUnavailable as exc:
                    outage.append(exc)
                except Rejected as exc:
                    reject(row, self.name, exc.reason, exc.details)
                except Exception as exc:  # one bad conversation must not fail the batch; the reason is recorded
                    reject(row, self.name, "generate_error", f"{type(exc).__name__}: {exc}")

        try:
            await asyncio.gather(*(one(r) for r in rows))
        finally:
            await client.close()
        if outage:
            raise outage[0]

    async def _server_reachable(self, client: Any) -> bool:
        """Quick GET /models probes: does anything still answer at base_url? Any HTTP answer (even an error) or
        an accepted-but-slow connection counts; two refused/reset probes a second apart mean the server is gone."""
        import openai

        for probe in range(2):
            if probe:
                await asyncio.sleep(1.0)
            try:
                await client.with_options(max_retries=0, timeout=min(10.0, self.cfg.timeout_s)).models.list()
                return True
            except (openai.APIStatusError, openai.APITimeoutError):
                return True
            except Exception:  # noqa: BLE001 - refused or reset
                continue
        return False

    async def _generate_one(self, client: Any, row: dict[str, Any]) -> None:
        import openai

        messages = build_messages(self.prompts(row["language"]), row)
        row.update(llm_model=self.cfg.model, llm_requests=0, prompt_tokens=0, completion_tokens=0)
        last: Rejected | None = None
        for _attempt in range(1 + self.cfg.repair_attempts):
            kwargs: dict[str, Any] = dict(model=self.cfg.model, messages=messages, temperature=self.cfg.temperature,
                                          max_tokens=self.cfg.max_tokens, seed=int(row["seed"]))
            fmt = response_format(int(row["num_exchanges"]), self.cfg)
            if fmt is not None:
                kwargs["response_format"] = fmt
            try:
                resp = await client.chat.completions.create(**kwargs)
            except openai.APITimeoutError:
                raise Rejected("llm_timeout", f"no answer within {self.cfg.timeout_s}s after {self.cfg.max_retries} retries") from None
            except openai.APIConnectionError as exc:
                # a connection cut mid-answer is this request's fault unless the server is really gone
                if await self._server_reachable(client):
                    raise Rejected("llm_connection_error", f"{type(exc).__name__} after {self.cfg.max_retries} "
                                   "retries; the server still answers") from None
                raise LLMUnavailable(f"LLM server {self.base_url} unreachable after {self.cfg.max_retries} retries "
                                     f"({type(exc).__name__}: {exc})") from None
            except openai.APIStatusError as exc:
                raise Rejected("llm_http_error", f"HTTP {exc.status_code} after {self.cfg.max_retries} retries") from None
            row["llm_requests"] += 1
            if resp.usage is not None:
                row["prompt_tokens"] += resp.usage.prompt_tokens or 0
                row["completion_tokens"] += resp.usage.completion_tokens or 0
            content = resp.choices[0].message.content if resp.choices else ""
            try:
                row["turns"] = parse_conversation(content or "", int(row["num_exchanges"]), self.cfg, row["language"])
                return
            except Rejected as exc:
                last = exc
                repair = self.prompts(row["language"]).repair.render(error=exc.reason.replace("_", " "),
                                                                     num_exchanges=row["num_exchanges"])
                messages = messages[:2] + [{"role": "assistant", "content": (content or "")[:4000]},
                                           {"role": "user", "content": repair.strip()}]
        assert last is not None
        raise last
