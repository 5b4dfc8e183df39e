"""The OpenAI-compatible LLM backend: async requests with bounded concurrency, retries and repair.

Retries with backoff on 429/5xx/timeouts and Retry-After come from the openai client (`max_retries`); a
response that fails validation (`pipeline.llm.parse`) gets `repair_attempts` follow-up requests quoting the
problem, then the conversation is rejected with a reason. A server that cannot be reached at all (connection
refused or cut on every retry) is an outage, not a property of the conversation: `LLMUnavailable` is raised,
the run stops, and a rerun resumes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from pipeline.config import LLMConfig
from pipeline.llm.base import LLMUnavailable
from pipeline.llm.parse import parse_conversation
from pipeline.llm.prompts import PromptSet, build_messages, response_format
from pipeline.reasons import Rejected
from pipeline.schema import reject


class OpenAICompatibleLLM:
    """Any OpenAI-compatible chat server (llama.cpp, vLLM serve, SGLang, a hosted API) through the openai client."""

    stage = "generate"  # rejections are recorded as the generate stage's

    def __init__(self, cfg: LLMConfig, base_url: str, prompts_dir: Path):
        self.cfg, self.base_url, self.prompts_dir = cfg, base_url, prompts_dir
        self._prompts: dict[str, PromptSet] = {}

    def prompts(self, language: str) -> PromptSet:
        if language not in self._prompts:
            self._prompts[language] = PromptSet.load(self.prompts_dir, language)
        return self._prompts[language]

    def generate_batch(self, rows: list[dict[str, Any]]) -> None:
        """Fill each row's turns and LLM usage, or reject it with a reason; raise LLMUnavailable when the server
        is gone (the run stops; nothing is recorded for the rows not generated)."""
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
                    reject(row, self.stage, exc.reason, exc.details, exc.failures)
                except Exception as exc:  # one bad conversation must not fail the batch; the reason is recorded
                    reject(row, self.stage, "generate_error", f"{type(exc).__name__}: {exc}")

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
