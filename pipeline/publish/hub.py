"""`speechchat publish`: push a finished output folder to a dataset repo on the Hugging Face Hub.

What goes up is an allow-list (UPLOAD_KINDS of the pipeline's own names, `pipeline.io.layout.OWN_PATTERNS`):
the shards and the duplex subset's, the manifest, rejects, stats.json, the dataset card, report.html and the
resolved config. A file the pipeline did not write (a user's `data/en/train/holiday-photos.tar`) never goes up. Everything else stays local and is listed as such: `state/`
(resume bookkeeping, the LLM server's log), `text/` (the LLM text cache: every generated conversation,
rejected ones included, kept only to remake audio without paying for the LLM again; the kept text is in
each sample's JSON), temp files and anything hidden.

Before anything is sent the folder must pass `verify-output`, every language must have kept samples
(a language with only rejects means a broken run, not a dataset), and no file that would go up may hold
the value of a secret from the environment. The Hub is asked which files it already has (sha256 of LFS
files, git blob IDs of small ones) and only the others are uploaded, so a rerun after an interruption
sends only what is missing and a second publish of the same folder sends nothing.

Uploading uses `HfApi.upload_folder` restricted to the changed files: with `hf_xet` installed it is
huggingface_hub 2.x's streamed multi-commit pipeline (resumable: committed files are skipped, uploaded
chunks deduplicated; it replaced `upload_large_folder`), without it one commit over the LFS protocol.
The token comes from HF_TOKEN (or a saved `hf auth login`) and is scrubbed from every message.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.io.layout import TMP_SUFFIX, Layout, is_own_name
from pipeline.io.storage import CREDENTIAL_ENV
from pipeline.redact import holds_credentials, redact

log = logging.getLogger("speechchat.publish")

# Relative to the output folder, matched part by part (a `*` never crosses a `/`).
UPLOAD_KINDS = ("root", "shard", "manifest", "duplex_shard", "duplex_manifest", "rejects")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
# Secret-looking environment variables whose values must never leave the machine; short values are
# skipped (a 3-character "secret" would match by chance in audio bytes).
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", *CREDENTIAL_ENV)
MIN_SECRET_LEN = 8
STAGING = ".publish-staging"  # hidden, so never uploaded itself nor seen by verify-output


class PublishError(Exception):
    """A publish that must not (or could not) go ahead; the message says why and what to do."""


@dataclass(frozen=True)
class LocalFile:
    path: str        # in the repo, POSIX
    size: int
    sha256: str
    git_sha1: str    # the git blob ID, what the Hub reports for files it keeps outside LFS


@dataclass
class Plan:
    files: list[LocalFile]
    left_out: list[str]
    to_upload: list[LocalFile] = field(default_factory=list)
    already_there: list[LocalFile] = field(default_factory=list)
    remote_only: list[str] = field(default_factory=list)

    @property
    def upload_bytes(self) -> int:
        return sum(f.size for f in self.to_upload)


def is_uploaded_path(rel: str) -> bool:
    if any(p.startswith(".") for p in PurePosixPath(rel).parts) or rel.endswith(TMP_SUFFIX):
        return False
    return any(is_own_name(rel, kind) for kind in UPLOAD_KINDS)


def secret_values(extra_env: list[str] = ()) -> list[str]:
    names = list(dict.fromkeys([*SECRET_ENV, *extra_env]))
    return [v for v in (os.environ.get(n, "") for n in names) if len(v) >= MIN_SECRET_LEN]


def scrub(text: str, secrets: list[str]) -> str:
    """Remove secret values and anything shaped like a credential from a message."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = re.sub(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(bearer\s+)?[^\s'\",}]+", r"\1\2***", text)
    text = re.sub(r"(?i)bearer\s+[A-Za-z0-9_.\-]+", "Bearer ***", text)
    return redact(re.sub(r"\b(hf_|sk-)[A-Za-z0-9_\-]{8,}", r"\1***", text))


