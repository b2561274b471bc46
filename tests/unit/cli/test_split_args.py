"""The `steps run` token splitter (upstream semantics, with -r/-b exclusive)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlvr.cli.steps import split_run_args, summarize_plan
from rlvr.errors import UserError


def test_options_anywhere_dotlist_and_passthrough():
    """Our flags may appear anywhere; k=v without a leading dash is an override; the rest goes to Snakemake."""
    a = split_run_args(
        [
            "grpo.max_num_steps=3",
            "rl/nemo_rl/rlvr",
            "--cores",
            "2",
            "-c",
            "tiny",
            "-d",
            "--x=y",
            "--force-squash",
            "-r",
            "local",
            "+a.b=1",
        ]
    )
    assert a.step_id == "rl/nemo_rl/rlvr"
    assert (a.config, a.run_profile, a.dry_run, a.force_squash) == ("tiny", "local", True, True)
    assert a.dotlist == ["grpo.max_num_steps=3", "+a.b=1"]
    assert a.passthrough == ["--cores", "2", "--x=y"]


def test_long_forms_with_equals():
    a = split_run_args(["rlvr", "--config=tiny", "--batch", "local", "--dry-run"])
    assert (a.config, a.batch_profile, a.dry_run) == ("tiny", "local", True)


def test_run_and_batch_exclude_each_other():
    with pytest.raises(UserError, match="exclude each other"):
        split_run_args(["rlvr", "-r", "a", "-b", "b"])


def test_missing_values_and_step():
    with pytest.raises(UserError, match="needs a value"):
        split_run_args(["rlvr", "-c"])
    with pytest.raises(UserError, match="usage"):
        split_run_args(["-d"])


def test_stage_flag_is_refused_not_swallowed():
    """Upstream accepts --stage and ignores it; here it is one clear error rather than a silent no-op."""
    with pytest.raises(UserError, match="--stage does nothing"):
        split_run_args(["rlvr", "--stage"])


def test_plan_summary_reads_rule_reasons():
    out = (
        "rule a:\n    output: x\n    reason: Missing output files: x\nlocalrule all:\n    reason: Input files updated\n"
    )
    assert summarize_plan(out) == ["  a: Missing output files: x"]


def test_removal_overrides_are_overrides_not_snakemake_targets():
    """`~key` (and `~key=`) remove a config key; a `~/path` stays a Snakemake argument."""
    a = split_run_args(["rlvr", "~grpo.val_period", "~policy.generation.top_k=", "~/somewhere", "-d"])
    assert a.dotlist == ["~grpo.val_period", "~policy.generation.top_k="]
    assert a.passthrough == ["~/somewhere"]


def test_name_option_and_the_run_folder_it_picks(monkeypatch):
    """--name (or run.name) replaces the config name in the run folder; without it nothing changes."""
    from rlvr.workflow import run_dir

    args = split_run_args(["rlvr", "--name", "lr-3e-5", "-c", "tiny"])
    assert args.name == "lr-3e-5" and args.config == "tiny" and args.dotlist == []
    assert split_run_args(["rlvr", "--name=b"]).name == "b"
    monkeypatch.delenv("RL_OUTPUT_DIR", raising=False)
    assert run_dir("rl/nemo_rl/rlvr", "tiny", "lr-3e-5") == Path("results/lr-3e-5")
    assert run_dir("rl/nemo_rl/rlvr", "tiny") == Path("results/tiny")
    assert run_dir("data_prep/rl_prep", "tiny", "exp") == Path("results/rl_prep-exp")
