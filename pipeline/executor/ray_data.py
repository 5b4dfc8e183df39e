"""The executor: turns a list of stages into one streaming Ray Data plan, and nothing else.

How each stage runs follows from what it declares (`stages.base.Resources`):
- read stages start a stream (a datasource with a tiny CPU request); a read stage later in the list joins
  its stream to the flow there (union);
- stateless stages (`actors=None`) run as Ray tasks with a tiny CPU request, at most `LIGHT_CONCURRENCY` at once;
- model stages run as actor pools that load their models when the actor starts (`setup()` in the
  constructor), with their CPU and GPU shares; `actors="auto"` sizes the pool from the cluster;
- consecutive single-actor stages with no batch size of their own (the in-run de-dup, the quota) run inside
  the next single-actor stage's actor (the shard writer), so no extra actor process is paid for them;
- every actor has bounded restarts and batch retries (`workers.*`): Ray Data's default is unbounded, so a
  crash loop would never end, while an isolated crash is absorbed without loss;
- the vLLM generate stage becomes a ray.data.llm processor.
"""

from __future__ import annotations

import logging
import os

import pyarrow as pa
import ray

from pipeline.config import REPO_ROOT, ConfigError, WorkersConfig
from pipeline.executor.sources import StageSource
from pipeline.stages.base import ProcessorStage, ReadStage, Resources, Stage

# Light stages run as tasks with a tiny CPU request; without a cap Ray would run 1/0.05 = 20 of them per CPU at
# once, each in a fresh worker process that imports the pipeline first: on a small machine that start-up
# delayed the first TTS batch by ~20 s (bench/run.py row 1, Ray timeline). Two at a time keep a couple of warm
# workers busy; the stages take milliseconds per batch next to TTS and ASR.
LIGHT_CONCURRENCY = 2
log = logging.getLogger(__name__)
LIGHT_CPUS = 0.05


def build_plan(stages: list[Stage], workers: WorkersConfig) -> ray.data.Dataset:
    """One Ray Data plan running `stages` in order (see the module docstring)."""
    ds = None
    # Ray 2.60 takes the crash bounds only as remote args (it warns these move to named parameters in 2.64)
    crash = {"max_restarts": workers.max_restarts, "max_task_retries": workers.max_task_retries}
    for group in fuse(stages):
        head = group[-1]
        if isinstance(head, ReadStage):
            stream = ray.data.read_datasource(StageSource(head), num_cpus=head.read_cpus,
                                              **({"override_num_blocks": head.estimated_blocks()}
                                                 if head.estimated_blocks() else {}))
            # the read stage's own rows only: the stream it joins (freshly generated text) must not pass through it
            stream = stream.map_batches(head, batch_format="pyarrow", num_cpus=LIGHT_CPUS, concurrency=LIGHT_CONCURRENCY)
            ds = stream if ds is None else ds.union(stream)
            continue
        if ds is None:
            raise ValueError(f"stage {head.name!r} has no input: a flow starts with a read stage")
        if isinstance(head, ProcessorStage):  # vLLM engine actors (ray.data.llm)
            ds = vllm_processor(head)(ds)
            continue
        res = head.resources
        batch = {} if head.batch_size is None else {"batch_size": head.batch_size}
        if res.actors is None:
            ds = ds.map_batches(head, batch_format="pyarrow", num_cpus=LIGHT_CPUS, concurrency=LIGHT_CONCURRENCY,
                                **batch)
            continue
        ds = ds.map_batches(actor_class(group), fn_constructor_kwargs={"stages": group},
                            compute=actor_pool(res.actors, res.threads or 1, res.num_gpus, res.custom),
                            batch_format="pyarrow", num_cpus=res.num_cpus, num_gpus=res.num_gpus or None, **batch,
                            **crash, **placement(res))
    if ds is None:
        raise ValueError("no stages to run")
    return ds


