"""Optimizer and scheduler construction from the upstream policy.optimizer / policy.scheduler forms."""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.policy.optim import build_optimizer, build_scheduler

UPSTREAM_OPTIMIZER = {
    "name": "torch.optim.AdamW",
    "kwargs": {"lr": 1e-6, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8, "foreach": False, "fused": False},
}
UPSTREAM_SCHEDULER = [
    {"name": "torch.optim.lr_scheduler.LinearLR", "kwargs": {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 4}},
    {"name": "torch.optim.lr_scheduler.ConstantLR", "kwargs": {"factor": 1.0, "total_iters": 10000000000}},
    {"milestones": [4]},
]


def _params() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.zeros(3))]


def test_upstream_adamw_block_builds_adamw():
    """The Nemotron optimizer block (betas as a YAML list, foreach/fused flags) gives AdamW with those values."""
    opt = build_optimizer(_params(), UPSTREAM_OPTIMIZER)
    assert type(opt) is torch.optim.AdamW
    group = opt.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-6, (0.9, 0.999), 1e-8, 0.0)


def test_bare_class_name_and_default():
    """'SGD' means torch.optim.SGD; a null optimizer block means AdamW with torch defaults."""
    assert type(build_optimizer(_params(), {"name": "SGD", "kwargs": {"lr": 0.1}})) is torch.optim.SGD
    assert type(build_optimizer(_params(), None)) is torch.optim.AdamW


def test_adam_runs_fused_unless_the_config_chooses_and_steps_as_the_loop():
    """Unset fused/foreach: AdamW runs its fused kernel, and five steps on random gradients land where torch's
    per-parameter loop lands (float rounding apart); an explicit fused/foreach is kept as given."""
    weights = [torch.randn(64, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    grads = [
        [torch.randn(64, 32, generator=torch.Generator().manual_seed(10 * s + i)) for i in range(3)] for s in range(5)
    ]
    results = []
    for kwargs in ({"lr": 1e-2, "weight_decay": 0.1}, {"lr": 1e-2, "weight_decay": 0.1, "foreach": False}):
        params = [torch.nn.Parameter(w.clone()) for w in weights]
        opt = build_optimizer(params, {"name": "torch.optim.AdamW", "kwargs": kwargs})
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        results.append((opt.param_groups[0]["fused"], params))
    (fused, stepped), (loop_fused, looped) = results
    assert fused is True and not loop_fused
    for a, b in zip(stepped, looped):
        assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not build_optimizer(_params(), UPSTREAM_OPTIMIZER).param_groups[0]["fused"]
    assert not build_optimizer(_params(), {"name": "SGD", "kwargs": {"lr": 0.1}}).param_groups[0].get("fused")


@pytest.mark.parametrize("name", ["os.system", "torch.nn.Linear", "torch.optim.lr_scheduler", "torch.optim.Nope"])
def test_names_outside_torch_optim_are_refused_with_the_known_list(name):
    """Only torch.optim optimizer classes resolve; the error lists them (e.g. torch.optim.AdamW)."""
    with pytest.raises(ConfigError, match=r"policy.optimizer.name.*torch\.optim\.AdamW"):
        build_optimizer(_params(), {"name": name, "kwargs": {}})


def test_unknown_kwarg_is_named():
    """A misspelt optimizer kwarg is a ConfigError naming it and the accepted ones."""
    with pytest.raises(ConfigError, match=r"\['weight_decy'\].*weight_decay"):
        build_optimizer(_params(), {"name": "torch.optim.AdamW", "kwargs": {"weight_decy": 0.1}})


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_upstream_list_form_is_warmup_then_constant():
    """LinearLR(0.1 -> 1.0 over 4) then ConstantLR at milestone 4: lr = 1.0 * [.1, .325, .55, .775, 1, 1, 1]."""
    opt = build_optimizer(_params(), {"name": "torch.optim.SGD", "kwargs": {"lr": 1.0}})
    sched = build_scheduler(opt, UPSTREAM_SCHEDULER)
    assert isinstance(sched, lr_scheduler.SequentialLR)
    assert_close(_lrs(sched, opt, 7), [0.1, 0.325, 0.55, 0.775, 1.0, 1.0, 1.0])


def test_single_mapping_and_null():
    """A single {name, kwargs} is that scheduler; null means no scheduler (constant lr)."""
    opt = build_optimizer(_params(), {"name": "torch.optim.SGD", "kwargs": {"lr": 1.0}})
    sched = build_scheduler(opt, {"name": "torch.optim.lr_scheduler.StepLR", "kwargs": {"step_size": 2, "gamma": 0.5}})
    assert_close(_lrs(sched, opt, 5), [1.0, 1.0, 0.5, 0.5, 0.25])
    assert build_scheduler(opt, None) is None


@pytest.mark.parametrize(
    "cfg, message",
    [
        ([UPSTREAM_SCHEDULER[0], UPSTREAM_SCHEDULER[1]], "2 schedulers need 1 milestones"),
        ([{"kwargs": {}}], "needs a name"),
        ([{"name": "torch.optim.lr_scheduler.SequentialLR"}], "cannot be named here"),
        ({"name": "builtins.eval"}, r"known: \[.*LinearLR"),
    ],
)
def test_bad_scheduler_configs(cfg, message):
    """Missing milestones, nameless entries, SequentialLR by name and foreign names are ConfigErrors."""
    opt = build_optimizer(_params(), {"name": "torch.optim.SGD", "kwargs": {"lr": 1.0}})
    with pytest.raises(ConfigError, match=message):
        build_scheduler(opt, cfg)
