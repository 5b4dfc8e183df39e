"""The shared near-duplicate index (dedup.storage: redis): datasketch's MinHashLSH with Redis storage, against a
real redis-server on 127.0.0.1 started and stopped by the fixture (Debian's redis-server package)."""

import shutil
import socket
import subprocess
import time

import pytest
from text_data import records

from pipeline.quality.near_dup import NearDupIndex, RedisNearDupIndex, ShingleSettings, Signer

SETTINGS = ShingleSettings()


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    pytest.importorskip("redis")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen([server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--dir", str(folder), "--protected-mode", "yes"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(100):  # up to 10 s
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.1)
        else:
            pytest.fail("redis-server did not answer within 10 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_two_actors_share_one_index_and_agree_with_the_band_table(redis_port):
    rows, edits, copies = records("en")
    sigs = Signer(SETTINGS).signatures([[r["instruction"], r["output"]] for r in rows], ["en"] * len(rows))
    ids = [f"en-{i:016x}" for i in range(len(rows))]
    # two "actors": separate index objects on one Redis, taking turns over the stream
    actors = [RedisNearDupIndex(0.7, SETTINGS, "127.0.0.1", redis_port, basename="test-shared") for _ in range(2)]
    shared = [actors[i % 2].check(cid, sig) for i, (cid, sig) in enumerate(zip(ids, sigs))]
    local = NearDupIndex(0.7, SETTINGS)
    assert shared == [local.check(cid, sig) for cid, sig in zip(ids, sigs)]
    assert {i for i, v in enumerate(shared) if v} == set(edits)
    # a third actor started later (a resumed run) sees what the first two kept
    late = RedisNearDupIndex(0.7, SETTINGS, "127.0.0.1", redis_port, basename="test-shared")
    assert late.check("en-00000000000000aa", sigs[edits[0]]) == ids[copies[edits[0]]]
    # preloading what is already there adds nothing
    assert late.preload(ids[:20], sigs[:20]) == 0
