"""The mission's own entry point on a real two-node Ray cluster writing to a real S3-compatible server.

One module-wide cluster on this machine: `ray start --head` plus a second `ray start --address ...` node, each
with its own `--resources` (one `tts_slot` and one `verify_slot` per node, so an `auto` pool of TTS and of
verify actors has one actor on each node), and the S3 stand-in (moto's server) from conftest; everything on
127.0.0.1, started and stopped by the fixtures (the cluster's processes by their own PIDs). Jobs go in as a
data team sends them: `ray job submit --working-dir . -- python pipeline/main.py run --config
configs/smoke.yaml --out s3://...`, the LLM being the embedded llama.cpp server the job starts on the head
(the generate stage is pinned there: 127.0.0.1 on the other node is that node).

Endpoint and (planted, fake) credentials reach every node the standard way: AWS_* in the environment that
`ray start` runs in. The tests then look for the planted keys in every object and every log.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import FAKE_AWS_KEY_ID, FAKE_AWS_SECRET
from proc import kill_tree, popen
from proc import run as run_proc
from s3_server import all_objects, make_bucket, s3fs_client, unfinished_uploads

from pipeline.config import REPO_ROOT
from pipeline.io.layout import Layout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(2400)]  # a cluster start, then whole jobs

RAY_BIN = Path(sys.executable).parent
START_TRIES = 5  # Ray waits a fixed 30 s for a new node to register (ray/_private/node.py)
BASE = ["plan.num_conversations=5", "plan.exchanges.en.min=1", "plan.exchanges.en.max=1", "llm.max_tokens=200",
        "llm.batch_size=1", "tts.piper_noise_scale=0", "tts.piper_noise_w_scale=0", "tts.batch_size=1",
        "verify.batch_size=1", "shard.conversations_per_shard=1"]
# TTS and verify as pools of their own (re-synthesis off), one actor of each per node (their custom resources);
# the near-duplicate actor passes each conversation on as a block of its own (its batch of 16 would reach TTS as
# one block: one task, one actor, in a job this small)
SPREAD = ["tts.max_actors=auto", "tts.cpu_threads=1", "tts.ray_resources={tts_slot: 1}",
          "verify.max_actors=auto", "verify.cpu_threads=1", "verify.ray_resources={verify_slot: 1}",
          "verify.resynthesis_rounds=0", "dedup.batch_size=1"]
# the job's Ray Data waits until every actor of a pool is up before it hands out batches (else the actor that is
# ready first takes every batch of a job this small, and nothing runs on the other node)
WAIT_FOR_POOLS = {"RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "600"}
FOREIGN = {"notes/draft.tmp": b"my draft", "data/en/train/holiday-photos.tar": b"photos",
           "manifest/notes.parquet": b"not a manifest", "rejects/mine.parquet": b"x", "text/mine.txt": b"x",
           "state/notes.txt": b"x", "draft.tmp": b"x"}


def free_port():
    from s3_server import free_port as port

    return port()


class Cluster:
    def __init__(self, temp_dir: Path, env: dict[str, str]):
        self.temp_dir, self.env = temp_dir, env
        self.port, self.dashboard_port = free_port(), free_port()
        self.head_pids: set[int] = set()
        self.worker_pids: set[int] = set()

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def ours(self) -> set[int]:
        """PIDs of the processes of this cluster (their command lines name its temp dir)."""
        found = set()
        for p in psutil.process_iter(["pid", "cmdline"]):
            if any(str(self.temp_dir) in a for a in (p.info["cmdline"] or [])):
                found.add(p.info["pid"])
        return found

    def start(self) -> None:
        resources = json.dumps({"tts_slot": 1, "verify_slot": 1})
        for attempt in range(START_TRIES):  # `ray start` gives the GCS and raylet 30 s: a loaded machine can miss it
            try:  # every port of its own: Ray's defaults (e.g. the agent's 52365) may be taken by another Ray here
                self._ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(self.port),
                          "--temp-dir", str(self.temp_dir), "--num-cpus", "4", "--resources", resources,
                          "--dashboard-host", "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                          "--object-store-memory", str(200 << 20), "--disable-usage-stats", *self.node_ports())
                break
            except AssertionError:
                self.stop()
                if attempt == START_TRIES - 1:
                    raise
                self.port, self.dashboard_port = free_port(), free_port()
                time.sleep(15)
        self.head_pids = self.ours()
        for attempt in range(START_TRIES):  # `ray start` gives a raylet 30 s to register: a loaded machine can miss it
            try:
                self._ray("start", "--address", f"127.0.0.1:{self.port}", "--node-ip-address", "127.0.0.1",
                          "--num-cpus", "3", "--resources", resources, "--object-store-memory", str(200 << 20),
                          "--disable-usage-stats", *self.node_ports())
                break
            except AssertionError:
                self.kill(self.ours() - self.head_pids)  # the half-started node, by its PIDs
                if attempt == START_TRIES - 1:
                    raise
                time.sleep(15)
        self.worker_pids = self.ours() - self.head_pids
        deadline = time.monotonic() + 120
        while len(self.alive_nodes()) < 2 and time.monotonic() < deadline:
            time.sleep(1)
        assert len(self.alive_nodes()) == 2, "the second node never joined"
        for _ in range(60):  # the head's job agent answers a while after the node is up
            res = run_proc([str(RAY_BIN / "ray"), "job", "submit", "--address", self.dashboard, "--", "true"],
                           env=self.env, capture_output=True, text=True, timeout=300)
            if res.returncode == 0:
                break
            time.sleep(2)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    @staticmethod
    def node_ports() -> list[str]:
        ports = [free_port() for _ in range(7)]
        return ["--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
                "--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3]),
                "--metrics-export-port", str(ports[4]), "--runtime-env-agent-port", str(ports[5]),
                "--min-worker-port", str(ports[6] + 1), "--max-worker-port", str(ports[6] + 200)]

    def _ray(self, *args: str) -> None:
        res = run_proc([str(RAY_BIN / "ray"), *args], env=self.env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    def alive_nodes(self) -> list:
        from ray.util.state import list_nodes

        try:
            return [n for n in list_nodes(address=self.dashboard) if n.state == "ALIVE"]
        except Exception:  # noqa: BLE001 - the dashboard is still starting
            return []

    def kill(self, pids: set[int]) -> None:
        family = set()
        for pid in pids:
            try:
                family |= {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
            except psutil.NoSuchProcess:
                pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        for _ in range(3):  # the daemons name the temp dir; their workers are their children: kill by PID
            left = self.ours()
            if not left:
                break
            self.kill(left)
            time.sleep(1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        for log in self.temp_dir.parent.glob(f"{self.temp_dir.name}-job-*.log"):
            log.unlink(missing_ok=True)

    def submit(self, out: str, *overrides: str, env_vars: dict[str, str] | None = None, wait: bool = True,
               timeout: float = 1200) -> subprocess.CompletedProcess | subprocess.Popen:
        cmd = [str(RAY_BIN / "ray"), "job", "submit", "--address", self.dashboard, "--working-dir", "."]
        if env_vars:
            cmd += ["--runtime-env-json", json.dumps({"env_vars": env_vars})]
        cmd += ["--", "python", "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", out, *overrides]
        if not wait:  # the client's output to a file: a pipe nobody reads while waiting fills and blocks it
            log = open(self.temp_dir.parent / f"{self.temp_dir.name}-job-{time.monotonic_ns()}.log", "w+")
            job = popen(cmd, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True)
            job.log = log
            return job
        return run_proc(cmd, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(s3_endpoint):
    temp_dir = Path(f"/tmp/sc-ray-{os.getpid()}")  # short: Ray's socket paths must fit in 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{RAY_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    c = Cluster(temp_dir, env)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def job_output(job) -> str:
    job.log.seek(0)
    return job.log.read()


def kept_ids(url):
    layout = Layout(url)
    return [r["conversation_id"] for p in layout.manifest_parts() for r in layout.read_table(p).to_pylist()
            if r["exchange_index"] == 0]


def rejected_ids(url):
    layout = Layout(url)
    return [r["conversation_id"] for p in layout.reject_parts() for r in layout.read_table(p).to_pylist()]


def verify_cli(url):
    return run_proc([sys.executable, "pipeline/main.py", "verify-output", url], cwd=REPO_ROOT,
                    capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_job(cluster):
    out = f"{make_bucket('speechchat-first')}/ds"
    res = cluster.submit(out, *BASE, *SPREAD, env_vars=WAIT_FOR_POOLS)
    assert res.returncode == 0 and "succeeded" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res


def test_job_submit_on_two_nodes_writes_to_s3_and_passes_verify_output(cluster, first_job):
    from ray.util.state import list_tasks

    out, res = first_job
    check = verify_cli(out)
    assert check.returncode == 0 and f"{out}: OK" in check.stdout, check.stderr
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) + len(rejected) == 5 and kept, res.stdout[-2000:]
    tasks = list_tasks(address=cluster.dashboard, limit=10000, detail=True,
                       filters=[("type", "=", "ACTOR_TASK")])
    nodes_of = {}
    for t in tasks:
        m = re.match(r"MapWorker\(MapBatches\((\w+)\)\)\.submit$", t.func_or_class_name or "")
        if m and t.node_id:
            nodes_of.setdefault(m.group(1), set()).add(t.node_id)
    alive = {n.node_id for n in cluster.alive_nodes()}
    head = {n.node_id for n in cluster.alive_nodes() if n.is_head_node}
    assert nodes_of.get("GenerateStage") == head  # beside the embedded LLM server on the driver's 127.0.0.1
    # TTS and verify run in one actor pool when re-synthesis is on (Loop_TTSStage_VerifyStage), apart otherwise
    tts = set().union(*(n for name, n in nodes_of.items() if "TTSStage" in name))
    verify = set().union(*(n for name, n in nodes_of.items() if "VerifyStage" in name))
    assert tts | verify == alive, nodes_of
    assert tts == alive or verify == alive, nodes_of
    objects = all_objects(out)
    assert ".speechchat-output.json" in objects and "README.md" in objects and "state/runs.jsonl" in objects
    assert unfinished_uploads(out) == []


def test_shards_load_from_the_bucket_with_webdataset_and_with_datasets_through_the_card(first_job, monkeypatch):
    import fsspec
    import webdataset as wds
    import yaml

    out, _ = first_job
    layout = Layout(out)
    manifest = [r for p in layout.manifest_parts() for r in layout.read_table(p).to_pylist()]
    # webdataset: an s3:// opener through fsspec (docs/cluster.md)
    gopen = sys.modules["webdataset.gopen"]  # the module (`wds.gopen` is its function)
    gopen.gopen_schemes["s3"] = lambda url, mode="rb", bufsize=8192, **kw: fsspec.open(url, mode).open()
    samples = list(wds.WebDataset([str(s) for s in layout.shards()], shardshuffle=False))
    assert sorted(s["__key__"] for s in samples) == sorted(m["key"] for m in manifest)
    assert all(s["user.flac"][:4] == b"fLaC" and json.loads(s["json"])["key"] == s["__key__"] for s in samples)
    # datasets: the card's configs, their data_files under the bucket prefix; endpoint and keys from AWS_*
    card = layout.store.read_text("README.md")
    meta = yaml.safe_load(card.split("---\n")[1])
    config = next(c for c in meta["configs"] if c["config_name"] == "en")
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # the session is offline; the bucket is local
    ds = datasets.load_dataset("webdataset", data_files={f["split"]: f"{out}/{f['path']}" for f in config["data_files"]},
                               split="train", storage_options={})
    assert ds.num_rows == len(manifest)
    assert ds[0]["json"]["language"] == "en" and f"{out}/data/en/train/shard-" in card


def test_publish_from_the_bucket_to_the_hub_standin(first_job, monkeypatch, tmp_path):
    from conftest import FAKE_HF_TOKEN
    from hub_standin import online_standin

    from pipeline.main import main

    out, _ = first_job
    with online_standin(monkeypatch, tmp_path, FAKE_HF_TOKEN) as hub:
        assert main(["publish", "--config", str(REPO_ROOT / "configs/smoke.yaml"), "--out", out,
                     "--repo", "acme/from-s3"]) == 0
        files = hub.files("acme/from-s3")
    objects = all_objects(out)
    shards = [k for k in objects if k.startswith("data/")]
    assert shards and all(files[k] == objects[k] for k in shards)
    assert {k for k in files if k.startswith(("manifest/", "rejects/"))} == {
        k for k in objects if k.startswith(("manifest/", "rejects/"))}
    assert "README.md" in files and not any(k.startswith(("state/", "text/", ".")) for k in files)


def test_no_planted_key_in_any_object_or_log(cluster, first_job):
    out, res = first_job
    secrets = [FAKE_AWS_KEY_ID.encode(), FAKE_AWS_SECRET.encode()]
    objects = all_objects(out)
    assert len(objects) > 8
    for key, data in objects.items():
        assert not any(s in data for s in secrets), key
    logs = [p for p in cluster.temp_dir.rglob("*") if p.is_file() and "/logs/" in str(p)]
    assert len(logs) > 10
    for path in logs:
        data = path.read_bytes()
        assert not any(s in data for s in secrets), path
    assert not any(s.decode() in res.stdout + res.stderr for s in secrets)


def driver_pids(out: str) -> set[int]:
    """The job's driver (`python pipeline/main.py run ... --out <out>`) and its children, found by command line."""
    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "pipeline/main.py" in cmd and out in cmd and "job" not in cmd:
            found.add(p.info["pid"])
    return found


