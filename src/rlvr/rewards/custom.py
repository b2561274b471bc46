"""Reward functions from config (``env.reward_functions``): your own Python callables, a built-in format reward,
and the row's verifier, combined by weight.

Each entry is ``{name, function, weight, kwargs}``; the reward of a sample is ``sum_i weight_i * r_i``:

* ``function: verifier``: the row's own verifier (``math``, ``code``), with ``env.<task>.reward_correct/_wrong``;
* ``function: format``: :func:`format_reward`, 1.0 when the response holds its answer in the required form;
* ``function: "module:callable"``: ``callable(prompts, responses, rows, **kwargs) -> list[float]``, one number per
  response, with ``prompts`` the templated prompts and ``rows`` the canonical rl_prep rows (``ground_truth``,
  ``problem``, ...). The module is imported from ``PYTHONPATH`` or the folder the run starts in.

No entry at all is the verifier alone (weight 1). A callable runs in the scorer's verifier worker processes, one
response per call, like a math check: each call is killed after ``env.math.timeout_s`` seconds, and a call that
raises, hangs, or returns anything but a list of one finite number scores 0 for that function and is counted as
an error under its cause (``exception``, ``timeout``, ``bad_output``: ``train/reward_errors/*``), named in the
rollout dumps, and printed, never silently. The checks travel through the public :class:`RewardScorer` API as rows
of the internal verifier ``reward_function``, whose reference carries the function's spec.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlvr.errors import ConfigError
from rlvr.rewards.verdict import BAD_OUTPUT, EXCEPTION, Verdict

VERIFIER = "verifier"  # the row's own verifier, by its task_name
FORMAT = "format"  # the built-in format reward
INTERNAL_NAME = "reward_function"  # the verifier-pool entry that runs a callable (not a row env name)
_SPEC_KEY = "_rlvr_reward_function"  # where a scored row carries the function to run
_BOXED = re.compile(r"\\boxed\s*\{")
_loaded: dict[str, Callable] = {}


def format_reward(
    prompts: Sequence[str],
    responses: Sequence[str],
    rows: Sequence[dict],
    *,
    tag: str | None = None,
    pattern: str | None = None,
) -> list[float]:
    """1.0 per response in the required form, else 0.0.

    Default: a non-empty ``\\boxed{...}`` (braces balanced), the answer form math-verify prefers. ``tag="answer"``:
    a non-empty ``<answer>...</answer>``. ``pattern``: a regular expression found anywhere (``re.DOTALL``).
    """
    if tag is not None and pattern is not None:
        raise ValueError("format_reward takes tag or pattern, not both")
    if pattern is not None:
        regex = re.compile(pattern, re.DOTALL)
        return [1.0 if regex.search(r) else 0.0 for r in responses]
    if tag is not None:
        regex = re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL)
        return [1.0 if any(m.strip() for m in regex.findall(r)) else 0.0 for r in responses]
    return [1.0 if _has_boxed_answer(r) else 0.0 for r in responses]


def _has_boxed_answer(response: str) -> bool:
    for match in _BOXED.finditer(response):
        depth, start = 1, match.end()
        for i in range(start, len(response)):
            depth += {"{": 1, "}": -1}.get(response[i], 0)
            if depth == 0:
                if response[start:i].strip():
                    return True
                break
    return False


BUILTIN_FUNCTIONS: dict[str, Callable] = {FORMAT: format_reward}


@dataclass(frozen=True)
class RewardFunction:
    """One ``env.reward_functions`` entry."""

    name: str
    function: str
    weight: float
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_verifier(self) -> bool:
        return self.function == VERIFIER


def reward_functions(env: dict[str, Any]) -> list[RewardFunction]:
    """The run's reward functions; no entry means the row's verifier alone."""
    entries = env["reward_functions"]
    if not entries:
        return [RewardFunction(VERIFIER, VERIFIER, 1.0)]
    # kwargs is the one optional key of an entry (the schema documents it; array items get no filled defaults).
    return [RewardFunction(e["name"], e["function"], float(e["weight"]), dict(e.get("kwargs") or {})) for e in entries]


def load_function(spec: str, key: str = "function") -> Callable:
    """The callable named by ``spec`` (a built-in name or ``module:callable``); ConfigError naming ``key`` and the
    fix when the module, the attribute or the callable is not there."""
    if spec in BUILTIN_FUNCTIONS:
        return BUILTIN_FUNCTIONS[spec]
    if spec in _loaded:
        return _loaded[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"{key}={spec!r}: write 'module:callable' (e.g. my_rewards:length_penalty) or a built-in "
            f"({', '.join([VERIFIER, *BUILTIN_FUNCTIONS])})"
        )
    module = _import(module_name, key, spec)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            raise ConfigError(
                f"{key}={spec!r}: module {module_name} ({getattr(module, '__file__', '?')}) has no attribute "
                f"{attr!r}; its callables: {', '.join(public) or 'none'}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(
            f"{key}={spec!r}: {attr} is not callable (it is {type(target).__name__} {str(target)[:40]!r}); "
            "name a function"
        )
    _loaded[spec] = target
    return target


def _import(module_name: str, key: str, spec: str):
    # The run's folder is importable, as for `python -m`: the CLI's -d, the stages and the workers agree.
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ConfigError(
                f"{key}={spec!r}: no module named {module_name!r}; put {module_name.replace('.', '/')}.py in the "
                f"folder the run starts from ({cwd}) or on PYTHONPATH"
            ) from None
        raise ConfigError(f"{key}={spec!r}: importing {module_name} failed: {exc}") from None
    except Exception as exc:  # the user's module itself failed at import time
        raise ConfigError(f"{key}={spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}") from None


def check_signature(fn: Callable, kwargs: dict[str, Any], key: str, spec: str) -> None:
    """``fn(prompts, responses, rows, **kwargs)`` must be a valid call."""
    try:
        inspect.signature(fn).bind([], [], [], **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"{key}={spec!r} cannot be called as f(prompts, responses, rows"
            f"{', ' + ', '.join(f'{k}=...' for k in kwargs) if kwargs else ''}): {exc}"
        ) from None
    except ValueError:  # builtins without a signature: the first call will tell
        pass


def tag_rows(rows: Sequence[dict], function: RewardFunction) -> list[dict]:
    """Rows to score with :data:`INTERNAL_NAME`: each carries the function's spec for the worker."""
    spec = {"function": function.function, "kwargs": function.kwargs}
    return [{**row, _SPEC_KEY: spec} for row in rows]


