"""A local stand-in for the Hugging Face Hub API, on 127.0.0.1, for the publish tests.

Not the Hub: a small http.server that answers exactly the requests huggingface_hub 2.4 makes to publish
a dataset without Xet (read from its source: hf_api.py, _commit_api.py, lfs.py):

  POST /api/repos/create                                   create_repo (409 when it exists)
  POST /api/datasets/{repo}/branch/{branch}                create_branch (409 when it exists)
  GET  /api/datasets/{repo}[/revision/{rev}]               repo_info
  GET  /api/datasets/{repo}/tree/{rev}[/{path}]            list_repo_tree (one page, no Link header)
  POST /api/validate-yaml                                  create_commit checks README.md's front matter
  POST /api/datasets/{repo}/preupload/{rev}                upload modes ("lfs" for tars/parquet, else "regular"),
                                                           with the remote oid of files already there
  POST /datasets/{repo}.git/info/lfs/objects/batch         LFS batch: an upload action only for unknown objects
  PUT  /lfs-upload/{sha256}                                the object's bytes (checked against its sha256)
  POST /api/datasets/{repo}/commit/{rev}                   ndjson commit: header, file (base64), lfsFile

Xet: hf_xet is installed in this venv, and when it is, huggingface_hub picks the Xet protocol for every
LFS file on its own (`is_xet_available()` looks only at the package and HF_HUB_DISABLE_XET, never at the
server), then asks `/api/.../xet-write-token/...` for a CAS token. This stand-in has no Xet CAS, so the
tests switch Xet off the supported way: HF_HUB_DISABLE_XET=1 in a subprocess's environment, or
`huggingface_hub.constants.HF_HUB_DISABLE_XET = True` in-process (the constant is read at import time).
The token is checked on every request (401 without it) except the pre-signed LFS PUTs and the client's
unauthenticated, best-effort `GET /api/agent-harnesses` (user-agent detection; it goes to
`constants.ENDPOINT`, fixed at import, so in-process tests patch that constant too, or it would reach the
real Hub). Files are kept in memory: `files()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".tar", ".parquet")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, dict[str, bytes]] = field(default_factory=lambda: {"main": {}})
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict] = field(default_factory=list)


class HubStandIn:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.unauthorized: list[str] = []
        self.fail_next_commit = False              # answer the next commit with a 500 (an interrupted publish)
        self.echo_auth_on_create = False           # a broken server that echoes the request's headers in its error
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def signature(self, oid: str) -> str:
        return hashlib.sha256(f"{self.token}:{oid}".encode()).hexdigest()[:16]

    # --- what tests look at ---------------------------------------------------------------------
    def files(self, repo_id: str, branch: str = "main") -> dict[str, bytes]:
        return dict(self.repos[repo_id].branches[branch])

    def count(self, method: str, fragment: str) -> int:
        return sum(1 for m, p in self.requests if m == method and fragment in p)

    # --- the API --------------------------------------------------------------------------------
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet: pytest shows failures, not access logs
                pass

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status: int, payload=None, headers: dict | None = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, code: str | None, message: str) -> None:
                headers = {"X-Error-Message": message}
                if code:
                    headers["X-Error-Code"] = code
                self._send(status, {"error": message}, headers)

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                path, query = unquote(url.path), parse_qs(url.query)
                body = self._body()
                with hub.lock:
                    hub.requests.append((method, path))
                if path == "/api/agent-harnesses":  # the client's best-effort user-agent lookup, no token
                    return self._error(404, None, "not served by the stand-in")
                # LFS uploads go to a pre-signed URL (S3 on the real Hub): no token, a signature instead
                presigned = method == "PUT" and path.startswith("/lfs-upload/")
                if presigned and query.get("sig") != [hub.signature(path.rsplit("/", 1)[-1])]:
                    return self._error(403, None, "bad or missing signature")
                if not presigned and self.headers.get("Authorization") != f"Bearer {hub.token}":
                    hub.unauthorized.append(path)
                    return self._error(401, None, "Invalid credentials in Authorization header")
                with hub.lock:
                    return self._dispatch(method, path, query, body)

            def _repo(self, repo_id: str) -> Repo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._error(404, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                return repo

            def _branch(self, repo: Repo, rev: str) -> dict[str, bytes] | None:
                files = repo.branches.get(rev)
                if files is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return files

            def _dispatch(self, method: str, path: str, query: dict, body: bytes) -> None:
                parts = path.strip("/").split("/")
                if method == "POST" and path == "/api/repos/create":
                    req = json.loads(body)
                    repo_id = f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
                    if hub.echo_auth_on_create:
                        return self._error(500, None, f"internal error handling {dict(self.headers)}")
                    if req.get("type") != "dataset":
                        return self._error(400, None, f"stand-in only makes datasets, got {req.get('type')}")
                    if repo_id in hub.repos:  # the Hub's 409 still carries the URL (create_repo reads it)
                        return self._send(409, {"error": "You already created this dataset repo",
                                                "url": f"{hub.url}/datasets/{repo_id}"},
                                          {"X-Error-Message": "You already created this dataset repo"})
                    hub.repos[repo_id] = Repo(private=req.get("visibility") == "private" or bool(req.get("private")))
                    return self._send(200, {"url": f"{hub.url}/datasets/{repo_id}", "name": repo_id})
                if method == "POST" and path == "/api/validate-yaml":
                    content = json.loads(body)["content"]
                    try:
                        head = content.split("---\n", 2)[1] if content.startswith("---\n") else ""
                        meta = yaml.safe_load(head) or {}
                        assert isinstance(meta, dict)
                    except (IndexError, yaml.YAMLError, AssertionError) as exc:
                        return self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
                    return self._send(200, {"errors": [], "warnings": []})
                if method == "PUT" and parts[0] == "lfs-upload":
                    oid = parts[1]
                    if hashlib.sha256(body).hexdigest() != oid:
                        return self._error(400, None, "sha256 mismatch")
                    hub.lfs[oid] = body
                    return self._send(200, {})
                if len(parts) >= 3 and parts[0] == "datasets" and parts[2].endswith(".git"):  # LFS batch
                    repo = self._repo(f"{parts[1]}/{parts[2][:-4]}")
                    if repo is None:
                        return None
                    req = json.loads(body)
                    objects = []
                    for obj in req["objects"]:
                        entry = {"oid": obj["oid"], "size": obj["size"]}
                        if obj["oid"] not in hub.lfs:
                            entry["actions"] = {"upload": {
                                "href": f"{hub.url}/lfs-upload/{obj['oid']}?sig={hub.signature(obj['oid'])}"}}
                        objects.append(entry)
                    return self._send(200, {"transfer": "basic", "objects": objects})
                if len(parts) < 3 or parts[:2] != ["api", "datasets"]:
                    return self._error(404, None, f"stand-in has no route for {method} {path}")
                repo_id, rest = f"{parts[2]}/{parts[3]}", parts[4:]
                repo = self._repo(repo_id)
                if repo is None:
                    return None
                if method == "GET" and (not rest or rest[0] == "revision"):
                    rev = rest[1] if rest else "main"
                    files = self._branch(repo, rev)
                    if files is None:
                        return None
                    return self._send(200, {"id": repo_id, "private": repo.private, "sha": self._sha(repo, rev),
                                            "siblings": [{"rfilename": p} for p in sorted(files)]})
                if method == "POST" and rest[0] == "branch":
                    if rest[1] in repo.branches:
                        return self._error(409, None, "Reference already exists")
                    repo.branches[rest[1]] = dict(repo.branches["main"])
                    return self._send(200, {})
                if method == "GET" and rest[0] == "tree":
                    files = self._branch(repo, rest[1])
                    if files is None:
                        return None
                    prefix = "/".join(rest[2:])
                    recursive = query.get("recursive", ["false"])[0].lower() == "true"
                    return self._send(200, self._tree(repo, files, prefix, recursive))
                if method == "POST" and rest[0] == "preupload":
                    files = self._branch(repo, rest[1])
                    if files is None:
                        return None
                    out = []
                    for f in json.loads(body)["files"]:
                        lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
                        old = files.get(f["path"])
                        oid = None if old is None else (hashlib.sha256(old).hexdigest()
                                                        if f["path"] in repo.lfs_paths else git_sha1(old))
                        out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                                    "shouldIgnore": False, "oid": oid})
                    return self._send(200, {"files": out, "commitOid": self._sha(repo, rest[1])})
                if method == "POST" and rest[0] == "commit":
                    return self._commit(repo, repo_id, rest[1], body)
                return self._error(404, None, f"stand-in has no route for {method} {path}")

            @staticmethod
            def _sha(repo: Repo, rev: str) -> str:
                return hashlib.sha1(json.dumps([len(repo.commits), rev]).encode()).hexdigest()

            @staticmethod
            def _tree(repo: Repo, files: dict[str, bytes], prefix: str, recursive: bool) -> list[dict]:
                entries, folders = [], set()
                for path, data in sorted(files.items()):
                    if prefix and not path.startswith(prefix + "/"):
                        continue
                    rel = path[len(prefix) + 1:] if prefix else path
                    if not recursive and "/" in rel:
                        folders.add((prefix + "/" if prefix else "") + rel.split("/", 1)[0])
                        continue
                    if recursive:
                        segs = path.split("/")
                        folders.update("/".join(segs[:i]) for i in range(1, len(segs)))
                    entry = {"type": "file", "path": path, "size": len(data), "oid": git_sha1(data)}
                    if path in repo.lfs_paths:
                        pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:"
                                   f"{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n").encode()
                        entry.update(oid=git_sha1(pointer), lfs={"oid": hashlib.sha256(data).hexdigest(),
                                                                 "size": len(data), "pointerSize": len(pointer)})
                    entries.append(entry)
                folders = {f for f in folders if not prefix or f.startswith(prefix + "/")}
                return [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders)] + entries

            def _commit(self, repo: Repo, repo_id: str, rev: str, body: bytes) -> None:
                files = self._branch(repo, rev)
                if files is None:
                    return None
                if hub.fail_next_commit:
                    hub.fail_next_commit = False
                    return self._error(500, None, "stand-in: commit failed (simulated outage)")
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                if self.headers.get("Content-Type") != "application/x-ndjson" or lines[0]["key"] != "header":
                    return self._error(400, None, "expected an ndjson commit starting with a header")
                changes: dict[str, tuple[bytes, bool]] = {}
                for line in lines[1:]:
                    value = line["value"]
                    if line["key"] == "file":
                        changes[value["path"]] = (base64.b64decode(value["content"]), False)
                    elif line["key"] == "lfsFile":
                        data = hub.lfs.get(value["oid"])
                        if data is None:
                            return self._error(400, None, f"LFS object {value['oid']} was never uploaded")
                        changes[value["path"]] = (data, True)
                    else:
                        return self._error(400, None, f"stand-in does not handle {line['key']}")
                for path, (data, is_lfs) in changes.items():
                    files[path] = data
                    (repo.lfs_paths.add if is_lfs else repo.lfs_paths.discard)(path)
                repo.commits.append({"revision": rev, "summary": lines[0]["value"]["summary"],
                                     "paths": sorted(changes)})
                sha = self._sha(repo, rev)
                return self._send(200, {"commitUrl": f"{hub.url}/datasets/{repo_id}/commit/{sha}",
                                        "commitOid": sha, "pullRequestUrl": None})

            def do_GET(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_PUT(self):
                self._route("PUT")

        return Handler


@contextmanager
def online_standin(monkeypatch, tmp_path, token: str) -> Iterator[HubStandIn]:
    """A stand-in that in-process huggingface_hub publishes to: Xet off (see above); the session is offline
    (conftest), so offline mode is lifted for this test, and the import-time constants point at the stand-in,
    so nothing leaves 127.0.0.1 (the socket guard still refuses any other address)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "AGENT_HARNESSES_PATH", str(tmp_path / "hf-agent-harnesses.json"))
    with HubStandIn(token) as standin:
        monkeypatch.setattr(hf_constants, "ENDPOINT", standin.url)
        monkeypatch.setenv("HF_ENDPOINT", standin.url)
        yield standin
