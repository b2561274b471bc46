"""GymRewardClient: starts and health-checks servers, scores over /verify, retries, and never turns errors into 0."""

from __future__ import annotations

import threading
import time

import pytest
from gym_helpers import closed_port, gym_row, ok_reward
from omegaconf import OmegaConf

from rlvr.errors import ConfigError, DataError, UserError
from rlvr.gym.client import GymRewardClient, local_options_from_env, parse_servers
from rlvr.gym.routing import AgentRouter
from rlvr.gym.server import ResourceServer
from tests.unit.schema_config import env_config

MATH_ROW = gym_row(question="1+1?", expected_answer="2")


def _gym(**keys) -> dict:
    """``env.nemo_gym``: ``keys`` over the schema's defaults."""
    return env_config(nemo_gym=keys)["nemo_gym"]


def _cfg(url, name: str = "math_with_judge", **extra) -> dict:
    keys = {"resource_servers": {name: {"url": url, "kind": "math"}}, "request_timeout_s": 5.0, "max_retries": 2}
    return _gym(**{**keys, **extra})


def test_external_server_mode_scores_in_row_order() -> None:
    """Against a server given by URL (started by the test), rewards come back per row, in order, with metrics."""
    with ResourceServer("math", {"num_workers": 1}) as server:
        cfg = OmegaConf.create(_cfg(server.url))  # the trainer passes an OmegaConf node
        with GymRewardClient(cfg, backoff_s=0.01) as client:
            rewards, metrics = client.score([MATH_ROW] * 4, ["\\boxed{2}", "\\boxed{3}", "2", "x=\\boxed{1+1}"])
    assert rewards == [1.0, 0.0, 0.0, 1.0]
    assert metrics["gym/requests"] == 4.0 and metrics["gym/retries"] == 0.0 and metrics["gym/failures"] == 0.0
    assert metrics["gym/math_with_judge/reward_mean"] == 0.5 and metrics["gym/math_with_judge/count"] == 4.0


def test_request_body_follows_the_protocol(fake_server) -> None:
    """/verify gets the Gym row without agent_ref plus a Responses-API response holding the generated text."""
    server = fake_server(ok_reward(0.25))
    with GymRewardClient(_cfg(server.url), model_name="tiny") as client:
        rewards, _ = client.score([MATH_ROW], ["\\boxed{2}"])
    assert rewards == [0.25]
    [body] = server.verify_posts()
    assert set(body) == {"responses_create_params", "question", "expected_answer", "response"}
    assert body["response"]["model"] == "tiny"
    assert body["response"]["output"][0]["content"][0]["text"] == "\\boxed{2}"


def test_mask_and_failure_kinds_are_reported(fake_server) -> None:
    """mask_sample flags and failure kinds from the server reach score_detailed and the metrics."""
    server = fake_server(ok_reward(0.0, mask_sample=True, failure_kind="rlvr:timeout", failure_reason="slow"))
    with GymRewardClient(_cfg(server.url)) as client:
        scored = client.score_detailed([MATH_ROW] * 2, ["a", "b"])
    assert scored.mask_sample == [True, True] and scored.results[0].failure_reason == "slow"
    assert scored.metrics["gym/masked"] == 2.0 and scored.metrics["gym/failure/rlvr/timeout"] == 2.0


def test_retry_then_success(fake_server) -> None:
    """Two 503s then a 200: the request is retried with back-off and the reward is the server's, not 0."""
    calls = {"verify": 0}

    def script(method, path, body):
        if method == "GET":
            return 200, {"status": "ok"}
        calls["verify"] += 1
        return (503, {"detail": "busy"}) if calls["verify"] <= 2 else (200, {**body, "reward": 1.0})

    server = fake_server(script)
    with GymRewardClient(_cfg(server.url), backoff_s=0.05) as client:
        start = time.monotonic()
        rewards, metrics = client.score([MATH_ROW], ["\\boxed{2}"])
        elapsed = time.monotonic() - start
    assert rewards == [1.0] and metrics["gym/retries"] == 2.0 and calls["verify"] == 3
    assert elapsed >= 0.05 + 0.1  # back-off 0.05 s, then 0.1 s


def test_persistent_500_fails_with_a_clear_error(fake_server) -> None:
    """A server that keeps failing: 1 + max_retries attempts, then a UserError naming server, URL, row, status."""
    server = fake_server(lambda m, p, b: (200, {}) if m == "GET" else (500, {"detail": "verifier exploded"}))
    with GymRewardClient(_cfg(server.url), backoff_s=0.01) as client, pytest.raises(UserError) as caught:
        client.score([MATH_ROW], ["\\boxed{2}"])
    message = str(caught.value)
    assert "'math_with_judge'" in message and f"{server.url}/verify" in message and "row 0" in message
    assert "HTTP 500" in message and "verifier exploded" in message and "3 attempts" in message
    assert len(server.verify_posts()) == 3


