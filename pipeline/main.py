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
from pipeline.threads import threads_for

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
    tts_model: Path | None = None  # Coqui checkpoint folder (vits/xtts), checked in preflight
    dropped_speakers: list = field(default_factory=list)  # {speaker_id, file, problem}: unusable reference clips


def run_languages(cfg: RunConfig) -> list[str]:
    return [cfg.source.language] if cfg.source.kind == "dataset" else list(cfg.plan.languages)


def preflight(cfg: RunConfig, stages: "StageSelection | None" = None) -> Resolved:
    from pipeline.backends import assets
    from pipeline.speakers import check_references, load_pool
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
    piper_voice = asr_model = tts_model = None
    pool: list = []
    dropped: list[dict[str, str]] = []
    if stages.audio:  # what speaking and checking need
        if cfg.tts.backend == "piper":
            for lang in run_languages(cfg):
                if lang != "en":  # the packaged Piper voice is English
                    problems.append(f"language {lang!r}: no {lang} TTS voice is available in this version with "
                                    f"tts.backend piper (Chinese needs the Coqui XTTS-v2 backend: tts.backend=xtts); "
                                    f"or run it text-only with --stages generate (the text is cached for later)")
            piper_voice = cfg.resolve_path(cfg.tts.piper_voice) if cfg.tts.piper_voice else check(assets.piper_joe_voice)
            if piper_voice is not None and not piper_voice.is_file():
                problems.append(f"tts.piper_voice: {piper_voice} does not exist")
        elif missing_modules("torch", "TTS", "trainer"):
            problems.append(f"tts.backend={cfg.tts.backend} needs Coqui TTS and torch, which this install does not have "
                            f"(no {', '.join(missing_modules('torch', 'TTS', 'trainer'))}): install the gpu extra, "
                            f"pip install -e '.[gpu]'; or use tts.backend=piper")
        else:
            tts_model = check(coqui_weights, cfg)
            if tts_model is not None and cfg.tts.backend == "xtts":
                from pipeline.backends.coqui import model_languages

                known = model_languages(tts_model) or []
                for lang in run_languages(cfg):
                    code = cfg.tts.languages.get(lang, lang)
                    if known and code not in known:
                        problems.append(f"tts.languages: {lang!r} maps to {code!r}, which {tts_model} does not "
                                        f"speak ({', '.join(known)})")
        # packaged defaults stay None here so that backends name them ("tiny.en"), but they must exist
        asr_model = None
        if not cfg.verify.enabled:  # verify.enabled=false needs no ASR model
            pass
        elif cfg.verify.asr_model is None or str(cfg.verify.asr_model) == "tiny.en":
            check(assets.whisper_tiny_en)
            others = [lang for lang in run_languages(cfg) if lang != "en"]
            if others and cfg.verify.asr_language in (None, *others):
                problems.append(f"verify.asr_model: Whisper tiny.en is English-only but the run has {others}; set "
                                f"verify.asr_model=base (packaged multilingual) or a multilingual model folder")
        elif str(cfg.verify.asr_model) in assets.PACKAGED_ASR:  # "tiny.en", "base": shipped in PyPI packages
            asr_model = check(assets.packaged_asr, str(cfg.verify.asr_model))
        else:
            asr_model = cfg.resolve_path(cfg.verify.asr_model)
            if not (asr_model / "model.bin").is_file():
                problems.append(f"verify.asr_model: {asr_model}/model.bin does not exist")
        pool = check(load_pool, cfg.resolve_path(cfg.voices.pool)) or []
        if pool:
            from pipeline.stages.voices import VoiceStage, assistant_voices

            # speakers whose reference clips are missing or unreadable are dropped (listed), not fatal
            pool, dropped = check_references(pool, cfg.resolve_path(cfg.voices.pool))
            if dropped:
                log.warning("voices.pool %s: %d speaker(s) dropped for missing or unreadable reference clips:\n  %s",
                            cfg.voices.pool, len({d["speaker_id"] for d in dropped}),
                            "\n  ".join(f"{d['speaker_id']}: {d['file']}: {d['problem']}" for d in dropped))
            bad = {d["speaker_id"]: d for d in dropped}
            assistants = {sid for ids in assistant_voices(cfg.voices, run_languages(cfg)).values() for sid in ids}
            for sid in sorted(assistants & bad.keys()):
                d = bad[sid]
                problems.append(f"voices.assistant_speaker: {d['speaker_id']!r} has an unusable reference clip "
                                f"{d['file']} ({d['problem']}); fix the clip or choose another assistant speaker")
            empty = [lang for lang in run_languages(cfg) if not any(s.language == lang for s in pool)]
            for lang in empty:
                problems.append(f"voices.pool {cfg.voices.pool} has no usable speaker for language {lang!r}"
                                + (f" ({len(bad)} dropped for bad reference clips)" if bad else ""))
            if not (assistants & bad.keys()) and not empty:
                # the voices stage checks assistant voices, filters and held-out speakers when it is built
                check(VoiceStage, pool, cfg.voices, cfg.plan.seed, run_languages(cfg))
                problems += pool_backend_problems(cfg, pool)
        if cfg.verify.enabled:
            from pipeline.quality import require_packages

            check(require_packages, cfg.verify)
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    return Resolved(cfg, cfg.output_dir(), prompts_dir, gguf, piper_voice, asr_model, pool, tts_model=tts_model,
                    dropped_speakers=dropped)