class Loop(Stage):
    """Stages run again and again in one actor (TTS then verify, for re-synthesis): the body runs on the batch,
    then again while `has_pending(batch)` says some conversation has work left, at most `times` passes in all.
    The actor holds every body stage's models; it reserves the most CPUs and GPU share any body stage asks for,
    and the pool has as many actors as the body stage that asks for the most (on CPU: verify's `auto`)."""

    def __init__(self, body: list[Stage], times: int, has_pending):
        super().__init__()
        self.body, self.times, self.has_pending = body, times, has_pending
        self.name = "+".join(s.name for s in body)
        actors = [s.resources.actors for s in body]  # as many loop actors as the stage that wants the most
        self.resources = Resources(num_cpus=max(s.resources.num_cpus for s in body),
                                   num_gpus=max(s.resources.num_gpus for s in body),
                                   threads=max((s.resources.threads or 1) for s in body),
                                   actors="auto" if "auto" in actors else max(a or 1 for a in actors),
                                   # custom Ray resources (nodes started with --resources): every body stage's
                                   custom={k: max(s.resources.custom.get(k, 0) for s in body)
                                           for k in dict.fromkeys(k for s in body for k in s.resources.custom)},
                                   driver_node=any(s.resources.driver_node for s in body))
        self.batch_size = body[0].batch_size

    def setup(self) -> None:
        for stage in self.body:
            stage.setup()
            stage._ready = True

    def process_batch(self, batch: pa.Table) -> pa.Table:
        for _ in range(self.times):
            for stage in self.body:
                batch = stage(batch)
            if not self.has_pending(batch):
                break
        return batch


def gpu_shares(stages: list[Stage]) -> dict[str, float]:
    """The GPU share each stage name runs under (a looped stage: its loop actor's share), for GPU-seconds."""
    shares: dict[str, float] = {}
    for stage in stages:
        for inner in stage.body if isinstance(stage, Loop) else [stage]:
            shares[inner.name] = max(shares.get(inner.name, 0.0), stage.resources.num_gpus)
    return shares


def fuse(stages: list[Stage]) -> list[list[Stage]]:
    """Group each single-actor stage without a batch size of its own with the single-actor stage after it."""
    groups: list[list[Stage]] = []
    pending: list[Stage] = []
    for stage in stages:
        if stage.resources.single and stage.batch_size is None:
            pending.append(stage)
            continue
        if pending and not stage.resources.single:
            raise ValueError(f"single-actor stages {[s.name for s in pending]} must be followed by a single-actor "
                             f"stage, not {stage.name!r}")
        groups.append([*pending, stage])
        pending = []
    if pending:
        groups.append(pending)
    return groups


class StageActor:
    """A Ray actor running one stage (or a fused chain of them): models load when the actor starts, not on its
    first batch, so loading overlaps the upstream stages' work instead of delaying the first batch."""

    def __init__(self, stages: list[Stage]):
        self.stages = stages
        for stage in stages:
            stage.setup()
            stage._ready = True

    def __call__(self, batch):
        for stage in self.stages:
            batch = stage(batch)
        return batch


def actor_class(group: list[Stage]) -> type:
    """StageActor named after the stage classes it runs: Ray Data names the operator (and its stats) by it."""
    name = "+".join(f"Loop_{'_'.join(type(b).__name__ for b in s.body)}" if isinstance(s, Loop) else type(s).__name__
                    for s in group)
    return type(name, (StageActor,), {"__qualname__": name})


