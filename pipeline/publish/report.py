"""report.html: one static file that shows what an output folder holds, to open in any browser offline.

Plots are drawn with matplotlib and embedded as base64 PNGs, and a few samples are embedded as FLAC data
URIs with their text, so the file can be mailed, attached to a run or uploaded beside the shards without
the images and sounds going missing. No scripts, no external resources.

Inputs are the manifest and rejects Parquet parts (what the plots count) and stats.json's dict (totals,
content distribution). Parts written by older versions may lack columns; missing ones are skipped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import re
import tarfile
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import font_manager, rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from pipeline.io.layout import Layout

MAX_AUDIO_SAMPLES = 5
TOP_N = 15
# Chinese topics and texts need a CJK font; matplotlib falls back along this list to whichever is installed.
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans CJK JP", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "SimHei",
             "AR PL UMing CN", "Droid Sans Fallback"]
CJK_TEXT = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uff00-\uffef]")
COLOURS = {"user": "#4C72B0", "assistant": "#DD8452"}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; background: #fff; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.sample { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; margin: 0.8em 0; background: #fafafa; }
.sample .turn { margin: 0.4em 0; } .sample audio { display: block; width: 100%; max-width: 520px; margin: 0.2em 0; }
.muted { color: #777; font-size: 0.9em; }
"""


def _fonts() -> list[str]:
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ["DejaVu Sans"] + [name for name in CJK_FONTS if name in installed]


