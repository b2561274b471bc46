"""Users' upstream configs passed with ``-c PATH``: Nemotron's default.yaml / nemo_gym.yaml and NeMo-RL's
grpo_math_1B.yaml (and a config inheriting it) either load, with every key honoured or inert by design, or are
refused in ONE message naming every problem. The files are read where CI keeps them, ``../shared`` beside the
clone (never copied into the project)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from rlvr.config import load_step_config
from rlvr.errors import ConfigError
from rlvr.steps.index import resolve_step
from tests.conftest import REPO_ROOT

RLVR = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


def _upstream_dir() -> Path:
    # ../shared beside the clone; a worktree (wt/<name>/) sits one level deeper.
    for root in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        candidate = root / "shared" / "reference" / "upstream_configs"
        if candidate.is_dir():
            return candidate
    pytest.skip("../shared/reference/upstream_configs is not beside this clone")


@pytest.fixture(scope="module")
def upstream() -> Path:
    return _upstream_dir()


def refusal(path: Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as exc:
        load_step_config(RLVR, str(path), overrides)
    return str(exc.value)


@pytest.mark.parametrize("name,rows,gpus", [("default.yaml", 12 * 8, 1), ("nemo_gym.yaml", 16 * 8, 8)])
def test_nemotron_configs_load_given_only_data_paths(upstream, name, rows, gpus):
    """Given only data paths, Nemotron's files load. Their force_on_policy_ratio with rows/32 optimizer steps per
    GRPO step (NeMo-RL asserts on it at setup) runs with the importance weight they switch on, and the plan
    says so, naming the batch size for exactly on-policy steps."""
    from rlvr.config.facts import plan_notes

    path = upstream / "nemotron" / name
    cfg = load_step_config(RLVR, str(path), DATA)
    assert cfg.name == path.stem
    resolved = cfg.resolved
    (note,) = [n for n in plan_notes(resolved) if "force_on_policy_ratio" in n]
    assert f"with {rows // 32} optimizer steps per GRPO step" in note
    assert f"policy.train_global_batch_size={rows} for exactly on-policy steps" in note
    # default.yaml has no cluster section: the schema's defaults fill it; nemo_gym.yaml writes 8 GPUs.
    assert resolved["cluster"] == {
        "num_nodes": 1,
        "gpus_per_node": gpus,
        "num_workers": 1,
        "master_port_range_low": None,
        "master_port_range_high": None,
        "segment_size": None,
    }
    assert resolved["grpo"]["use_best_at_k"] is False and resolved["grpo"]["seq_logprob_error_threshold"] == 2


def test_nemotron_nemo_gym_servers_and_spellings_are_folded_in(upstream):
    """Gym server blocks become local resource servers; num_val_generations_per_prompt is Nemotron's spelling."""
    cfg = load_step_config(RLVR, str(upstream / "nemotron" / "nemo_gym.yaml"), DATA).resolved
    assert cfg["env"]["nemo_gym"]["resource_servers"] == {
        "math_with_judge": {"url": None, "kind": "math"},
        "code_gen": {"url": None, "kind": "code"},
    }
    assert cfg["grpo"]["val_num_generations_per_prompt"] == 2


def test_nemo_rl_grpo_math_1b_is_refused_in_one_message(upstream):
    """Every NeMo-RL interpolation resolves (${mul:...}); what rlvr cannot do is named together, once."""
    message = refusal(upstream / "nemo_rl" / "grpo_math_1B.yaml", [])
    assert "Unsupported interpolation" not in message
    assert message.count("invalid config") == 1
    assert "sequence_packing" not in message  # honoured (policy.packing)
    assert "data.train.dataset_name 'OpenMathInstruct-2' names a hub dataset" in message
    assert "unknown key" not in message  # every key of the file is known


def _megatron_child(upstream: Path, tmp_path: Path) -> Path:
    shutil.copy(upstream / "nemo_rl" / "grpo_math_1B.yaml", tmp_path / "grpo_math_1B.yaml")
    child = tmp_path / "grpo_megatron.yaml"
    child.write_text(
        textwrap.dedent("""\
        defaults: grpo_math_1B.yaml
        policy:
          train_micro_batch_size: 2
          dtensor_cfg:
            enabled: false
          megatron_cfg:
            enabled: true
        """)
    )
    return child


def test_a_config_inheriting_grpo_math_1b_with_megatron_is_refused_in_one_message(upstream, tmp_path):
    """`defaults: grpo_math_1B.yaml` next to a copy, switching on megatron: one message with what to change."""
    message = refusal(_megatron_child(upstream, tmp_path), [])
    assert message.count("invalid config") == 1
    assert "OpenMathInstruct-2" in message and "sequence_packing" not in message
    assert "enable exactly one policy backend" not in message and "unknown key" not in message


def test_a_config_inheriting_grpo_math_1b_with_megatron_loads_once_the_features_are_off(upstream, tmp_path):
    """With local data, the inherited ${mul:...} resolve against the child's values."""
    fixes = [
        "data.train.dataset_name=null",
        "data.train.data_path=/data/train.jsonl",
    ]
    cfg = load_step_config(RLVR, str(_megatron_child(upstream, tmp_path)), fixes).resolved
    assert cfg["policy"]["megatron_cfg"]["enabled"] is True
    assert cfg["policy"]["sequence_packing"]["train_mb_tokens"] == 512 * 2
    assert cfg["policy"]["megatron_cfg"]["optimizer"]["clip_grad"] == 1.0
