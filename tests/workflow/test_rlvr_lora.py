"""The rlvr stage with LoRA (policy.dtensor_cfg.lora_cfg), as Snakemake runs it: adapter-only step checkpoints,
bit-exact resume, merged final artifact and the PEFT adapter folder.

Uses the session's prepared small tiny run and the GRPO run of test_rlvr_resume (tests/workflow/conftest.py: a 10-step
SFT policy, the DAPO overlong penalty for reward spread).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tests.workflow.conftest import metric_steps, rlvr_command, run_stage

pytestmark = pytest.mark.slow

LORA = [
    "policy.dtensor_cfg.lora_cfg.enabled=true",
    "policy.dtensor_cfg.lora_cfg.dim=4",
    "policy.dtensor_cfg.lora_cfg.alpha=16",
    "policy.optimizer.kwargs.lr=0.002",
    "grpo.max_num_steps=4",
]


def adapter(run_dir, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "rlvr" / "ckpts" / f"step_{step}" / "policy" / "model.safetensors"))


def test_lora_run_checkpoints_the_adapter_resumes_exactly_and_exports_merged(prepared, tmp_path):
    """A 4-step LoRA run vs the same run stopped after step 2 and re-run: resumed from step_2, identical adapter
    and metrics; step checkpoints hold only lora_A/lora_B; checkpoint_megatron holds merged weights that differ
    from the SFT policy; rlvr/lora_adapter is a PEFT folder that reproduces them on the SFT policy."""
    from peft import PeftModel

    from rlvr.convert.hf_megatron import load_hf_model_from_megatron

    reference = tmp_path / "reference"
    run_stage(rlvr_command(prepared, reference, *LORA))
    resumed = tmp_path / "resumed"
    run_stage(rlvr_command(prepared, resumed, *LORA, "grpo.max_num_steps=2"))
    log = run_stage(rlvr_command(prepared, resumed, *LORA))
    assert "[resume] resuming from" in log and "step_2 (step 2" in log
    assert metric_steps(resumed) == [0, 1, 2, 3, 4]

    ref_w, res_w = adapter(reference, 4), adapter(resumed, 4)
    assert ref_w.keys() == res_w.keys() and all(".lora_A." in k or ".lora_B." in k for k in ref_w)
    for name in ref_w:
        torch.testing.assert_close(res_w[name], ref_w[name], rtol=0, atol=0, msg=name)
    assert max(float(t.abs().max()) for k, t in ref_w.items() if ".lora_B." in k) > 1e-4  # the adapter moved
    ref_m = [json.loads(line) for line in (reference / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    res_m = [json.loads(line) for line in (resumed / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    for key in ("train/loss", "train/reward", "train/grad_norm", "validation/accuracy"):
        assert [m.get(key) for m in res_m] == [m.get(key) for m in ref_m], key

    sft = load_hf_model_from_megatron(prepared / "hf_to_megatron" / "checkpoint_megatron")
    final = load_hf_model_from_megatron(reference / "rlvr" / "checkpoint_megatron")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(final.state_dict()[q], sft.state_dict()[q])
    folder = reference / "rlvr" / "lora_adapter"
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
    adapted = PeftModel.from_pretrained(sft, folder).merge_and_unload()
    for name, tensor in final.state_dict().items():
        torch.testing.assert_close(adapted.state_dict()[name], tensor, rtol=1e-6, atol=1e-6, msg=name)
