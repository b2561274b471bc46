"""env.reward_functions: the built-in format reward, custom callables run in the real verifier workers (errors
counted by cause, never a silent 0), the weighted sum, the pre-flight, and the -d refusals of a bad function."""

from __future__ import annotations

import pytest

from rlvr.errors import ConfigError, UserError
from rlvr.rewards.combined import score_with_functions
from rlvr.rewards.custom import RewardFunction, check_reward_config, format_reward, load_function, reward_functions
from rlvr.rewards.preflight import preflight
from rlvr.rewards.scorer import RewardScorer

FNS = "tests.unit.rewards.reward_fns"
ENV = {"math": {"reward_correct": 1.0, "reward_wrong": -1.0}, "should_use_nemo_gym": False}


def _row(truth: str, prompt: str = "1+1=") -> dict:
    return {"task_name": "math", "ground_truth": truth, "prompt": prompt, "problem": prompt}


@pytest.fixture(scope="module")
def quick_scorer():
    """One worker with a 1 s limit per call, so the hanging function costs one second."""
    with RewardScorer(num_workers=1, timeout_s=1.0, sandbox_concurrency=1) as scorer:
        yield scorer


def test_format_reward_boxed_tag_and_pattern():
    responses = ["so \\boxed{2}", "\\boxed{ }", "\\boxed{\\frac{1}{2}}", "\\boxed{2", "<answer> 4 </answer>", "4"]
    assert format_reward([], responses, []) == [1.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert format_reward([], responses, [], tag="answer") == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert format_reward([], ["<answer></answer>"], [], tag="answer") == [0.0]
    assert format_reward([], responses, [], pattern=r"^\d+$") == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_custom_and_builtin_rewards_are_weighted_and_kept_apart(quick_scorer):
    """reward = 2·verifier (mapped onto reward_correct/_wrong) + 0.5·format + 1·exact + 0.1·len(prompt)·3."""
    functions = reward_functions(
        {
            "reward_functions": [
                {"name": "correct", "function": "verifier", "weight": 2.0},
                {"name": "fmt", "function": "format", "weight": 0.5},
                {"name": "exact", "function": f"{FNS}:exact", "weight": 1.0},
                {"name": "len", "function": f"{FNS}:prompt_length", "weight": 0.1, "kwargs": {"scale": 3.0}},
            ]
        }
    )
    rows = [_row("2"), _row("5", prompt="2+3=?"), _row("7")]
    result = score_with_functions(quick_scorer, functions, rows, ["\\boxed{2}", "5", "\\boxed{8}"], ENV)
    assert result.values == {
        "correct": [1.0, 1.0, -1.0],
        "fmt": [1.0, 0.0, 1.0],
        "exact": [0.0, 1.0, 0.0],
        "len": [12.0, 15.0, 12.0],
    }
    assert result.rewards == pytest.approx([2 + 0.5 + 0 + 1.2, 2 + 0 + 1 + 1.5, -2 + 0.5 + 0 + 1.2])
    assert result.failures == [{}, {}, {}] and result.metrics["reward_errors/total"] == 0


@pytest.mark.parametrize(
    "name, kind, detail",
    [
        ("raises", "exception", "ValueError: my reward has a bug"),
        ("hangs", "timeout", "no answer within 1 s"),
        ("two_values", "bad_output", "returned 2 values for 1 response"),
        ("a_word", "bad_output", "not a number"),
        ("not_a_list", "bad_output", "returned float, not a list"),
        ("nan", "bad_output", "not a finite number"),
    ],
)
def test_a_failing_function_is_counted_and_named_never_a_silent_zero(quick_scorer, name, kind, detail):
    """Scored 0 for that function only, counted under its cause, and the failure kept with the sample."""
    functions = [RewardFunction("ok", f"{FNS}:exact", 1.0), RewardFunction("bad", f"{FNS}:{name}", 1.0)]
    result = score_with_functions(quick_scorer, functions, [_row("2")], ["2"], ENV)
    assert result.values == {"ok": [1.0], "bad": [0.0]} and result.rewards == [1.0]
    assert result.metrics[f"reward_errors/{kind}"] == 1 and result.metrics["reward_errors/total"] == 1
    [failure] = [result.failures[0]["bad"]]
    assert failure["kind"] == kind and detail in failure["detail"]
    assert "ok" not in result.failures[0]


def test_preflight_runs_each_function_on_the_probes(quick_scorer):
    """A clean custom function passes with the verifier's probes; a raising one is refused, naming it and the row."""
    rows = [_row("2"), _row("3")]
    good = [RewardFunction("correct", "verifier", 1.0), RewardFunction("fmt", "format", 0.2)]
    report = preflight(rows, scorer=quick_scorer, functions=good)
    assert report.ok and report.scored == 8  # 2 rows × (ground truth, corrupted) × 2 functions
    with pytest.raises(UserError, match=r"row 0 \(math\).*scored mine: ground_truth.*exception: ValueError") as err:
        preflight(rows, scorer=quick_scorer, functions=[RewardFunction("mine", f"{FNS}:raises", 1.0)])
    assert err.value.code == "reward_function_not_validated"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'; put no_such_module_xyz.py in the folder"),
        (f"{FNS}:missing", "has no attribute 'missing'; its callables: a_word, exact, hangs"),
        (f"{FNS}:NOT_CALLABLE", "NOT_CALLABLE is not callable"),
        ("justaname", "write 'module:callable'"),
    ],
)
def test_a_bad_function_string_is_refused_naming_the_key(spec, message):
    env = {
        "reward_functions": [
            {"name": "ok", "function": "format", "weight": 1},
            {"name": "x", "function": spec, "weight": 1},
        ]
    }
    with pytest.raises(ConfigError, match=r"env\.reward_functions\[1\]\.function=") as err:
        check_reward_config(env, nemo_gym=False)
    assert message in str(err.value)