def missing_modules(*names: str) -> list[str]:
    """The named top-level modules that are not installed (looked up, not imported)."""
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


def coqui_weights(cfg: RunConfig) -> Path:
    """The Coqui checkpoint folder; a relative tts.model path is relative to the repository root."""
    from pipeline.backends.coqui import resolve_model

    model = cfg.tts.model
    if model and not Path(model).is_absolute() and cfg.resolve_path(Path(model)).is_dir():
        model = str(cfg.resolve_path(Path(model)))
    return resolve_model(cfg.tts.backend, model)


def pool_backend_problems(cfg: RunConfig, pool: list) -> list[str]:
    """Voices the configured backend cannot speak (missing or unreadable clips were dropped by check_references)."""
    from pipeline.stages.voices import assistant_voices

    problems = []
    by_id = {s.speaker_id: s for s in pool}
    for ids in assistant_voices(cfg.voices, run_languages(cfg)).values():
        for assistant in (by_id[sid] for sid in ids if sid in by_id):
            if assistant.backend != cfg.tts.backend:
                problems.append(f"voices.assistant_speaker: {assistant.speaker_id!r} is a {assistant.backend} voice "
                                f"but tts.backend is {cfg.tts.backend}; pick a {cfg.tts.backend} speaker from "
                                f"{cfg.voices.pool}")
    for lang in run_languages(cfg):
        if not any(s.language == lang and s.backend == cfg.tts.backend for s in pool):
            problems.append(f"voices.pool {cfg.voices.pool} has no {cfg.tts.backend} speaker for language {lang!r} "
                            f"(tts.backend is {cfg.tts.backend})")
    return problems


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
    pool = ray.data.ActorPoolStrategy
    # Ray Data restarts a crashed actor and retries its batch without limit by default: bound both, so a
    # crash loop stops the job (see explain_stop) while an isolated crash is absorbed without loss. Ray 2.60
    # takes them only as remote args (it warns these move to named parameters in 2.64)
    crash = {"max_restarts": cfg.workers.max_restarts, "max_task_retries": cfg.workers.max_task_retries}
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
                                num_cpus=cfg.llm.num_cpus, **crash)
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
        t = cfg.tts
        ds = ds.map_batches(eager(TTSStage), fn_constructor_kwargs=dict(backend=t.backend, piper_voice=res.piper_voice,
                                                                 pool=res.pool, user_sample_rate=t.user_sample_rate,
                                                                 backend_options=tts_backend_options(res),
                                                                 max_attempts=t.max_attempts, seed=t.seed,
                                                                 min_s_per_char=t.min_s_per_char,
                                                                 max_s_per_char=t.max_s_per_char,
                                                                 threads=threads_for(t.num_cpus, t.cpu_threads)),
                            batch_size=t.batch_size, compute=pool(min_size=1, max_size=t.max_actors),
                            batch_format="pyarrow", num_cpus=t.num_cpus, num_gpus=t.num_gpus or None, **crash)
        if cfg.verify.enabled:
            v = cfg.verify
            threads = threads_for(v.num_cpus, v.cpu_threads)
            ds = ds.map_batches(eager(VerifyStage), fn_constructor_kwargs=dict(cfg=v, asr_model=res.asr_model, pool=res.pool,
                                                                             pool_file=cfg.resolve_path(cfg.voices.pool),
                                                                             threads=threads),
                                batch_size=v.batch_size, compute=verify_pool(v.max_actors, threads, v.num_gpus),
                                batch_format="pyarrow", num_cpus=v.num_cpus, num_gpus=v.num_gpus or None, **crash)
    return ds.map_batches(ShardStage, fn_constructor_kwargs=dict(out_dir=res.out_dir, run_id=run_id,
                                                                 license_tags=cfg.license_tags,
                                                                 write_samples=stages.audio, quota=quota),
                          batch_size=cfg.shard.conversations_per_shard, compute=pool(size=1), batch_format="pyarrow",
                          num_cpus=cfg.shard.num_cpus, **crash)


