"""Our resource servers answer /verify with Gym math_with_judge and code_gen semantics over loopback HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import zlib

import pytest

from rlvr.gym.protocol import build_response, build_verify_request, parse_verify_response
from rlvr.gym.server import LocalServerProcess, ResourceServer
from rlvr.gym.transport import request_json
from rlvr.gym.verifiers import last_boxed, strip_math_delimiters

RCP = {"input": [{"role": "user", "content": "q"}]}
ADD_TESTS = {"inputs": ["1 2\n", "10 -3\n"], "outputs": ["3\n", "7\n"], "fn_name": None}
ADD_PROGRAM = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"


@pytest.fixture(scope="module")
def math_server():
    with ResourceServer("math", {"num_workers": 1, "timeout_s": 5.0}) as server:
        yield server


@pytest.fixture(scope="module")
def code_server():
    with ResourceServer("code", {"num_workers": 2, "timeout_s": 1.0}) as server:
        yield server


def _verify(server_url: str, text: str, **fields):
    body = build_verify_request({"responses_create_params": RCP, **fields}, build_response(text, RCP))
    reply = request_json("POST", server_url, "/verify", body, timeout_s=60)
    return reply, body


def test_last_boxed_and_delimiters() -> None:
    """The last complete \\boxed{} with balanced braces is found; $..$ and \\(..\\) are stripped from answers."""
    assert last_boxed("first \\boxed{1}, then \\boxed{\\frac{1}{2}} end") == "\\frac{1}{2}"
    assert last_boxed("\\boxed{ a {b} }") == " a {b} "
    assert last_boxed("no box") is None
    assert last_boxed("\\boxed{2} and \\boxed{unclosed") is None  # the last box is not closed
    assert strip_math_delimiters(" $\\frac{1}{2}$ ") == "\\frac{1}{2}"
    assert strip_math_delimiters("\\( x + 1 \\)") == "x + 1"
    assert strip_math_delimiters("$") == "$"


@pytest.mark.parametrize(
    "text, expected, boxed",
    [
        ("so the result is \\boxed{2}", 1.0, "2"),
        ("first \\boxed{3} then I fixed it: \\boxed{2}", 1.0, "2"),
        ("so the result is \\boxed{3}", 0.0, "3"),
        ("so the result is 2", 0.0, None),  # math-verify alone would accept a bare 2: Gym requires a box
        ("so the result is \\boxed{ }", 0.0, " "),  # a blank box scores 0 without math-verify
        ("\\boxed{2} but then \\boxed{", 0.0, None),  # the last box is unclosed
    ],
)
def test_math_server_scores_right_wrong_and_unboxed(math_server, text: str, expected: float, boxed) -> None:
    """Reward 1 only for an equivalent answer in a non-blank last \\boxed{}; extras name the boxed text."""
    reply, body = _verify(math_server.url, text, question="1+1?", expected_answer="$2$")
    assert reply.status == 200
    result = parse_verify_response(reply.json, body)
    assert result.reward == expected and result.mask_sample is False and result.failure_kind is None
    assert result.extras["extracted_answer"] == boxed and result.extras["library_reward"] == expected
    assert reply.json["expected_answer"] == "$2$" and reply.json["response"] == body["response"]  # echoed


def test_math_server_compares_equivalent_forms(math_server) -> None:
    """math-verify equivalence: 0.5 matches \\frac{1}{2} (delimiters stripped from the expected answer)."""
    reply, body = _verify(math_server.url, "\\boxed{0.5}", expected_answer="\\(\\frac{1}{2}\\)")
    assert parse_verify_response(reply.json, body).reward == 1.0


def test_math_server_rejects_a_row_without_expected_answer(math_server) -> None:
    """A request lacking the server's field is HTTP 422 with a detail naming it, not a reward."""
    reply, _ = _verify(math_server.url, "\\boxed{2}", question="1+1?")
    assert reply.status == 422 and "expected_answer" in reply.json["detail"]
    reply = request_json("POST", math_server.url, "/verify", {"expected_answer": "2"}, timeout_s=10)
    assert reply.status == 422 and "response" in reply.json["detail"]


