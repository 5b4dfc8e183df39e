"""Quality checks: audio quality and voice identity scores (the speaker importers, the verify stage) and text
quality before TTS (near-duplicates, personal data, diversity: docs/quality.md)."""

from __future__ import annotations

from importlib.util import find_spec

from pipeline.config import ConfigError, VerifyConfig


def require_packages(cfg: VerifyConfig) -> None:
    """Fail before Ray starts when a verify check is on but its package is missing (found without importing it)."""
    needed = [("verify.dnsmos", "speechmos", "speechmos librosa")] * cfg.dnsmos
    needed += [("verify.speaker_consistency", "resemblyzer", "resemblyzer (in the [gpu] extra; pulls torch)")] * cfg.speaker_consistency
    missing = [f"{key} needs the {module} package: pip install {pip}" for key, module, pip in needed if find_spec(module) is None]
    if missing:
        raise ConfigError("; ".join(missing) + " (or switch the check off in the config)")