def eager(stage_cls: type) -> type:
    """The stage class as a Ray actor that loads its models when it starts, not on its first batch: actors
    start while upstream stages still work, so model loading overlaps them instead of delaying the first batch."""

    class Eager(stage_cls):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.setup()
            self._ready = True

    Eager.__name__ = Eager.__qualname__ = stage_cls.__name__  # Ray Data names the operator (and its stats) by it
    return Eager


def verify_pool(max_actors: int | str, threads: int, num_gpus: float = 0.0):
    """verify.max_actors N: a pool that grows from 1 to N actors with the backlog. auto: as many actors as the
    cluster has CPUs for `threads` threads each (or, with verify.num_gpus, as many as its GPU shares fit on
    the cluster's GPUs), all started at once: verify is the slowest CPU stage, and a pool grown on demand
    adds its second actor only after the first has worked through a batch (Ray timeline)."""
    import ray

    if max_actors != "auto":
        return ray.data.ActorPoolStrategy(min_size=1, max_size=int(max_actors))
    resources = ray.cluster_resources()
    if num_gpus > 0:
        return ray.data.ActorPoolStrategy(size=max(1, int(resources.get("GPU", 0) / num_gpus + 1e-9)))
    return ray.data.ActorPoolStrategy(size=max(1, int(resources.get("CPU", 1) // threads)))


def tts_backend_options(res: Resolved) -> dict[str, Any]:
    """What make_backend needs for tts.backend (Piper: its noise; Coqui: weights, device, pool, latent cache)."""
    t = res.cfg.tts
    if t.backend == "piper":
        return {"noise_scale": t.piper_noise_scale, "noise_w_scale": t.piper_noise_w_scale}
    options: dict[str, Any] = {"model": str(res.tts_model or t.model), "device": t.device, "languages": dict(t.languages)}
    if t.backend == "xtts":
        from pipeline.io.layout import Layout

        options.update(pool=res.pool, pool_file=res.cfg.resolve_path(res.cfg.voices.pool), chunk_gap_s=t.chunk_gap_s,
                       latent_dir=Layout(res.out_dir).state / "xtts_latents")
    return options


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


def require_gpus(cfg: RunConfig, stages: StageSelection) -> None:
    """A GPU share on a cluster without GPUs would leave the actors pending forever: say so instead."""
    import ray

    has_gpus = bool(ray.cluster_resources().get("GPU", 0))
    if stages.audio and cfg.tts.num_gpus and not has_gpus:
        raise ConfigError(f"tts.num_gpus={cfg.tts.num_gpus} but the Ray cluster has no GPUs; set tts.num_gpus=0 "
                          f"(and tts.device=cpu or auto) to synthesise on CPU")
    if stages.audio and cfg.verify.enabled and cfg.verify.num_gpus and not has_gpus:
        raise ConfigError(f"verify.num_gpus={cfg.verify.num_gpus} but the Ray cluster has no GPUs; set verify.num_gpus=0 "
                          f"(and verify.device=cpu or auto) to transcribe on CPU")


class JobStopped(RuntimeError):
    """The run stopped early for a reason outside the data (a worker crash loop, the LLM server gone, a full
    disk). Finished shards stay; nothing half-written is left in place; rerunning the same command resumes."""


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps (Python chaining and Ray's `.cause`)."""
    seen: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if isinstance(e, BaseException) and not any(e is s for s in seen):
            seen.append(e)
            stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return seen


def explain_stop(exc: BaseException, cfg: RunConfig) -> str | None:
    """A one-paragraph reason for a stop the user can act on, or None for an unexpected error (re-raised as is)."""
    import errno
    import re

    causes = _causes(exc)
    text = "\n".join(f"{type(e).__name__}: {e}" for e in causes)
    resume = ("finished shards are kept and nothing half-written was left in place; "
              "rerun the same command to resume")
    if any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in causes) or "No space left on device" in text:
        return (f"disk full: no space left on device while writing to {cfg.output_dir()}; free space there "
                f"(or choose another --out), then {resume}")
    llm = re.search(r"LLMUnavailable: (LLM server \S+ unreachable[^\n]*)", text)
    if llm:
        return (f"{llm.group(1)}; the conversations generated so far are in the text cache, the rest were not "
                f"recorded as rejected; make sure the server answers (llm.base_url; the embedded one is "
                f"restarted by the rerun), then {resume}")
    if "ActorDiedError" in text or "ActorUnavailableError" in text:
        w = cfg.workers
        return (f"a worker process (TTS, ASR, LLM client or shard writer) kept crashing: its batch failed after "
                f"workers.max_task_retries={w.max_task_retries} retries (workers.max_restarts={w.max_restarts}); "
                f"the worker log above says why (out of memory, a broken model file, a native crash); "
                f"{resume}")
    return None


def run(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | None = None) -> dict[str, Any]:
    """`run_rounds`, with a stop caused by the environment (crash loop, LLM outage, full disk) turned into a
    `JobStopped` that says what happened and that a rerun resumes."""
    try:
        return run_rounds(cfg, stages, text_from)
    except (ConfigError, JobStopped):
        raise
    except Exception as exc:
        reason = explain_stop(exc, cfg)
        if reason is None:
            raise
        log.error("run stopped: %s", reason)
        try:  # best effort: the disk may be the problem
            with open(cfg.output_dir() / "state" / "runs.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"stopped_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "reason": reason}) + "\n")
        except OSError:
            pass
        raise JobStopped(reason) from exc


def run_rounds(cfg: RunConfig, stages: StageSelection | None = None, text_from: Path | None = None) -> dict[str, Any]:
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
    try:
        layout.make_dirs()
    except OSError as exc:  # /proc/x, a read-only disk, a file where a folder should be
        raise ConfigError(f"output folder {res.out_dir}: cannot create it ({exc.strerror or exc}); choose another "
                          f"--out (or out_dir in the config)") from None
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
    resolved = dump_resolved(cfg).encode()
    atomic_write(layout.root / "config.yaml", lambda fh: fh.write(resolved))
    # per-language reruns into one output (en.yaml, then zh.yaml) keep each language's recipe too
    atomic_write(layout.root / f"config.{'-'.join(run_languages(cfg))}.yaml", lambda fh: fh.write(resolved))

    summary = RunSummary(planned=total)
    started = time.monotonic()
    start_server = stages.generate and cfg.llm.backend == "openai" and cfg.llm.base_url is None
    server = (LlamaCppServer(res.gguf, cfg.llm.model, layout.state / "llm_server.log", n_ctx=cfg.llm.server_ctx,
                             threads=cfg.llm.server_threads, start_timeout_s=cfg.llm.server_start_timeout_s)
              if start_server else nullcontext(cfg.llm.base_url))
    with server as base_url:
        init_ray()
        require_gpus(cfg, stages)
        ds = build_dataset(res, base_url, run_id, done_ids, stages, text_from, quota, plan_skip, resume_cached)
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for outcome in batch.to_pylist():
                summary.add(outcome)
    summary.skipped = total - summary.kept - summary.generated - sum(summary.rejected.values())
    stats = compute_stats(layout)
    stats["last_run"] = {"run_id": run_id, "wall_s": round(time.monotonic() - started, 1),
                         "stages": ",".join(["generate"] * stages.generate + ["tts,verify,shard"] * stages.audio),
                         # verify.enabled=false keeps audio unverified: said so here and in the dataset card
                         "verified": stages.audio and cfg.verify.enabled,
                         **summary.as_dict(), "speakers_dropped": len({d["speaker_id"] for d in res.dropped_speakers})}
    if res.dropped_speakers:
        stats["speakers_dropped"] = res.dropped_speakers  # which speaker, which clip, what is wrong with it
    write_stats(layout, stats)
    with open(layout.state / "runs.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"run_id": run_id, "text_digest": cfg.text_digest(), **stats["last_run"]}) + "\n")
    if layout.manifest_parts():  # the dataset card (README.md) and report.html describe the whole folder
        from pipeline.publish.card import card_resolution, write_card
        from pipeline.publish.report import write_report

        write_card(layout.root, cfg.model_dump(mode="json"), stats, speakers=res.pool or None)
        write_report(layout.root, stats)
        for warning in card_resolution(layout.root, cfg.model_dump(mode="json"), res.pool or None).warnings:
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
    p_inspect = sub.add_parser("inspect", help="per-shard/per-language durations, token estimates and the pooled "
                               "speech-token reduction (needs torch: the dev or gpu extra)")
    p_inspect.add_argument("folder", type=Path)
    p_inspect.add_argument("--tokenizer", help="HF tokenizer folder or tokenizer.json for text tokens (default: estimate)")
    p_inspect.add_argument("--pool-threshold", type=float, default=0.97, help="affinity pooling cosine threshold")
    p_inspect.add_argument("--token-budget", type=int, default=8192, help="padded tokens per batch")
    p_inspect.add_argument("--max-batch-size", type=int, default=64)
    p_inspect.add_argument("--max-samples", type=int, help="stop after N exchanges (a quick estimate)")
    p_inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    p_pub = sub.add_parser("publish", help="upload a finished, verified output folder to a Hugging Face dataset repo")
    p_pub.add_argument("--config", "-c", required=True, help="the run's config (locates the output folder)")
    p_pub.add_argument("--out", help="output folder (default out/<dataset>)")
    p_pub.add_argument("--repo", required=True, help="dataset repo on the Hub, <namespace>/<name>; created if missing")
    p_pub.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    p_pub.add_argument("--revision", help="branch to commit to (created from main if missing; default main)")
    p_pub.add_argument("--dry-run", action="store_true", help="run every check and list what would go up; no network")
    p_pub.add_argument("overrides", nargs="*")
    from pipeline.speaker_import.cli import add_parser as add_speakers_parser

    add_speakers_parser(sub)
    return parser


def inspect_cli(args: argparse.Namespace) -> int:
    missing = missing_modules("torch", *(["transformers"] if args.tokenizer else []))
    if missing:
        print(f"speechchat inspect needs {' and '.join(missing)}, which this install does not have: install the gpu "
              f"extra, pip install -e '.[gpu]'", file=sys.stderr)
        return 2
    from pipeline.training.inspect import format_report, inspect_dataset

    try:
        report = inspect_dataset(args.folder, args.tokenizer, args.pool_threshold, args.token_budget,
                                 args.max_batch_size, args.max_samples, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError) as exc:
        print(f"speechchat inspect: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


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
    if args.command == "inspect":
        return inspect_cli(args)
    if args.command == "publish":
        from pipeline.publish.hub import publish_cli

        return publish_cli(args)
    if args.command == "speakers":
        from pipeline.speaker_import.cli import run as speakers_cli

        return speakers_cli(args)
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
    except JobStopped as exc:
        print(f"speechchat: stopped: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
