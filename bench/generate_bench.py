"""Generate-stage benchmark: client overhead and concurrency scaling against the local llama.cpp server.

    python bench/generate_bench.py [--n 8] [--concurrency 1,4,16]

For each concurrency c it runs the same N conversation specs twice against one SmolLM2 server on 127.0.0.1:
  raw   - bare openai-client requests with the same prompts and schema (the server alone),
  stage - GenerateStage (validation, repair, bookkeeping) on a batch of the same specs.
It prints conversations/s for both and the ratio stage/raw (target >= 0.9), and stage throughput at each c
relative to c=1. Both measured in the same run, on the same server, so machine noise mostly cancels.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyarrow as pa  # noqa: E402

from pipeline.assets import smollm2_gguf  # noqa: E402
from pipeline.config import REPO_ROOT, LLMConfig  # noqa: E402
from pipeline.llm.prompts import PromptSet, Taxonomy, build_messages, response_format  # noqa: E402
from pipeline.llm.server import LlamaCppServer  # noqa: E402
from pipeline.stages.generate import GenerateStage  # noqa: E402
from pipeline.stages.plan import PlanStage  # noqa: E402


def specs(n: int) -> list[dict]:
    plan = PlanStage(dataset="bench", languages=["en"], exchanges={"en": (2, 2)}, seed=0, text_digest="bench",
                     splits={"train": 1.0}, taxonomies={"en": Taxonomy.load(REPO_ROOT / "prompts/en/taxonomy.yaml")})
    return plan(pa.table({"id": list(range(n))})).to_pylist()


async def raw(base_url: str, rows: list[dict], cfg: LLMConfig, concurrency: int) -> float:
    import openai

    prompts = PromptSet.load(REPO_ROOT / "prompts", "en")
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", timeout=cfg.timeout_s)
    limit = asyncio.Semaphore(concurrency)

    async def one(row):
        async with limit:
            await client.chat.completions.create(model=cfg.model, messages=build_messages(prompts, row),
                                                 temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                                 seed=row["seed"], response_format=response_format(2, cfg))

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in rows))
    await client.close()
    return len(rows) / (time.perf_counter() - started)


def stage(base_url: str, rows: list[dict], cfg: LLMConfig) -> tuple[float, int]:
    gen = GenerateStage(cfg, base_url, REPO_ROOT / "prompts")
    started = time.perf_counter()
    out = gen(pa.Table.from_pylist(rows)).to_pylist()
    return len(rows) / (time.perf_counter() - started), sum(r["llm_requests"] or 0 for r in out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--concurrency", default="1,4,16")
    args = ap.parse_args()
    rows = specs(args.n)
    print(f"{'concurrency':>11} {'raw conv/s':>11} {'stage conv/s':>13} {'stage/raw':>10} {'requests':>9} {'vs c=1':>7}")
    with LlamaCppServer(smollm2_gguf(), "SmolLM2-135M-Instruct", Path("/tmp/speechchat-bench-llm.log")) as url:
        base = None
        for c in (int(x) for x in args.concurrency.split(",")):
            # repair_attempts=0: the stage then sends exactly the requests raw sends, so the ratio is overhead
            cfg = LLMConfig(concurrency=c, max_tokens=300, repair_attempts=0)
            r = asyncio.run(raw(url, rows, cfg, c))
            s, requests = stage(url, rows, cfg)
            base = base or s
            print(f"{c:>11} {r:>11.3f} {s:>13.3f} {s / r:>10.2f} {requests:>9} {s / base:>7.2f}")


if __name__ == "__main__":
    main()
