"""Every policy backend implements the Policy protocol (rlvr.policy.base) that grpo/roles.py relies on."""

from __future__ import annotations

import inspect

import pytest

from rlvr.policy.base import LossFunction, Policy

PROTOCOL_METHODS = sorted(
    name for name, member in vars(Policy).items() if inspect.isfunction(member) and not name.startswith("_")
)


def _backends() -> list[type]:
    from rlvr.distributed.policy_group import RayPolicyGroup
    from rlvr.policy.hf import HFPolicy
    from rlvr.policy.megatron import MegatronPolicy

    return [HFPolicy, MegatronPolicy, RayPolicyGroup]


def test_the_protocol_lists_what_the_roles_call():
    assert PROTOCOL_METHODS == [
        "close",
        "get_logprobs",
        "hf_model",
        "hf_state_dict",
        "load_model_state",
        "load_state_dict",
        "offload_before_refit",
        "prepare_for_lp_inference",
        "save_adapter",
        "state_dict",
        "train",
    ]


@pytest.mark.parametrize("backend", _backends(), ids=lambda cls: cls.__name__)
def test_backend_implements_every_method_with_the_protocol_keywords(backend):
    """Each method exists, and accepts the keyword arguments the protocol declares (same names)."""
    for name in PROTOCOL_METHODS:
        method = getattr(backend, name, None)
        assert callable(method), f"{backend.__name__}.{name} is missing"
        wanted = inspect.signature(getattr(Policy, name)).parameters
        given = inspect.signature(method).parameters
        keywords = [p for p in wanted.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        assert all(p.name in given for p in keywords), f"{backend.__name__}.{name}: keywords {list(wanted)}"


def test_an_hf_policy_instance_is_a_policy_and_the_loss_a_loss_function(model):
    from rlvr.grpo.loss import ClippedPGLoss
    from rlvr.policy.hf import HFPolicy

    policy = HFPolicy(model)
    assert isinstance(policy, Policy)
    assert isinstance(ClippedPGLoss(), LossFunction)
    assert policy.save_adapter(None, base_model=None) is None  # not LoRA: nothing written
    policy.close()