def test_client_errors_are_not_retried(fake_server) -> None:
    """A 422 (the row lacks a server field) fails at once, with the server's detail."""
    server = fake_server(lambda m, p, b: (200, {}) if m == "GET" else (422, {"detail": "expected_answer missing"}))
    with (
        GymRewardClient(_cfg(server.url), backoff_s=0.01) as client,
        pytest.raises(UserError, match="rejected with HTTP 422.*expected_answer missing"),
    ):
        client.score([MATH_ROW], ["x"])
    assert len(server.verify_posts()) == 1


@pytest.mark.parametrize("answer", [{"status": "done"}, {"reward": "high"}, "<html>proxy error</html>"])
def test_an_answer_without_a_reward_is_an_error(fake_server, answer) -> None:
    """A 200 whose body has no valid reward is an error naming the body, never a reward of 0."""
    server = fake_server(lambda m, p, b: (200, {}) if m == "GET" else (200, answer))
    with GymRewardClient(_cfg(server.url)) as client, pytest.raises(UserError, match="invalid /verify answer"):
        client.score([MATH_ROW], ["x"])


def test_timeouts_are_retried_then_fail(fake_server) -> None:
    """A server slower than request_timeout_s times out on every attempt, and the error says so."""

    def script(method, path, body):
        if method == "POST":
            time.sleep(0.5)
        return 200, {**(body or {}), "reward": 1.0}

    server = fake_server(script)
    with (
        GymRewardClient(_cfg(server.url, request_timeout_s=0.1, max_retries=1), backoff_s=0.01) as client,
        pytest.raises(UserError, match="2 attempts.*timed out after 0.1 s"),
    ):
        client.score([MATH_ROW], ["x"])


def test_unreachable_servers_fail_the_health_check(fake_server) -> None:
    """start() lists every server that stays down (refused, or 5xx at /health), and only those."""
    good = fake_server(ok_reward())
    sick = fake_server(lambda m, p, b: (503, "starting"))
    with closed_port() as port:
        cfg = _gym(
            resource_servers={
                "good": {"url": good.url, "kind": "math"},
                "sick": {"url": sick.url, "kind": "math"},
                "gone": {"url": f"http://127.0.0.1:{port}", "kind": "code"},
            },
            max_retries=1,
        )
        client = GymRewardClient(cfg, backoff_s=0.01)
        with pytest.raises(UserError) as caught:
            client.start()
    message = str(caught.value)
    assert f"gone (http://127.0.0.1:{port})" in message and "ConnectionRefusedError" in message
    assert f"sick ({sick.url}): GET /health answered HTTP 503" in message and "good" not in message
    assert "2 attempts" in message
    with pytest.raises(RuntimeError, match="start"):
        client.score([MATH_ROW], ["x"])  # the failed start left nothing running


def test_old_gym_servers_without_health_route_count_as_up(fake_server) -> None:
    """404 at /health falls back to GET /, where any non-5xx answer means the server is up."""

    def script(method, path, body):
        if method == "GET":
            return 404, {"detail": "Not Found"}
        return 200, {**body, "reward": 1.0}

    server = fake_server(script)
    with GymRewardClient(_cfg(server.url)) as client:
        assert client.score([MATH_ROW], ["x"])[0] == [1.0]
    assert [(m, p) for m, p, _ in server.requests[:2]] == [("GET", "/health"), ("GET", "/")]


def test_concurrency_is_bounded(fake_server) -> None:
    """At most max_concurrency requests are in flight at once, and that many are actually used."""

    def script(method, path, body):
        if method == "POST":
            time.sleep(0.1)
        return 200, {**(body or {}), "reward": 1.0}

    server = fake_server(script)
    with GymRewardClient(_cfg(server.url), max_concurrency=3) as client:
        rewards, _ = client.score([MATH_ROW] * 12, ["x"] * 12)
    assert rewards == [1.0] * 12 and server.max_in_flight == 3


def test_a_failure_stops_the_batch_early(fake_server) -> None:
    """When one row fails for good, rows still retrying give up instead of running out their retries."""
    lock, seen = threading.Lock(), []

    def script(method, path, body):
        if method == "GET":
            return 200, {}
        with lock:
            seen.append(body["question"])
        if body["question"] == "bad":
            return 400, {"detail": "bad row"}
        return 503, {"detail": "busy"}

    server = fake_server(script)
    rows = [gym_row(question="bad", expected_answer="1"), gym_row(question="slow", expected_answer="1")]
    with GymRewardClient(_cfg(server.url, max_retries=50), backoff_s=0.2) as client:
        start = time.monotonic()
        with pytest.raises(UserError, match="row 0.*bad row"):
            client.score(rows, ["x", "y"])
    assert time.monotonic() - start < 5.0 and seen.count("slow") < 5


