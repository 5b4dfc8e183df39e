"""The diversity section of report.html, drawn from stats.json's `diversity` (pipeline/quality/diversity.py).

A table of the figures per language, then three plots: lexical variety (distinct-1, distinct-2, self-BLEU),
the taxonomy items used most above and below what the weights lead one to expect, and the most repeated
openings. Pure: stats in, HTML out (the report embeds it like its other sections).
"""

from __future__ import annotations

from typing import Any

from matplotlib.ticker import PercentFormatter

from pipeline.publish.report import TOP_N, _figure, _new_figure, _table

COLOURS = {"distinct_1": "#4C72B0", "distinct_2": "#55A868", "self_bleu": "#C44E52"}


def _short(text: str, n: int = 42) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot_lexical(diversity: dict[str, dict[str, Any]]) -> str:
    languages = sorted(diversity)
    fig, (ax,) = _new_figure(width=min(9.0, 3.5 + 1.8 * len(languages)))
    width = 0.26
    for k, (key, label) in enumerate((("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"),
                                      ("self_bleu", "self-BLEU / 100"))):
        values = [(diversity[lang].get(key) or 0.0) / (100.0 if key == "self_bleu" else 1.0) for lang in languages]
        bars = ax.bar([i + (k - 1) * width for i in range(len(languages))], values, width, label=label,
                      color=COLOURS[key])
        ax.bar_label(bars, fmt="%.2f", fontsize=8)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("0 = all alike for distinct-n, 1 = all alike for self-BLEU")
    ax.set_title("Lexical variety per language (higher distinct-n, lower self-BLEU = more varied)")
    ax.legend(loc="upper right", fontsize=8)
    return _figure(fig, "distinct-1/2: distinct n-grams over all n-grams of the sampled turns; self-BLEU: each "
                        "sampled conversation against the others (sacreBLEU)")


def plot_coverage(diversity: dict[str, dict[str, Any]], what: str) -> str:
    """Diverging bars: conversations above (+) or below (-) what the taxonomy's weights expect, per item."""
    languages = [lang for lang in sorted(diversity) if diversity[lang].get(f"{what}_coverage")]
    rows = max(len(diversity[lang][f"{what}_coverage"]["most_over"]) + len(diversity[lang][f"{what}_coverage"]["most_under"])
               for lang in languages)
    fig, axes = _new_figure(len(languages), height=max(2.6, 0.28 * min(rows, 2 * TOP_N) + 1.4))
    for ax, lang in zip(axes, languages):
        cov = diversity[lang][f"{what}_coverage"]
        items = cov["most_over"] + cov["most_under"][::-1]
        labels = [_short(str(name)) for name, _, _ in items][::-1]
        drift = [observed - expected for _, observed, expected in items][::-1]
        ax.barh(labels, drift, color=["#55A868" if d > 0 else "#C44E52" for d in drift])
        ax.axvline(0, color="#444", linewidth=0.8)
        ax.set_title(f"{what}s ({lang}): {cov['seen']} of {cov['items']} used ({cov['expected_seen']:g} expected)\n"
                     f"total-variation distance from the weights {cov['total_variation']}", fontsize=9)
        ax.set_xlabel("conversations minus the weights' expectation")
    return _figure(fig, f"The {what}s used most above (green) and below (red) the taxonomy's weights, per language")


def plot_openings(diversity: dict[str, dict[str, Any]], lang: str) -> str:
    op = diversity[lang]["openings"]
    fig, axes = _new_figure(2, height=max(2.4, 0.3 * min(TOP_N, max(len(op["user_first_turn"]),
                                                                      len(op["assistant_turns"]))) + 1.2))
    for ax, (key, who) in zip(axes, (("user_first_turn", "user, first turn"), ("assistant_turns", "assistant turns"))):
        items = op[key][:TOP_N][::-1]
        ax.barh([_short(str(text), 30) for text, _, _ in items], [share for _, _, share in items],
                color="#4C72B0" if key == "user_first_turn" else "#DD8452")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_title(f"openings ({lang}): {who}")
        ax.set_xlabel(f"share of turns (first {op['words']} tokens)")
    return _figure(fig, f"Most repeated openings ({lang}): the first words of the user's first turn and of "
                        "assistant turns")


def diversity_section(diversity: dict[str, dict[str, Any]] | None) -> str:
    """The report's "Diversity" section (heading included); a note when stats.json has no diversity yet."""
    if not diversity:
        return "<h2>Diversity</h2><p>No diversity figures yet (no conversation passed the text checks).</p>"

    def cov(d: dict[str, Any], what: str) -> str:
        c = d.get(f"{what}_coverage")
        return f"{c['seen']} / {c['items']} (expected {c['expected_seen']:g})" if c else "-"

    table = _table(["language", "sampled conversations", "distinct-1", "distinct-2", "self-BLEU", "self-BLEU sample",
                    "topics used", "scenarios used"],
                   [[lang, int(d["sample_conversations"]), float(d["distinct_1"]), float(d["distinct_2"]),
                     float(d["self_bleu"]) if d.get("self_bleu") is not None else "-", int(d["self_bleu_sample"]),
                     cov(d, "topic"), cov(d, "scenario")] for lang, d in sorted(diversity.items())])
    parts = ['<h2 id="diversity">Diversity</h2>',
             '<p class="muted">Kept text only, sampled by conversation ID hash; see docs/quality.md for the '
             "definitions.</p>", table, plot_lexical(diversity)]
    for what in ("topic", "scenario"):
        if any(d.get(f"{what}_coverage") for d in diversity.values()):
            parts.append(plot_coverage(diversity, what))
    parts += [plot_openings(diversity, lang) for lang in sorted(diversity)]
    top = []
    for lang, d in sorted(diversity.items()):
        for text, n, share in d["openings"]["assistant_turns"][:3]:
            top.append([lang, "assistant", text, n, f"{share:.1%}"])
        for text, n, share in d["openings"]["user_first_turn"][:3]:
            top.append([lang, "user (first turn)", text, n, f"{share:.1%}"])
    if top:
        parts.append(_table(["language", "side", "opening", "turns", "share"], top))
    return "\n".join(parts)
