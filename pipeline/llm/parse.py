"""Validation of an LLM's answer: JSON -> turns (user first, alternating), or a rejection with its reason.

Shared by every LLM backend. Checks: a JSON object of the response schema's shape, the planned number of
exchanges, control, bidirectional and invisible characters (`pipeline.normalize.chars`: invisible ones removed,
the others rejected), turn lengths, prose (not digits or symbols), no pieces of the JSON envelope, no meta talk
(refusals, prompt injection), and the conversation's language.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.config import LLMConfig
from pipeline.normalize.chars import hostile_character, strip_invisible
from pipeline.normalize.en import fix_contractions
from pipeline.normalize.langid import wrong_language
from pipeline.reasons import Rejected
from pipeline.schema import empty_turn


class _Exchange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str
    assistant: str


class _Conversation(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exchanges: list[_Exchange]


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
        raise Rejected("llm_wrong_exchange_count", f"asked for {num_exchanges}, got {len(convo.exchanges)}",
                       metric="exchanges", value=len(convo.exchanges), limit=num_exchanges)
    turns = []
    for i, ex in enumerate(convo.exchanges):
        for role, text in (("user", ex.user), ("assistant", ex.assistant)):
            text = strip_invisible(text)
            hostile = hostile_character(text)
            if hostile:
                raise Rejected("llm_control_characters", f"exchange {i} {role}: {hostile}",
                               turn=2 * i + (role == "assistant"), role=role)
            text = _LEADING_DEBRIS.sub("", " ".join(text.split()))
            if language == "en":
                text = fix_contractions(text)
            where = f"exchange {i} {role}"
            at = {"turn": 2 * i + (role == "assistant"), "role": role}
            if len(text) < cfg.min_turn_chars:
                raise Rejected("llm_turn_too_short", f"{where}: {len(text)} chars < {cfg.min_turn_chars}: {text!r}", **at,
                               metric="chars", value=len(text), limit=cfg.min_turn_chars)
            if len(text) > cfg.max_turn_chars:
                raise Rejected("llm_turn_too_long", f"{where}: {len(text)} chars > {cfg.max_turn_chars}: {text[:80]!r}...",
                               **at, metric="chars", value=len(text), limit=cfg.max_turn_chars)
            visible = [c for c in text if not c.isspace()]
            if sum(c.isalpha() for c in visible) < 0.5 * len(visible):
                raise Rejected("llm_turn_not_prose", f"{where}: mostly digits or symbols: {text[:80]!r}", **at)
            if _JSON_DEBRIS.search(text):
                raise Rejected("llm_json_in_text", f"{where}: {text[:80]!r}", **at)
            if _META_TEXT.search(text) or _ROLE_AS_TEXT.search(text):
                raise Rejected("llm_meta_text", f"{where}: {text[:80]!r}", **at)
            turns.append(empty_turn(role, text))
    problem = wrong_language([t["display_text"] for t in turns], language)
    if problem:
        raise Rejected("llm_wrong_language", problem)
    return turns
