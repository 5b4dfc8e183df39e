"""How diverse the kept text is, per language: lexical variety, self-similarity, taxonomy coverage, openings.

- distinct-1 / distinct-2 (Li et al., 2016): distinct n-grams over all n-grams of every turn in the sample;
  tokens are words for English and characters for Chinese (the same tokens the near-duplicate check uses).
- self-BLEU (Zhu et al., 2018, Texygen): each sampled conversation scored with sacreBLEU against all other
  sampled conversations as references, averaged; 100 means every conversation repeats the others.
- coverage: how many of the taxonomy's topics/scenarios the kept conversations use, against how many the
  taxonomy's weights lead one to expect for that many conversations, and the total-variation distance
  between the weights and the observed shares.
- openings: the most repeated first words of the user's first turn and of assistant turns ("Sure! I'd be
  happy to" in a third of the answers is what a data team wants to see before training on it).
All functions are pure: the caller chooses the sample (deterministically) and passes the texts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipeline.quality.near_dup import tokens

if TYPE_CHECKING:
    from pipeline.config import DiversityConfig

Conversation = Sequence[tuple[str, str]]  # (role, text) per turn


def distinct_n(conversations: Sequence[Conversation], language: str, n: int) -> float:
    total, seen = 0, set()
    for turns in conversations:
        for _, text in turns:
            toks = tokens(text, language)
            grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
            total += len(grams)
            seen.update(grams)
    return round(len(seen) / total, 4) if total else 0.0


def self_bleu(conversations: Sequence[Conversation], language: str) -> float | None:
    """Mean sentence BLEU (0-100) of each conversation against all the others; None below two conversations."""
    if len(conversations) < 2:
        return None
    from sacrebleu.metrics import BLEU

    texts = [" ".join(text for _, text in turns) for turns in conversations]
    bleu = BLEU(tokenize="zh" if language == "zh" else "13a", effective_order=True, lowercase=True)
    scores = [bleu.sentence_score(hyp, texts[:i] + texts[i + 1:]).score for i, hyp in enumerate(texts)]
    return round(sum(scores) / len(scores), 2)


def coverage(observed: Mapping[str, int], weights: Sequence[tuple[str, float]], top: int = 10) -> dict[str, Any]:
    """Observed use of taxonomy items (topics or scenarios) against the taxonomy's sampling weights."""
    total_w = sum(w for _, w in weights) or 1.0
    expected = {name: w / total_w for name, w in weights}
    n = sum(count for name, count in observed.items() if name in expected)
    outside = sum(count for name, count in observed.items() if name not in expected)
    seen = sum(1 for name in expected if observed.get(name, 0) > 0)
    expected_seen = sum(1 - (1 - p) ** n for p in expected.values())
    shares = {name: observed.get(name, 0) / n if n else 0.0 for name in expected}
    drift = {name: observed.get(name, 0) - p * n for name, p in expected.items()}
    return {
        "items": len(expected), "conversations": n, "outside_taxonomy": outside,
        "seen": seen, "seen_share": round(seen / len(expected), 4) if expected else 0.0,
        "expected_seen": round(expected_seen, 1),  # what sampling by the weights gives on average for n
        "total_variation": round(0.5 * sum(abs(shares[k] - expected[k]) for k in expected), 4) if n else None,
        "most_over": [[name, observed.get(name, 0), round(expected[name] * n, 2)]
                      for name, d in sorted(drift.items(), key=lambda kv: (-kv[1], kv[0]))[:top] if d > 0],
        "most_under": [[name, observed.get(name, 0), round(expected[name] * n, 2)]
                       for name, d in sorted(drift.items(), key=lambda kv: (kv[1], kv[0]))[:top] if d < 0],
    }


def openings(conversations: Sequence[Conversation], language: str, words: int, top: int = 10) -> dict[str, Any]:
    """The most repeated first `words` tokens of the user's first turn and of every assistant turn, with
    their share of such turns."""
    sep = "" if language == "zh" else " "
    user: Counter = Counter()
    assistant: Counter = Counter()
    for turns in conversations:
        for i, (role, text) in enumerate(turns):
            toks = tokens(text, language)[:words]
            if not toks:
                continue
            if role == "user" and i == 0:
                user[sep.join(toks)] += 1
            elif role == "assistant":
                assistant[sep.join(toks)] += 1

    def table(counts: Counter) -> list[list[Any]]:
        total = sum(counts.values()) or 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return [[text, n, round(n / total, 4)] for text, n in ranked]

    return {"words": words, "user_first_turn": table(user), "assistant_turns": table(assistant)}


def diversity(conversations: Sequence[Conversation], language: str, *, bleu_sample: int, opening_words: int,
              topics: Mapping[str, int] | None = None, scenarios: Mapping[str, int] | None = None,
              taxonomy: Any = None, top: int = 10) -> dict[str, Any]:
    """Everything above for one language. `conversations` is the sample (already chosen by the caller);
    self-BLEU uses its first `bleu_sample` (quadratic cost); topics/scenarios count every kept conversation."""
    out: dict[str, Any] = {
        "sample_conversations": len(conversations),
        "distinct_1": distinct_n(conversations, language, 1),
        "distinct_2": distinct_n(conversations, language, 2),
        "self_bleu": self_bleu(conversations[:bleu_sample], language),
        "self_bleu_sample": min(len(conversations), bleu_sample),
        "openings": openings(conversations, language, opening_words, top),
    }
    if taxonomy is not None:
        if topics is not None:
            out["topic_coverage"] = coverage(topics, taxonomy.topics, top)
        if scenarios is not None:
            out["scenario_coverage"] = coverage(scenarios, taxonomy.scenarios, top)
    return out


def conversation_diversity(kept: Any, language: str, cfg: DiversityConfig, taxonomy: Any = None) -> dict[str, Any]:
    """`diversity` for one language of an output: `kept` is its `pipeline.io.kept_text.KeptText` (the sample and
    the counts over every kept conversation); coverage is left out for rewritten datasets, whose topics are
    their first lines, not taxonomy items."""
    planned = taxonomy is not None and set(kept.domains) != {"source"}
    out = diversity(kept.conversations, language, bleu_sample=cfg.self_bleu_sample,
                    opening_words=cfg.opening_words.get(language, 3), topics=kept.topics if planned else None,
                    scenarios=kept.scenarios if planned else None, taxonomy=taxonomy if planned else None, top=cfg.top)
    out["kept_conversations"] = kept.kept
    return out
