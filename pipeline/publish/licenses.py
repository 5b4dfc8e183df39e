"""Which licence a generated dataset carries, from the models and corpora that went into it.

Synthetic speech inherits the terms of the TTS model that spoke it and of the recordings its voices were
trained or cloned from; the text inherits the LLM's. The dataset is bound by all of them, so the card's
single `license:` field shows the strictest one and the warnings say what the others add.

Tags come from the config's `license_tags` as `kind:name:licence` (e.g.
`tts:piper-en_US-joe-medium:see-model-card`), `kind:name`, `name:licence` or a bare name. A name this
module knows is looked up in KNOWN; a licence string it does not know is kept as "other" with a warning,
never an error: a card with an honest "other" is better than a failed publish.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class License:
    id: str            # the Hub's `license:` identifier when `standard`, else our slug (shown as license_name)
    name: str
    rank: int          # strictness: among a dataset's components the highest rank is the dataset's licence
    commercial: bool
    link: str = ""
    standard: bool = True


# Ranks leave gaps so a licence can be slotted in without renumbering. The order is a judgement, not law:
# permissive < attribution < share-alike < non-commercial < custom non-commercial < not understood < unknown.
LICENSES: dict[str, License] = {lic.id: lic for lic in (
    License("cc0-1.0", "CC0 1.0 (public domain dedication)", 0, True,
            "https://creativecommons.org/publicdomain/zero/1.0/"),
    License("mit", "MIT", 10, True, "https://opensource.org/license/mit"),
    License("apache-2.0", "Apache 2.0", 20, True, "https://www.apache.org/licenses/LICENSE-2.0"),
    License("cc-by-4.0", "CC BY 4.0", 30, True, "https://creativecommons.org/licenses/by/4.0/"),
    License("cc-by-sa-4.0", "CC BY-SA 4.0", 40, True, "https://creativecommons.org/licenses/by-sa/4.0/"),
    License("cc-by-nc-4.0", "CC BY-NC 4.0", 60, False, "https://creativecommons.org/licenses/by-nc/4.0/"),
    License("cc-by-nc-sa-4.0", "CC BY-NC-SA 4.0", 70, False, "https://creativecommons.org/licenses/by-nc-sa/4.0/"),
    License("cc-by-nc-nd-4.0", "CC BY-NC-ND 4.0", 80, False, "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    License("coqui-public-model-license", "Coqui Public Model Licence 1.0.0", 90, False,
            "https://coqui.ai/cpml", standard=False),
    License("lessac-research-only", "Blizzard 2013 Lessac data licence (non-commercial research only)", 95, False,
            "https://www.cstr.ed.ac.uk/projects/blizzard/2011/lessac_blizzard2013/license.html", standard=False),
)}

# A licence string nobody here understands outranks every known one (we cannot say what it allows), and
# a component with no licence at all outranks that: the Hub's "unknown" is the honest answer then.
OTHER_RANK = 100
UNKNOWN = License("unknown", "unknown", 110, False)

LICENSE_ALIASES = {
    "cc0": "cc0-1.0", "publicdomain": "cc0-1.0", "mitlicense": "mit",
    "apache2": "apache-2.0", "apache": "apache-2.0", "apachelicense20": "apache-2.0",
    "ccby": "cc-by-4.0", "ccbysa": "cc-by-sa-4.0", "ccbync": "cc-by-nc-4.0", "ccbyncsa": "cc-by-nc-sa-4.0",
    "ccbyncnd": "cc-by-nc-nd-4.0",
    "cpml": "coqui-public-model-license", "coquipublicmodellicense10": "coqui-public-model-license",
    "blizzard": "lessac-research-only", "lessac": "lessac-research-only",
}
# Licence fields that mean "look the name up" rather than naming a licence.
PLACEHOLDERS = {"", "seemodelcard", "seecard", "seelicense", "unknown", "na", "none", "tbd"}
KINDS = {"text", "llm", "tts", "asr", "voice", "voices", "speaker", "speakers", "corpus", "data", "dataset", "model",
         "source"}


@dataclass(frozen=True)
class Known:
    name: str
    aliases: tuple[str, ...]   # matched as substrings of the normalised tag name (letters and digits only)
    license: str
    note: str = ""             # a warning shown whenever this component is used


KNOWN: tuple[Known, ...] = (
    Known("XTTS-v2", ("xttsv2", "xtts"), "coqui-public-model-license",
          "XTTS-v2 output is under the Coqui Public Model Licence: non-commercial use only"),
    Known("LibriTTS-R", ("librittsr",), "cc-by-4.0"),
    Known("LibriTTS", ("libritts",), "cc-by-4.0"),
    Known("LibriSpeech", ("librispeech",), "cc-by-4.0"),
    Known("VCTK", ("vctk",), "cc-by-4.0"),
    Known("AISHELL-3", ("aishell3",), "apache-2.0"),
    Known("Common Voice", ("commonvoice",), "cc0-1.0"),
    Known("LJSpeech", ("ljspeech",), "cc0-1.0"),  # released into the public domain
    Known("Emilia", ("emilia",), "cc-by-nc-4.0"),
    # The joe recordings themselves are CC0, but the voice was fine-tuned from Piper's lessac voice
    # (its MODEL_CARD says so), and lessac was trained on the Blizzard 2013 Lessac data, licensed for
    # non-commercial research only. A fine-tune carries its base model's data terms, so joe is treated
    # as non-commercial too.
    Known("Piper en_US joe", ("piperenusjoe", "enusjoe", "joeuspipervoice"), "lessac-research-only",
          "Piper en_US joe is fine-tuned from the lessac voice, whose Blizzard 2013 training data is licensed "
          "for non-commercial research only (joe's own recordings are CC0)"),
    Known("Piper en_US lessac", ("enuslessac", "lessac"), "lessac-research-only",
          "Piper's lessac voice is trained on Blizzard 2013 Lessac data: non-commercial research only"),
    Known("SmolLM2", ("smollm2",), "apache-2.0"),
    Known("Whisper", ("fasterwhisper", "whisper"), "mit"),
)
# Longest alias first, so "LibriTTS-R" is not taken for "LibriTTS" nor "en_US joe" for a bare "joe".
_ALIASES = sorted(((alias, known) for known in KNOWN for alias in known.aliases), key=lambda a: -len(a[0]))


@dataclass(frozen=True)
class Component:
    tag: str
    kind: str
    name: str            # the matched known name, else the tag's own name
    license: str         # a LICENSES id, an unrecognised licence string, or "unknown"
    source: str          # "known" (from KNOWN), "tag" (as the tag stated it) or "none"


@dataclass
class Resolution:
    license: str                      # the Hub identifier: a standard id, "other" or "unknown"
    license_name: str | None          # for "other": which licence
    license_link: str | None
    commercial_use: bool
    components: list[Component] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def card_metadata(self) -> dict[str, Any]:
        """The dataset card's licence keys (`license_name`/`license_link` only go with "other")."""
        meta: dict[str, Any] = {"license": self.license}
        if self.license == "other":
            meta["license_name"] = self.license_name
            if self.license_link:
                meta["license_link"] = self.license_link
        return meta


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def lookup_license(text: str) -> License | None:
    key = text.strip().lower()
    if key in LICENSES:
        return LICENSES[key]
    alias = LICENSE_ALIASES.get(_norm(key))
    return LICENSES[alias] if alias else None


