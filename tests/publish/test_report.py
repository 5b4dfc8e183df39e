"""report.html on folders written by the real shard writer: plots, playable samples, and a real browser."""

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_card import build_output, tar_samples

from pipeline.audio import decode_audio
from pipeline.io.layout import Layout
from pipeline.io.stats import compute_stats
from pipeline.publish.report import MAX_AUDIO_SAMPLES, write_report

CHROMIUM = Path("/usr/bin/chromium")
AUDIO_RE = re.compile(r'<audio controls preload="metadata" src="data:audio/flac;base64,([A-Za-z0-9+/=]+)">')


def images(text):
    return re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', text)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "speechchat-report"
    _, stats = build_output(root)
    return root, stats, write_report(root, stats)


def test_report_has_every_plot_and_playable_samples(report):
    root, stats, path = report
    text = path.read_text(encoding="utf-8")
    # hours, durations, error rates, speakers, rejections, domains, topics
    pngs = images(text)
    assert len(pngs) == 7
    for png in pngs:
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n")
    for heading in ("Hours", "Durations", "Error rates", "Speakers", "Rejections", "Domains", "Topics", "Listen"):
        assert f"<h2>{heading}" in text, heading
    # five samples, each a user and an assistant player whose FLAC is the very bytes in the tar
    clips = AUDIO_RE.findall(text)
    assert len(clips) == 2 * MAX_AUDIO_SAMPLES
    in_tars = {}
    for lang, split in [("en", "train"), ("en", "validation"), ("zh", "train")]:
        in_tars.update(tar_samples(root, lang, split))
    flacs = {s[side]: (key, side) for key, s in in_tars.items() for side in ("user.flac", "assistant.flac")}
    for clip in clips:
        data = base64.b64decode(clip)
        key, side = flacs[data]
        samples, rate = decode_audio(data)
        assert rate == in_tars[key]["json"][side.split(".")[0]]["sample_rate"] and len(samples) > 0
        assert in_tars[key]["json"][side.split(".")[0]]["spoken_text"] in text  # its text is shown beside it
    # text from the data is escaped, and the page loads nothing from outside
    assert "<b>topic</b>" not in text and "&lt;b&gt;topic&lt;/b&gt;" in text
    assert "<script" not in text and not re.search(r'(src|href)="(https?:)?//', text)
    assert f"<td class=\"n\">{stats['totals']['conversations_kept']}</td>" in text


def test_same_folder_same_report(report):
    root, stats, path = report
    first = path.read_text(encoding="utf-8")
    assert write_report(root, stats).read_text(encoding="utf-8") == first
    assert not list(root.glob("*.tmp"))


def test_one_language_without_rejects_or_content(tmp_path):
    _, stats = build_output(tmp_path, languages=("en",), rejects=False)
    stats.pop("content")  # stats.json from before the content distribution existed: counted from the manifest
    text = write_report(tmp_path, stats).read_text(encoding="utf-8")
    assert "No conversations were rejected." in text
    assert len(images(text)) == 6 and "<h2>Topics</h2>" in text
    assert len(AUDIO_RE.findall(text)) == 2 * MAX_AUDIO_SAMPLES


def test_an_empty_folder_still_gets_a_report(tmp_path):
    text = write_report(tmp_path, compute_stats(Layout(tmp_path))).read_text(encoding="utf-8")
    assert "No kept samples yet." in text and "No conversations were rejected." in text
    assert not images(text) and "<audio" not in text


def chromium(tmp_path, *args):
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (apt-get install -y chromium)")
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    except subprocess.TimeoutExpired as exc:  # some builds linger after doing the work; callers check its result
        return exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")


def test_report_renders_in_headless_chromium(report, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", report[2].resolve().as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    shutil.copy(shot, report[0] / "report-screenshot.png")  # kept beside the report for a human look
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2000, 1200)
    non_white = (pixels < 245).any(axis=2).mean()
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    # text, tables and the first plots drawn: far more than a blank or an error page
    assert non_white > 0.05 and colours > 200, (non_white, colours)


def test_chromium_plays_the_embedded_flac(report, tmp_path):
    # the report has no scripts; a probe page with the report's first clip asks the browser for its duration
    clip = AUDIO_RE.search(report[2].read_text(encoding="utf-8")).group(1)
    samples, rate = decode_audio(base64.b64decode(clip))
    probe = tmp_path / "probe.html"
    probe.write_text(
        f'<!DOCTYPE html><html><body><div id="out">pending</div>'
        f'<audio id="a" preload="auto" src="data:audio/flac;base64,{clip}"></audio><script>'
        "const a = document.getElementById('a'), out = document.getElementById('out');"
        "a.onloadedmetadata = () => { out.textContent = 'duration=' + a.duration; };"
        "a.onerror = () => { out.textContent = 'error=' + a.error.code; };"
        "</script></body></html>", encoding="utf-8")
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<div id="out">duration=([0-9.]+)</div>', dom)
    assert found, dom[-500:]
    assert abs(float(found.group(1)) - len(samples) / rate) < 0.05


def test_a_large_speaker_pool_is_drawn_as_a_usage_histogram():
    import pandas as pd

    from pipeline.publish.report import plot_speakers

    n = 400  # conversations, one exchange each, over 120 user voices and 2 assistant voices
    manifest = pd.DataFrame({"exchange_index": [0] * n, "user_speaker_id": [f"spk{i % 120}" for i in range(n)],
                             "assistant_speaker_id": [f"asst{i % 2}" for i in range(n)]})
    html = plot_speakers(manifest)
    assert len(images(html)) == 1 and "Speaker usage" in html


def test_error_rate_plot_adds_the_rejected_turns(tmp_path):
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.publish.report import plot_histograms, rejected_error_rates
    from pipeline.reasons import Failure
    from pipeline.schema import REJECTS_SCHEMA, reject, rejects_rows, rows_to_table

    # rejections as the verify stage records them (structured failures), written and read back as a rejects part
    def rejected(reason, *failures):
        row = {"conversation_id": "en-0000000000000001", "language": "en", "topic": "t", "turns": []}
        return reject(row, "verify", reason, "details for people", failures)

    rows = [rejected("asr_error_rate_above_threshold", Failure(1, "assistant", "WER", 0.57, 0.2),
                     Failure(2, "user", "WER", 1.25, 0.2)),
            rejected("asr_error_rate_above_threshold", Failure(0, "user", "WER", 0.33, 0.2)),
            rejected("audio_quality_below_threshold", Failure(0, "user", "dnsmos_ovrl", 1.5, 2.5)),
            rejected("llm_not_json")]
    pq.write_table(rows_to_table(rejects_rows(rows), REJECTS_SCHEMA), tmp_path / "part.parquet")
    rejects = pq.read_table(tmp_path / "part.parquet").to_pandas()
    assert rejected_error_rates(rejects) == {"user": [1.25, 0.33], "assistant": [0.57]}
    assert list(rejects["metric"][:3]) == ["WER", "WER", "dnsmos_ovrl"] and rejects["turn"][0] == 1
    manifest = pd.DataFrame({"user_error_rate": [0.0, 0.05, 0.1], "assistant_error_rate": [0.0, 0.0, 0.1]})
    args = (manifest, "error_rate", "error rate", "ASR error rate", "caption")
    kept_only = images(plot_histograms(*args, min_span=0.1))
    with_rejected = images(plot_histograms(*args, min_span=0.1, rejected=rejected_error_rates(rejects)))
    assert len(kept_only) == len(with_rejected) == 1 and kept_only != with_rejected
