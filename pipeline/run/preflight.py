"""Preflight: every stage's and backend's own `check()`, gathered before Ray starts.

A run that would fail on a missing model file, a bad speaker pool or a setting a backend cannot honour stops
here with every problem listed at once (exit code 2), before anything is started or written.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError, RunConfig, is_url
from pipeline.io.layout import folder_target_problem
from pipeline.io.ownership import ownership_problem
from pipeline.run.flow import run_languages, stage_classes
from pipeline.run.selection import StageSelection
from pipeline.stages.base import RunContext


def preflight(cfg: RunConfig, selection: StageSelection | None = None, text_from: Path | str | None = None,
              adopt_output: bool = False) -> RunContext:
    """The run's context with every file it needs found; raises ConfigError listing every problem (the output
    not being the pipeline's among them: `pipeline.io.ownership`)."""
    selection = selection or StageSelection()
    ctx = RunContext(cfg=cfg, out_dir=cfg.output_location(), prompts_dir=cfg.resolve_path(cfg.plan.prompts_dir),
                     languages=run_languages(cfg), text_from=text_from, adopt_output=adopt_output)
    problems: list[str] = []
    problem = folder_target_problem(ctx.out_dir) if not is_url(ctx.out_dir) else None
    if problem:
        problems.append(f"output folder {ctx.out_dir}: {problem}")
    else:  # --stages plan writes plan/specs.parquet into the output too
        try:
            problem = ownership_problem(ctx.layout().store, cfg.dataset, adopt_output)
        except OSError as exc:  # an unreachable store, a missing bucket, refused credentials
            problem = f"output {ctx.out_dir}: {exc}"
        if problem:
            problems.append(problem)
    for stage in stage_classes(cfg, selection):
        problems += stage.check(ctx)
    if problems:
        raise ConfigError("cannot start:\n  " + "\n  ".join(problems))
    return ctx
