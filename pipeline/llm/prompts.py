"""What the LLM is asked: prompt templates and the topic taxonomy of prompts/<language>/, and the response schema.

Plain functions and records shared by every LLM backend (the OpenAI-compatible client, vLLM in the cluster):
`PromptSet` (Jinja templates), `Taxonomy` (weighted topics, scenarios and personas the planner draws from),
`build_messages` (the chat for one conversation spec) and `response_schema`/`response_format` (the JSON the
answer must match, for servers that constrain decoding to it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

from pipeline.config import LLMConfig


@dataclass(frozen=True)
class Taxonomy:
    topics: list[tuple[str, float]]
    scenarios: list[tuple[str, float]]
    personas: list[tuple[str, float]]
    domains: dict[str, str] = field(default_factory=dict)  # topic -> domain

    @staticmethod
    def _weighted(items: Any, what: str, path: Path) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for item in items or []:
            if isinstance(item, str):
                out.append((item, 1.0))
            elif isinstance(item, dict) and "name" in item:
                out.append((str(item["name"]), float(item.get("weight", 1.0))))
            else:
                raise ValueError(f"{path}: {what} entry {item!r} must be a string or {{name, weight}}")
        if not out:
            raise ValueError(f"{path}: no {what} listed")
        return out

    @classmethod
    def load(cls, path: Path) -> Taxonomy:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a readable YAML taxonomy ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: must be a mapping with topics, scenarios and personas")
        domains = {str(t["name"]): str(t.get("domain", "")) for t in data.get("topics") or [] if isinstance(t, dict)}
        return cls(*(cls._weighted(data.get(k), k, path) for k in ("topics", "scenarios", "personas")), domains)


@dataclass(frozen=True)
class PromptSet:
    system: jinja2.Template
    user: jinja2.Template
    repair: jinja2.Template
    rewrite_system: jinja2.Template
    rewrite_user: jinja2.Template

    @classmethod
    def load(cls, prompts_dir: Path, language: str) -> PromptSet:
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
