from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, ConfigError, dump_resolved, load_config


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_inheritance_and_overrides(tmp_path):
    write(tmp_path, "base.yaml", "dataset: a\nplan: {num_conversations: 7, seed: 3}\ntts: {max_actors: 3}\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ndataset: b\nplan: {num_conversations: 9}\n")
    cfg = load_config(child, ["tts.max_actors=2", "verify.max_wer=0.1"])
    assert cfg.dataset == "b"
    assert cfg.plan.num_conversations == 9 and cfg.plan.seed == 3  # merged, not replaced
    assert cfg.tts.max_actors == 2 and cfg.verify.max_wer == 0.1


def test_shipped_configs_validate():
    for name in ("base.yaml", "en.yaml", "smoke.yaml"):
        cfg = load_config(REPO_ROOT / "configs" / name)
        assert cfg.plan.languages == ["en"]
    zh = load_config(REPO_ROOT / "configs/zh.yaml")
    assert zh.plan.languages == ["zh"] and zh.plan.exchanges["zh"].min >= 2
    smoke = load_config(REPO_ROOT / "configs/smoke.yaml")
    assert (smoke.plan.num_conversations, smoke.plan.exchanges["en"].min, smoke.plan.exchanges["en"].max) == (20, 2, 4)


def test_unknown_key_names_file_and_field(tmp_path):
    bad = write(tmp_path, "bad.yaml", "base: ../base.yaml\ntts: {max_actor: 2}\n".replace("../base.yaml", str(REPO_ROOT / "configs/base.yaml")))
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    assert "bad.yaml: tts.max_actor: unknown key" in str(err.value)


def test_bad_value_names_the_file_that_set_it(tmp_path):
    write(tmp_path, "base.yaml", "verify: {max_wer: 1.5}\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    assert "base.yaml: verify.max_wer: Input should be less than or equal to 1 (got 1.5)" in str(err.value)


def test_override_errors_name_the_command_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["plan.num_conversations=-1"])
    assert "command line: plan.num_conversations: Input should be greater than or equal to 1 (got -1)" in str(err.value)
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        load_config(None, ["tts.max_actors"])


@pytest.mark.parametrize("text, fragment", [
    ("dataset: ../evil\n", "dataset: Value error, dataset name '../evil' must match"),
    ("plan: {exchanges: {en: {min: 5, max: 2}}}\n", "min (5) is greater than max (2)"),
    ("shard: {splits: {train: 0.5, test: 0.2}}\n", "split fractions sum to 0.7"),
    ("plan: {languages: [en, xx]}\n", "plan.languages.1: Input should be 'en' or 'zh'"),
    ("plan: {languages: [en, zh]}\n", "no exchanges range for language(s) ['zh']"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("plan: [unclosed\n", "not valid YAML"),
])
def test_bad_configs(tmp_path, text, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "c.yaml", text))
    assert fragment in str(err.value)


def test_inheritance_loop_and_missing_file(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match="inheritance loops"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_resolved_config_holds_no_secret_values(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-not-appear")
    text = dump_resolved(load_config(REPO_ROOT / "configs/smoke.yaml", out_dir=tmp_path))
    assert "OPENAI_API_KEY" in text and "sk-should-not-appear" not in text


def test_out_dir_default_and_override(tmp_path):
    cfg = load_config(REPO_ROOT / "configs/smoke.yaml")
    assert cfg.output_dir() == REPO_ROOT / "out" / "speechchat-smoke"
    assert load_config(REPO_ROOT / "configs/smoke.yaml", out_dir=tmp_path / "x").output_dir() == tmp_path / "x"


def test_rewrite_config_needs_a_source_path(tmp_path):
    with pytest.raises(ConfigError, match="source.kind 'dataset' needs source.path"):
        load_config(REPO_ROOT / "configs/rewrite_en.yaml")
    cfg = load_config(REPO_ROOT / "configs/rewrite_en.yaml", [f"source.path={tmp_path / 'x.jsonl'}"])
    assert cfg.source.kind == "dataset" and cfg.source.path == tmp_path / "x.jsonl"


@pytest.mark.parametrize("overrides, fragment", [
    (["voices.held_out_test_speakers=0.1"], "needs a 'test' split with a fraction > 0 in shard.splits"),
    (["verify.max_error_rate={zh: 1.5}"], "max_error_rate.zh = 1.5 is outside [0, 1]"),
    (["voices.held_out_test_speakers=1.0"], "voices.held_out_test_speakers"),
    (["verify.device=cuda"], "verify.device 'cuda' needs verify.num_gpus > 0"),
    (["verify.device=cpu", "verify.num_gpus=0.5"], "set verify.num_gpus=0 or verify.device=auto"),
    (["verify.asr_batch_size=0"], "asr_batch_size"),
])
def test_voice_and_threshold_settings_are_checked(overrides, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(REPO_ROOT / "configs/smoke.yaml", overrides)
    assert fragment in str(err.value)


def test_held_out_speakers_with_a_test_split_validate():
    cfg = load_config(REPO_ROOT / "configs/en.yaml", ["voices.held_out_test_speakers=0.1"])
    assert cfg.voices.held_out_test_speakers == 0.1 and cfg.shard.splits["test"] > 0


def _model_keys(model, prefix=""):
    from pydantic import BaseModel

    keys = set()
    for name, field in model.model_fields.items():
        sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        keys |= _model_keys(sub, f"{prefix}{name}.") if sub else {f"{prefix}{name}"}
    return keys


def _yaml_keys(data, model, prefix=""):
    from pydantic import BaseModel

    keys = set()
    for name, value in data.items():
        field = model.model_fields.get(name)
        sub = field.annotation if field and isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        keys |= _yaml_keys(value, sub, f"{prefix}{name}.") if sub and isinstance(value, dict) else {f"{prefix}{name}"}
    return keys


def test_base_yaml_lists_every_key_with_its_default():
    """configs/base.yaml says it holds every key with its default: compared with the config models."""
    import yaml

    from pipeline.config import RunConfig

    base = yaml.safe_load((REPO_ROOT / "configs/base.yaml").read_text(encoding="utf-8"))
    declared, listed = _model_keys(RunConfig), _yaml_keys(base, RunConfig)
    assert declared - listed == set(), "keys of the config models missing from configs/base.yaml"
    assert listed - declared == set(), "keys in configs/base.yaml that no config model has"
    assert load_config(REPO_ROOT / "configs/base.yaml").model_dump(mode="json") == RunConfig().model_dump(mode="json")


def test_configuration_doc_is_generated_from_the_models():
    """docs/configuration.md is `python -m pipeline.config`'s output; a field added or re-described without
    regenerating it fails here."""
    from pipeline.config import reference_markdown

    doc = (REPO_ROOT / "docs/configuration.md").read_text(encoding="utf-8")
    assert doc == reference_markdown(), "regenerate: python -m pipeline.config > docs/configuration.md"
    for key in ("`tts.max_actors`", "`verify.asr_batch_size`", "`voices.held_out_test_speakers`", "`workers.max_restarts`"):
        assert key in doc
