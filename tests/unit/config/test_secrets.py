"""Secrets by value: what came from the environment is redacted when printed, a reference when written.

Loads the shipped tiny config with the overrides a user would type; no Snakemake here (tests/workflow has the
end-to-end checks of metadata, logs and command lines).
"""

from __future__ import annotations

import pytest
import yaml

from rlvr.config import load_step_config
from rlvr.config.secrets import REDACTED, config_yaml, env_secrets, resolve_references
from rlvr.errors import ConfigError, UserError
from rlvr.stages import __main__ as stages
from rlvr.stages.stage_config import read_stage_config, sections_digest, stage_config_path, write_stage_configs
from rlvr.steps.index import resolve_step

RLVR = resolve_step("rl/nemo_rl/rlvr")
RL_PREP = resolve_step("data_prep/rl_prep")
SECRET = "s3cr3t-Value-9f2c"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", SECRET)
    monkeypatch.setenv("TEAM_TOKEN", "tok-77")
    monkeypatch.delenv("UNSET_VAR", raising=False)


def test_ordinary_keys_with_key_or_token_in_their_name_are_plain_values(tmp_path):
    """tokenizer=, input_key/output_key, max_new_tokens, token_level_loss: neither refused nor redacted."""
    tok = tmp_path / "tok"
    cfg = load_step_config(
        RL_PREP,
        "default",
        [
            f"tokenizer={tok}",
            "data.default.input_key=question",
            "data.default.output_key=answer",
            "data.train.data_path=/d/t.jsonl",
        ],
    )
    assert cfg.redacted() == cfg.resolved and cfg.engine_view() == cfg.resolved
    assert cfg.redacted()["tokenizer"] == str(tok)
    assert cfg.redacted()["data"]["default"]["output_key"] == "answer"
    rlvr = load_step_config(RLVR, "tiny", ["loss_fn.token_level_loss=false"])
    shown = rlvr.redacted()
    assert shown["policy"]["generation"]["max_new_tokens"] == 8 and shown["loss_fn"]["token_level_loss"] is False
    assert REDACTED not in rlvr.redacted_yaml()


def test_a_secret_under_a_neutral_key_is_redacted_and_written_as_its_reference(secret_env):
    cfg = load_step_config(RLVR, "tiny", ["logger.wandb.name=${oc.env:MY_API_KEY}"])
    assert cfg.resolved["logger"]["wandb"]["name"] == SECRET
    assert cfg.redacted()["logger"]["wandb"]["name"] == REDACTED
    assert SECRET not in cfg.redacted_yaml()
    written = config_yaml(cfg.engine_view())
    assert SECRET not in written and REDACTED not in written
    assert yaml.safe_load(written)["logger"]["wandb"]["name"] == "${oc.env:MY_API_KEY}"


def test_interpolated_and_copied_secrets_are_secrets_too(secret_env):
    """``team-${oc.env:...}`` keeps its text around the reference; ``${a.b}`` of a secret is the same secret."""
    cfg = load_step_config(
        RLVR,
        "tiny",
        [
            "logger.wandb.entity=team-${oc.env:TEAM_TOKEN}/x",
            "logger.wandb.name=${oc.env:MY_API_KEY}",
            "logger.wandb.project=${logger.wandb.name}",
        ],
    )
    keys = ("entity", "name", "project")
    wandb = cfg.redacted()["logger"]["wandb"]
    assert {k: wandb[k] for k in keys} == {"entity": REDACTED, "name": REDACTED, "project": REDACTED}
    written = cfg.engine_view()["logger"]["wandb"]
    assert {k: written[k] for k in keys} == {
        "entity": "team-${oc.env:TEAM_TOKEN}/x",
        "name": "${oc.env:MY_API_KEY}",
        "project": "${oc.env:MY_API_KEY}",
    }
    assert resolve_references(cfg.engine_view(), "test") == cfg.resolved