def test_a_job_killed_mid_upload_resumes_into_the_same_bucket_exactly_once(cluster, first_job, tmp_path):
    """kill -9 of the job's driver while a shard's multipart upload is in flight (every part sent, not
    completed), with a user's files in every folder of the prefix; the resubmitted job aborts the upload,
    finishes, and the outcome equals the uninterrupted job's; the user's files survive every run."""
    out = f"{make_bucket('speechchat-killed')}/ds"
    store = Layout(out).store
    for rel, data in FOREIGN.items():
        store.write_bytes(rel, data)
    marker = tmp_path / "killed-here"
    env_vars = {"SPEECHCHAT_FAULT_AT": "shard.tar_uploading", "SPEECHCHAT_FAULT_AFTER": "0",
                "SPEECHCHAT_FAULT_MARKER": str(marker), "SPEECHCHAT_FAULT_WAIT_S": "600"}
    # not the pipeline's prefix: refused before Ray starts (the same preflight as a submitted run), nothing written
    refused = run_proc([sys.executable, "pipeline/main.py", "run", "--config", "configs/smoke.yaml", "--out", out,
                        *BASE], cwd=REPO_ROOT, env=cluster.env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "--adopt-output" in refused.stderr and out in refused.stderr, refused.stderr
    assert all_objects(out) == FOREIGN
    # storage.multipart_threshold_mb=0: these small tars go up as multipart uploads too, as large shards do
    job = cluster.submit(out, "--adopt-output", *BASE, *SPREAD, "storage.multipart_threshold_mb=0",
                         env_vars=env_vars, wait=False)
    try:
        deadline = time.monotonic() + 900
        while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert marker.exists(), f"the job never reached the upload ({job.poll()}): {job_output(job)[-3000:]}"
        pids = driver_pids(out)
        assert pids
        cluster.kill(pids)
    finally:
        kill_tree(job.pid)  # the `ray job submit` client (the job itself is gone with its driver)
    assert [k for k in unfinished_uploads(out) if "/data/en/" in k], "the kill left no unfinished upload"
    time.sleep(5)  # Ray notices the dead driver and ends its actors
    res = cluster.submit(out, *BASE, *SPREAD)  # the resumed run (repeated restarts: tests/io/test_ownership.py)
    assert res.returncode == 0, res.stdout[-3000:]
    assert unfinished_uploads(out) == []
    check = verify_cli(out)
    assert check.returncode == 0, check.stderr
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))
    assert (set(kept), set(rejected)) == (set(kept_ids(first_job[0])), set(rejected_ids(first_job[0])))
    objects = all_objects(out)
    assert {k: objects[k] for k in FOREIGN} == FOREIGN
    assert "aborting the unfinished upload" in res.stdout  # the resumed run named what it cleaned up
    assert Layout(out).clean_unfinished() == []  # a further restart finds nothing left to clean


