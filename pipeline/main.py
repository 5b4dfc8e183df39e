"""speechchat CLI: argument parsing and dispatch only.

Works as `python pipeline/main.py ...` (what `ray job submit --working-dir . -- python pipeline/main.py`
runs), as `python -m pipeline ...`, and as the `speechchat` console script. The run itself is
`pipeline.run.runner`; the stages are `pipeline/stages/`; the Ray plan is `pipeline.executor`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a plain script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import logging

from pipeline.config import ConfigError, dump_resolved, load_config
from pipeline.redact import redact


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechchat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="generate -> speak -> verify -> shard, resuming what is done")
    p_run.add_argument("--config", "-c", required=True, help="YAML config (may inherit with `base:`)")
    p_run.add_argument("--out", help="output folder or object-store prefix, e.g. s3://bucket/ds (default out/<dataset>)")
    p_run.add_argument("--adopt-output", action="store_true", help="let a non-empty folder without the pipeline's "
                       "marker become this output (its files are kept; only the pipeline's own names are ever "
                       "replaced or cleaned up)")
    p_run.add_argument("--stages", help="comma list of stages to run (default all): e.g. generate (text only, "
                       "cached as Parquet) or tts,verify,shard (audio from cached text, no LLM calls)")
    p_run.add_argument("--text-from", help="output folder whose text/ cache feeds --stages tts,verify,shard "
                       "(default: the output folder itself)")
    p_run.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tts.max_actors=2 plan.num_conversations=5")
    p_check = sub.add_parser("check-config", help="validate a config and print it resolved")
    p_check.add_argument("--config", "-c", required=True)
    p_check.add_argument("--out")
    p_check.add_argument("--adopt-output", action="store_true", help="as for run")
    p_check.add_argument("--stages", help="check only what these stages need (see run --stages)")
    p_check.add_argument("overrides", nargs="*")
    p_plan = sub.add_parser("plan", help="write every conversation spec of a config to one Parquet file "
                            "(streamed in bounded memory; no LLM, no Ray)")
    p_plan.add_argument("--config", "-c", required=True)
    p_plan.add_argument("--out", "-o", required=True, type=Path, help="Parquet file to write, e.g. specs.parquet")
    p_plan.add_argument("overrides", nargs="*", help="dotted overrides, e.g. plan.num_conversations=7000000")
    p_verify = sub.add_parser("verify-output", help="check a dataset folder or prefix (s3://...): tars, samples, "
                              "checksums, manifest")
    p_verify.add_argument("folder", help="output folder or URL (credentials from the environment: AWS_* ...)")
    p_inspect = sub.add_parser("inspect", help="per-shard/per-language durations, token estimates and the pooled "
                               "speech-token reduction (needs torch: the dev or gpu extra)")
    p_inspect.add_argument("folder")
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
    from pipeline.voices.cli import add_parser as add_speakers_parser

    add_speakers_parser(sub)
    return parser


def inspect_cli(args: argparse.Namespace) -> int:
    from importlib.util import find_spec

    missing = [name for name in ("torch", *(["transformers"] * bool(args.tokenizer))) if find_spec(name) is None]
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


def verify_output_cli(folder: str) -> int:
    from pipeline.config import location_problem
    from pipeline.io.layout import Layout
    from pipeline.io.verify_output import verify_output

    problem = location_problem(folder)
    if problem:
        print(f"speechchat verify-output: {folder!r} {problem}" if problem.startswith("is ") else
              f"speechchat verify-output: {problem}", file=sys.stderr)
        return 2
    layout = Layout(folder)
    try:
        problems = verify_output(layout)
        samples = sum(layout.store.parquet_rows(p) for p in layout.manifest_parts()) if not problems else 0
    except OSError as exc:  # storage errors arrive scrubbed of credentials
        print(f"speechchat verify-output: {exc}", file=sys.stderr)
        return 2
    if problems:
        print(f"{folder}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems[:200]:
            print(f"  {p}", file=sys.stderr)
        if len(problems) > 200:
            print(f"  ... and {len(problems) - 200} more", file=sys.stderr)
        return 1
    print(f"{folder}: OK ({len(layout.shards())} shards, {samples} samples, {len(layout.reject_parts())} rejects parts)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `pipeline/main.py --config x.yaml` means run
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for noisy in ("botocore", "aiobotocore", "s3fs"):  # "found credentials in environment variables" on every start
        logging.getLogger(noisy).setLevel(logging.WARNING)
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
        from pipeline.voices.cli import run as speakers_cli

        return speakers_cli(args)
    from pipeline.run.runner import run
    from pipeline.run.selection import StageSelection
    from pipeline.run.stops import JobStopped

    try:
        if args.command == "plan":
            from pipeline.run.plan_file import write_plan

            result = write_plan(load_config(args.config, args.overrides), args.out,
                                report=lambda line: print(line, file=sys.stderr, flush=True))
            print(f"{result['rows']} conversation specs -> {result['path']} ({result['bytes'] / 1e6:.1f} MB, "
                  f"{result['seconds']:.1f} s)")
            return 0
        cfg = load_config(args.config, args.overrides, args.out)
        if args.command == "check-config":
            from pipeline.run.preflight import preflight

            preflight(cfg, StageSelection.parse(args.stages), adopt_output=args.adopt_output)
            print(dump_resolved(cfg))
            return 0
        text_from = None
        if args.text_from is not None:
            from pipeline.config import is_url, location_problem

            problem = location_problem(args.text_from)
            if problem:
                raise ConfigError(f"--text-from {problem}" if problem.startswith("is ") else f"--text-from {problem}")
            text_from = args.text_from if is_url(args.text_from) else Path(args.text_from)
        run(cfg, StageSelection.parse(args.stages), text_from, adopt_output=args.adopt_output)
        return 0
    except ConfigError as exc:
        print(f"speechchat: {redact(str(exc))}", file=sys.stderr)
        return 2
    except JobStopped as exc:
        print(f"speechchat: stopped: {redact(str(exc))}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("speechchat: interrupted; no file was left half-written under its final name", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