def placement(res) -> dict:
    """Ray remote args that place a stage's actors: custom resources, and the driver's node for a stage that
    talks to a server on the driver's 127.0.0.1 (the embedded LLM server: on a cluster, use llm.base_url to a
    server every node reaches, or llm.backend vllm, to spread generation over the nodes)."""
    args: dict = {}
    if res.custom:
        args["resources"] = dict(res.custom)
    if res.driver_node:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        args["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                     soft=False)
    return args


def actor_pool(actors: int | str, threads: int, num_gpus: float = 0.0,
               custom: dict[str, float] | None = None) -> ray.data.ActorPoolStrategy:
    """N: a pool that grows from 1 to N actors with the backlog. auto: as many actors as the cluster has CPUs
    for `threads` threads each (or, with a GPU share, as many as its shares fit on the cluster's GPUs), all
    started at once: a pool grown on demand adds its second actor only after the first has worked through a
    batch (Ray timeline)."""
    if actors != "auto":
        return ray.data.ActorPoolStrategy(min_size=1, max_size=int(actors))
    resources = ray.cluster_resources()
    if num_gpus > 0:
        size = int(resources.get("GPU", 0) / num_gpus + 1e-9)
    else:
        size = int(resources.get("CPU", 1) // threads)
    for name, amount in (custom or {}).items():  # as many as the nodes' custom resources fit, too
        size = min(size, int(resources.get(name, 0) / amount + 1e-9))
    return ray.data.ActorPoolStrategy(size=max(1, size))


def vllm_processor(stage: ProcessorStage):
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    return build_processor(vLLMEngineProcessorConfig(**stage.processor_kwargs), preprocess=stage.preprocess,
                           postprocess=stage.postprocess)


def init_ray() -> None:
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # join the cluster named by RAY_ADDRESS (what `ray job submit` sets)
    else:
        # local: workers must import `pipeline` even when it is not pip-installed
        ray.init(include_dashboard=False, log_to_driver=True,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))}})


CONFIG_SECTION = {"generate": "llm"}  # the config section that sets a stage's resources, where it is not its name


def resource_problems(stages: list[Stage], nodes: list[dict[str, float]]) -> list[str]:
    """What an actor of `stages` asks for that no node of the cluster has (`nodes`: each alive node's
    resources, as `ray.nodes()` gives them). Ray would keep such an actor pending - the run would hang with no
    message - so these are found before any Ray work starts. (No stage reserves memory from Ray.)"""
    problems = []
    total_cpus = sum(n.get("CPU", 0.0) for n in nodes)
    largest = max((n.get("CPU", 0.0) for n in nodes), default=0.0)
    largest_gpus = max((n.get("GPU", 0.0) for n in nodes), default=0.0)
    where = f"the largest Ray node has {largest:g} (the cluster: {total_cpus:g} CPUs on {len(nodes)} node(s))"
    for stage in stages:
        res = stage.resources
        if res.actors is None:
            continue
        section = CONFIG_SECTION.get(stage.name, stage.name)
        if res.num_cpus > largest:
            problems.append(f"{section}.num_cpus={res.num_cpus:g}: one {stage.name} actor asks for {res.num_cpus:g} "
                            f"CPUs, but {where}; lower {section}.num_cpus")
        if res.num_gpus and largest_gpus and res.num_gpus > largest_gpus:
            problems.append(f"{section}.num_gpus={res.num_gpus:g}: one {stage.name} actor asks for {res.num_gpus:g} "
                            f"GPUs, but the largest Ray node has {largest_gpus:g}")
    return problems


def require_resources(stages: list[Stage]) -> None:
    """`require_gpus`, then `resource_problems` against the live cluster: a ConfigError with the numbers."""
    require_gpus(stages)
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    problems = resource_problems(stages, nodes)
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    wanted = sum(s.resources.num_cpus for s in stages if s.resources.actors is not None)
    total = sum(n.get("CPU", 0.0) for n in nodes)
    if wanted > total:
        log.warning("one actor of each model stage reserves %.2f CPUs, the cluster has %g: the stages will take "
                    "turns instead of running side by side", wanted, total)


def require_gpus(stages: list[Stage]) -> None:
    """A GPU share on a cluster without GPUs would leave the actors pending forever: say so instead."""
    if not any(s.resources.num_gpus for s in stages) or ray.cluster_resources().get("GPU", 0):
        return
    for stage in stages:
        if stage.resources.num_gpus:
            raise ConfigError(f"{stage.name}.num_gpus={stage.resources.num_gpus} but the Ray cluster has no GPUs; set "
                              f"{stage.name}.num_gpus=0 (and {stage.name}.device=cpu or auto) to "
                              f"{'synthesise' if stage.name == 'tts' else 'transcribe'} on CPU")