def test_the_second_node_killed_mid_run(cluster, tmp_path):
    """The worker node dies (its raylet and workers, kill -9) while the job is in the middle of verification;
    the job finishes on the head or stops, the exact-once guarantee holds either way, and a rerun completes."""
    out = f"{make_bucket('speechchat-node-lost')}/ds"
    marker = tmp_path / "stalled"
    env_vars = {"SPEECHCHAT_FAULT_AT": "verify", "SPEECHCHAT_FAULT_AFTER": "0",
                "SPEECHCHAT_FAULT_MARKER": str(marker), "SPEECHCHAT_FAULT_WAIT_S": "20"}
    overrides = [*BASE, "plan.num_conversations=3",  # the last setting wins: a shorter job
                 "tts.max_actors=2", "verify.max_actors=2", "verify.cpu_threads=1"]  # restartable anywhere
    job = cluster.submit(out, *overrides, env_vars=env_vars, wait=False)
    try:
        deadline = time.monotonic() + 900
        while not marker.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert marker.exists(), job_output(job)[-3000:] if job.poll() is not None else "no verify in time"
        cluster.kill(cluster.worker_pids)
        job.wait(timeout=1200)
    finally:
        if job.poll() is None:
            kill_tree(job.pid)
    first = job_output(job)
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected)) and not set(kept) & set(rejected)
    res = cluster.submit(out, *overrides)  # the head alone now
    assert res.returncode == 0, first[-2000:] + res.stdout[-3000:]
    kept, rejected = kept_ids(out), rejected_ids(out)
    assert len(kept) == len(set(kept)) and len(rejected) == len(set(rejected))
    assert len(kept) + len(rejected) == 3 and unfinished_uploads(out) == []
    check = verify_cli(out)
    assert check.returncode == 0, check.stderr
    fs = s3fs_client()
    assert fs.exists(f"{out[5:]}/.speechchat-output.json")
