"""Why a conversation was dropped: one registry of reason codes, and the structured rejection stages raise.

Every reason a stage can record is registered here with the stage that records it and what it means
(docs/output-format.md lists them from this table). A rejection carries structured fields - which turn,
which metric, the measured value and the limit it missed - that the rejects table stores as columns, so
reports read numbers instead of parsing prose; `details` stays a short human-readable sentence.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Reason:
    code: str
    stage: str
    meaning: str


def _registry(*reasons: Reason) -> dict[str, Reason]:
    return {r.code: r for r in reasons}


REASONS: dict[str, Reason] = _registry(
    # source: records of an existing dataset that cannot become speech (before any LLM call)
    Reason("source_not_json", "source", "a source line is not JSON"),
    Reason("source_bad_shape", "source", "a record is not ShareGPT, OpenAI messages or Alpaca shaped"),
    Reason("source_no_exchange", "source", "no user turn followed by an assistant answer"),
    Reason("source_empty_turn", "source", "a turn of the record is empty"),
    Reason("source_has_code", "source", "the record holds code"),
    Reason("source_has_table", "source", "the record holds a markdown table"),
    Reason("source_has_math", "source", "the record holds math notation"),
    Reason("source_answer_too_long", "source", "an answer is longer than source.max_answer_chars"),
    # generate: the LLM's answer
    Reason("llm_not_json", "generate", "no JSON object in the LLM output, or it does not parse"),
    Reason("llm_wrong_shape", "generate", "the JSON does not match the response schema"),
    Reason("llm_wrong_exchange_count", "generate", "a different number of exchanges than asked for"),
    Reason("llm_control_characters", "generate", "a turn holds control, bidirectional-override or other format "
                                                 "characters (U+0000-U+001F, U+0080-U+009F, U+202E, U+2066 ...)"),
    Reason("llm_turn_too_short", "generate", "a turn is shorter than llm.min_turn_chars"),
    Reason("llm_turn_too_long", "generate", "a turn is longer than llm.max_turn_chars"),
    Reason("llm_turn_not_prose", "generate", "a turn is mostly digits or symbols"),
    Reason("llm_json_in_text", "generate", "pieces of the JSON envelope leaked into a turn"),
    Reason("llm_meta_text", "generate", "the model stepped out of the conversation (refusal, prompt talk)"),
    Reason("llm_wrong_language", "generate", "the text is not in the conversation's language"),
    Reason("llm_timeout", "generate", "no whole answer within llm.timeout_s (first byte to last) after "
                                      "llm.max_retries retries"),
    Reason("llm_connection_error", "generate", "the connection broke on every retry while the server still answers"),
    Reason("llm_http_error", "generate", "an HTTP error status after llm.max_retries retries"),
    Reason("llm_bad_response", "generate", "the server's answer is not a chat completion (empty, HTML, another "
                                           "shape) after llm.max_retries retries, while the server otherwise works"),
    Reason("generate_error", "generate", "an unexpected error while generating this conversation"),
    # text: spoken-form normalisation and structure
    Reason("text_unsupported_language", "text", "no spoken-form normaliser for the language"),
    Reason("text_wrong_turn_count", "text", "the turns do not make the planned number of exchanges"),
    Reason("text_roles_not_alternating", "text", "turns do not alternate user, assistant"),
    Reason("text_nothing_to_say", "text", "a turn has too few letters left after normalisation"),
    Reason("text_too_long", "text", "a spoken turn is longer than text.max_chars"),
    Reason("text_control_characters", "text", "a cached turn (--text-from) holds control or bidirectional-override "
                                              "characters"),
    Reason("text_error", "text", "an unexpected error while normalising this conversation"),
    # personal_data: what the LLM invented about people, before normalisation
    Reason("personal_data", "personal_data", "personal data of a kind whose personal_data.policy is reject "
           "(the metric names the kind)"),
    Reason("personal_data_error", "personal_data", "an unexpected error while looking for personal data"),
    # near_dup: MinHash LSH over the whole output (and over the source records, before any LLM call)
    Reason("near_duplicate", "near_dup", "nearly copies a conversation (or source record) seen earlier; "
           "duplicate_of names it"),
    Reason("repeated_turn", "near_dup", "a turn repeats an earlier turn of the same conversation word for word"),
    # judge: an LLM scores the text (judge.enabled)
    Reason("judge_below_threshold", "judge", "a judge score is under judge.min_scores (the metric names it)"),
    Reason("judge_failed", "judge", "the judge gave no usable scores after its retries (judge.on_error: reject)"),
    # voices
    Reason("voices_no_speaker_for_language", "voices", "the pool has no voice for the conversation's language"),
    Reason("voices_error", "voices", "an unexpected error while assigning voices"),
    # tts
    Reason("tts_unknown_speaker", "tts", "a turn's speaker is not in the pool"),
    Reason("tts_backend_mismatch", "tts", "a turn's speaker is a voice of another TTS backend"),
    Reason("tts_failed", "tts", "every synthesis attempt of a turn failed (error, NaN, no audio, absurd duration)"),
    Reason("tts_error", "tts", "an unexpected error while synthesising this conversation"),
    # verify
    Reason("audio_too_short", "verify", "a turn's audio is shorter than verify.min_duration_s"),
    Reason("audio_too_long", "verify", "a turn's audio is longer than verify.max_duration_s"),
    Reason("audio_quality_below_threshold", "verify", "a turn's DNSMOS overall is below verify.min_dnsmos_ovrl"),
    Reason("speaker_inconsistent", "verify", "a turn's voice is too far from its speaker (Resemblyzer cosine)"),
    Reason("asr_error_rate_above_threshold", "verify", "ASR heard other words than the spoken text (WER/CER)"),
    # verify: audio checks (pipeline/quality/audio_checks.py)
    Reason("audio_no_speech", "verify", "the voice activity detector found no speech in a turn (noise, silence)"),
    Reason("audio_leading_silence", "verify", "silence before a turn's first speech over verify.max_leading_silence_s "
                                              "(verify.trim_silence off)"),
    Reason("audio_trailing_silence", "verify", "silence after a turn's last speech over verify.max_trailing_silence_s "
                                               "(verify.trim_silence off)"),
    Reason("audio_long_pause", "verify", "a silence inside a turn longer than verify.max_pause_s"),
    Reason("audio_clipped", "verify", "more samples at full scale than verify.max_clipped_fraction"),
    Reason("audio_loudness_off", "verify", "integrated loudness further than verify.max_loudness_deviation_lu from "
                                           "verify.loudness_target_lufs"),
    Reason("audio_speech_rate", "verify", "words (en) or characters (zh) per second outside verify.speech_rate"),
    Reason("verify_error", "verify", "an unexpected error while verifying this conversation"),
    # augment (augment.enabled): user-side acoustic augmentation
    Reason("augment_error", "augment", "an unexpected error while augmenting this conversation's user audio"),
    # duplex (duplex.enabled): the two-channel timeline
    Reason("duplex_render_failed", "duplex", "the turns cannot be laid on a timeline (silent audio, bad roles)"),
    Reason("duplex_error", "duplex", "an unexpected error while rendering this conversation's timeline"),
    # quota (exact-count mode)
    Reason("target_reached", "quota", "the target number of kept conversations was reached before this one"),
)


@dataclass(frozen=True)
class Failure:
    """One measured miss: turn `turn` (`role`) had `metric` = `value` against the limit `limit`. A verify failure
    also says which synthesis of the turn it was (`attempt`, 1-based over TTS retries and re-syntheses), its
    `seed`, and the check's `reason` code (attempts of one turn can fail different checks)."""

    turn: int | None = None
    role: str | None = None
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    reason: str | None = None
    attempt: int | None = None
    seed: int | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


class Rejected(Exception):
    """Raised by a stage to drop one conversation: a registered reason code, a short human-readable sentence,
    and the structured failures behind it (the first is the primary one; a check that fails several turns
    lists each). `duplicate_of` names the conversation a duplicate copies (the rejects table's column)."""

    def __init__(self, reason: str, details: str = "", *, turn: int | None = None, role: str | None = None,
                 metric: str | None = None, value: float | None = None, limit: float | None = None,
                 failures: list[Failure] | tuple[Failure, ...] = (), duplicate_of: str | None = None):
        super().__init__(f"{reason}: {details}" if details else reason)
        self.reason, self.details, self.duplicate_of = reason, details, duplicate_of
        primary = [Failure(turn, role, metric, value, limit)] if any(
            v is not None for v in (turn, role, metric, value, limit)) else []
        self.failures: list[Failure] = primary + list(failures)


def reason_stage(code: str) -> str | None:
    """The stage that records `code`, or None for a code that is not registered."""
    reason = REASONS.get(code)
    return reason.stage if reason else None