# Text files that go up are also searched for URLs with credentials (`http://user:password@host`); the tars'
# audio is not (random FLAC bytes can spell "x://y:z@" by chance), the sample JSON in them holds no URLs of ours.
CREDENTIAL_SCANNED = (".yaml", ".json", ".md", ".html", ".jsonl", ".txt")
URL_WINDOW = 512  # a URL's userinfo is found within this many bytes of its scheme


def hash_file(path: Path | None, rel: str, secrets: list[str], layout: Layout | None = None
              ) -> tuple[LocalFile, bool, bool]:
    """sha256 and git blob ID in one read (a local file, or `rel` in an object-store layout); also whether any
    secret's bytes occur in the file, and whether (a text file) it holds a URL with credentials."""
    size = layout.size(rel) if layout is not None else path.stat().st_size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1()
    sha1.update(f"blob {size}\0".encode())
    needles = [s.encode() for s in secrets]
    overlap = max(max((len(n) for n in needles), default=1) - 1, URL_WINDOW)
    scan_urls = rel.endswith(CREDENTIAL_SCANNED)
    tail, leaked, credentials = b"", False, False
    with (layout.open(rel) if layout is not None else open(path, "rb")) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            sha256.update(block)
            sha1.update(block)
            window = tail + block
            if needles and not leaked:
                leaked = any(n in window for n in needles)
            if scan_urls and not credentials:
                credentials = holds_credentials(window)
            tail = window[-overlap:]
    return LocalFile(rel, size, sha256.hexdigest(), sha1.hexdigest()), leaked, credentials


def collect(root: Path | str | Layout, secrets: list[str]) -> tuple[Plan, list[str]]:
    """The files that would go up (hashed) and those that stay; problems if a secret is in one."""
    files, left_out, problems = [], [], []
    layout = root if isinstance(root, Layout) else Layout(root)
    if layout.local:
        root = Path(layout.root)
        entries = [(p.relative_to(root).as_posix(), p) for p in sorted(root.rglob("*")) if p.is_file() or p.is_symlink()]
    else:
        entries = [(rel, None) for rel in layout.store.list_files()]
    for rel, path in entries:
        if (path is not None and path.is_symlink()) or not is_uploaded_path(rel):
            left_out.append(rel)
            continue
        local, leaked, credentials = hash_file(path, rel, secrets, None if layout.local else layout)
        if leaked:
            problems.append(f"{rel}: holds the value of a secret from the environment ({', '.join(SECRET_ENV)}); "
                            "remove it from the file (and rotate the secret) before publishing")
        if credentials:
            problems.append(f"{rel}: holds a URL with credentials (scheme://user:password@host); remove them from "
                            "the file (and change that password) before publishing")
        files.append(local)
    return Plan(files, left_out), problems


def language_problems(root: Path | str | Layout, config_languages: list[str]) -> tuple[list[str], list[str]]:
    """(problems, warnings): a language with rejects but no kept sample blocks the publish; a configured
    language with nothing at all is only worth a warning (e.g. a text-only pass that was never spoken)."""
    layout = root if isinstance(root, Layout) else Layout(root)
    root = layout.store.url
    kept = Counter(lang for p in layout.manifest_parts()
                   for lang in layout.read_table(p, ["language"]).column(0).to_pylist())
    rejected: dict[str, Counter] = {}
    for p in layout.reject_parts():
        table = layout.read_table(p, ["language", "reason"])
        for lang, reason in zip(table.column("language").to_pylist(), table.column("reason").to_pylist()):
            rejected.setdefault(lang, Counter())[reason] += 1
    problems, warnings = [], []
    if not kept:
        problems.append(f"{root}: no kept samples (manifest/ is empty): nothing to publish")
    for lang, reasons in sorted(rejected.items()):
        if not kept.get(lang):
            listed = ", ".join(f"{r} {n}" for r, n in reasons.most_common(5))
            problems.append(f"language {lang!r}: {sum(reasons.values())} conversation(s) rejected and none kept "
                            f"({listed}); fix the cause and rerun that language, or remove it from the folder")
    for lang in config_languages:
        if not kept.get(lang) and lang not in rejected:
            warnings.append(f"language {lang!r} is in the config but has no samples in {root}; it is not published")
    return problems, warnings


