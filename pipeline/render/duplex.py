"""Full-duplex rendering: one conversation's turns laid on one two-channel timeline (ch0 user, ch1 assistant).

From the same turns and voices as the per-exchange samples: gaps between turns drawn from a log-normal, some
transitions overlapping (the next speaker starts early), backchannels in the listener's own voice at pauses of
the other side's long turns, and interruptions, where the user starts while the assistant speaks and the
assistant stops a reaction time later at a word boundary. Every draw comes from one RNG seeded per conversation,
so a rerun renders the same bytes. The timeline (segments with channel, times, spoken text, kind) and the recipe
(seed, rates, counts of opportunities and events) go into the subset's JSON.
"""

from __future__ import annotations

import difflib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import soundfile as sf

from pipeline.audio import resample
from pipeline.config import DuplexConfig
from pipeline.render.activity import (
    FRAME_S,
    active_frames,
    find_pauses,
    frame_db,
    speech_bounds,
)

RATE = 16000
CHANNELS = {"user": 0, "assistant": 1}
FADE_S = 0.01           # a cut turn fades out over this, so the cut makes no click
SAME_CHANNEL_GAP_S = 0.1  # two segments of one channel never touch
BACKCHANNEL_LEAD_S = 0.5  # no backchannel in the first half second of a turn
BACKCHANNEL_OFFSET_MAX_S = 0.15  # how far into a pause a backchannel may start
BACKCHANNEL_SPACING_S = 0.5
CUT_DIP_DB = 30.0  # a cut needs a real gap: the boundary's quietest frame this far under the turn's loudest


@dataclass(frozen=True)
class Word:
    """A recognised word with its times in seconds from the start of its clip (faster-whisper word timestamps)."""

    text: str
    start: float
    end: float


@dataclass
class TurnClip:
    role: Literal["user", "assistant"]
    text: str                      # the spoken text of the turn
    samples: np.ndarray            # mono float32
    sample_rate: int
    speaker_id: str = ""
    words: Sequence[Word] | None = None  # needed for a turn to be interruptible (the cut is at a word boundary)


# (listener role, text) -> that listener's voice saying it: (mono float samples, sample rate)
BackchannelSource = Callable[[str, str], tuple[np.ndarray, int]]


@dataclass
class Segment:
    channel: int
    role: str
    kind: Literal["turn", "backchannel", "interrupted_turn"]
    start: float
    end: float
    text: str                      # what is heard (an interrupted turn: the spoken part only)
    turn: int                      # the conversation turn it is (a backchannel: the turn it is said during)
    speaker_id: str
    unspoken_text: str | None = None  # interrupted_turn: the rest of the turn, never heard
    cut_s: float | None = None        # interrupted_turn: where the turn's audio stops, from its own start
    interrupted_at: float | None = None  # interrupted_turn: when the user started speaking

    def to_json(self) -> dict[str, Any]:
        # every segment has every field (no nulls: `datasets` types columns from the first rows)
        interrupted = self.kind == "interrupted_turn"
        return {"channel": self.channel, "role": self.role, "kind": self.kind, "start": round(self.start, 4),
                "end": round(self.end, 4), "text": self.text, "turn": self.turn, "speaker_id": self.speaker_id,
                "unspoken_text": (self.unspoken_text or "") if interrupted else "",
                "cut_s": round(self.cut_s or 0.0, 4) if interrupted else -1.0,
                "interrupted_at": round(self.interrupted_at or 0.0, 4) if interrupted else -1.0}


