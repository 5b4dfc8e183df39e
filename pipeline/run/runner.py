"""The run loop: preflight, resume state, one streaming pass over the flow, stats, card and report.

`run` is one pass, or in exact-count mode (`target.conversations`) bounded rounds that plan more until the
output holds the target number of kept conversations per language. A stop caused by the environment (a crash
loop, an LLM outage, a full disk) becomes a `JobStopped` that says what happened and that a rerun resumes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import ConfigError, RunConfig, dump_resolved, is_url
from pipeline.io.layout import Layout
from pipeline.io.ownership import claim_output
from pipeline.io.stats import compute_stats, write_stats
from pipeline.io.storage import node_cache_dir
from pipeline.io.text_cache import cached_ids, cached_rows
from pipeline.redact import redact
from pipeline.run.flow import build_stages, run_languages
from pipeline.run.preflight import preflight
from pipeline.run.selection import StageSelection
from pipeline.run.stops import JobStopped, explain_stop
from pipeline.run.summary import RunSummary, print_summary
from pipeline.stages.base import RunContext

log = logging.getLogger("speechchat")


def run(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | str | None = None,
        adopt_output: bool = False) -> dict[str, Any]:
    """`run_rounds`, with a stop caused by the environment (crash loop, LLM outage, full disk) turned into a
    `JobStopped` that says what happened and that a rerun resumes. `adopt_output`: a non-empty folder without
    the pipeline's marker may become its output (`pipeline.io.ownership`)."""
    try:
        return run_rounds(cfg, stages, text_from, adopt_output)
    except (ConfigError, JobStopped):
        raise
    except Exception as exc:
        reason = explain_stop(exc, cfg)
        if reason is None:
            raise
        log.error("run stopped: %s", reason)
        try:  # best effort: the disk may be the problem
            Layout(cfg.output_location(), cfg.storage.env_names()).store.append_text(
                "state/runs.jsonl", redact(json.dumps({"stopped_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                                       "reason": reason})) + "\n")
        except OSError:
            pass
        raise JobStopped(reason) from exc


def run_rounds(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | str | None = None,
               adopt_output: bool = False) -> dict[str, Any]:
    """One pass, or in exact-count mode (`target.conversations`) bounded rounds that plan more until the
    output holds the target number of kept conversations per language."""
    stages = stages or StageSelection()
    if cfg.target.conversations is None or not (stages.generate and stages.audio):
        return run_once(cfg, stages, text_from, adopt_output=adopt_output)
    want = cfg.target.conversations
    cap = math.ceil(want * cfg.target.max_plan_factor)
    planned = want
    stats: dict[str, Any] = {}
    for round_no in range(1, cfg.target.max_rounds + 1):
        kept = {lang: compute_stats(Layout(cfg.output_location(), cfg.storage.env_names()))["languages"].get(lang, {}).get("conversations", 0)
                for lang in cfg.plan.languages}
        quota = {lang: max(0, want - n) for lang, n in kept.items()}
        if not any(quota.values()):
            break
        log.info("target round %d: planning %d conversations per language, %s still wanted", round_no, planned, quota)
        round_cfg = cfg.model_copy(update={"plan": cfg.plan.model_copy(update={"num_conversations": planned})})
        stats = run_once(round_cfg, stages, text_from, quota=quota, adopt_output=adopt_output)
        kept_rate = max(stats["totals"]["conversations_kept"], 1) / (planned * len(cfg.plan.languages))
        deficit = max(max(0, want - stats["languages"].get(lang, {}).get("conversations", 0))
                      for lang in cfg.plan.languages)
        if not deficit:
            break
        if planned >= cap:
            log.warning("target.conversations=%d not reached: plan cap %d (target.max_plan_factor) used up", want, cap)
            break
        planned = min(cap, planned + math.ceil(deficit / kept_rate * 1.2))
    else:
        log.warning("target.conversations=%d not reached within target.max_rounds=%d", want, cfg.target.max_rounds)
    stats["target"] = {"conversations": want, "kept": {lang: stats["languages"].get(lang, {}).get("conversations", 0)
                                                      for lang in cfg.plan.languages}, "planned": planned}
    return stats


def planned_total(ctx: RunContext, stages: StageSelection) -> int:
    """How many conversations this pass looks at (before skipping finished ones)."""
    cfg = ctx.cfg
    if stages.generate and cfg.source.kind == "dataset":
        from pipeline.io.inputs import local_source
        from pipeline.io.source_reader import count_records

        return count_records(local_source(cfg.resolve_location(cfg.source.path), cfg.storage.env_names()),
                             cfg.source.limit)
    if stages.generate:
        return cfg.plan.num_conversations * len(cfg.plan.languages)
    return cached_rows(ctx.layout(ctx.text_from))


def run_once(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | str | None = None,
             quota: dict[str, int] | None = None, adopt_output: bool = False) -> dict[str, Any]:
    from pipeline.executor.ray_data import build_plan, gpu_shares, init_ray, require_resources
    from pipeline.llm.server import LlamaCppServer

    stages = stages or StageSelection()
    ctx = preflight(cfg, stages, text_from, adopt_output)
    if stages.plan_only:
        return plan_once(ctx)
    total = planned_total(ctx, stages)
    layout = ctx.layout()
    try:
        claim_output(layout.store, cfg.dataset, adopt_output)  # OutputNotOwned: a ConfigError naming the folder
        layout.make_dirs()
    except OSError as exc:  # /proc/x, a read-only disk, a file where a folder should be, an unreachable bucket
        raise ConfigError(f"output folder {ctx.out_dir}: cannot create it ({exc.strerror or exc}); choose another "
                          f"--out (or out_dir in the config)") from None
    removed = layout.clean_unfinished()  # each one is logged by name
    if removed:
        log.warning("removed %d unfinished file(s) left by an interrupted run", len(removed))
    ctx.done_ids = layout.done_ids()
    resume_cached = False
    if stages.generate:  # never pay the LLM twice for one ID: conversations already in the text cache are
        # not planned again; a full run takes the unfinished ones from the cache instead
        cached = cached_ids(layout)
        resume_cached = stages.audio and len(np.setdiff1d(cached, ctx.done_ids)) > 0
        ctx.plan_skip = np.union1d(ctx.done_ids, cached)
    ctx.quota, ctx.write_samples = quota, stages.audio
    ctx.run_id = "r" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    resolved = dump_resolved(cfg).encode()
    layout.write_bytes("config.yaml", resolved)
    # per-language reruns into one output (en.yaml, then zh.yaml) keep each language's recipe too
    layout.write_bytes(f"config.{'-'.join(run_languages(cfg))}.yaml", resolved)

    summary = RunSummary(planned=total)
    started = time.monotonic()
    # the embedded llama.cpp server writes the text, and judges it unless the judge has a server of its own
    judge_embedded = cfg.judge.enabled and cfg.judge.base_url is None
    start_server = (stages.generate or judge_embedded) and cfg.llm.backend == "openai" and cfg.llm.base_url is None
    server_log = server_log_path(layout)
    server = (LlamaCppServer(ctx.gguf, cfg.llm.model, server_log, n_ctx=cfg.llm.server_ctx,
                             threads=cfg.llm.server_threads, start_timeout_s=cfg.llm.server_start_timeout_s)
              if start_server else nullcontext(cfg.llm.base_url))
    try:
        with server as base_url:
            ctx.llm_base_url = base_url
            init_ray()
            flow = build_stages(ctx, stages, resume_cached)
            require_resources(flow)
            for batch in build_plan(flow, cfg.workers).iter_batches(batch_format="pyarrow", batch_size=None):
                for outcome in batch.to_pylist():
                    summary.add(outcome)
    finally:
        if start_server and not layout.local and server_log.is_file():  # the log beside the data, best effort
            try:
                layout.write_bytes("state/llm_server.log", server_log.read_bytes())
            except OSError as exc:
                log.warning("could not copy the LLM server's log to %s: %s", layout.store.url, exc)
    # a shard writer that died mid-shard (its node lost) and was retried can leave a torn shard or an upload
    removed = layout.clean_unfinished()
    if removed:
        log.warning("removed %d unfinished file(s) left by a writer that was restarted", len(removed))
    summary.skipped = total - summary.kept - summary.generated - sum(summary.rejected.values())
    stats = compute_stats(layout)
    stats["diversity"] = text_diversity(cfg, layout, ctx.prompts_dir)
    stats["last_run"] = {"run_id": ctx.run_id, "wall_s": round(time.monotonic() - started, 1),
                         "stages": stages.describe(),
                         # verify.enabled=false keeps audio unverified: said so here and in the dataset card
                         "verified": stages.audio and cfg.verify.enabled,
                         **summary.as_dict(), "speakers_dropped": len({d["speaker_id"] for d in ctx.dropped_speakers}),
                         "cost": summary.cost(gpu_shares(flow))}
    if ctx.dropped_speakers:
        stats["speakers_dropped"] = ctx.dropped_speakers  # which speaker, which clip, what is wrong with it
    write_stats(layout, stats)
    record = {"run_id": ctx.run_id, "text_digest": cfg.text_digest(), **stats["last_run"]}
    layout.store.append_text("state/runs.jsonl", redact(json.dumps(record)) + "\n")
    if layout.manifest_parts():  # the dataset card (README.md) and report.html describe the whole folder
        from pipeline.publish.card import card_resolution, write_card

        write_card(layout, cfg.model_dump(mode="json"), stats, speakers=ctx.pool or None)
        for warning in card_resolution(layout, cfg.model_dump(mode="json"), ctx.pool or None).warnings:
            log.warning("licence: %s", warning)
    if layout.manifest_parts() or stats["diversity"] or layout.reject_parts():  # a text-only run has a report too
        from pipeline.publish.report import write_report

        write_report(layout, stats)
    print_summary(stats, ctx.out_dir)
    return stats


def text_diversity(cfg: RunConfig, layout: Layout, prompts_dir: Path) -> dict[str, Any]:
    """stats.json's `diversity`: per language, over a sample of the kept text (the shards; in a text-only output,
    the text cache less what was rejected), against the taxonomy the plan draws from."""
    from pipeline.io.kept_text import sample_kept_conversations
    from pipeline.llm.prompts import Taxonomy
    from pipeline.quality.diversity import conversation_diversity

    d = cfg.diversity
    out: dict[str, Any] = {}
    for language, conversations in sorted(sample_kept_conversations(layout, d.sample_conversations).items()):
        path = prompts_dir / language / "taxonomy.yaml"
        try:
            taxonomy = Taxonomy.load(path) if path.is_file() else None
        except (OSError, ValueError) as exc:
            log.warning("diversity: no coverage for %s (%s)", language, exc)
            taxonomy = None
        out[language] = conversation_diversity(conversations, language, d, taxonomy)
    return out


def server_log_path(layout: Layout) -> Path:
    """The embedded LLM server's log: in the output's state/ for a local output; for object storage a file on
    this (the driver's) node, copied into state/ when the run ends."""
    if layout.local:
        return Path(layout.state) / "llm_server.log"
    return node_cache_dir() / "logs" / hashlib.sha256(layout.store.url.encode()).hexdigest()[:16] / "llm_server.log"


def plan_once(ctx: RunContext) -> dict[str, Any]:
    """`run --stages plan`: the plan alone, written to <out>/plan/specs.parquet (no LLM, no Ray)."""
    from pipeline.run.plan_file import write_plan

    if ctx.cfg.source.kind != "generate":
        raise ConfigError("--stages plan: a dataset source (source.kind: dataset) is planned while it is read; "
                          "run --stages generate")
    if is_url(ctx.out_dir):
        raise ConfigError("--stages plan writes a local Parquet file: give a local --out, or use "
                          "`speechchat plan --out specs.parquet`")
    claim_output(ctx.layout().store, ctx.cfg.dataset, ctx.adopt_output)  # a later run finds its own output
    out = Path(ctx.out_dir) / "plan" / "specs.parquet"
    result = write_plan(ctx.cfg, out)
    print(f"{result['rows']} conversation specs -> {result['path']} ({result['bytes'] / 1e6:.1f} MB, "
          f"{result['seconds']:.1f} s)", flush=True)
    return {"plan": result}
