"""The config loader: -c names and paths, defaults inheritance, interpolation, overrides, schema errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rlvr.config import load_step_config
from rlvr.config.files import compose, find_config_file
from rlvr.errors import ConfigError
from rlvr.steps.index import resolve_step
from tests.conftest import REPO_ROOT as REPO

RLVR = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("name", ["default", "tiny", "nemo_gym"])
def test_every_shipped_config_passes_its_own_checks(name):
    """Unlike upstream, each shipped config resolves, validates and passes the cross-field checks."""
    cfg = load_step_config(RLVR, name, [] if name == "tiny" else DATA)
    assert cfg.name == name
    grpo, policy = cfg.resolved["grpo"], cfg.resolved["policy"]
    assert grpo["num_prompts_per_step"] * grpo["num_generations_per_prompt"] % policy["train_global_batch_size"] == 0


def test_tiny_inherits_default_and_overrides_some_keys():
    """tiny.yaml names default.yaml in `defaults:`; its own keys win, the rest comes from the base."""
    cfg = load_step_config(RLVR, "tiny").resolved
    assert cfg["grpo"]["num_prompts_per_step"] == 16  # tiny's own value (default.yaml: 32)
    assert cfg["loss_fn"]["ratio_clip_max"] == 0.28  # inherited from default.yaml
    assert cfg["data"]["max_input_seq_length"] == cfg["policy"]["max_total_sequence_length"] == 64  # ${...}


def test_name_versus_path_is_decided_by_syntax(tmp_path, monkeypatch):
    """`-c tiny` is a name in the step's config folder; `-c ./x.yaml` or `-c a/b` is a path from the cwd."""
    assert find_config_file("tiny", RLVR.config_dir).name == "tiny.yaml"
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "tiny", "grpo: {}\n")  # exists, but a bare name is never a path
    with pytest.raises(ConfigError, match=r"Config 'missing' not found in .*Tried: missing.yaml, missing.yml"):
        find_config_file("missing", RLVR.config_dir)
    with pytest.raises(ConfigError, match="Config file not found: nope/x.yaml"):
        find_config_file("nope/x.yaml", RLVR.config_dir)


def test_defaults_list_relative_paths_and_suffix(tmp_path):
    """`defaults:` takes a list, resolves relative to the including file, adds .yaml and skips _self_."""
    write(tmp_path / "base/a.yaml", "x: 1\ny: {z: 1, w: 1}\nl: [1, 2]\n")
    write(tmp_path / "base/b.yaml", "y: {z: 2}\nl: [3]\n")
    top = write(tmp_path / "top.yaml", "defaults: [base/a, _self_, base/b.yaml]\ny: {w: 3}\n")
    composed = compose(top)
    from omegaconf import OmegaConf

    assert OmegaConf.to_container(composed.cfg) == {"x": 1, "y": {"z": 2, "w": 3}, "l": [3]}
    assert [p.name for p in composed.files] == ["a.yaml", "b.yaml", "top.yaml"]


def test_defaults_cycle_and_missing_base_are_errors(tmp_path):
    """A cycle names the chain; a missing base names both files."""
    write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    write(tmp_path / "b.yaml", "defaults: a\n")
    with pytest.raises(ConfigError, match=r"Cyclic config inheritance detected: a.yaml -> b.yaml -> a.yaml"):
        compose(tmp_path / "a.yaml")
    write(tmp_path / "c.yaml", "defaults: [gone]\n")
    with pytest.raises(ConfigError, match=r"Base config '.*gone.yaml' referenced from .*c.yaml does not exist"):
        compose(tmp_path / "c.yaml")


def test_env_interpolation_with_default(monkeypatch):
    """`${oc.env:VAR,default}` resolves from the environment, else the default."""
    monkeypatch.delenv("RL_POLICY_MODEL", raising=False)
    cfg = load_step_config(RLVR, "default", DATA)
    assert cfg.resolved["policy"]["model_name"] == "meta-llama/Llama-3.2-1B-Instruct"
    monkeypatch.setenv("RL_POLICY_MODEL", "/models/sft")
    assert load_step_config(RLVR, "default", DATA).resolved["policy"]["model_name"] == "/models/sft"


def test_overrides_are_yaml_typed_and_applied_last():
    """`k=v` values parse as YAML (int, bool, null, list) and beat every file."""
    cfg = load_step_config(
        RLVR,
        "tiny",
        [
            "grpo.max_num_steps=3",
            "grpo.normalize_rewards=false",
            'policy.generation.stop_strings=["\\n"]',
            "grpo.val_batch_size=null",
            "grpo.max_val_samples=null",
        ],
    ).resolved
    assert cfg["grpo"]["max_num_steps"] == 3
    assert cfg["grpo"]["normalize_rewards"] is False
    assert cfg["policy"]["generation"]["stop_strings"] == ["\n"]
    assert cfg["grpo"]["val_batch_size"] is None


