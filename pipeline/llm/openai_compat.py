"""The OpenAI-compatible LLM backend: async requests with bounded concurrency, retries and repair.

Each attempt has a total deadline of `llm.timeout_s`, first byte to last: the openai client's own timeout bounds
only the gap between two reads, so a server trickling a byte a second would hold a request forever. Retries
(429/5xx/timeouts/connection errors, backoff, Retry-After honoured up to a minute) are therefore made here,
around that deadline, `llm.max_retries` times. A response that fails validation (`pipeline.llm.parse`) gets
`repair_attempts` follow-up requests quoting the problem, then the conversation is rejected with a reason.

A failure that does not depend on the conversation stops the run instead (`LLMUnavailable`; exit 3, nothing
recorded as rejected, a rerun resumes): the server cannot be reached (connection refused or cut on every
retry); it refuses the request itself (HTTP 401/403/404/405/407: a wrong key, URL or model); or it is not a
working chat server (after a failed request, GET /models is refused or does not answer with a model list:
a login page, an empty body); or the last SYSTEMATIC_STREAK requests all failed with no good answer between
them. Only failures of one conversation while the server works are rejections (`llm_http_error`, `llm_timeout`,
`llm_bad_response`, ...).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from pipeline.config import LLMConfig
from pipeline.llm.base import LLMUnavailable
from pipeline.llm.parse import parse_conversation
from pipeline.llm.prompts import PromptSet, build_messages, response_format
from pipeline.reasons import Rejected
from pipeline.schema import reject

# statuses that say the request itself is refused, whatever the conversation: never retried, the run stops
REFUSED = {401: "unauthorized", 403: "forbidden", 404: "not found", 405: "method not allowed",
           407: "proxy authentication required"}
MAX_RETRY_AFTER_S = 60.0
SYSTEMATIC_STREAK = 5  # consecutive failed requests (no good answer between them) that stop the run


class BadAnswer(Exception):
    """The server answered, but not with a chat completion (an empty body, an HTML page, another shape)."""


def completion_text(resp: Any) -> tuple[str, Any]:
    """(message content, usage) of a chat completion, or BadAnswer saying what came instead."""
    choices = getattr(resp, "choices", None)
    if resp is None or isinstance(resp, str | bytes) or not isinstance(choices, list):
        shown = resp[:60] if isinstance(resp, str | bytes) else type(resp).__name__
        raise BadAnswer(f"not a chat completion: {shown!r}")
    message = getattr(choices[0], "message", None) if choices else None
    content = getattr(message, "content", None)
    return (content if isinstance(content, str) else ""), getattr(resp, "usage", None)


def _retry_after(exc: Any) -> float | None:
    """Seconds the server asked to wait (Retry-After: seconds or an HTTP date), or None."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def _backoff(attempt: int) -> float:
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