@pytest.mark.slow
def test_local_servers_are_started_for_null_urls() -> None:
    """url: null starts our server of that kind on 127.0.0.1; rows are routed by agent to math or code."""
    cfg = _gym(
        resource_servers={
            "math_with_judge": {"url": None, "kind": "math"},
            "code_gen": {"url": None, "kind": "code"},
        }
    )
    code_row = gym_row(
        "code_gen_simple_agent",
        verifier_metadata={"unit_tests": {"inputs": ["1 2\n"], "outputs": ["3\n"], "fn_name": None}},
    )
    options = {"math": {"num_workers": 1}, "code": {"num_workers": 1, "timeout_s": 2.0}}
    with GymRewardClient(cfg, local_options=options) as client:
        assert all(url.startswith("http://127.0.0.1:") for url in client.urls.values())
        assert client.capacity == {"math_with_judge": 1, "code_gen": 1}  # requests in flight <= the server's workers
        scored = client.score_detailed(
            [MATH_ROW, code_row, code_row], ["\\boxed{2}", "a, b = map(int, input().split())\nprint(a + b)", "print(4)"]
        )
        local = list(client._local)
    assert scored.rewards == [1.0, 1.0, 0.0]
    assert scored.servers == ["math_with_judge", "code_gen", "code_gen"]
    assert all(server._proc is None for server in local)  # close() stopped the children


def test_rows_are_routed_by_agent(tmp_path) -> None:
    """Explicit map, then Gym config files, then the name itself or without _simple_agent/_agent; else an error."""
    gym_config = tmp_path / "agents.yaml"
    gym_config.write_text(
        "my_agent:\n  responses_api_agents:\n    simple_agent:\n      resources_server:\n"
        "        type: resources_servers\n        name: code_gen\n"
    )
    router = AgentRouter(["math_with_judge", "code_gen"], {"special": "math_with_judge"}, [str(gym_config)])
    assert router.server_for("special") == "math_with_judge"
    assert router.server_for("my_agent") == "code_gen"
    assert router.server_for("code_gen") == "code_gen"
    assert router.server_for("math_with_judge_simple_agent") == "math_with_judge"
    assert router.server_for("code_gen_agent") == "code_gen"
    with pytest.raises(ConfigError, match="'weather_agent' maps to no configured.*math_with_judge, code_gen"):
        router.server_for("weather_agent")
    with pytest.raises(ConfigError, match="agent_to_server.x: server 'nope' is not configured"):
        AgentRouter(["code_gen"], {"x": "nope"})
    with pytest.raises(ConfigError, match=r"config_paths\[0\].*not found"):
        AgentRouter(["code_gen"], None, [str(tmp_path / "missing.yaml")])


def test_bad_rows_and_unknown_agents_fail_before_any_request(fake_server) -> None:
    """A row that is not a nemo_gym row, or whose agent maps to no server, fails without sending anything."""
    server = fake_server(ok_reward())
    with GymRewardClient(_cfg(server.url)) as client:
        with pytest.raises(DataError, match="row 1 is not a nemo_gym row"):
            client.score([MATH_ROW, {"task_name": "math", "ground_truth": "2"}], ["x", "y"])
        with pytest.raises(ConfigError, match="'weather_agent'"):
            client.score([MATH_ROW, gym_row("weather_agent")], ["x", "y"])
    assert server.verify_posts() == []


@pytest.mark.parametrize(
    "servers, match",
    [
        ({}, "resource_servers is empty"),
        ({"s": {"url": None}}, "s: url is null .* kind is missing"),
        ({"s": {"url": None, "kind": "chess"}}, "s.kind: unknown kind 'chess'; known kinds: math, code"),
        ({"s": {"url": "ftp://host", "kind": "math"}}, "s.url: not an http"),
    ],
)
def test_server_config_errors(servers: dict, match: str) -> None:
    """Bad resource_servers entries are ConfigErrors naming the key."""
    with pytest.raises(ConfigError, match=match):
        parse_servers({"resource_servers": servers})


def test_local_options_come_from_env_math_and_code() -> None:
    """env.math / env.code settings configure local servers; keys they do not use are dropped."""
    env = {
        "math": {"num_workers": 4, "timeout_s": 3.0, "math_verify_impl": "hf_math_verify"},
        "code": {"timeout_s": 2.0, "memory_mb": 512, "partial_credit": True},
    }
    assert local_options_from_env(env) == {
        "math": {"num_workers": 4, "timeout_s": 3.0},
        "code": {"timeout_s": 2.0, "memory_mb": 512, "partial_credit": True},
    }


@pytest.mark.slow
def test_a_dead_local_server_fails_the_batch_and_says_so() -> None:
    """If our local server dies mid-run, scoring fails (no reward of 0) and the error gives its exit code."""
    cfg = _gym(resource_servers={"math_with_judge": {"url": None, "kind": "math"}}, max_retries=1)
    with GymRewardClient(cfg, local_options={"math": {"num_workers": 1}}, backoff_s=0.01) as client:
        process = client._local[0]._proc
        process.kill()
        process.wait(10)
        with pytest.raises(UserError, match="ConnectionRefusedError.*exited with code -9"):
            client.score([MATH_ROW], ["\\boxed{2}"])
