"""LLM backends behind one interface: fill a batch of planned conversations with generated turns.

`openai`: any OpenAI-compatible server through the openai client (`pipeline.llm.openai_compat`), including the
embedded llama.cpp server (`pipeline.llm.server`); `vllm`: vLLM engine actors inside the Ray cluster
(`pipeline.llm.vllm`, wired by the executor). Prompts, the response schema and validation are shared
(`pipeline.llm.prompts`, `pipeline.llm.parse`).
"""

from __future__ import annotations

from typing import Any, Protocol


class LLMUnavailable(RuntimeError):
    """The LLM server stopped answering (connection refused/reset after every retry). Rejecting the rest of the
    plan as `llm_unreachable` would record an outage as a property of each conversation and skip them forever;
    stopping instead keeps them for the rerun (conversations generated so far are in the text cache)."""


class LLMBackend(Protocol):
    def generate_batch(self, rows: list[dict[str, Any]]) -> None:
        """Set each row's `turns`, `llm_model` and usage columns, or reject the row with a reason;
        raise LLMUnavailable when the service is gone."""
        ...