def lookup_known(name: str) -> Known | None:
    norm = _norm(name)
    return next((known for alias, known in _ALIASES if alias in norm), None)


def parse_tag(tag: str) -> tuple[str, str, str]:
    """`kind:name:licence` (names may hold colons), `kind:name`, `name:licence` or `name` -> (kind, name, licence)."""
    parts = [p.strip() for p in tag.split(":")]
    if len(parts) >= 3:
        return parts[0], ":".join(parts[1:-1]), parts[-1]
    if len(parts) == 2:
        return (parts[0], parts[1], "") if parts[0].lower() in KINDS else ("", parts[0], parts[1])
    return "", parts[0], ""


def _other(text: str) -> License:
    slug = re.sub(r"[^a-z0-9.+-]+", "-", text.strip().lower()).strip("-") or "unnamed"
    return License(slug, text.strip(), OTHER_RANK, False, standard=False)


def _resolve_one(tag: str, warnings: list[str]) -> tuple[Component, License, Known | None]:
    kind, name, stated_text = parse_tag(tag)
    known = lookup_known(name)
    stated = None
    if _norm(stated_text) not in PLACEHOLDERS:
        stated = lookup_license(stated_text)
        if stated is None:
            stated = _other(stated_text)
            warnings.append(f"{tag}: licence '{stated_text}' is not one this resolver knows; the dataset is marked "
                            "'other' until it is checked")
    label = f"{kind} '{name}'" if kind else f"'{name}'"
    if known is not None:
        table = LICENSES[known.license]
        lic = table if stated is None or stated.rank <= table.rank else stated
        if stated is not None and stated.id != table.id:
            warnings.append(f"{tag}: tagged '{stated.id}' but {known.name} is known to be under '{table.id}'; "
                            f"using the stricter '{lic.id}'")
        if known.note:
            warnings.append(known.note)
        return Component(tag, kind, known.name, lic.id, "known" if lic is table else "tag"), lic, known
    if stated is not None:
        return Component(tag, kind, name, stated.id, "tag"), stated, None
    warnings.append(f"no licence known for {label} (tag '{tag}'): add it as kind:name:licence in license_tags; "
                    "the dataset licence is 'unknown' until then")
    return Component(tag, kind, name, UNKNOWN.id, "none"), UNKNOWN, None


