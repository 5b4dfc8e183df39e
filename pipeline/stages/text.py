"""Text: turn each display text into the spoken text that TTS reads, and check it is speakable."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipeline.config import TextConfig
from pipeline.normalize.chars import hostile_character, strip_invisible
from pipeline.normalize.en import normalize_en
from pipeline.normalize.zh import normalize_zh
from pipeline.reasons import Rejected
from pipeline.stages.base import RowStage, RunContext

NORMALIZERS: dict[str, Callable[[str], str]] = {"en": normalize_en, "zh": normalize_zh}


class TextStage(RowStage):
    name = "text"

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.cfg = cfg

    @classmethod
    def build(cls, ctx: RunContext) -> TextStage:
        return cls(ctx.cfg.text)

    def process_row(self, row: dict[str, Any]) -> None:
        language = row["language"]
        if language not in NORMALIZERS:
            raise Rejected("text_unsupported_language", language)
        turns = row["turns"] or []
        if not turns or len(turns) != 2 * row["num_exchanges"]:
            raise Rejected("text_wrong_turn_count", f"{len(turns)} turns for {row['num_exchanges']} exchanges",
                           metric="turns", value=len(turns), limit=2 * row["num_exchanges"])
        for i, turn in enumerate(turns):
            expected = "user" if i % 2 == 0 else "assistant"
            if turn["role"] != expected:
                raise Rejected("text_roles_not_alternating", f"turn {i} is {turn['role']}, expected {expected}", turn=i,
                               role=turn["role"])
            # the LLM's text is checked in generate; a text cache read from elsewhere (--text-from) is not
            turn["display_text"] = strip_invisible(turn["display_text"])
            hostile = hostile_character(turn["display_text"])
            if hostile:
                raise Rejected("text_control_characters", f"turn {i}: {hostile}", turn=i, role=turn["role"])
            spoken = NORMALIZERS[language](turn["display_text"])
            if sum(c.isalpha() for c in spoken) < self.cfg.min_chars:
                raise Rejected("text_nothing_to_say", f"turn {i}: {turn['display_text'][:80]!r}", turn=i, role=turn["role"],
                               metric="letters", value=sum(c.isalpha() for c in spoken), limit=self.cfg.min_chars)
            if len(spoken) > self.cfg.max_chars:
                raise Rejected("text_too_long", f"turn {i}: {len(spoken)} chars > {self.cfg.max_chars}", turn=i,
                               role=turn["role"], metric="chars", value=len(spoken), limit=self.cfg.max_chars)
            turn["spoken_text"] = spoken
