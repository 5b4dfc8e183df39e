"""The personal-data stage on batches (no Ray): placeholders in the display text that the text stage then speaks,
a `reject` policy as a structured `personal_data` rejection that never names the value, counts on the row."""

from text_data import conversation

from pipeline.config import PersonalDataConfig, TextConfig
from pipeline.quality.personal_data import PLACEHOLDERS
from pipeline.schema import rejects_rows, rows_to_table
from pipeline.stages.personal_data import PersonalDataStage
from pipeline.stages.text import TextStage

POLICY = {"phone": "replace", "person_name": "replace", "email": "replace", "id_card": "reject",
          "bank_card": "reject", "address": "keep"}


def test_replace_reject_and_keep_per_kind():
    stage = PersonalDataStage(PersonalDataConfig(policy=POLICY))
    phone = conversation(1, ["Hi, I'm Sarah Johnson, please call me on (415) 555-2671.",
                             "Of course, Sarah Johnson. I will call (415) 555-2671 at five, and I live at 221 Baker Street."])
    card = conversation(2, ["Can you check my card 4111 1111 1111 1111 for me?", "I cannot check cards, sorry."])
    zh = conversation(3, ["我的身份证号是11010519491231002X，帮我查一下。", "好的，请稍等，我帮您看看。"], language="zh")
    plain = conversation(4, ["What is a good houseplant for a dark room?", "A snake plant copes with little light."])
    out = {r["conversation_id"]: r for r in stage(rows_to_table([phone, card, zh, plain])).to_pylist()}

    kept = out["en-0000000000000001"]
    assert kept["reject_reason"] is None
    text = " ".join(t["display_text"] for t in kept["turns"])
    assert "Sarah" not in text and "2671" not in text and "221 Baker Street" in text  # address: keep
    assert sum(p in text for p in PLACEHOLDERS["en"]["phone"]) == 1  # one value, one placeholder, twice
    assert {p["kind"]: (p["found"], p["replaced"]) for p in kept["personal_data"]} == {
        "phone": (2, 2), "person_name": (2, 2), "address": (1, 0)}

    for conv_id, kind in (("en-0000000000000002", "bank_card"), ("zh-0000000000000003", "id_card")):
        row = out[conv_id]
        assert (row["reject_stage"], row["reject_reason"]) == ("personal_data", "personal_data")
        rejected = rejects_rows([row])[0]
        assert (rejected["turn"], rejected["role"], rejected["metric"]) == (0, "user", kind)
        assert "4111" not in rejected["details"] and "1101" not in rejected["details"]  # never the value

    assert out["en-0000000000000004"]["reject_reason"] is None and out["en-0000000000000004"]["personal_data"] is None

    # the placeholders are spoken form: the text stage reads them as they are, and TTS says the placeholder
    placeholder = next(p for p in PLACEHOLDERS["en"]["phone"] if p in text)
    spoken = TextStage(TextConfig())(rows_to_table([kept])).to_pylist()[0]
    assert spoken["reject_reason"] is None
    assert all(placeholder in t["spoken_text"] for t in spoken["turns"])