def remote_files(api: Any, repo_id: str, revision: str | None) -> dict[str, tuple[str | None, str | None]]:
    """{path: (lfs sha256, git blob id)} of every file in the repo at `revision`."""
    entries = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
    return {e.path: (e.lfs.sha256 if getattr(e, "lfs", None) else None, getattr(e, "blob_id", None))
            for e in entries if hasattr(e, "size")}  # RepoFolder has no size


def compare(plan: Plan, remote: dict[str, tuple[str | None, str | None]]) -> Plan:
    local_paths = {f.path for f in plan.files}
    plan.to_upload, plan.already_there = [], []
    for f in plan.files:
        lfs_sha, blob = remote.get(f.path, (None, None))
        same = (lfs_sha == f.sha256) if lfs_sha else (blob == f.git_sha1)
        (plan.already_there if f.path in remote and same else plan.to_upload).append(f)
    plan.remote_only = sorted(p for p in remote if p not in local_paths and is_uploaded_path(p))
    return plan


@dataclass
class PublishResult:
    repo_id: str
    revision: str
    uploaded: list[str]
    skipped: list[str]
    left_out: list[str]
    remote_only: list[str]
    commit_url: str | None
    warnings: list[str]


def _group(paths: list[str]) -> str:
    """`state/ (3), text/ (2), x.tmp` – what stays local, compact."""
    tops = Counter(p.split("/", 1)[0] + ("/" if "/" in p else "") for p in paths)
    return ", ".join(f"{t} ({n})" if t.endswith("/") else t for t, n in sorted(tops.items()))


def publish(root: Path | str | Layout, repo_id: str, *, cfg_dict: dict[str, Any], speakers: list | None,
            config_languages: list[str], private: bool = False, revision: str | None = None,
            api_key_env: str | None = None, dry_run: bool = False, endpoint: str | None = None,
            token: str | None = None) -> PublishResult:
    """Check, refresh the card, and upload what the Hub does not have yet. Raises PublishError."""
    from pipeline.io.stats import compute_stats, write_stats
    from pipeline.io.verify_output import verify_output
    from pipeline.publish.card import card_resolution, write_card
    from pipeline.publish.report import write_report

    layout = root if isinstance(root, Layout) else Layout(root)
    root = layout.root
    if not REPO_ID.match(repo_id or ""):
        raise PublishError(f"--repo {repo_id!r}: expected <namespace>/<name> (letters, digits, '.', '_', '-'), "
                           "e.g. my-org/speechchat-en")
    if layout.local and not Path(root).is_dir():
        raise PublishError(f"{root}: no such output folder (run the pipeline first, or pass --out)")
    secrets = secret_values([api_key_env] if api_key_env else [])
    problems = verify_output(layout)
    if problems:
        raise PublishError("the folder fails verify-output, refusing to publish:\n  " + "\n  ".join(problems[:50])
                           + (f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""))
    lang_problems, warnings = language_problems(layout, config_languages)
    if lang_problems:
        raise PublishError("refusing to publish:\n  " + "\n  ".join(lang_problems))

    # Stats, card and report are rebuilt from the data on disk so that what goes up describes exactly
    # the shards that go up; the card names the repo in its loading snippets. Same data, same bytes.
    stats = compute_stats(layout)
    saved = _read_json(layout, "stats.json")
    stats.update({k: v for k, v in saved.items() if k not in stats})  # last_run, target: history kept
    if json.loads(json.dumps(stats)) != saved or not layout.store.is_file("report.html"):  # the plots take seconds: only when stale
        write_stats(layout, stats)
        write_report(layout, stats)
    write_card(layout, cfg_dict, stats, repo_id=repo_id, speakers=speakers)
    resolution = card_resolution(layout, cfg_dict, speakers)
    warnings += [f"licence: {w}" for w in resolution.warnings]

    plan, leak_problems = collect(layout, secrets)
    if leak_problems:
        raise PublishError("refusing to publish:\n  " + "\n  ".join(leak_problems))
    branch = revision or "main"
    if dry_run:
        plan.to_upload = list(plan.files)
        return PublishResult(repo_id, branch, [f.path for f in plan.to_upload], [], plan.left_out, [], None, warnings)

    token = token or _token()
    try:
        return _upload(layout, repo_id, plan, private=private, revision=revision, token=token, endpoint=endpoint,
                       warnings=warnings)
    except PublishError:
        raise
    except Exception as exc:  # noqa: BLE001 - any client/server failure becomes one clean, scrubbed message
        secrets = [*secrets, token] if token and len(token) >= MIN_SECRET_LEN else secrets
        raise PublishError(f"upload to {repo_id} failed ({type(exc).__name__}): {scrub(str(exc), secrets)}\n"
                           "Files already committed stay on the Hub; run the same command again to send the "
                           "rest.") from None