def test_server_liveness_and_other_routes(math_server) -> None:
    """GET /health and / are ok; /seed_session answers {}; unknown paths are 404; bad JSON is 422."""
    for path in ("/health", "/"):
        reply = request_json("GET", math_server.url, path, timeout_s=10)
        assert reply.status == 200 and reply.json == {"status": "ok", "kind": "math"}
    assert request_json("POST", math_server.url, "/seed_session", {"x": 1}, timeout_s=10).json == {}
    assert request_json("GET", math_server.url, "/nope", timeout_s=10).status == 404
    assert request_json("POST", math_server.url, "/verify", [1, 2], timeout_s=10).status == 422


@pytest.mark.parametrize(
    "text, tests, expected, failure",
    [
        (ADD_PROGRAM, ADD_TESTS, 1.0, None),
        ("```python\nprint(3)\n```", ADD_TESTS, 0.0, None),  # right on case 0 only
        ("", ADD_TESTS, 0.0, None),  # empty answer
        ("<think>easy</think>" + ADD_PROGRAM, ADD_TESTS, 0.0, None),  # leaked think tags: reasoning format penalty
        ("```python\nraise SystemExit(3)\n```", ADD_TESTS, 0.0, "rlvr:crash"),
        ("```python\nwhile True:\n    pass\n```", ADD_TESTS, 0.0, "rlvr:timeout"),
    ],
)
def test_code_server_runs_unit_tests(code_server, text: str, tests: dict, expected: float, failure) -> None:
    """verifier_metadata.unit_tests run in our sandbox: all pass -> 1; failures name their cause."""
    reply, body = _verify(code_server.url, text, verifier_metadata={"unit_tests": tests})
    assert reply.status == 200, reply.text
    result = parse_verify_response(reply.json, body)
    assert (result.reward, result.failure_kind) == (expected, failure)


def test_code_server_unpacks_packed_unit_tests(code_server) -> None:
    """LiveCodeBench-packed tests (base64 of zlib of JSON inputs/outputs) are unpacked before running."""
    packed = base64.b64encode(zlib.compress(json.dumps(ADD_TESTS).encode())).decode()
    reply, body = _verify(code_server.url, ADD_PROGRAM, verifier_metadata={"unit_tests": {"packed": packed}})
    assert parse_verify_response(reply.json, body).reward == 1.0
    reply, _ = _verify(code_server.url, ADD_PROGRAM, verifier_metadata={"unit_tests": {"packed": "!!"}})
    assert reply.status == 422 and "packed" in reply.json["detail"]


def test_code_server_rejects_missing_or_malformed_tests(code_server) -> None:
    """No unit_tests, or inputs/outputs of different lengths, is HTTP 422."""
    reply, _ = _verify(code_server.url, ADD_PROGRAM, verifier_metadata={})
    assert reply.status == 422 and "unit_tests" in reply.json["detail"]
    bad = {"inputs": ["1 2\n"], "outputs": ["3\n", "4\n"]}
    reply, _ = _verify(code_server.url, ADD_PROGRAM, verifier_metadata={"unit_tests": bad})
    assert reply.status == 422


@pytest.mark.slow
def test_server_as_a_child_process() -> None:
    """``python -m rlvr.gym`` binds 127.0.0.1 on an ephemeral port, scores, and stops on close()."""
    server = LocalServerProcess("math_with_judge", "math", {"num_workers": 1}).spawn()
    try:
        url = server.wait_ready(90)
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        reply, body = _verify(url, "\\boxed{2}", expected_answer="2")
        assert parse_verify_response(reply.json, body).reward == 1.0
        process = server._proc
    finally:
        server.close()
    assert process.returncode is not None


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_child_server_exits_when_its_parent_dies(tmp_path) -> None:
    """A trainer killed with SIGKILL leaves no resource server behind: the child notices and stops."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, signal, sys\n"
        "from rlvr.gym.server import LocalServerProcess\n"
        "server = LocalServerProcess('m', 'math', {'num_workers': 1}).spawn()\n"
        "server.wait_ready(90)\n"
        "print(server._proc.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the killed parent cannot remove its ready folder
    parent = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    child = int(parent.stdout.split()[0])
    deadline = time.monotonic() + 15
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child)