class OpenAICompatibleLLM:
    """Any OpenAI-compatible chat server (llama.cpp, vLLM serve, SGLang, a hosted API) through the openai client."""

    stage = "generate"  # rejections are recorded as the generate stage's

    def __init__(self, cfg: LLMConfig, base_url: str, prompts_dir: Path):
        self.cfg, self.base_url, self.prompts_dir = cfg, base_url, prompts_dir
        self._prompts: dict[str, PromptSet] = {}
        self._streak = 0  # consecutive failed requests with no good answer between them (this worker)

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

        # The key is read here, in the worker, from the environment; it never enters config or rows. Credentials
        # that llm.base_url carried were split off on load: only this header holds them.
        headers = {}
        if self.cfg.url_credentials:
            headers["Authorization"] = "Basic " + base64.b64encode(self.cfg.url_credentials.encode()).decode()
        # max_retries=0: retries are made in `_request`, around the total deadline of each attempt
        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=os.environ.get(self.cfg.api_key_env) or "no-key",
                                    max_retries=0, timeout=self.cfg.timeout_s, default_headers=headers or None)
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

    # --- telling a broken server from a bad conversation ------------------------------------------------

    def _unusable(self, what: str) -> LLMUnavailable:
        return LLMUnavailable(f"LLM server {self.base_url} unusable: {what}")

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

    async def _health_problem(self, client: Any) -> str | None:
        """After a failed request: is this a working chat server? A verdict only when GET /models is refused
        (4xx: a wrong key, URL) or answers 200 with something that is not a model list (a login page, an empty
        body); None when it answers with a model list, or is slow, overloaded (429/5xx) or cut: then the failure
        counts as this request's (and SYSTEMATIC_STREAK still stops a server that fails every request)."""
        import openai

        probe = client.with_options(max_retries=0, timeout=min(10.0, self.cfg.timeout_s))
        try:
            page = await asyncio.wait_for(probe.models.list(), min(10.0, self.cfg.timeout_s))
        except openai.APIStatusError as exc:
            code = exc.status_code
            return None if code in (408, 409, 429) or code >= 500 else f"GET /models answers HTTP {code}"
        except (json.JSONDecodeError, openai.APIResponseValidationError, AttributeError, TypeError):
            return "GET /models does not answer with a model list"  # a body that is not JSON, or not a list
        except Exception:  # noqa: BLE001 - slow, refused, reset: no verdict
            return None
        if not isinstance(getattr(page, "data", None), list):
            return f"GET /models does not answer with a model list ({type(page).__name__})"
        return None

    async def _failed(self, client: Any, failure: str) -> None:
        """A request failed after its retries: raise LLMUnavailable when the cause is the server, not the
        conversation; return (the caller rejects the conversation) otherwise."""
        self._streak += 1
        if self._streak >= SYSTEMATIC_STREAK:
            raise self._unusable(f"the last {self._streak} requests all failed, with no good answer between "
                                 f"them (the latest: {failure})")
        problem = await self._health_problem(client)
        if problem:
            raise self._unusable(f"{failure}, and {problem} (is llm.base_url a chat server's /v1?)")

    async def _request(self, client: Any, kwargs: dict[str, Any]) -> tuple[str, Any]:
        """One chat completion: each attempt within llm.timeout_s in all, llm.max_retries retries with backoff on
        timeouts, connection errors, 408/409/429/5xx and answers that are not chat completions."""
        import openai

        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = await asyncio.wait_for(client.chat.completions.create(**kwargs), self.cfg.timeout_s)
                return completion_text(resp)
            except openai.APIStatusError as exc:
                code = exc.status_code
                retry_after = _retry_after(exc)
                if (code in REFUSED or not (code in (408, 409, 429) or code >= 500) or attempt == self.cfg.max_retries
                        or (retry_after or 0) > MAX_RETRY_AFTER_S):
                    raise
                pause = retry_after if retry_after is not None else _backoff(attempt)
            except (TimeoutError, openai.APITimeoutError, openai.APIConnectionError, openai.APIResponseValidationError,
                    json.JSONDecodeError, BadAnswer):
                if attempt == self.cfg.max_retries:
                    raise
                pause = _backoff(attempt)
            await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _generate_one(self, client: Any, row: dict[str, Any]) -> None:
        import openai

        messages = build_messages(self.prompts(row["language"]), row)
        row.update(llm_model=self.cfg.model, llm_requests=0, prompt_tokens=0, completion_tokens=0)
        retries = f"after {self.cfg.max_retries} retries"
        last: Rejected | None = None
        for _attempt in range(1 + self.cfg.repair_attempts):
            kwargs: dict[str, Any] = dict(model=self.cfg.model, messages=messages, temperature=self.cfg.temperature,
                                          max_tokens=self.cfg.max_tokens, seed=int(row["seed"]))
            fmt = response_format(int(row["num_exchanges"]), self.cfg)
            if fmt is not None:
                kwargs["response_format"] = fmt
            try:
                content, usage = await self._request(client, kwargs)
            except (TimeoutError, openai.APITimeoutError):
                await self._failed(client, f"no answer within {self.cfg.timeout_s}s")
                raise Rejected("llm_timeout", f"no answer within {self.cfg.timeout_s}s (in all, per attempt) "
                               f"{retries}") from None
            except openai.APIConnectionError as exc:
                # a connection cut mid-answer is this request's fault unless the server is really gone
                if not await self._server_reachable(client):
                    raise LLMUnavailable(f"LLM server {self.base_url} unreachable {retries} "
                                         f"({type(exc).__name__}: {exc})") from None
                await self._failed(client, f"{type(exc).__name__}")
                raise Rejected("llm_connection_error", f"{type(exc).__name__} {retries}; the server still "
                               "answers") from None
            except openai.APIStatusError as exc:
                code = exc.status_code
                if code in REFUSED:
                    key_set = "set" if os.environ.get(self.cfg.api_key_env) else "not set"
                    hint = (f"check the key in ${self.cfg.api_key_env} ({key_set})" if code in (401, 403, 407)
                            else "check llm.base_url (it usually ends in /v1) and llm.model")
                    raise self._unusable(f"every request is refused with HTTP {code} ({REFUSED[code]}); "
                                         f"{hint}") from None
                await self._failed(client, f"HTTP {code}")
                raise Rejected("llm_http_error", f"HTTP {code} {retries}") from None
            except (BadAnswer, json.JSONDecodeError, openai.APIResponseValidationError) as exc:
                what = str(exc) if isinstance(exc, BadAnswer) else f"a body that is not a chat completion ({exc})"
                await self._failed(client, what)
                raise Rejected("llm_bad_response", f"{what[:200]} {retries}") from None
            self._streak = 0
            row["llm_requests"] += 1
            if usage is not None:
                row["prompt_tokens"] += getattr(usage, "prompt_tokens", 0) or 0
                row["completion_tokens"] += getattr(usage, "completion_tokens", 0) or 0
            try:
                row["turns"] = parse_conversation(content, int(row["num_exchanges"]), self.cfg, row["language"])
                return
            except Rejected as exc:
                last = exc
                repair = self.prompts(row["language"]).repair.render(error=exc.reason.replace("_", " "),
                                                                     num_exchanges=row["num_exchanges"])
                messages = messages[:2] + [{"role": "assistant", "content": content[:4000]},
                                           {"role": "user", "content": repair.strip()}]
        assert last is not None
        raise last