def _read_json(layout: Layout, rel: str) -> dict[str, Any]:
    try:
        return json.loads(layout.store.read_text(rel))
    except (OSError, ValueError):
        return {}


def _token() -> str:
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN first, then a token saved by `hf auth login`
    if not token:
        raise PublishError("no Hugging Face token: set HF_TOKEN in the environment (a token with write access, "
                           "https://huggingface.co/settings/tokens)")
    return token


def stage_files(root: Path, files: list[LocalFile]) -> Path:
    """A hidden folder inside the output holding (hard links to) exactly the files to send, so that
    upload_folder walks only those: its allow_patterns would cost files x patterns fnmatch calls."""
    staging = root / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    for f in files:
        target = staging / f.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / f.path, target)
        except OSError:  # a filesystem without hard links: the client reads through a symlink just as well
            os.symlink((root / f.path).resolve(), target)
    return staging


def _upload(layout: Layout, repo_id: str, plan: Plan, *, private: bool, revision: str | None, token: str,
            endpoint: str | None, warnings: list[str]) -> PublishResult:
    from huggingface_hub import HfApi

    root = layout.root
    api = HfApi(endpoint=endpoint or os.environ.get("HF_ENDPOINT") or None, token=token)
    # private=None keeps the namespace's default visibility for a new repo; an existing one is left as it is
    api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    compare(plan, remote_files(api, repo_id, revision))
    if plan.remote_only:
        warnings.append(f"{len(plan.remote_only)} data file(s) on the Hub are not in {root} (e.g. "
                        f"{plan.remote_only[0]}); the card's globs still match them: delete them on the Hub if they "
                        "are stale")
    commit_url = None
    if plan.to_upload:
        log.info("uploading %d file(s), %.1f MB, to %s (%d already there)", len(plan.to_upload),
                 plan.upload_bytes / 1e6, repo_id, len(plan.already_there))
        message = f"speechchat publish: {len(plan.to_upload)} file(s)"
        description = "Uploaded by `speechchat publish`: shards, manifest, rejects, card, report, stats."
        if layout.local:
            staging = stage_files(Path(root), plan.to_upload)
            try:
                info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(staging),
                                         revision=revision, commit_message=message, commit_description=description)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            info = _commit_from_store(api, layout, repo_id, plan.to_upload, revision, message, description)
        commit_url = getattr(info, "commit_url", None)
        # read back: every file must now be on the Hub with the local content
        missing = compare(Plan(plan.files, plan.left_out), remote_files(api, repo_id, revision)).to_upload
        if missing:
            raise PublishError(f"after the upload the Hub still lacks {len(missing)} file(s) with this content "
                               f"(e.g. {missing[0].path}); run publish again")
    return PublishResult(repo_id, revision or "main", [f.path for f in plan.to_upload],
                         [f.path for f in plan.already_there], plan.left_out, plan.remote_only, commit_url, warnings)