def test_unknown_key_names_path_file_line_and_closest_key(tmp_path):
    """A typo in a file is reported with its dotted path, file:line and the closest valid key."""
    path = write(
        tmp_path / "mine.yaml",
        f"""\
        defaults: {RLVR.config_dir / "tiny.yaml"}
        grpo:
          num_generation_per_prompt: 4
        """,
    )
    with pytest.raises(ConfigError) as exc:
        load_step_config(RLVR, str(path))
    msg = str(exc.value)
    assert "unknown key 'grpo.num_generation_per_prompt'" in msg
    assert f"{path}:3" in msg
    assert "did you mean 'grpo.num_generations_per_prompt'?" in msg


def test_unknown_key_from_override_names_the_override():
    """An override typo names the override token."""
    with pytest.raises(ConfigError, match=r"unknown key 'polcy' \(from override 'polcy.x=1'\): did you mean 'policy'"):
        load_step_config(RLVR, "tiny", ["polcy.x=1"])


def test_type_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"'grpo.max_num_steps' .*'abc' is not of type 'integer'"):
        load_step_config(RLVR, "tiny", ["grpo.max_num_steps=abc"])


@pytest.mark.parametrize(
    "override",
    [
        "grpo.async_grpo.enabled=true",
        "logger.swanlab_enabled=true",
        "policy.dtensor_cfg.tensor_parallel_size=2",
        "grpo.use_best_at_k=true",
        "policy.generation.vllm_cfg.kv_cache_dtype=fp8",
        "policy.generation.vllm_kwargs.swap_space=4",
        "policy.megatron_cfg.cuda_graph_impl=local",
        "reward_penalties.penalize_empty_final_answer=true",
        "data_plane.enabled=true",
    ],
)
def test_unimplemented_upstream_keys_are_refused_unless_off(override):
    """Keys accepted for compatibility are accepted at their off value and refused as 'not supported' otherwise."""
    with pytest.raises(ConfigError, match="is not supported by rlvr yet"):
        load_step_config(RLVR, "tiny", [override])


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="bad override"):
        load_step_config(RLVR, "tiny", ["=3"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path / "broken.yaml", "grpo:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+:\d+: invalid YAML"):
        load_step_config(RLVR, str(path))


def test_removal_override():
    """`~key` removes a key (the Hydra meaning), which then takes its schema default (tiny's 50 -> 0)."""
    cfg = load_step_config(RLVR, "tiny", ["~grpo.val_period"]).resolved
    assert cfg["grpo"]["val_period"] == 0


def test_scientific_notation_is_a_float_in_files_and_overrides(tmp_path):
    """`1e-4` is a float (PyYAML's YAML 1.1 would read a string and break the optimizer at run time)."""
    path = write(
        tmp_path / "sci.yaml", f"defaults: {RLVR.config_dir / 'tiny.yaml'}\nloss_fn:\n  ratio_clip_min: 2e-1\n"
    )
    cfg = load_step_config(RLVR, str(path), ["policy.optimizer.kwargs.lr=1e-4"]).resolved
    assert cfg["policy"]["optimizer"]["kwargs"]["lr"] == 1e-4
    assert cfg["loss_fn"]["ratio_clip_min"] == 0.2


def test_a_runs_written_config_keeps_the_runs_name(tmp_path):
    """`-c <run>/config.yaml` plans the same run: the name recorded in the file's first line, not 'config'."""
    record = tmp_path / "results" / "myrun" / "config.yaml"
    record.parent.mkdir(parents=True)
    body = (REPO / "steps/rl/nemo_rl/rlvr/config/default.yaml").read_text()
    record.write_text("# rl/nemo_rl/rlvr -c myrun data.train.data_path=/x\n# resolved; secrets redacted\n" + body)
    assert load_step_config(RLVR, str(record), DATA).name == "myrun"
    plain = tmp_path / "config.yaml"
    plain.write_text(body)
    assert load_step_config(RLVR, str(plain), DATA).name == "config"  # no record line: the file's stem


def test_a_runs_written_config_resolves_to_the_same_config(tmp_path):
    """What `nemotron steps run` writes to <run>/config.yaml loads back to the same resolved config and name."""
    from rlvr.cli.steps import _write_config_record

    first = load_step_config(RLVR, "tiny", ["grpo.max_num_steps=3"])
    _write_config_record(tmp_path, first)
    again = load_step_config(RLVR, str(tmp_path / "config.yaml"))
    assert again.name == "tiny" and again.resolved == first.resolved