def test_other_refusals():
    def check(entries, nemo_gym=False):
        with pytest.raises(ConfigError) as err:
            check_reward_config({"reward_functions": entries}, nemo_gym=nemo_gym)
        return str(err.value)

    assert "cannot be called as f(prompts, responses, rows, scale=..., bogus=...)" in check(
        [{"name": "a", "function": f"{FNS}:prompt_length", "weight": 1, "kwargs": {"scale": 1, "bogus": 2}}]
    )
    assert "used twice" in check([{"name": "a", "function": "format", "weight": 1}] * 2)
    assert "tag or pattern" in check(
        [{"name": "a", "function": "format", "weight": 1, "kwargs": {"tag": "a", "pattern": "b"}}]
    )
    assert "should_use_nemo_gym" in check([{"name": "a", "function": "format", "weight": 1}], nemo_gym=True)
    assert "kwargs: the verifier takes none" in check(
        [{"name": "a", "function": "verifier", "weight": 1, "kwargs": {"x": 1}}]
    )
    check_reward_config({"reward_functions": []}, nemo_gym=True)  # nothing configured: nothing to refuse
    assert load_function("format") is format_reward


def test_the_step_config_loader_refuses_a_bad_function_and_accepts_a_good_one():
    """What `-d` runs: the schema, then the checks, which import the module now."""
    from rlvr.config import load_step_config
    from rlvr.steps.index import resolve_step

    step = resolve_step("rl/nemo_rl/rlvr")
    with pytest.raises(ConfigError, match=r"env\.reward_functions\[0\]\.function='my_rewardz:f': no module named"):
        load_step_config(step, "tiny", ["env.reward_functions=[{name: a, function: 'my_rewardz:f', weight: 1}]"])
    with pytest.raises(ConfigError, match=r"env.reward_functions.*'weight' is a required property"):
        load_step_config(step, "tiny", ["env.reward_functions=[{name: a, function: format}]"])
    good = f"env.reward_functions=[{{name: mine, function: '{FNS}:exact', weight: 0.5}}]"
    cfg = load_step_config(step, "tiny", [good]).engine_view()
    assert reward_functions(cfg["env"]) == [RewardFunction("mine", f"{FNS}:exact", 0.5)]
    assert cfg["logger"]["rollout_dumps"] == "sampled" and cfg["logger"]["wandb"]["mode"] is None