def resolve_license(tags: list[str]) -> Resolution:
    """The dataset's licence: the strictest of its components' (see the module docstring)."""
    warnings: list[str] = []
    components: list[Component] = []
    chosen: list[License] = []
    seen_tags: set[str] = set()
    seen_known: dict[str, str] = {}
    for tag in tags:
        tag = str(tag).strip()
        if not tag or tag in seen_tags:
            continue
        seen_tags.add(tag)
        tag_warnings: list[str] = []
        component, lic, known = _resolve_one(tag, tag_warnings)
        # the same model named twice (a licence tag and the model ID recorded in the samples) counts once
        if known is not None and seen_known.get(known.name) == lic.id:
            continue
        if known is not None:
            seen_known[known.name] = lic.id
        warnings += [w for w in tag_warnings if w not in warnings]
        components.append(component)
        chosen.append(lic)
    if not chosen:
        return Resolution("unknown", None, None, False, [],
                          ["no licence tags given: set license_tags in the config (kind:name:licence)"])
    strictest = max(chosen, key=lambda lic: lic.rank)
    distinct = {lic.id for lic in chosen}
    commercial = all(lic.commercial for lic in chosen)
    if not commercial:
        blockers = ", ".join(f"{c.name} ({c.license})" for c, lic in zip(components, chosen) if not lic.commercial)
        warnings.append(f"commercial use is not allowed (or not established) because of: {blockers}")
    if len(distinct) > 1:
        warnings.append(f"{len(distinct)} licences apply ({', '.join(sorted(distinct))}); the card names the "
                        f"strictest, '{strictest.id}', and every component's terms still apply")
    if strictest.id == UNKNOWN.id:
        return Resolution("unknown", None, None, False, components, warnings)
    if strictest.standard:
        return Resolution(strictest.id, None, strictest.link or None, commercial, components, warnings)
    return Resolution("other", strictest.id, strictest.link or None, commercial, components, warnings)