def _commit_from_store(api: Any, layout: Layout, repo_id: str, files: list[LocalFile], revision: str | None,
                       message: str, description: str) -> Any:
    """Object storage: each file streamed from the bucket into the commit (read in ranges, never staged on
    local disk), in commits of at most COMMIT_FILES files so that few objects are open at once."""
    from huggingface_hub import CommitOperationAdd

    info = None
    for start in range(0, len(files), COMMIT_FILES):
        batch = files[start:start + COMMIT_FILES]
        # fsspec's files are io.IOBase; the Hub client takes a buffered binary reader (ranged reads underneath)
        handles = [io.BufferedReader(layout.open(f.path), 1 << 20) for f in batch]
        try:
            ops = [CommitOperationAdd(path_in_repo=f.path, path_or_fileobj=fh) for f, fh in zip(batch, handles)]
            info = api.create_commit(repo_id=repo_id, repo_type="dataset", operations=ops, revision=revision,
                                     commit_message=message, commit_description=description)
        finally:
            for fh in handles:
                fh.close()
    return info


COMMIT_FILES = 64


def summary_lines(result: PublishResult, dry_run: bool = False) -> list[str]:
    verb = "would upload" if dry_run else "uploaded"
    lines = [f"speechchat publish -> {result.repo_id} (dataset, revision {result.revision})",
             f"  {verb} {len(result.uploaded)} file(s); {len(result.skipped)} already on the Hub unchanged"]
    if result.left_out:
        lines.append(f"  kept local (never uploaded): {_group(result.left_out)}")
    if result.commit_url:
        lines.append(f"  commit: {result.commit_url}")
    lines += [f"  warning: {w}" for w in result.warnings]
    return lines


def run_config_for(out_dir: Path | str | Layout, given: Any) -> Any:
    """The config that made the data: the output's saved config.yaml when it still validates, else the
    config given on the command line (with a warning)."""
    import yaml
    from pydantic import ValidationError

    from pipeline.config import MAX_CONFIG_BYTES, ConfigError, RunConfig, load_yaml_bounded

    layout = out_dir if isinstance(out_dir, Layout) else Layout(out_dir)
    saved = layout.store.location("config.yaml")
    if layout.store.is_file("config.yaml"):
        try:  # the folder may come from elsewhere: the same bounds as for a config of one's own
            if layout.store.size("config.yaml") > MAX_CONFIG_BYTES:
                raise ConfigError(f"larger than {MAX_CONFIG_BYTES >> 20} MiB")
            return RunConfig.model_validate(load_yaml_bounded(layout.store.read_text("config.yaml"), str(saved)))
        except (ValidationError, yaml.YAMLError, ConfigError, UnicodeDecodeError) as exc:
            log.warning("%s does not validate (%s); the card uses the given config instead",
                        saved, str(exc).splitlines()[0])
    return given


def publish_cli(args: Any) -> int:
    """`speechchat publish --config C [--out DIR] --repo org/name [--private] [--revision R] [--dry-run]`."""
    from pipeline.config import ConfigError, load_config
    from pipeline.io.inputs import local_pool_file
    from pipeline.voices.pool import load_pool

    logging.getLogger("httpx2").setLevel(logging.WARNING)  # huggingface_hub 2.x's client logs every request
    try:
        given = load_config(args.config, args.overrides, args.out)
    except ConfigError as exc:
        print(f"speechchat publish: {exc}", flush=True, file=sys.stderr)
        return 2
    out_dir = Layout(given.output_location(), given.storage.env_names())
    cfg = run_config_for(out_dir, given)
    try:
        speakers = load_pool(local_pool_file(cfg.resolve_location(cfg.voices.pool), cfg.storage.env_names()))
    except (ConfigError, OSError) as exc:  # the card then marks every voice's licence unknown, and says why
        log.warning("speaker pool: %s; voices' licences will show as unknown", exc)
        speakers = []
    languages = [cfg.source.language] if cfg.source.kind == "dataset" else list(cfg.plan.languages)
    try:
        result = publish(out_dir, args.repo, cfg_dict=cfg.model_dump(mode="json"), speakers=speakers,
                         config_languages=languages, private=args.private, revision=args.revision,
                         api_key_env=cfg.llm.api_key_env, dry_run=args.dry_run)
    except PublishError as exc:
        print(f"speechchat publish: {exc}", flush=True, file=sys.stderr)
        return 1
    print("\n".join(summary_lines(result, args.dry_run)), flush=True)
    return 0