def test_defaults_escapes_and_decoded_numbers_round_trip(secret_env):
    """A default with a comma and a quote, a literal ``${``, and a number read with oc.decode (not a secret)."""
    cfg = load_step_config(
        RLVR,
        "tiny",
        [
            "run.env.env_vars.A=${oc.env:UNSET_VAR,'a,b\\'c'}",
            "run.env.container_image=img\\${not_an_interpolation}",
            "grpo.max_num_steps=${oc.decode:${oc.env:UNSET_VAR,7}}",
        ],
    )
    assert cfg.resolved["run"]["env"]["env_vars"]["A"] == "a,b'c"
    assert cfg.resolved["grpo"]["max_num_steps"] == 7 and cfg.redacted()["grpo"]["max_num_steps"] == 7
    assert list(env_secrets(cfg.resolved, cfg.unresolved)) == [("run", "env", "env_vars", "A")]
    assert cfg.redacted()["run"]["env"]["container_image"] == "img${not_an_interpolation}"
    assert resolve_references(cfg.engine_view(), "test") == cfg.resolved


def test_path_like_keys_from_the_environment_stay_in_clear(monkeypatch, tmp_path):
    """The short allow-list: data paths, tokenizer and model folders are planned with, so never redacted."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    cfg = load_step_config(
        RL_PREP, "default", ["tokenizer=${oc.env:DATA_DIR}/tok", "data.train.data_path=${oc.env:DATA_DIR}/train.jsonl"]
    )
    assert cfg.engine_view()["tokenizer"] == f"{tmp_path}/tok" == cfg.redacted()["tokenizer"]
    assert cfg.engine_view()["data"]["train"]["data_path"] == f"{tmp_path}/train.jsonl"
    default = load_step_config(RLVR, "default", ["data.train.data_path=/d/t.jsonl", "data.validation.data_path=/d/v"])
    assert default.redacted()["policy"]["model_name"] == default.resolved["policy"]["model_name"] != REDACTED


def test_literal_credentials_are_refused_by_their_format():
    fails = pytest.raises(ConfigError, match=r"'logger.wandb.name' holds a literal secret.*oc.env")
    with fails:
        load_step_config(RLVR, "tiny", ["logger.wandb.name=hf_" + "a1B2c3D4e5" * 4])
    with pytest.raises(ConfigError, match=r"'logger.wandb.project' holds a literal secret"):
        load_step_config(RLVR, "tiny", ["logger.wandb.project=sk-proj-abcdefghijklmnopqrstuvwx"])
    load_step_config(RLVR, "tiny", ["logger.wandb.name=hf_short", "logger.wandb.project=my-token-study"])


def test_a_written_run_config_loads_back_to_the_same_config(secret_env, tmp_path):
    """``-c <run>/config.yaml``: the written form re-loads, secret references resolved again."""
    cfg = load_step_config(
        RLVR,
        "tiny",
        ["logger.wandb.name=${oc.env:MY_API_KEY}", "grpo.max_num_steps=3", "run.env.container_image=img\\${x}"],
    )
    path = tmp_path / "config.yaml"
    path.write_text(config_yaml(cfg.engine_view()))
    again = load_step_config(RLVR, str(path))
    assert again.resolved == cfg.resolved
    assert again.redacted()["logger"]["wandb"]["name"] == REDACTED


def test_stage_config_files_carry_references_and_resolve_in_the_stage(secret_env, tmp_path):
    cfg = load_step_config(RLVR, "tiny", ["logger.wandb.name=${oc.env:MY_API_KEY}"]).engine_view()
    sections = {"logger": cfg["logger"]}
    (path,) = write_stage_configs(tmp_path, {"rlvr": sections})
    assert path == stage_config_path(tmp_path, "rlvr") and SECRET not in path.read_text()
    assert read_stage_config(path)["logger"]["wandb"]["name"] == SECRET
    assert read_stage_config(path, resolve=False) == sections
    changed = {"logger": {**cfg["logger"], "num_val_samples_to_print": 3}}
    assert sections_digest(sections) == sections_digest(dict(sections)) != sections_digest(changed)
    with pytest.raises(UserError, match=r"stage config .*missing.yaml does not exist"):
        read_stage_config(tmp_path / "missing.yaml")


def test_a_stage_without_its_secret_fails_with_one_message(tmp_path, capsys, monkeypatch):
    """The variable is missing in the stage's environment: exit 2, the key and the file named, no traceback."""
    monkeypatch.delenv("UNSET_VAR", raising=False)
    (path,) = write_stage_configs(tmp_path, {"tiny_data": {"tiny": {"seed": 1, "data": {"x": "${oc.env:UNSET_VAR}"}}}})
    assert stages.main(["tiny_data", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot resolve 'tiny.data.x'" in err and "UNSET_VAR" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
