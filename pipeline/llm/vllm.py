"""In-cluster generation with ray.data.llm (vLLM engine actors on GPUs): same prompts, schema and validation
as the OpenAI-compatible path; only the transport differs. Needs `pip install -e .[vllm]` and GPUs.
The processor itself (ray.data.llm) is built by the executor from `processor_kwargs` and `VLLMRequests`.

One pass per conversation: a response that fails validation is rejected with its reason (the openai path
can afford a repair round trip; here a repair would be a second processor pass over the rejects).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.config import LLMConfig
from pipeline.llm.parse import parse_conversation
from pipeline.llm.prompts import PromptSet, build_messages, response_schema
from pipeline.reasons import Rejected
from pipeline.schema import is_rejected, reject


class VLLMRequests:
    """Row-level pre/post-processing around the vLLM processor (pure functions of a row; unit-tested)."""

    def __init__(self, cfg: LLMConfig, prompts_dir: Path):
        self.cfg, self.prompts_dir = cfg, prompts_dir
        self._prompts: dict[str, PromptSet] = {}

    def _prompt_set(self, language: str) -> PromptSet:
        if language not in self._prompts:
            self._prompts[language] = PromptSet.load(self.prompts_dir, language)
        return self._prompts[language]

    def preprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        if is_rejected(row):  # rejected upstream (e.g. unsuitable source): send a trivial request, keep the reason
            messages = [{"role": "user", "content": "ok"}]
            sampling: dict[str, Any] = {"max_tokens": 1}
        else:
            messages = build_messages(self._prompt_set(row["language"]), row)
            sampling = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens, "seed": int(row["seed"]),
                        self.cfg.vllm.structured_output_key: {"json": response_schema(int(row["num_exchanges"]), self.cfg)}}
        return {**row, "messages": messages, "sampling_params": sampling}

    def postprocess(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in row.items() if k not in ("messages", "sampling_params", "generated_text",
                                                          "generated_tokens", "prompt", "prompt_token_ids",
                                                          "num_generated_tokens", "num_input_tokens", "request_id",
                                                          "time_taken_llm", "params", "metrics")}
        if is_rejected(out):
            return out
        out.update(llm_model=self.cfg.vllm.model_source, llm_requests=1,
                   prompt_tokens=int(row.get("num_input_tokens") or 0),
                   completion_tokens=int(row.get("num_generated_tokens") or 0))
        try:
            out["turns"] = parse_conversation(row.get("generated_text") or "", int(row["num_exchanges"]), self.cfg,
                                              row["language"])
        except Rejected as exc:
            reject(out, "generate", exc.reason, exc.details, exc.failures)
        return out


def processor_kwargs(cfg: LLMConfig) -> dict[str, Any]:
    """The arguments of ray.data.llm's vLLMEngineProcessorConfig for `llm.vllm` (the executor builds it)."""
    v = cfg.vllm
    return dict(model_source=v.model_source, engine_kwargs=dict(v.engine_kwargs), concurrency=v.concurrency,
                batch_size=v.batch_size, accelerator_type=v.accelerator_type)