def _read_parts(layout: Layout, parts: list[Path | str]) -> pd.DataFrame:
    frames = [layout.read_table(p).to_pandas() for p in parts]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fig: Figure, caption: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{_png(fig)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _new_figure(ncols: int = 1, height: float = 3.4, width: float = 9.0) -> tuple[Figure, Any]:
    fig = Figure(figsize=(5.2 * ncols if ncols > 1 else width, height), layout="constrained")
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _barh(ax: Any, counts: dict[str, float], title: str, xlabel: str, colour: str = "#4C72B0") -> None:
    items = list(counts.items())[:TOP_N][::-1]  # largest at the top
    ax.barh([str(k) if str(k) else "(none)" for k, _ in items], [v for _, v in items], color=colour)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 of a conversation


def plot_hours(manifest: pd.DataFrame) -> str:
    hours = ((manifest["user_duration_s"] + manifest["assistant_duration_s"]) / 3600).groupby(
        [manifest["language"], manifest["split"]]).sum().unstack(fill_value=0.0)
    languages, splits = list(hours.index), list(hours.columns)
    fig, (ax,) = _new_figure(width=min(9.0, 3.0 + 1.5 * len(languages) * max(len(splits), 1)))
    width = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        xs = [j + i * width for j in range(len(languages))]
        bars = ax.bar(xs, hours[split].tolist(), width, label=split)
        ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_xticks([j + width * (len(splits) - 1) / 2 for j in range(len(languages))], languages)
    ax.set_ylabel("hours of audio")
    ax.set_title("Hours per language and split")
    ax.legend(title="split")
    return _figure(fig, "Hours of audio (user + assistant) per language and split")


def rejected_error_rates(rejects: pd.DataFrame) -> dict[str, list[float]]:
    """{side: [error rate, ...]} of the turns that failed the ASR check, from the rejects' structured `failures`
    column (turns that passed inside a rejected conversation are not listed; parts from before the column
    existed add nothing)."""
    rates: dict[str, list[float]] = {"user": [], "assistant": []}
    if rejects.empty or "failures" not in rejects:
        return rates
    for failures in rejects["failures"].dropna():
        for f in failures:
            if f.get("metric") in ("WER", "CER") and f.get("role") in rates and f.get("value") is not None:
                rates[f["role"]].append(float(f["value"]))
    return rates


def plot_histograms(manifest: pd.DataFrame, column: str, xlabel: str, title: str, caption: str,
                    min_span: float, rejected: dict[str, list[float]] | None = None) -> str:
    fig, axes = _new_figure(2)
    for ax, side in zip(axes, ("user", "assistant")):
        values = manifest[f"{side}_{column}"].dropna()
        values = values[values >= 0]  # -1 marks "not measured"
        failed = (rejected or {}).get(side) or []
        # from 0, and at least min_span wide: all-zero error rates show as one bar at 0, not a centred blob
        top = max(float(values.max()) if len(values) else 0.0, max(failed, default=0.0), min_span)
        bins = min(40, max(5, (len(values) + len(failed)) // 3))
        ax.hist(values, bins=bins, range=(0.0, top), color=COLOURS[side], label="kept")
        if failed:
            ax.hist(failed, bins=bins, range=(0.0, top), color="#C44E52", alpha=0.75, label="rejected")
            ax.legend()
        ax.set_title(f"{title}: {side}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("turns")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _figure(fig, caption)


def plot_rejections(rejects: pd.DataFrame) -> str:
    labels = rejects["stage"].fillna("?") + " / " + rejects["reason"].fillna("?")
    fig, (ax,) = _new_figure(height=max(2.2, 0.35 * min(labels.nunique(), TOP_N) + 1))
    _barh(ax, labels.value_counts().to_dict(), "Rejected conversations by stage / reason", "conversations", "#C44E52")
    return _figure(fig, f"Rejection reasons ({len(rejects)} conversations)")


def plot_speakers(manifest: pd.DataFrame) -> str:
    firsts = manifest[manifest["exchange_index"] == 0]
    bars = max(min(firsts["user_speaker_id"].nunique(), TOP_N), min(manifest["assistant_speaker_id"].nunique(), TOP_N))
    fig, axes = _new_figure(2, height=max(2.2, 0.3 * bars + 1.2))
    for ax, (side, data, unit) in zip(axes, (("user", firsts["user_speaker_id"], "conversations"),
                                             ("assistant", manifest["assistant_speaker_id"], "exchanges"))):
        counts = data.value_counts()
        if len(counts) <= TOP_N:
            _barh(ax, counts.to_dict(), f"{side} voices", unit, COLOURS[side])
        else:  # thousands of voices: how evenly they are used matters, not their names
            ax.hist(counts.values, bins=min(40, max(5, len(counts) // 5)), color=COLOURS[side])
            ax.set_title(f"{side} voices: {len(counts)} speakers")
            ax.set_xlabel(f"{unit} per speaker")
            ax.set_ylabel("speakers")
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _figure(fig, "Speaker usage (user voice per conversation, assistant voice per exchange)")


def _content(stats: dict[str, Any], manifest: pd.DataFrame, column: str) -> dict[str, dict[str, int]]:
    """{language: {value: conversations}} from stats["content"], else counted from the manifest."""
    content = (stats.get("content") or {}).get(column)
    if content:
        return content
    if column not in manifest:
        return {}
    firsts = manifest[manifest["exchange_index"] == 0]
    return {lang: group[column].value_counts().to_dict() for lang, group in firsts.groupby("language")}


def plot_content(content: dict[str, dict[str, int]], column: str) -> str:
    languages = [lang for lang, counts in sorted(content.items()) if counts]
    rows = max(min(len(c), TOP_N) for lang, c in content.items() if c)
    fig, axes = _new_figure(len(languages), height=max(2.4, 0.3 * rows + 1))
    for ax, lang in zip(axes, languages):
        _barh(ax, content[lang], f"{column}s ({lang})", "conversations")
    return _figure(fig, f"Most frequent {column}s per language (top {TOP_N}, conversations)")


def read_sample(root: Path | str | Layout, shard: str, offset: int, key: str) -> dict[str, bytes]:
    """One sample's members, read from the manifest's byte offset without scanning the tar."""
    members: dict[str, bytes] = {}
    layout = root if isinstance(root, Layout) else Layout(root)
    with layout.open(shard) as fh:
        fh.seek(offset)
        with tarfile.open(fileobj=fh, mode="r|") as tf:
            for member in tf:
                if not member.name.startswith(key + "."):
                    break
                members[member.name[len(key) + 1:]] = tf.extractfile(member).read()
    return members


def _audio_tag(data: bytes | None) -> str:
    if not data:
        return '<span class="muted">(no audio)</span>'
    uri = "data:audio/flac;base64," + base64.b64encode(data).decode("ascii")
    return f'<audio controls preload="metadata" src="{uri}"></audio>'


def audio_examples(root: Path | str | Layout, manifest: pd.DataFrame, n: int = MAX_AUDIO_SAMPLES, seed: int = 0) -> str:
    # a fixed seed: the same folder gives the same report, so two reports can be compared
    picks = random.Random(seed).sample(range(len(manifest)), min(n, len(manifest)))
    blocks = []
    for i in sorted(picks):
        row = manifest.iloc[i]
        try:
            sample = read_sample(root, row["shard"], int(row["offset"]), row["key"])
            meta = json.loads(sample["json"])
        except (OSError, KeyError, tarfile.TarError, ValueError) as exc:
            blocks.append(f'<div class="sample">{html.escape(str(row["key"]))}: '
                          f"could not read ({html.escape(str(exc))})</div>")
            continue
        turns = []
        for side in ("user", "assistant"):
            info = meta.get(side) or {}
            turns.append(
                f'<div class="turn"><b>{side}</b> <span class="muted">{html.escape(str(info.get("speaker_id", "")))}, '
                f'{float(info.get("duration_s", 0)):.1f} s, {info.get("sample_rate", "?")} Hz, error rate '
                f'{float(info.get("error_rate", -1)):.2f}</span><br>{html.escape(str(info.get("spoken_text", "")))}'
                f"{_audio_tag(sample.get(side + '.flac'))}</div>")
        history = meta.get("history") or ""
        head = (f'<div><b>{html.escape(str(row["key"]))}</b> '
                f'<span class="muted">{html.escape(str(meta.get("language", "")))}'
                f' / {html.escape(str(meta.get("split", "")))}, exchange {int(meta.get("exchange_index", 0)) + 1} of '
                f'{meta.get("exchange_count", "?")}, topic: {html.escape(str(meta.get("topic", "")))}</span></div>')
        past = (f'<div class="muted">earlier turns: {html.escape(history).replace(chr(10), "<br>")}</div>'
                if history else "")
        blocks.append(f'<div class="sample">{head}{past}{"".join(turns)}</div>')
    return "\n".join(blocks)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f'<td class="n">{v:,}</td>' if isinstance(v, int) else (
            f'<td class="n">{v:.3f}</td>' if isinstance(v, float) else f"<td>{html.escape(str(v))}</td>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><tr>{head}</tr>" + "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows) + "</table>"


def _summary(stats: dict[str, Any]) -> str:
    totals = stats.get("totals") or {}
    parts = [_table(["conversations kept", "conversations rejected", "exchanges", "hours", "speakers"],
                    [[int(totals.get("conversations_kept", 0)), int(totals.get("conversations_rejected", 0)),
                      int(totals.get("exchanges", 0)), float(totals.get("hours", 0.0)), int(totals.get("speakers", 0))]])]
    langs = stats.get("languages") or {}
    if langs:
        parts.append(_table(
            ["language", "conversations", "exchanges", "hours", "speakers", "shards", "mean error rate user",
             "mean error rate assistant"],
            [[lang, int(v.get("conversations", 0)), int(v.get("exchanges", 0)), float(v.get("hours", 0.0)),
              int(v.get("speakers", 0)), int(v.get("shards", 0)), float(v.get("mean_user_error_rate", 0.0)),
              float(v.get("mean_assistant_error_rate", 0.0))] for lang, v in sorted(langs.items())]))
    return "\n".join(parts)


def text_checks_section(stats: dict[str, Any]) -> str:
    """Personal data found per kind and the judge's scores per language (stats.json's `personal_data`, `judge`)."""
    parts = ['<h2 id="text-checks">Text checks</h2>']
    pdata = stats.get("personal_data") or {}
    kinds = sorted(set(pdata.get("found_in_kept") or {}) | set(pdata.get("rejected_conversations") or {}))
    if kinds:
        parts.append(_table(["personal data", "found in kept conversations", "replaced by placeholders",
                             "conversations rejected"],
                            [[k, int((pdata.get("found_in_kept") or {}).get(k, 0)),
                              int((pdata.get("replaced_in_kept") or {}).get(k, 0)),
                              int((pdata.get("rejected_conversations") or {}).get(k, 0))] for k in kinds]))
    else:
        parts.append("<p>No personal data found in the kept conversations.</p>")
    judge = stats.get("judge") or {}
    if judge:
        criteria = list(next(iter(judge.values()))["mean"])
        parts.append(_table(["language", "scored", "not scored", *[f"mean {c.replace('_', ' ')}" for c in criteria]],
                            [[lang, int(j["scored"]), int(j["not_scored"]),
                              *[float(j["mean"][c]) if j["mean"][c] is not None else "-" for c in criteria]]
                             for lang, j in sorted(judge.items())]))
    rejections = stats.get("rejections") or {}
    dup = {k: int(rejections[k]) for k in ("near_duplicate", "repeated_turn", "judge_below_threshold", "judge_failed",
                                           "personal_data") if k in rejections}
    if dup:
        parts.append(_table(["text-check rejection", "conversations"], [[k, v] for k, v in dup.items()]))
    return "\n".join(parts)


def report_html(root: Path | str | Layout, stats: dict[str, Any]) -> str:
    layout = root if isinstance(root, Layout) else Layout(root)
    name = str(layout.root).rstrip("/").rsplit("/", 1)[-1]
    manifest, rejects = _read_parts(layout, layout.manifest_parts()), _read_parts(layout, layout.reject_parts())
    sections = [f"<h1>{html.escape(name)}</h1>",
                ('<p class="muted">speechchat output report: kept samples from <code>manifest/</code>, rejections '
                 "from <code>rejects/</code>, totals from <code>stats.json</code>.</p>"),
                "<h2>Summary</h2>", _summary(stats), "<h2>Cost of the last run</h2>", cost_html(stats)]
    fonts = _fonts()
    # without a CJK font Chinese labels draw as boxes; one note on the page beats a warning per glyph
    with rc_context({"font.family": fonts, "font.size": 9}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        if manifest.empty:
            sections.append("<h2>Audio</h2><p>No kept samples yet.</p>")
        else:
            sections += ["<h2>Hours</h2>", plot_hours(manifest),
                         "<h2>Durations</h2>",
                         plot_histograms(manifest, "duration_s", "seconds", "turn duration",
                                         "Turn durations of kept exchanges", min_span=1.0),
                         "<h2>Error rates</h2>",
                         plot_histograms(manifest, "error_rate", "error rate (WER/CER)", "ASR error rate",
                                         "ASR error rates of kept turns and of the turns that got their "
                                         "conversation rejected (turns without a measurement left out)",
                                         min_span=0.1, rejected=rejected_error_rates(rejects)),
                         "<h2>Speakers</h2>", plot_speakers(manifest)]
        sections.append("<h2>Rejections</h2>")
        sections.append(plot_rejections(rejects) if not rejects.empty else "<p>No conversations were rejected.</p>")
        chinese_labels = False
        for column in ("domain", "topic"):
            content = _content(stats, manifest, column)
            if any(content.values()):
                sections += [f"<h2>{column.capitalize()}s</h2>", plot_content(content, column)]
                chinese_labels |= any(CJK_TEXT.search(str(v)) for c in content.values() for v in c)
        sections.append(text_checks_section(stats))
        from pipeline.publish.diversity_report import diversity_section  # it draws with this module's helpers

        sections.append(diversity_section(stats.get("diversity")))
        chinese_labels |= "zh" in (stats.get("diversity") or {})
        if len(fonts) == 1 and chinese_labels:
            sections.append('<p class="muted">Chinese labels need a CJK font for matplotlib '
                            "(e.g. Debian's fonts-wqy-microhei or fonts-noto-cjk); none is installed here.</p>")
    if not manifest.empty:
        sections += [f"<h2>Listen ({min(MAX_AUDIO_SAMPLES, len(manifest))} random samples)</h2>",
                     audio_examples(layout, manifest)]
    body = "\n".join(sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(name)}: speechchat report</title><style>{CSS}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")


def write_report(root: Path | str | Layout, stats: dict[str, Any]) -> Path | str:
    """Write root/report.html and return its location."""
    layout = root if isinstance(root, Layout) else Layout(root)
    layout.write_bytes("report.html", report_html(layout, stats).encode("utf-8"))
    return layout.store.location("report.html")


def cost_html(stats: dict[str, Any]) -> str:
    """The last run's cost section (stats.json last_run.cost): busy time per stage and what a kept hour cost."""
    cost = (stats.get("last_run") or {}).get("cost")
    if not cost:
        return "<p>No cost figures for the last run.</p>"

    def num(v: Any) -> Any:
        return "-" if v is None else v

    llm = cost.get("llm") or {}
    rows = [["LLM requests", int(llm.get("requests") or 0)],
            ["LLM tokens (prompt + completion)", int((llm.get("prompt_tokens") or 0) + (llm.get("completion_tokens") or 0))]]
    rows += [[f"{stage} busy actor-seconds", float(s)] for stage, s in (cost.get("busy_s") or {}).items()]
    rows += [[f"{stage} GPU-seconds", float(s)] for stage, s in (cost.get("gpu_s") or {}).items()]
    rows += [["keep rate (kept / finished conversations)", num(cost.get("keep_rate"))],
             ["kept audio-hours", num(cost.get("kept_audio_hours"))],
             ["kept audio-hours per TTS actor-hour", num(cost.get("kept_audio_h_per_tts_actor_h"))],
             ["kept audio-hours per verify actor-hour", num(cost.get("kept_audio_h_per_verify_actor_h"))],
             ["kept audio-hours per GPU-hour", num(cost.get("kept_audio_h_per_gpu_h"))]]
    resynth = (stats.get("last_run") or {}).get("resynthesis") or {}
    if resynth:
        rows += [[f"re-synthesis: {k.replace('_', ' ')}", int(v)] for k, v in resynth.items()]
    return ('<p class="muted">The last run only (stats.json <code>last_run.cost</code>). Busy time is what workers '
            "spent on conversations, kept and rejected alike; GPU-seconds are busy seconds times the stage's GPU "
            "share.</p>" + _table(["", "value"], rows))
