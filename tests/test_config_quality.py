"""configs/base.yaml lists every key of every section (the quality sections included), with valid values."""

import yaml
from pydantic import BaseModel

from pipeline.config import REPO_ROOT, ConfigError, RunConfig, load_config


def missing_keys(model: type[BaseModel], data: dict, prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        if name not in data:
            missing.append(prefix + name)
            continue
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(data[name], dict):
            missing += missing_keys(sub, data[name], f"{prefix}{name}.")
    return missing


def test_base_yaml_lists_every_key():
    data = yaml.safe_load((REPO_ROOT / "configs" / "base.yaml").read_text(encoding="utf-8"))
    for section in ("dedup", "judge", "personal_data", "diversity"):
        assert missing_keys(RunConfig.model_fields[section].annotation, data[section], section + ".") == []
    cfg = load_config(REPO_ROOT / "configs" / "base.yaml")
    assert cfg.dedup == RunConfig().dedup and cfg.judge == RunConfig().judge
    assert cfg.personal_data == RunConfig().personal_data and cfg.diversity == RunConfig().diversity


def test_quality_settings_are_validated():
    for override, field in (("judge.min_scores.safety=7", "judge.min_scores.safety"),
                            ("dedup.threshold=1.5", "dedup.threshold"),
                            ("personal_data.policy.phone=blur", "personal_data.policy.phone"),
                            ("judge.min_scores.fluency=3", "judge.min_scores.fluency")):
        try:
            load_config(REPO_ROOT / "configs" / "base.yaml", [override])
        except ConfigError as exc:
            assert f"command line: {field}" in str(exc), exc
        else:
            raise AssertionError(f"{override} was accepted")


def test_judge_prompts_do_not_change_conversation_ids(tmp_path):
    import shutil

    prompts = tmp_path / "prompts"
    shutil.copytree(REPO_ROOT / "prompts", prompts)
    cfg = load_config(REPO_ROOT / "configs" / "base.yaml", [f"plan.prompts_dir={prompts}"])
    before = cfg.text_digest()
    (prompts / "en" / "judge_system.jinja").write_text("Score it.", encoding="utf-8")
    assert cfg.text_digest() == before
    (prompts / "en" / "system.jinja").write_text("Write it.", encoding="utf-8")
    assert cfg.text_digest() != before
