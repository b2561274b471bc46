"""RayPolicyGroup with 2 data-parallel Ray actors (gloo, CPU) against one in-process HFPolicy on the same seed.

Both start from the same ``checkpoint_megatron`` (a tiny random Llama). The micro-batches are chosen so that each
rank's micro-batch holds exactly the rows of one of the single process's micro-batches: then the only
difference is where the micro-batch gradients are added (``.grad`` accumulation vs the gloo SUM of two
addends, which is the same IEEE addition): measured bitwise equal in fp32; the tolerance
(1e-6) only absorbs the order in which the reported metric floats are summed.
"""

from __future__ import annotations

import pytest
from dp_helpers import LOSS_CFG, POLICY_CFG, build_model, make_batch, with_logprobs
from torch.testing import assert_close

from rlvr.convert.hf_megatron import load_hf_model_from_megatron, save_hf_model_as_megatron
from rlvr.errors import ConfigError
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.policy.hf import HFPolicy

pytestmark = pytest.mark.slow
TOL = dict(atol=1e-6, rtol=1e-6)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("dp") / "checkpoint_megatron"
    save_hf_model_as_megatron(build_model(), None, root, 0)
    return root


@pytest.fixture(scope="module")
def group(ray_cluster, checkpoint):
    from rlvr.distributed.policy_group import RayPolicyGroup

    policies = RayPolicyGroup(POLICY_CFG, str(checkpoint), num_workers=2)
    yield policies
    policies.close()


def fresh_single(checkpoint) -> HFPolicy:
    """The 1-worker run: a plain HFPolicy on the checkpoint's weights."""
    return HFPolicy.from_config(POLICY_CFG, model=load_hf_model_from_megatron(checkpoint, "float32"))


def test_get_logprobs_match_one_process(group, checkpoint):
    """Filtered and unfiltered log-probs of 8 and 7 rows (chunks 4+4 and 4+3) equal the single policy's."""
    single = fresh_single(checkpoint)
    group.load_state_dict(single.state_dict())
    batch = make_batch(rows=8)
    for rows in (8, 7):
        ids, mask = batch["input_ids"][:rows], batch["attention_mask"][:rows]
        for filtered in (True, False):
            expected = single.get_logprobs(ids, mask, micro_batch_size=4, filtered=filtered)
            got = group.get_logprobs(ids, mask, micro_batch_size=4, filtered=filtered)
            assert got.shape == (rows, 10)
            assert_close(got, expected, **TOL)


def test_two_workers_train_like_one(group, checkpoint):
    """B=8, G=4 (2 optimizer steps per call), 2 train() calls with clipping, AdamW, a scheduler and KL: the
    same metrics per call, the same final weights (also through hf_model()) and optimizer state on both paths."""
    single = fresh_single(checkpoint)
    group.load_state_dict(single.state_dict())
    batch = with_logprobs(make_batch(rows=8), single)
    loss_fn = ClippedPGLoss(LOSS_CFG)
    for call in range(2):
        expected = single.train(batch, loss_fn, global_batch_size=4, micro_batch_size=2)
        got = group.train(batch, loss_fn, global_batch_size=4, micro_batch_size=2)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert_close(got[key], value, **TOL, msg=f"call {call}, metric {key}")
        if call == 0:
            assert expected["grad_norm"] > POLICY_CFG["max_grad_norm"]  # the clip is active
    final = single.model.state_dict()
    for name, weight in group.hf_state_dict().items():
        assert_close(weight, final[name], **TOL, msg=name)
    for name, weight in group.hf_model().state_dict().items():
        assert_close(weight, final[name], **TOL, msg=name)
    state, expected_state = group.state_dict(), single.state_dict()
    assert state["scheduler"]["last_epoch"] == expected_state["scheduler"]["last_epoch"] == 2
    for index, moments in expected_state["optimizer"]["state"].items():
        assert_close(state["optimizer"]["state"][index]["exp_avg_sq"], moments["exp_avg_sq"], atol=1e-9, rtol=1e-5)


def test_global_batch_not_divisible_by_workers_is_a_config_error(group):
    """6 rows, G=3 over 2 workers: ConfigError rollout_batch_not_divisible before any actor is called."""
    batch = make_batch(rows=6)
    with pytest.raises(ConfigError, match="rollout_batch_not_divisible"):
        group.train(batch, ClippedPGLoss(LOSS_CFG), global_batch_size=3, micro_batch_size=1)
