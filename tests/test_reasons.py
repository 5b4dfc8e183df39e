"""The reason-code registry is the one list of why a conversation can be dropped: every code the code can
record is registered, every registered code is recorded somewhere, and docs/output-format.md lists them."""

import re

from pipeline.config import REPO_ROOT
from pipeline.reasons import REASONS, Failure, Rejected

SOURCE = {p: p.read_text(encoding="utf-8") for p in (REPO_ROOT / "pipeline").rglob("*.py")}
# Rejected("code", ...), reject(row, stage, "code", ...), and the source filter's `return "code", details`
RAISED = re.compile(r"""\bRejected\(\s*"([a-z0-9_]+)"|reject\([^,]+,[^,]+,\s*"([a-z0-9_]+)"|return\s+"(source_[a-z_]+)",""")


def raised_codes() -> set[str]:
    return {next(g for g in m.groups() if g) for text in SOURCE.values() for m in RAISED.finditer(text)}


def row_stage_names() -> set[str]:
    """Stages whose unexpected errors are recorded as `<name>_error` (RowStage.guarded)."""
    from pipeline.stages.base import RowStage
    from pipeline.stages.text import TextStage  # noqa: F401 - imported so that the subclasses exist
    from pipeline.stages.tts import TTSStage  # noqa: F401
    from pipeline.stages.verify import VerifyStage  # noqa: F401
    from pipeline.stages.voices import VoiceStage  # noqa: F401

    return {cls.name for cls in RowStage.__subclasses__()}


def test_every_code_the_pipeline_records_is_registered():
    codes = raised_codes()
    assert len(codes) > 30  # the scan finds the codes (a broken pattern would find none and pass)
    assert codes - REASONS.keys() == set()
    assert {f"{name}_error" for name in row_stage_names()} - REASONS.keys() == set()


def test_every_registered_code_is_recorded_somewhere():
    recorded = raised_codes() | {f"{name}_error" for name in row_stage_names()}
    assert REASONS.keys() - recorded == set()


def test_the_docs_list_every_reason_with_its_stage():
    doc = (REPO_ROOT / "docs/output-format.md").read_text(encoding="utf-8")
    for reason in REASONS.values():
        assert f"| `{reason.code}` | {reason.stage} |" in doc, reason.code


def test_a_rejection_carries_its_structured_failures():
    exc = Rejected("asr_error_rate_above_threshold", "max 0.2", failures=[Failure(1, "assistant", "WER", 0.5, 0.2)])
    assert exc.failures[0].as_row() == {"turn": 1, "role": "assistant", "metric": "WER", "value": 0.5, "limit": 0.2}
    one = Rejected("audio_too_short", "turn 0", turn=0, role="user", metric="duration_s", value=0.1, limit=0.2)
    assert [f.metric for f in one.failures] == ["duration_s"] and Rejected("llm_not_json").failures == []
