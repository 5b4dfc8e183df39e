"""Measured figures for the duplex and augmentation renderings (issue 20's "Done means"); not a test.

    PYTHONPATH=$PWD python bench/render_checks.py --out /tmp/render-checks [--conversations 200] [--cache DIR]

Speaks a small set of turns with Piper once (cached in --cache), draws --conversations 3-exchange conversations
from them, renders their duplex timelines with the default `duplex` config and measures on the rendered audio:
overlap, backchannel and interruption rates against the config (with 95 % binomial intervals), gaps, and how far
each channel's speech (frame energy) is from its segments. Draws one conversation as a PNG. Then measures the
augmentation: SNR back from clean and augmented audio, RT60 of the chain's impulse response against the simulated
room's, energy above 4 kHz on the telephone line, determinism, and DNSMOS of augmented user clips against clean.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from duplex_corpus import backchannel_source, conversation, synthesize_corpus

from pipeline.audio import resample
from pipeline.config import AugmentConfig, DuplexConfig
from pipeline.render.augment import BabbleClip, UserAugmenter, schroeder_rt60
from pipeline.render.duplex import render_duplex

RATE = 16000


def _interval(events: int, n: int) -> tuple[float, float]:
    p = events / n if n else 0.0
    half = 1.96 * math.sqrt(p * (1 - p) / n) if n else 0.0
    return p - half, p + half


def _activity_errors(rendering) -> list[float]:
    """|start - first active frame| and |end - last active frame| of every segment, seconds (5-ms frames)."""
    errors = []
    hop = RATE // 200
    for channel in (0, 1):
        x = rendering.audio[:, channel].astype(np.float64)
        n = x.size // hop
        db = 10 * np.log10(np.mean(x[:n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
        times = (np.arange(n) + 0.5) / 200
        active = db > max(-50.0, db.max() - 45.0)
        for s in (s for s in rendering.segments if s.channel == channel):
            inside = times[active & (times >= s.start - 0.1) & (times <= s.end + 0.1)]
            errors += [abs(inside[0] - s.start), abs(inside[-1] - s.end)]
    return errors


def duplex_rates(corpus, n: int, cfg: DuplexConfig) -> tuple[list, dict]:
    renderings = []
    t0 = time.perf_counter()
    for i in range(n):
        turns = conversation(corpus, np.random.default_rng(1000 + i), 3)
        renderings.append(render_duplex(turns, cfg, seed=i, language="en", backchannel=backchannel_source(corpus)))
    elapsed = time.perf_counter() - t0
    transitions = overlaps = interruptions = 0
    gaps, overlap_s, reactions, errors = [], [], [], []
    for r in renderings:
        turns = sorted((s for s in r.segments if s.kind != "backchannel"), key=lambda s: s.turn)
        for prev, cur in itertools.pairwise(turns):
            if prev.kind == "interrupted_turn":
                interruptions += 1
                reactions.append(prev.end - cur.start)
            else:
                transitions += 1
                gap = cur.start - prev.end
                (overlap_s if gap < 0 else gaps).append(abs(gap))
                overlaps += gap < 0
        errors += _activity_errors(r)
    counts = {k: sum(r.recipe["counts"][k] for r in renderings) for k in renderings[0].recipe["counts"]}
    backchannels = sum(s.kind == "backchannel" for r in renderings for s in r.segments)
    rows = [("overlap", cfg.overlap_rate, overlaps, transitions),
            ("backchannel", cfg.backchannel_rate, backchannels, counts["backchannel_opportunities"]),
            ("interruption", cfg.interruption_rate, interruptions, counts["interruption_opportunities"])]
    summary = {
        "conversations": n, "render_s": round(elapsed, 1), "hours": round(sum(r.duration_s for r in renderings) / 3600, 3),
        "rates": [{"event": name, "config": rate, "events": ev, "opportunities": opp, "measured": round(ev / opp, 4),
                   "ci95": [round(v, 4) for v in _interval(ev, opp)]} for name, rate, ev, opp in rows],
        "gap_median_s": round(float(np.median(gaps)), 3), "gap_config_median_s": cfg.gap_median_s,
        "overlap_s_range": [round(min(overlap_s), 3), round(max(overlap_s), 3)] if overlap_s else None,
        "reaction_s_range": [round(min(reactions), 3), round(max(reactions), 3)] if reactions else None,
        "activity_error_s": {"median": round(float(np.median(errors)), 4), "p99": round(float(np.quantile(errors, 0.99)), 4),
                             "max": round(float(np.max(errors)), 4), "segments": len(errors) // 2},
        "counts_on_timeline_equal_recipe": counts["overlaps"] == overlaps and counts["interruptions"] == interruptions
        and counts["backchannels"] == backchannels,
    }
    return renderings, summary


def draw(rendering, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"turn": "tab:blue", "backchannel": "tab:green", "interrupted_turn": "tab:red"}
    fig, axes = plt.subplots(2, 1, figsize=(16, 6), sharex=True)
    t = np.arange(rendering.audio.shape[0]) / RATE
    for channel, ax in enumerate(axes):
        ax.plot(t, rendering.audio[:, channel], color="0.35", linewidth=0.4)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(["ch0 user", "ch1 assistant"][channel])
        for s in (s for s in rendering.segments if s.channel == channel):
            ax.axvspan(s.start, s.end, color=colours[s.kind], alpha=0.22)
            label = s.text if len(s.text) <= 38 else s.text[:35] + "..."
            if s.kind == "interrupted_turn":
                ax.axvline(s.end, color="tab:red", linewidth=1.5)
                ax.axvline(s.interrupted_at, color="tab:red", linestyle="--", linewidth=1)
                label = f"cut at {s.cut_s:.2f}s: ...{s.text[-22:]} | unsaid: {s.unspoken_text[:20]}..."
            y = 0.9 if s.kind != "backchannel" else -0.9
            ax.text(s.start, y, f"[{s.kind}] {label}", fontsize=7, va="center", color=colours[s.kind])
    axes[1].set_xlabel("seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.4) for c in colours.values()]
    axes[0].legend(handles, list(colours), loc="upper right", fontsize=8)
    fig.suptitle("duplex timeline: waveforms (grey) and the timeline's segments (red line: cut; dashed: user starts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def augmentation_checks(corpus, out: Path) -> dict:
    users = [resample(s, r, RATE) for _, s, r, _ in corpus["user"]]
    babble = [BabbleClip(f"pool-{i}", resample(s, r, RATE)) for i, (_, s, r, _) in enumerate(corpus["assistant"])]
    noise_dir = out / "noises"
    noise_dir.mkdir(parents=True, exist_ok=True)
    import soundfile as sf

    rng = np.random.default_rng(0)
    sf.write(noise_dir / "hum.wav", (0.2 * np.sin(2 * np.pi * 50 * np.arange(3 * RATE) / RATE)
                                     + 0.05 * rng.standard_normal(3 * RATE)).astype(np.float32), RATE)
    result: dict = {"snr": [], "rt60": [], "telephone": [], "determinism": None, "dnsmos": []}
    off = {"reverb_prob": 0.0, "noise_prob": 0.0, "telephone_prob": 0.0, "codec_prob": 0.0, "gain_prob": 0.0}
    for kind in ("colored", "babble", "clips"):
        aug = UserAugmenter(AugmentConfig(**{**off, "noise_prob": 1.0}, noise_kinds={kind: 1.0}), babble=babble,
                            noise_dir=noise_dir)
        for seed in range(len(users)):
            clean = users[seed]
            noisy, recipe = aug.augment(clean, RATE, seed=seed)
            ref = clean * 10 ** (recipe.get("limit_db", 0.0) / 20)
            measured = 20 * np.log10(np.sqrt(np.mean(ref ** 2)) / np.sqrt(np.mean((noisy - ref) ** 2)))
            result["snr"].append({"kind": kind, "seed": seed, "recipe_db": recipe["snr_db"],
                                  "measured_db": round(float(measured), 3)})
    aug = UserAugmenter(AugmentConfig(**{**off, "reverb_prob": 1.0}))
    for seed in range(8):
        impulse = np.zeros(2 * RATE, dtype=np.float32)
        impulse[0] = 0.5
        response, recipe = aug.augment(impulse, RATE, seed=seed)
        result["rt60"].append({"seed": seed, "room_m": recipe["room"]["dims_m"], "recipe_rt60_s": recipe["rt60_s"],
                               "estimated_rt60_s": round(schroeder_rt60(response, RATE), 4)})
    for codec in ("mulaw", "gsm"):
        aug = UserAugmenter(AugmentConfig(**{**off, "telephone_prob": 1.0}, telephone_codecs=[codec]))
        for seed, clean in enumerate(users[:3]):
            phone, _ = aug.augment(clean, RATE, seed=seed)
            result["telephone"].append({"codec": codec, "seed": seed, "clean_above_4k_db": round(_above(clean), 1),
                                        "line_above_4k_db": round(_above(phone), 1)})
    full = AugmentConfig(reverb_prob=0.5, noise_prob=0.8, telephone_prob=0.15, codec_prob=0.15, gain_prob=0.5)
    same = all(np.array_equal(UserAugmenter(full, babble=babble).augment(c, RATE, seed=s)[0],
                              UserAugmenter(full, babble=babble).augment(c, RATE, seed=s)[0])
               for s, c in enumerate(users))
    result["determinism"] = {"clips": len(users), "identical_reruns": bool(same)}
    from pipeline.quality.dnsmos import DnsmosScorer

    scorer = DnsmosScorer(threads=1)
    aug = UserAugmenter(full, babble=babble, noise_dir=noise_dir)
    clips_dir = out / "clips"
    clips_dir.mkdir(exist_ok=True)
    for seed, clean in enumerate(users):
        for variant in range(2):
            noisy, recipe = aug.augment(clean, RATE, seed=seed * 10 + variant)
            c, a = scorer.score(clean, RATE), scorer.score(noisy, RATE)
            sf.write(clips_dir / f"user{seed}-clean.flac", clean, RATE)
            sf.write(clips_dir / f"user{seed}-aug{variant}.flac", noisy, RATE)
            result["dnsmos"].append({"clip": f"user{seed}-aug{variant}", "kinds": recipe["kinds"],
                                     "snr_db": recipe.get("snr_db"), "rt60_s": recipe.get("rt60_s"),
                                     "codec": recipe.get("codec"), "clean": c.rounded(), "augmented": a.rounded()})
    return result


def _above(x: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(x)) ** 2
    return float(10 * np.log10(power[np.fft.rfftfreq(x.size, 1 / RATE) > 4000].sum() / power.sum() + 1e-30))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None, help="where the Piper turns are kept (default: OUT/turns)")
    parser.add_argument("--conversations", type=int, default=200)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = synthesize_corpus(args.cache or args.out / "turns")
    cfg = DuplexConfig()
    renderings, summary = duplex_rates(corpus, args.conversations, cfg)
    print(json.dumps(summary, indent=1))
    shown = next((r for r in renderings if {s.kind for s in r.segments} == {"turn", "backchannel", "interrupted_turn"}),
                 renderings[0])
    index = renderings.index(shown)
    draw(shown, args.out / "duplex_conversation.png")
    (args.out / "duplex_conversation.json").write_text(json.dumps(shown.timeline(f"conversation-{index}"), indent=1))
    (args.out / "duplex_conversation.flac").write_bytes(shown.flac())
    print(f"drawn: conversation {index} -> {args.out / 'duplex_conversation.png'}")
    checks = augmentation_checks(corpus, args.out)
    print(json.dumps(checks, indent=1))
    (args.out / "figures.json").write_text(json.dumps({"duplex": summary, "augment": checks}, indent=1))


if __name__ == "__main__":
    main()