@dataclass
class DuplexRendering:
    audio: np.ndarray              # (frames, 2) float32 at RATE: column 0 the user, column 1 the assistant
    segments: list[Segment]
    recipe: dict[str, Any]
    sample_rate: int = RATE

    @property
    def duration_s(self) -> float:
        return self.audio.shape[0] / self.sample_rate

    def timeline(self, conversation_id: str) -> dict[str, Any]:
        return {"conversation_id": conversation_id, "sample_rate": self.sample_rate,
                "duration_s": round(self.duration_s, 4), "channels": ["user", "assistant"],
                "segments": [s.to_json() for s in self.segments], "recipe": self.recipe}

    def flac(self) -> bytes:
        """Stereo 16-bit FLAC (channel 0 user, channel 1 assistant)."""
        buf = io.BytesIO()
        sf.write(buf, np.clip(self.audio, -1.0, 1.0), self.sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()


@dataclass
class _Prepared:
    index: int
    role: str
    text: str
    speaker_id: str
    samples: np.ndarray            # 16 kHz, trimmed to its speech
    words: list[Word] | None       # shifted to the trimmed start
    pauses: list[tuple[float, float]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / RATE


@dataclass
class _Placed:
    clip: _Prepared
    start: float                   # seconds on the timeline (a whole number of samples)
    cut: float | None = None       # seconds from the clip start where it stops (interrupted)
    last_word: int = -1            # interrupted: index of the last word said
    interrupted_at: float | None = None

    @property
    def spoken(self) -> float:
        return self.cut if self.cut is not None else self.clip.duration

    @property
    def end(self) -> float:
        return self.start + self.spoken


def _trimmed(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, float]:
    """16 kHz audio cut to its speech, and the seconds removed at the front."""
    x = resample(samples, sample_rate, RATE)
    start, end = speech_bounds(x, RATE)
    return x[start:end].astype(np.float32), start / RATE


def _prepare(index: int, turn: TurnClip, cfg: DuplexConfig) -> _Prepared:
    if turn.role not in CHANNELS:
        raise ValueError(f"turn {index}: role {turn.role!r} is neither user nor assistant")
    samples, shift = _trimmed(turn.samples, turn.sample_rate)
    if samples.size == 0:
        raise ValueError(f"turn {index} ({turn.role}): the audio is silent")
    words = None
    if turn.words:
        words = [Word(w.text, w.start - shift, w.end - shift) for w in turn.words]
    prepared = _Prepared(index, turn.role, turn.text, turn.speaker_id, samples, words)
    if prepared.duration >= cfg.backchannel_min_turn_s:  # only long turns get backchannels: find their pauses
        prepared.pauses = find_pauses(samples, RATE, cfg.backchannel_min_pause_s, cfg.pause_detector)
    return prepared


def _on_grid(seconds: float) -> float:
    return round(seconds * RATE) / RATE


def _word_boundaries(clip: _Prepared) -> list[tuple[float, int]]:
    """(seconds, index of the last word before it) at each boundary between two words: the quietest 10-ms frame
    within 80 ms of the boundary (Whisper's word times are ~0.1 s coarse), pulled back to 20 ms after the speech
    that precedes it, so the audio stops where the word does (not after a pause). Boundaries without a dip of
    CUT_DIP_DB (words run together) are left out: a cut there would clip a syllable."""
    levels = frame_db(clip.samples, RATE)
    active = active_frames(clip.samples, RATE)
    words = clip.words or []
    out = []
    for k in range(len(words) - 1):
        mid = (words[k].end + words[k + 1].start) / 2
        lo, hi = max(0, int((mid - 0.08) / FRAME_S)), min(len(levels), int((mid + 0.08) / FRAME_S) + 1)
        if hi <= lo:
            continue
        quiet = lo + int(np.argmin(levels[lo:hi]))
        if levels[quiet] > levels.max() - CUT_DIP_DB:
            continue
        spoken = np.flatnonzero(active[:quiet])
        end = min(quiet + 0.5, spoken[-1] + 1 + 2) if spoken.size else quiet + 0.5  # frames
        out.append((_on_grid(end * FRAME_S), k))
    return out


def _cut_points(clip: _Prepared, cfg: DuplexConfig) -> list[tuple[float, int]]:
    """Where an interruption may stop this turn: word boundaries leaving enough said and enough unsaid."""
    if clip.duration < cfg.interruption_min_turn_s:
        return []
    matched = words_matching_text(clip.text, clip.words or [])
    return [(cut, k) for cut, k in _word_boundaries(clip)
            if matched[k] and matched[k + 1]
            and cut >= cfg.interruption_min_spoken_s and clip.duration - cut >= cfg.interruption_min_unspoken_s]


def _normalised(text: str) -> tuple[str, list[int]]:
    """Lower-case letters and digits only, with each one's index in `text` (for mapping a position back)."""
    chars, where = [], []
    for i, ch in enumerate(text):
        if ch.isalnum():
            chars.append(ch.lower())
            where.append(i)
    return "".join(chars), where


def split_spoken_text(text: str, words: Sequence[Word], last_spoken: int) -> tuple[str, str]:
    """Split a turn's text after the word that ASR word `last_spoken` matches: (spoken, unspoken).

    The ASR words and the text are aligned on letters and digits (difflib), so ASR errors and number formats only
    move the split locally; the split always falls between words of `text` (after trailing punctuation)."""
    asr, _ = _normalised("".join(w.text for w in words))
    said = len(_normalised("".join(w.text for w in words[:last_spoken + 1]))[0])
    norm, where = _normalised(text)
    if not norm or said == 0:
        return "", text.strip()
    matcher = difflib.SequenceMatcher(None, asr, norm, autojunk=False)
    pos, end_a, end_b = 0, 0, 0  # pos: characters of `norm` covered by the spoken ASR characters
    for a, b, size in matcher.get_matching_blocks():  # the last block is (len(asr), len(norm), 0)
        if said <= a:  # `said` ends in the unmatched stretch before this block: scale it onto the text's stretch
            pos = end_b + round((said - end_a) / max(1, a - end_a) * (b - end_b))
            break
        if said <= a + size:
            pos = b + said - a
            break
        end_a, end_b = a + size, b + size
    pos = max(1, min(pos, len(norm)))
    cut = where[pos - 1] + 1
    spaced = any(ch.isspace() for ch in text.strip())
    while cut < len(text) and not text[cut].isspace() and (spaced or not text[cut].isalnum()):
        cut += 1  # finish the word (spaced scripts) or take its punctuation (Chinese)
    return text[:cut].strip(), text[cut:].strip()


def words_matching_text(text: str, words: Sequence[Word]) -> list[bool]:
    """For each ASR word: are all its letters and digits matched, in order, in `text`? A boundary between two matched
    words is a boundary in the text too; one inside a mismatch ("2 .5" for "two and a half") is not."""
    spans, start = [], 0
    for w in words:
        n = len(_normalised(w.text)[0])
        spans.append((start, start + n))
        start += n
    asr = _normalised("".join(w.text for w in words))[0]
    matched = np.zeros(len(asr) + 1, dtype=bool)
    for a, _, size in difflib.SequenceMatcher(None, asr, _normalised(text)[0], autojunk=False).get_matching_blocks():
        matched[a:a + size] = True
    return [end > begin and bool(matched[begin:end].all()) for begin, end in spans]


def _fit_backchannel(samples: np.ndarray, rate: int, max_s: float) -> np.ndarray:
    clip, _ = _trimmed(samples, rate)
    limit = int(max_s * RATE)
    if clip.size > limit:  # a long synthesis (a model that rambles) is faded out at the limit
        clip = clip[:limit].copy()
        fade = min(limit, int(FADE_S * RATE))
        clip[limit - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return clip


def render_duplex(turns: Sequence[TurnClip], cfg: DuplexConfig, seed: int, language: str,
                  backchannel: BackchannelSource | None = None) -> DuplexRendering:
    """Lay `turns` (alternating user/assistant, in order) on one stereo timeline, drawing every choice from `seed`."""
    if not turns:
        raise ValueError("a conversation with no turns has no timeline")
    rng = np.random.default_rng(seed)
    clips = [_prepare(i, t, cfg) for i, t in enumerate(turns)]
    counts = dict.fromkeys(("transitions", "overlaps", "interruption_opportunities", "interruptions",
                            "backchannel_opportunities", "backchannels"), 0)
    placed: list[_Placed] = []
    for clip in clips:
        placed.append(_place_next(clip, placed, cfg, rng, counts))
    segments = [_turn_segment(p) for p in placed]
    bank: dict[tuple[str, str], np.ndarray] = {}
    backchannels: list[tuple[Segment, np.ndarray]] = []
    texts = cfg.backchannel_texts.get(language) or []
    if backchannel is not None and texts and cfg.backchannel_max_per_turn > 0:
        for n, speaker in enumerate(placed):
            listener = "assistant" if speaker.clip.role == "user" else "user"
            if listener in cfg.backchannel_roles and speaker.clip.duration >= cfg.backchannel_min_turn_s:
                backchannels += _backchannels_during(n, placed, listener, texts, backchannel, bank, cfg, rng, counts)
    audio_by_segment = [(s, _segment_audio(p)) for s, p in zip(segments, placed)] + backchannels
    end = max(s.end for s, _ in audio_by_segment) + cfg.tail_s
    audio = np.zeros((math.ceil(end * RATE), 2), dtype=np.float32)
    for seg, samples in audio_by_segment:
        at = round(seg.start * RATE)
        audio[at:at + samples.size, seg.channel] += samples
    rates = {**cfg.model_dump(mode="json", exclude={"enabled", "backchannel_texts", "batch_size"}),
             "backchannel_texts": list(texts)}
    recipe = {"seed": int(seed), "rates": rates, "counts": counts}
    return DuplexRendering(audio, sorted((s for s, _ in audio_by_segment), key=lambda s: (s.start, s.channel)), recipe)


def _place_next(clip: _Prepared, placed: list[_Placed], cfg: DuplexConfig, rng: np.random.Generator,
                counts: dict[str, int]) -> _Placed:
    if not placed:
        return _Placed(clip, _on_grid(cfg.lead_in_s))
    prev = placed[-1]
    same_channel_end = next((p.end for p in reversed(placed) if p.clip.role == clip.role), -math.inf)
    if clip.role == prev.clip.role:  # not alternating: a plain gap on one channel
        return _Placed(clip, _on_grid(prev.end + _gap(cfg, rng)))
    if clip.role == "user" and prev.clip.role == "assistant":
        # a cut must leave the user's start (cut - reaction) clear of the user's own previous segment
        earliest = same_channel_end + SAME_CHANNEL_GAP_S - prev.start + cfg.interruption_reaction_max_s
        points = [(c, k) for c, k in _cut_points(prev.clip, cfg) if c >= earliest]
        if points:
            counts["interruption_opportunities"] += 1
            if rng.random() < cfg.interruption_rate:
                cut, last_word = points[int(rng.integers(len(points)))]
                reaction = rng.uniform(cfg.interruption_reaction_min_s, cfg.interruption_reaction_max_s)
                start = _on_grid(prev.start + cut - reaction)
                prev.cut, prev.last_word, prev.interrupted_at = cut, last_word, start
                counts["interruptions"] += 1
                return _Placed(clip, start)
    counts["transitions"] += 1
    if rng.random() < cfg.overlap_rate:
        counts["overlaps"] += 1
        limit = min(cfg.overlap_max_s, prev.spoken / 2, clip.duration / 2,
                    prev.end - same_channel_end - SAME_CHANNEL_GAP_S)
        limit = max(limit, 0.02)
        overlap = rng.uniform(min(cfg.overlap_min_s, limit), limit)
        return _Placed(clip, _on_grid(prev.end - overlap))
    return _Placed(clip, _on_grid(max(prev.end + _gap(cfg, rng), same_channel_end + SAME_CHANNEL_GAP_S)))


def _gap(cfg: DuplexConfig, rng: np.random.Generator) -> float:
    return float(np.clip(cfg.gap_median_s * math.exp(cfg.gap_sigma * rng.standard_normal()), cfg.gap_min_s, cfg.gap_max_s))


def _turn_segment(p: _Placed) -> Segment:
    channel = CHANNELS[p.clip.role]
    if p.cut is None:
        return Segment(channel, p.clip.role, "turn", p.start, p.end, p.clip.text, p.clip.index, p.clip.speaker_id)
    spoken, unspoken = split_spoken_text(p.clip.text, p.clip.words or [], p.last_word)
    return Segment(channel, p.clip.role, "interrupted_turn", p.start, p.end, spoken, p.clip.index, p.clip.speaker_id,
                   unspoken_text=unspoken, cut_s=p.cut, interrupted_at=p.interrupted_at)


def _segment_audio(p: _Placed) -> np.ndarray:
    if p.cut is None:
        return p.clip.samples
    n = round(p.cut * RATE)
    out = p.clip.samples[:n].copy()
    fade = min(n, int(FADE_S * RATE))
    out[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return out


def _backchannels_during(n: int, placed: list[_Placed], listener: str, texts: list[str], source: BackchannelSource,
                         bank: dict[tuple[str, str], np.ndarray], cfg: DuplexConfig, rng: np.random.Generator,
                         counts: dict[str, int]) -> list[tuple[Segment, np.ndarray]]:
    speaker = placed[n]
    before = [p.end for p in placed[:n] if p.clip.role == listener]
    after = [p.start for p in placed[n + 1:] if p.clip.role == listener]
    lo = max(speaker.start + BACKCHANNEL_LEAD_S, (before[-1] if before else -math.inf) + SAME_CHANNEL_GAP_S)
    hi = min(speaker.end, (after[0] if after else math.inf) - SAME_CHANNEL_GAP_S)
    out: list[tuple[Segment, np.ndarray]] = []
    last_end = -math.inf
    for pause_start, pause_end in speaker.clip.pauses:
        if len(out) >= cfg.backchannel_max_per_turn:
            break
        at = speaker.start + pause_start
        if pause_end > speaker.spoken:
            break  # the rest of the turn is never said
        if at < lo or at < last_end + BACKCHANNEL_SPACING_S or at + BACKCHANNEL_OFFSET_MAX_S + cfg.backchannel_max_s > hi:
            continue
        counts["backchannel_opportunities"] += 1
        if rng.random() >= cfg.backchannel_rate:
            continue
        text = texts[int(rng.integers(len(texts)))]
        if (listener, text) not in bank:
            bank[(listener, text)] = _fit_backchannel(*source(listener, text), cfg.backchannel_max_s)
        clip = bank[(listener, text)]
        if clip.size == 0:
            continue
        start = _on_grid(at + rng.uniform(0.0, min(BACKCHANNEL_OFFSET_MAX_S, pause_end - pause_start)))
        listener_turn = next((p for p in placed if p.clip.role == listener), None)
        speaker_id = listener_turn.clip.speaker_id if listener_turn else ""
        seg = Segment(CHANNELS[listener], listener, "backchannel", start, start + clip.size / RATE, text,
                      speaker.clip.index, speaker_id)
        out.append((seg, clip))
        counts["backchannels"] += 1
        last_end = seg.end
    return out
