"""speechchat CLI: `run` wires the stages into one streaming Ray Data plan.

Works as `python pipeline/main.py ...` (what `ray job submit --working-dir . -- python pipeline/main.py`
runs), as `python -m pipeline ...`, and as the `speechchat` console script.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.config import REPO_ROOT, ConfigError, RunConfig, dump_resolved, load_config

log = logging.getLogger("speechchat")


@dataclass
class RunSummary:
    planned: int = 0
    skipped: int = 0
    kept: int = 0
    generated: int = 0  # text-only runs: conversations written to the text cache
    rejected: Counter = field(default_factory=Counter)
    audio_s: float = 0.0
    speakers: set = field(default_factory=set)
    llm_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    shards: set = field(default_factory=set)

    def add(self, outcome: dict[str, Any]) -> None:
        self.llm_requests += outcome["llm_requests"] or 0
        self.prompt_tokens += outcome["prompt_tokens"] or 0
        self.completion_tokens += outcome["completion_tokens"] or 0
        if outcome["outcome"] == "generated":
            self.generated += 1
        elif outcome["outcome"] == "kept":
            self.kept += 1
            self.audio_s += outcome["audio_s"] or 0.0
            self.speakers.update({outcome["user_speaker_id"], outcome["assistant_speaker_id"]})
            self.shards.add(outcome["shard"])
        else:
            self.rejected[f"{outcome['reject_stage']}/{outcome['reject_reason']}"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"planned": self.planned, "skipped_already_done": self.skipped, "kept": self.kept,
                "text_only": self.generated,
                "rejected": sum(self.rejected.values()), "rejected_by_reason": dict(self.rejected.most_common()),
                "audio_hours": round(self.audio_s / 3600, 4), "speakers_used": len(self.speakers),
                "shards_written": len(self.shards), "llm_requests": self.llm_requests,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


# --- preflight: everything that can fail before Ray starts -------------------------------------


@dataclass
class Resolved:
    """Config plus the concrete files the run needs, checked before any work starts."""

    cfg: RunConfig
    out_dir: Path
    prompts_dir: Path
    gguf: Path | None
    piper_voice: Path | None
    asr_model: Path | None
    pool: list


def run_languages(cfg: RunConfig) -> list[str]:
    return [cfg.source.language] if cfg.source.kind == "dataset" else list(cfg.plan.languages)


def preflight(cfg: RunConfig, stages: "StageSelection | None" = None) -> Resolved:
    from pipeline.backends import assets
    from pipeline.speakers import load_pool
    from pipeline.stages.generate import PromptSet
    from pipeline.stages.plan import Taxonomy

    problems: list[str] = []

    def check(fn, *args):
        try:
            return fn(*args)
        except (assets.MissingAsset, ConfigError, OSError, ValueError) as exc:
            problems.append(str(exc))
            return None

    prompts_dir = cfg.resolve_path(cfg.plan.prompts_dir)
    for lang in run_languages(cfg):
        if cfg.source.kind == "generate":
            check(Taxonomy.load, prompts_dir / lang / "taxonomy.yaml")
        check(PromptSet.load, prompts_dir, lang)
    if cfg.source.kind == "dataset":
        from pipeline.io.source_reader import source_files

        check(source_files, cfg.resolve_path(cfg.source.path))
    stages = stages or StageSelection()
    gguf = None
    if stages.generate and cfg.llm.backend == "openai" and cfg.llm.base_url is None:
        gguf = cfg.resolve_path(cfg.llm.gguf_path) if cfg.llm.gguf_path else check(assets.smollm2_gguf)
        if gguf is not None and not gguf.is_file():
            problems.append(f"llm.gguf_path: {gguf} does not exist")
        check(__import__, "llama_cpp.server")
    piper_voice = asr_model = None
    pool: list = []
    if stages.audio:  # what speaking and checking need
        for lang in run_languages(cfg):
            if lang != "en":  # the only TTS backend so far is Piper with English voices
                problems.append(f"language {lang!r}: no {lang} TTS voice is available in this version (Chinese needs "
                                f"the Coqui XTTS-v2 backend); run it text-only with --stages generate (the text is "
                                f"cached for later)")
        piper_voice = cfg.resolve_path(cfg.tts.piper_voice) if cfg.tts.piper_voice else check(assets.piper_joe_voice)
        if piper_voice is not None and not piper_voice.is_file():
            problems.append(f"tts.piper_voice: {piper_voice} does not exist")
        # packaged defaults stay None here so that backends name them ("tiny.en"), but they must exist
        asr_model = None
        if cfg.verify.asr_model is None:
            check(assets.whisper_tiny_en)
        elif str(cfg.verify.asr_model) in assets.PACKAGED_ASR:  # "tiny.en", "base": shipped in PyPI packages
            asr_model = check(assets.packaged_asr, str(cfg.verify.asr_model))
        else:
            asr_model = cfg.resolve_path(cfg.verify.asr_model)
            if not (asr_model / "model.bin").is_file():
                problems.append(f"verify.asr_model: {asr_model}/model.bin does not exist")
        pool = check(load_pool, cfg.resolve_path(cfg.voices.pool)) or []
        if pool:  # the voices stage checks assistant voices, filters and held-out speakers when it is built
            from pipeline.stages.voices import VoiceStage

            check(VoiceStage, pool, cfg.voices, cfg.plan.seed, run_languages(cfg))
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    return Resolved(cfg, cfg.output_dir(), prompts_dir, gguf, piper_voice, asr_model, pool)


# --- the plan -----------------------------------------------------------------------------------


STAGE_NAMES = ("plan", "generate", "text", "voices", "tts", "verify", "shard")


@dataclass(frozen=True)
class StageSelection:
    """Which part of the flow runs. Audio stages run as one unit (audio is not persisted between them)."""

    generate: bool = True  # plan + LLM; False: conversations come from a text cache
    audio: bool = True     # text, voices, tts, verify, shard; False: a text-only run

    @classmethod
    def parse(cls, text: str | None) -> "StageSelection":
        if not text:
            return cls()
        names = {s.strip() for s in text.split(",") if s.strip()}
        unknown = sorted(names - set(STAGE_NAMES))
        if unknown:
            raise ConfigError(f"--stages: unknown stage(s) {unknown}; choose from {','.join(STAGE_NAMES)}")
        audio_given = names & {"tts", "verify", "shard"}
        if audio_given and audio_given != {"tts", "verify", "shard"}:
            raise ConfigError("--stages: tts, verify and shard run together (audio is not kept between them); "
                              f"got only {sorted(audio_given)}")
        selection = cls(generate=bool(names & {"plan", "generate"}), audio=bool(audio_given))
        if not (selection.generate or selection.audio):
            raise ConfigError("--stages: nothing to run; name generate and/or tts,verify,shard")
        return selection


def build_dataset(res: Resolved, base_url: str | None, run_id: str, done_ids, stages: StageSelection,
                  text_from: Path | None = None, quota: dict[str, int] | None = None, plan_skip=None,
                  resume_cached: bool = False):
    import ray

    from pipeline.io.plan_source import ParquetPartsSource, PlanIndexSource
    from pipeline.io.source_reader import SourceRecordsSource
    from pipeline.io.text_cache import CachedTextFilter, TextCacheWriter, cached_parts
    from pipeline.stages.generate import GenerateStage
    from pipeline.stages.plan import PlanStage, Taxonomy
    from pipeline.stages.shard import ShardStage
    from pipeline.stages.source import SourcePlanStage
    from pipeline.stages.text import TextStage
    from pipeline.stages.tts import TTSStage
    from pipeline.stages.verify import VerifyStage
    from pipeline.stages.voices import VoiceStage

    cfg = res.cfg
    # Light stages run as tasks with a tiny CPU request; without a cap Ray would run 1/0.05 = 20 of them per
    # CPU at once, each in a fresh worker process that imports the pipeline first: on a small machine that
    # start-up delayed the first TTS batch by ~20 s (bench/run.py row 1, Ray timeline). Two at a time keep
    # a couple of warm workers busy; the stages take milliseconds per batch next to TTS and ASR.
    light = dict(batch_format="pyarrow", num_cpus=0.05, concurrency=2)
    pool = ray.data.ActorPoolStrategy  # Ray Data restarts a crashed actor and retries its batch by default
    if stages.generate and cfg.source.kind == "dataset":
        src = cfg.source
        ds = ray.data.read_datasource(SourceRecordsSource(cfg.resolve_path(src.path), src.limit, cfg.llm.batch_size),
                                      num_cpus=0.05)
        ds = ds.map_batches(SourcePlanStage(
            dataset=cfg.dataset, language=src.language, source_name=cfg.resolve_path(src.path).name,
            text_digest=cfg.text_digest(), splits=dict(cfg.shard.splits), fmt=src.format,
            max_exchanges=src.max_exchanges, max_answer_chars=src.max_answer_chars,
            done_ids=done_ids if plan_skip is None else plan_skip), **light)
    elif stages.generate:
        total = cfg.plan.num_conversations * len(cfg.plan.languages)
        plan = PlanStage(
            dataset=cfg.dataset, languages=list(cfg.plan.languages),
            exchanges={k: (v.min, v.max) for k, v in cfg.plan.exchanges.items()}, seed=cfg.plan.seed,
            text_digest=cfg.text_digest(), splits=dict(cfg.shard.splits),
            taxonomies={lang: Taxonomy.load(res.prompts_dir / lang / "taxonomy.yaml") for lang in cfg.plan.languages},
            done_ids=done_ids if plan_skip is None else plan_skip)
        ds = ray.data.read_datasource(PlanIndexSource(total, block_rows=cfg.llm.batch_size), num_cpus=0.05,
                                      override_num_blocks=max(1, min(math.ceil(total / cfg.llm.batch_size), 200)))
        ds = ds.map_batches(plan, **light)
    if stages.generate:
        if cfg.llm.backend == "vllm":  # GPU engine actors inside the cluster (ray.data.llm)
            from pipeline.backends.vllm_batch import build_vllm_processor

            ds = build_vllm_processor(cfg.llm, res.prompts_dir)(ds)
        else:
            ds = ds.map_batches(GenerateStage, fn_constructor_kwargs=dict(cfg=cfg.llm, base_url=base_url,
                                                                          prompts_dir=res.prompts_dir),
                                batch_size=cfg.llm.batch_size, compute=pool(size=1), batch_format="pyarrow",
                                num_cpus=cfg.llm.num_cpus)
        ds = ds.map_batches(TextCacheWriter(res.out_dir, run_id), **light)

    def from_cache(folder: Path, digest: str | None):
        parts = [str(p) for p in cached_parts(folder)]
        cached = ray.data.read_datasource(ParquetPartsSource(parts), num_cpus=0.05)
        return cached.map_batches(CachedTextFilter(done_ids, dict(cfg.shard.splits), digest), **light)

    if not stages.generate:
        ds = from_cache(text_from or res.out_dir, None)
    elif resume_cached:  # generated by an interrupted run of this config, not yet spoken
        ds = ds.union(from_cache(res.out_dir, cfg.text_digest()))
    if stages.audio:
        ds = ds.map_batches(TextStage(cfg.text), **light)
        ds = ds.map_batches(VoiceStage(res.pool, cfg.voices, cfg.plan.seed, run_languages(cfg)), **light)
        ds = ds.map_batches(TTSStage, fn_constructor_kwargs=dict(backend=cfg.tts.backend, piper_voice=res.piper_voice,
                                                                 pool=res.pool, user_sample_rate=cfg.tts.user_sample_rate,
                                                                 backend_options=dict(noise_scale=cfg.tts.piper_noise_scale,
                                                                                      noise_w_scale=cfg.tts.piper_noise_w_scale)),
                            batch_size=cfg.tts.batch_size, compute=pool(min_size=1, max_size=cfg.tts.max_actors),
                            batch_format="pyarrow", num_cpus=cfg.tts.num_cpus)
        ds = ds.map_batches(VerifyStage, fn_constructor_kwargs=dict(cfg=cfg.verify, asr_model=res.asr_model),
                            batch_size=cfg.verify.batch_size, compute=pool(min_size=1, max_size=cfg.verify.max_actors),
                            batch_format="pyarrow", num_cpus=cfg.verify.num_cpus)
    return ds.map_batches(ShardStage, fn_constructor_kwargs=dict(out_dir=res.out_dir, run_id=run_id,
                                                                 license_tags=cfg.license_tags,
                                                                 write_samples=stages.audio, quota=quota),
                          batch_size=cfg.shard.conversations_per_shard, compute=pool(size=1), batch_format="pyarrow",
                          num_cpus=cfg.shard.num_cpus)


def init_ray() -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # join the cluster named by RAY_ADDRESS (what `ray job submit` sets)
    else:
        # local: workers must import `pipeline` even when it is not pip-installed
        ray.init(include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}})


def run(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | None = None) -> dict[str, Any]:
    """One pass, or in exact-count mode (`target.conversations`) bounded rounds that plan more until the
    output holds the target number of kept conversations per language."""
    stages = stages or StageSelection()
    if cfg.target.conversations is None or not (stages.generate and stages.audio):
        return run_once(cfg, stages, text_from)
    from pipeline.io.layout import Layout
    from pipeline.io.stats import compute_stats

    want = cfg.target.conversations
    cap = math.ceil(want * cfg.target.max_plan_factor)
    planned = want
    stats: dict[str, Any] = {}
    for round_no in range(1, cfg.target.max_rounds + 1):
        kept = {lang: compute_stats(Layout(cfg.output_dir()))["languages"].get(lang, {}).get("conversations", 0)
                for lang in cfg.plan.languages}
        quota = {lang: max(0, want - n) for lang, n in kept.items()}
        if not any(quota.values()):
            break
        log.info("target round %d: planning %d conversations per language, %s still wanted", round_no, planned, quota)
        round_cfg = cfg.model_copy(update={"plan": cfg.plan.model_copy(update={"num_conversations": planned})})
        stats = run_once(round_cfg, stages, text_from, quota=quota)
        kept_rate = max(stats["totals"]["conversations_kept"], 1) / (planned * len(cfg.plan.languages))
        deficit = max(max(0, want - stats["languages"].get(lang, {}).get("conversations", 0)) for lang in cfg.plan.languages)
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


def run_once(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | None = None,
             quota: dict[str, int] | None = None) -> dict[str, Any]:
    from contextlib import nullcontext

    from pipeline.backends.llm_server import LlamaCppServer
    from pipeline.io.layout import Layout, atomic_write
    from pipeline.io.stats import compute_stats, write_stats
    from pipeline.io.text_cache import cached_parts

    stages = stages or StageSelection()
    res = preflight(cfg, stages)
    if stages.generate and cfg.source.kind == "dataset":
        from pipeline.io.source_reader import count_records

        total = count_records(cfg.resolve_path(cfg.source.path), cfg.source.limit)
    elif stages.generate:
        total = cfg.plan.num_conversations * len(cfg.plan.languages)
    else:
        source = (text_from or res.out_dir).resolve()
        parts = cached_parts(source)
        if not parts:
            raise ConfigError(f"no cached text in {source}/text: run the generate stage first "
                              "(or point --text-from at an output that has it)")
        total = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    layout = Layout(res.out_dir)
    layout.make_dirs()
    removed = layout.clean_unfinished()
    if removed:
        log.warning("removed %d unfinished file(s) left by an interrupted run", len(removed))
    done_ids = layout.done_ids()
    resume_cached = False
    if stages.generate:  # never pay the LLM twice for one ID: conversations already in the text cache are
        # not planned again; a full run takes the unfinished ones from the cache instead
        from pipeline.io.text_cache import cached_ids

        cached = cached_ids(res.out_dir)
        resume_cached = stages.audio and len(np.setdiff1d(cached, done_ids)) > 0
        plan_skip = np.union1d(done_ids, cached)
    else:
        plan_skip = done_ids
    run_id = "r" + time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    atomic_write(layout.root / "config.yaml", lambda fh: fh.write(dump_resolved(cfg).encode()))

    summary = RunSummary(planned=total)
    started = time.monotonic()
    start_server = stages.generate and cfg.llm.backend == "openai" and cfg.llm.base_url is None
    server = (LlamaCppServer(res.gguf, cfg.llm.model, layout.state / "llm_server.log", n_ctx=cfg.llm.server_ctx,
                             threads=cfg.llm.server_threads, start_timeout_s=cfg.llm.server_start_timeout_s)
              if start_server else nullcontext(cfg.llm.base_url))
    with server as base_url:
        init_ray()
        ds = build_dataset(res, base_url, run_id, done_ids, stages, text_from, quota, plan_skip, resume_cached)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for outcome in batch.to_pylist():
                summary.add(outcome)
    summary.skipped = total - summary.kept - summary.generated - sum(summary.rejected.values())
    stats = compute_stats(layout)
    stats["last_run"] = {"run_id": run_id, "wall_s": round(time.monotonic() - started, 1),
                         "stages": ",".join(["generate"] * stages.generate + ["tts,verify,shard"] * stages.audio),
                         **summary.as_dict()}
    write_stats(layout, stats)
    with open(layout.state / "runs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"run_id": run_id, "text_digest": cfg.text_digest(), **stats["last_run"]}) + "\n")
    if layout.manifest_parts():  # the dataset card (README.md) and report.html describe the whole folder
        from pipeline.publish.card import write_card
        from pipeline.publish.report import write_report

        write_card(layout.root, cfg.model_dump(mode="json"), stats)
        write_report(layout.root, stats)
        from pipeline.publish.licenses import resolve_license

        for warning in resolve_license(cfg.license_tags).warnings:
            log.warning("licence: %s", warning)
    print_summary(stats, res.out_dir)
    return stats


def print_summary(stats: dict[str, Any], out_dir: Path) -> None:
    last, totals = stats["last_run"], stats["totals"]
    lines = [
        "", f"speechchat run {last['run_id']} finished in {last['wall_s']} s",
        f"  this run: planned {last['planned']}, already done {last['skipped_already_done']}, "
        f"kept {last['kept']}, rejected {last['rejected']}"
        + (f", text only {last['text_only']}" if last["text_only"] else ""),
    ]
    for reason, n in last["rejected_by_reason"].items():
        lines.append(f"    rejected {n:>5}  {reason}")
    lines += [
        f"  this run: {last['audio_hours'] * 60:.2f} min of audio, {last['speakers_used']} speakers, "
        f"{last['shards_written']} shards, {last['llm_requests']} LLM requests "
        f"({last['prompt_tokens']} prompt + {last['completion_tokens']} completion tokens)",
        f"  dataset: {totals['conversations_kept']} conversations, {totals['exchanges']} exchanges, "
        f"{totals['hours']} h, {totals['speakers']} speakers, {totals['conversations_rejected']} rejected in all",
        f"  output: {out_dir}", "",
    ]
    print("\n".join(lines), flush=True)


# --- CLI ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechchat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="generate -> speak -> verify -> shard, resuming what is done")
    p_run.add_argument("--config", "-c", required=True, help="YAML config (may inherit with `base:`)")
    p_run.add_argument("--out", help="output folder (default out/<dataset>)")
    p_run.add_argument("--stages", help="comma list of stages to run (default all): e.g. generate (text only, "
                       "cached as Parquet) or tts,verify,shard (audio from cached text, no LLM calls)")
    p_run.add_argument("--text-from", type=Path, help="output folder whose text/ cache feeds --stages tts,verify,shard "
                       "(default: the output folder itself)")
    p_run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tts.max_actors=2 plan.num_conversations=5")
    p_check = sub.add_parser("check-config", help="validate a config and print it resolved")
    p_check.add_argument("--config", "-c", required=True)
    p_check.add_argument("--out")
    p_check.add_argument("--stages", help="check only what these stages need (see run --stages)")
    p_check.add_argument("overrides", nargs="*")
    p_plan = sub.add_parser("plan", help="write every conversation spec of a config to one Parquet file "
                            "(streamed in bounded memory; no LLM, no Ray)")
    p_plan.add_argument("--config", "-c", required=True)
    p_plan.add_argument("--out", "-o", required=True, type=Path, help="Parquet file to write, e.g. specs.parquet")
    p_plan.add_argument("overrides", nargs="*", help="dotted overrides, e.g. plan.num_conversations=7000000")
    p_verify = sub.add_parser("verify-output", help="check a dataset folder: tars, samples, checksums, manifest")
    p_verify.add_argument("folder", type=Path)
    return parser


def verify_output_cli(folder: Path) -> int:
    from pipeline.io.layout import Layout
    from pipeline.io.verify_output import verify_output

    problems = verify_output(folder)
    if problems:
        print(f"{folder}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems[:200]:
            print(f"  {p}", file=sys.stderr)
        if len(problems) > 200:
            print(f"  ... and {len(problems) - 200} more", file=sys.stderr)
        return 1
    layout = Layout(folder)
    samples = sum(pq.ParquetFile(p).metadata.num_rows for p in layout.manifest_parts())
    print(f"{folder}: OK ({len(layout.shards())} shards, {samples} samples, {len(layout.reject_parts())} rejects parts)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `pipeline/main.py --config x.yaml` means run
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command is None:
        build_parser().print_help()
        return 2
    if args.command == "verify-output":
        return verify_output_cli(args.folder)
    try:
        if args.command == "plan":
            from pipeline.io.plan_writer import write_plan

            result = write_plan(load_config(args.config, args.overrides), args.out)
            print(f"{result['rows']} conversation specs -> {result['path']} ({result['bytes'] / 1e6:.1f} MB, "
                  f"{result['seconds']:.1f} s)")
            return 0
        cfg = load_config(args.config, args.overrides, args.out)
        if args.command == "check-config":
            preflight(cfg, StageSelection.parse(args.stages))
            print(dump_resolved(cfg))
            return 0
        run(cfg, StageSelection.parse(args.stages), args.text_from)
        return 0
    except ConfigError as exc:
        print(f"speechchat: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
