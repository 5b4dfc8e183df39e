"""Personal data: phone numbers, e-mail addresses, ID-card and bank-card numbers, street addresses and full names
the LLM invented, found in each turn's display text before it is normalised for speech, and handled by
`personal_data.policy` per kind: replaced by a speakable placeholder, rejected (`personal_data`), or kept.

What was found is recorded on the row (`personal_data`: per kind, found and replaced), so the manifest and
stats.json count it; the detection is `pipeline/quality/personal_data.py`.
"""

from __future__ import annotations

from typing import Any

from pipeline.config import PersonalDataConfig
from pipeline.quality.personal_data import KINDS, scrub
from pipeline.reasons import Rejected
from pipeline.stages.base import RowStage, RunContext


class PersonalDataStage(RowStage):
    name = "personal_data"

    def __init__(self, cfg: PersonalDataConfig):
        super().__init__()
        self.policy = dict(cfg.policy)

    @classmethod
    def build(cls, ctx: RunContext) -> PersonalDataStage:
        return cls(ctx.cfg.personal_data)

    def process_row(self, row: dict[str, Any]) -> None:
        turns = row["turns"] or []
        # the conversation ID as salt: the same value gets the same placeholder throughout one conversation
        result = scrub([t["display_text"] or "" for t in turns], row["language"], self.policy, row["conversation_id"])
        row["personal_data"] = [{"kind": k, "found": result.found[k], "replaced": result.replaced[k]}
                                for k in KINDS if result.found[k]] or None
        if result.rejected is not None:
            turn, kind = result.rejected
            # the details name the kind and the turn, never the value
            raise Rejected("personal_data", f"{kind.replace('_', ' ')} in turn {turn} (personal_data.policy.{kind}: "
                           "reject)", turn=turn, role=turns[turn]["role"], metric=kind, value=result.found[kind])
        for turn, text in zip(turns, result.texts):
            turn["display_text"] = text
