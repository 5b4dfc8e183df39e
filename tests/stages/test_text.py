import pytest

from pipeline.config import TextConfig
from pipeline.normalize.en import normalize_en
from pipeline.schema import empty_turn, rows_to_table
from pipeline.stages.text import TextStage

CASES = [
    ("It costs $5.20.", "It costs five dollars and twenty cents."),
    ("That's $1 each.", "That's one dollar each."),
    ("About £1,200 a month.", "About one thousand two hundred pounds a month."),
    ("Save 15% today", "Save fifteen percent today."),
    ("It is 2.5 km away.", "It is two point five kilometres away."),
    ("Meet me at 3:30 pm.", "Meet me at three thirty PM."),
    ("The train leaves at 10:05.", "The train leaves at ten oh five."),
    ("She was born in 1990.", "She was born in nineteen ninety."),
    ("Music from the 1980s.", "Music from the nineteen eighties."),
    ("Take the 2nd left.", "Take the second left."),
    ("I have 3 cats & 2 dogs.", "I have three cats and two dogs."),
    ("**Bold** and *italic* text.", "Bold and italic text."),
    ("Hello [name], welcome!", "Hello, welcome!"),
    ("Dear {customer_name}, thanks.", "Dear, thanks."),
    ("See https://example.com/page for more.", "See for more."),
    ("Great job 🎉👍!", "Great job!"),
    ("# Steps\n- Boil water\n- Add pasta", "Steps. Boil water. Add pasta."),
    ("Read [the guide](https://x.y/z) first.", "Read the guide first."),
    ("Dr. Smith works 9-5.", "Doctor Smith works nine to five."),
    ("Run `ls -la` now.", "Run ls -la now."),
    ("Write to me@example.com today.", "Write to today."),
    ("It weighs 1 kg.", "It weighs one kilogram."),
    ("Already spoken text stays.", "Already spoken text stays."),
]


@pytest.mark.parametrize("written, spoken", CASES)
def test_english_normalisation(written, spoken):
    assert normalize_en(written) == spoken


def test_normalisation_is_idempotent():
    for written, _ in CASES:
        once = normalize_en(written)
        assert normalize_en(once) == once


def conversation(*texts, language="en"):
    turns = [empty_turn("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]
    return {"conversation_id": "en-0", "language": language, "num_exchanges": len(texts) // 2, "turns": turns}


def test_text_stage_fills_spoken_text_and_rejects_unspeakable():
    stage = TextStage(TextConfig())
    ok = conversation("I paid $3.", "That is 3 dollars.")
    empty = conversation("😀😀", "Fine.")
    out = stage(rows_to_table([ok, empty])).to_pylist()
    assert [t["spoken_text"] for t in out[0]["turns"]] == ["I paid three dollars.", "That is three dollars."]
    assert out[0]["reject_reason"] is None
    assert (out[1]["reject_stage"], out[1]["reject_reason"]) == ("text", "text_nothing_to_say")
