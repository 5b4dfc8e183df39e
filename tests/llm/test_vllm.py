"""The vLLM (ray.data.llm) backend's config and its row pre/post-processing. The engine itself needs GPUs and
the vllm package, which this machine lacks: the processor is built only as far as its config here."""

import json

import pytest

from pipeline.config import REPO_ROOT, ConfigError, LLMConfig, load_config
from pipeline.llm.prompts import PromptSet, build_messages
from pipeline.llm.vllm import VLLMRequests, processor_kwargs

CFG = LLMConfig(backend="vllm", vllm={"model_source": "/models/Qwen2.5-7B-Instruct", "concurrency": 2,
                                      "batch_size": 16, "engine_kwargs": {"max_model_len": 8192}})
SPEC = {"conversation_id": "en-0000000000000001", "language": "en", "topic": "baking bread", "scenario": "asking for advice",
        "persona": "a retired teacher", "num_exchanges": 2, "seed": 5, "reject_reason": None}


def test_config_builds_a_vllm_processor_config():
    pytest.importorskip("aiohttp")  # ray.data.llm imports it
    from ray.data.llm import vLLMEngineProcessorConfig

    pc = vLLMEngineProcessorConfig(**processor_kwargs(CFG))  # what the executor builds
    assert (pc.model_source, pc.concurrency, pc.batch_size) == ("/models/Qwen2.5-7B-Instruct", 2, 16)
    assert pc.engine_kwargs["max_model_len"] == 8192


def test_vllm_backend_needs_a_model():
    with pytest.raises(ConfigError, match="llm.vllm.model_source"):
        load_config(REPO_ROOT / "configs/smoke.yaml", ["llm.backend=vllm"])


def test_preprocess_sends_the_same_prompts_as_the_openai_path_with_a_schema():
    req = VLLMRequests(CFG, REPO_ROOT / "prompts").preprocess(dict(SPEC))
    assert req["messages"] == build_messages(PromptSet.load(REPO_ROOT / "prompts", "en"), SPEC)
    schema = req["sampling_params"]["structured_outputs"]["json"]
    assert schema["properties"]["exchanges"]["minItems"] == 2 and req["sampling_params"]["seed"] == 5


def test_postprocess_parses_or_rejects_with_the_shared_validation():
    requests = VLLMRequests(CFG, REPO_ROOT / "prompts")
    good = json.dumps({"exchanges": [{"user": "How long should dough rise?", "assistant": "About an hour, until doubled."},
                                     {"user": "And in a cold kitchen?", "assistant": "Give it longer, maybe two hours."}]})
    row = requests.postprocess({**requests.preprocess(dict(SPEC)), "generated_text": good, "num_generated_tokens": 40,
                                "num_input_tokens": 120})
    assert [t["role"] for t in row["turns"]] == ["user", "assistant"] * 2 and "messages" not in row
    assert (row["llm_model"], row["prompt_tokens"], row["completion_tokens"]) == ("/models/Qwen2.5-7B-Instruct", 120, 40)
    bad = requests.postprocess({**requests.preprocess(dict(SPEC)), "generated_text": "I cannot do that."})
    assert (bad["reject_stage"], bad["reject_reason"]) == ("generate", "llm_not_json")


def test_rows_rejected_upstream_keep_their_reason():
    requests = VLLMRequests(CFG, REPO_ROOT / "prompts")
    spec = {**SPEC, "reject_stage": "source", "reject_reason": "source_has_code", "reject_details": "x"}
    out = requests.postprocess({**requests.preprocess(spec), "generated_text": "x"})
    assert (out["reject_stage"], out["reject_reason"]) == ("source", "source_has_code")