class RewardFunctionCheck:
    """Verifier-pool entry running one callable on one response (see the module doc)."""

    name = INTERNAL_NAME
    isolation = "worker_pool"  # a user's function may hang: killable worker processes, as for math-verify

    def reference(self, row: dict[str, Any]) -> dict[str, Any]:
        if _SPEC_KEY not in row:
            raise ConfigError(f"{INTERNAL_NAME!r} scores env.reward_functions only; it is not a row task_name")
        spec = row[_SPEC_KEY]
        plain = {k: v for k, v in row.items() if k != _SPEC_KEY}
        return {"function": spec["function"], "kwargs": spec["kwargs"], "prompt": plain.get("prompt"), "row": plain}

    def quick_check(self, response: str, reference: Any) -> Verdict | None:
        """Never: a user's function may hang or crash, so it always runs in a killable worker."""
        return None

    def check(self, response: str, reference: Any) -> Verdict:
        try:
            fn = load_function(reference["function"])
            values = fn([reference["prompt"]], [response], [reference["row"]], **reference["kwargs"])
        except Exception as exc:  # noqa: BLE001 - a user's bug is a counted error, never a crash of the run
            return Verdict(0.0, EXCEPTION, f"{type(exc).__name__}: {str(exc)[:300]}")
        return _single_value(values)

    def __call__(self, response: str, reference: Any) -> float:
        return self.check(response, reference).reward


def _single_value(values: Any) -> Verdict:
    """The one finite number a call for one response must return, or a ``bad_output`` verdict saying what came."""
    try:
        count = None if isinstance(values, (str, bytes, dict)) else len(values)
    except TypeError:  # no length: a number, None, a 0-d array
        count = None
    if count is None:
        return Verdict(0.0, BAD_OUTPUT, f"returned {type(values).__name__}, not a list of one float per response")
    if count != 1:
        return Verdict(0.0, BAD_OUTPUT, f"returned {count} values for 1 response")
    value = values[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Verdict(0.0, BAD_OUTPUT, f"returned {type(value).__name__} {str(value)[:80]!r}, not a number")
    if isinstance(value, bool) or not math.isfinite(number):
        return Verdict(0.0, BAD_OUTPUT, f"returned {value!r}, not a finite number")
    return Verdict(number)


def check_reward_config(env: dict[str, Any], *, nemo_gym: bool) -> None:
    """``env.reward_functions`` before any compute (the ``-d`` checks): unique names, at most one ``verifier``, every
    callable importable and callable with its ``kwargs``, the format reward's options, no NeMo-Gym path."""
    entries = env["reward_functions"]
    if entries and nemo_gym:
        raise ConfigError(
            "env.reward_functions is not supported with env.should_use_nemo_gym=true (the Gym servers score the "
            "rollouts); remove env.reward_functions or turn the Gym path off"
        )
    seen: set[str] = set()
    for i, function in enumerate(reward_functions(env) if entries else []):
        key = f"env.reward_functions[{i}]"
        if function.name in seen:
            raise ConfigError(f"{key}.name={function.name!r} is used twice; give each reward function its own name")
        seen.add(function.name)
        if function.is_verifier:
            if function.kwargs:
                raise ConfigError(f"{key}.kwargs: the verifier takes none (its settings are env.math / env.code)")
            continue
        fn = load_function(function.function, f"{key}.function")
        check_signature(fn, function.kwargs, f"{key}.function", function.function)
        if fn is format_reward:
            try:
                format_reward([], [], [], **function.kwargs)
                if function.kwargs.get("pattern") is not None:
                    re.compile(function.kwargs["pattern"])
            except (ValueError, re.error) as exc:
                raise ConfigError(f"{key}.kwargs: {exc}") from None
    if sum(f.is_verifier for f in reward_functions(env)) > 1:
        raise ConfigError("env.reward_functions names the verifier twice; keep one entry with function: verifier")
