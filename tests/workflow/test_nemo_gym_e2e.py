"""The NeMo-Gym path end to end on the CPU: ``nemotron steps run rl/nemo_rl/rlvr -c nemo_gym`` with the tiny policy.

The run is the user's command: NeMo-Gym JSONL rows (``responses_create_params``, ``agent_ref`` to
``math_with_judge_simple_agent``, ``question``, ``expected_answer``) of two-digit arithmetic, the small tiny policy and
CPU overrides. The policy's rules (tiny_data, tiny_sft, hf_to_megatron) are copied from the session's prepared run
(tests/workflow/conftest.py), so Snakemake starts at rl_prep, which reads the Gym rows.
``resource_servers.math_with_judge.url`` is null, so the ``reward_preflight`` and ``rlvr`` stages each start our
``math`` resource server on 127.0.0.1 and score over ``/verify``.

The tiny policy's character vocabulary has no ``\\``, ``{`` or ``}``, so it can never write ``\\boxed{...}`` and
``math_with_judge`` (boxed answers only) must give every sample reward exactly 0: the test checks the plumbing
(servers started, every sample sent and answered, servers gone afterwards), not learning. That the server does
tell right from wrong is shown by the pre-flight, which scores each validation row's ``\\boxed{answer}`` (must be 1)
and a corrupted answer (must be 0) through the same server.

Every process of a run carries a unique environment variable, so the servers it started can be found in /proc
while it runs (the positive control) and after it ended (none may be left), even with other test runs around.
The refused-server run reuses the first run's upstream outputs (tiny SFT, conversion, rl_prep) in the same way, so
Snakemake re-runs only from ``reward_preflight`` and it takes seconds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import SMALL_TINY, nemotron_env
from tests.workflow.conftest import copy_prepared

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

STEP = "rl/nemo_rl/rlvr"
RUN = Path("results") / "nemo_gym"
TAG_VAR = "RLVR_E2E_GYM_TAG"
PROMPTS, GENERATIONS, TRAIN_ROWS, VAL_ROWS = 4, 4, 32, 8
# The session's small tiny policy (its tiny_data, tiny_sft and hf_to_megatron are copied in, see gym_run).
TINY = ["tiny.enabled=true", "policy.model_name=null", *SMALL_TINY]

# 4 prompts x 4 generations = 16 rows = one optimizer step (force_on_policy_ratio); whole validation set each step.
CPU = [
    "cluster.gpus_per_node=0",
    "policy.generation.backend=hf",
    "policy.precision=float32",
    "policy.generation.max_new_tokens=8",
    "policy.max_total_sequence_length=64",
    "policy.make_sequence_length_divisible_by=1",
    f"grpo.num_prompts_per_step={PROMPTS}",
    f"grpo.num_generations_per_prompt={GENERATIONS}",
    f"policy.train_global_batch_size={PROMPTS * GENERATIONS}",
    f"policy.train_micro_batch_size={PROMPTS * GENERATIONS}",
    f"policy.generation_batch_size={PROMPTS * GENERATIONS}",
    f"policy.logprob_batch_size={PROMPTS * GENERATIONS}",
    "grpo.max_num_steps=2",
    "grpo.val_period=1",
    "env.math.num_workers=1",
    "logger.tensorboard_enabled=false",
    "logger.monitor_gpus=false",
]


def arithmetic_gym_rows(count: int, rng: random.Random, taken: set[str]) -> list[dict]:
    """``count`` distinct NeMo-Gym rows ``a+b`` / ``a-b`` (two-digit operands) whose problem is not in ``taken``."""
    rows = []
    while len(rows) < count:
        a, b, op = rng.randrange(10, 100), rng.randrange(10, 100), rng.choice("+-")
        problem = f"{a}{op}{b}"
        if problem in taken:
            continue
        taken.add(problem)
        rows.append(
            {
                "responses_create_params": {"input": [{"role": "user", "content": problem}]},
                "agent_ref": {"type": "responses_api_agents", "name": "math_with_judge_simple_agent"},
                "question": problem,
                "expected_answer": str(a + b if op == "+" else a - b),
            }
        )
    return rows


def write_gym_data(folder: Path) -> list[str]:
    """Train/val NeMo-Gym JSONL files (no problem in both); the data overrides that point at them."""
    folder.mkdir(parents=True, exist_ok=True)
    rng, taken = random.Random(7), set()
    paths = {}
    for split, count in (("train", TRAIN_ROWS), ("validation", VAL_ROWS)):
        paths[split] = folder / f"{split}.gym.jsonl"
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in arithmetic_gym_rows(count, rng, taken)))
    return [f"data.{split}.data_path={path}" for split, path in paths.items()]


def tagged_processes(tag: str) -> dict[int, str]:
    """pid -> command line of every live process whose environment holds ``TAG_VAR=tag``."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def gym_servers(processes: dict[int, str]) -> dict[int, str]:
    return {pid: cmd for pid, cmd in processes.items() if " -m rlvr.gym " in cmd}


def wait_until_gone(tag: str, timeout_s: float = 15.0) -> dict[int, str]:
    """The run's processes still alive after ``timeout_s`` (exiting processes get a moment to finish)."""
    deadline = time.monotonic() + timeout_s
    while (left := tagged_processes(tag)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def run_nemotron(
    cwd: Path, overrides: list[str], tag: str, *, timeout_s: float = 600
) -> tuple[int, str, str, dict[int, str]]:
    """``nemotron steps run rl/nemo_rl/rlvr -c nemo_gym ...`` in ``cwd``, watching /proc while it runs.

    Returns ``(rc, stdout, stderr, gym servers seen while it ran)``. Output goes to files, not pipes: nobody
    reads while it runs, and a full pipe would block Snakemake.
    """
    env = {**nemotron_env(), TAG_VAR: tag}
    seen: dict[int, str] = {}
    out, err = cwd / "nemotron.out", cwd / "nemotron.err"
    with open(out, "w") as fout, open(err, "w") as ferr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "nemo_gym", *overrides],
            cwd=cwd,
            env=env,
            stdout=fout,
            stderr=ferr,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                seen.update(gym_servers(tagged_processes(tag)))
                time.sleep(0.25)
        finally:
            timed_out = proc.poll() is None
            if timed_out:  # the CLI, Snakemake and its jobs: the whole session started here
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert not timed_out, f"nemotron did not finish within {timeout_s} s:\n{err.read_text()[-3000:]}"
    return proc.returncode, out.read_text(), err.read_text(), seen


@pytest.fixture(scope="module")
def gym_run(prepared, tmp_path_factory) -> dict:
    """One ``-c nemo_gym`` run in a folder that holds only the prepared tiny policy (RL_OUTPUT_DIR unset)."""
    cwd = tmp_path_factory.mktemp("gym_run")
    copy_prepared(prepared, cwd / RUN, stages=("tiny_data", "tiny_sft", "hf_to_megatron"))
    data = write_gym_data(cwd / "data")
    tag = uuid.uuid4().hex
    rc, out, err, seen = run_nemotron(cwd, [*TINY, *CPU, *data], tag)
    return {
        "cwd": cwd,
        "data": data,
        "rc": rc,
        "out": out,
        "err": err,
        "servers_seen": seen,
        "left": wait_until_gone(tag),
    }


def test_gym_run_end_to_end_with_local_servers(gym_run):
    """rc 0; pre-flight report; metrics 0..2 with validation and Gym-scored rewards; no server left; final ckpt."""
    assert gym_run["rc"] == 0, gym_run["out"][-3000:] + gym_run["err"][-5000:]
    run = gym_run["cwd"] / RUN

    report = json.loads((run / "reward_preflight" / "report.json").read_text())
    assert report == {"rows": VAL_ROWS, "scored": 2 * VAL_ROWS, "ok": True}  # boxed answer (1) + corrupted (0)
    assert "reward pre-flight passed" in (run / "logs" / "reward_preflight.log").read_text()

    lines = [json.loads(line) for line in (run / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == [0, 1, 2]
    assert all(m["validation/accuracy"] == 0.0 for m in lines)  # no \boxed{} possible: 0 exactly
    samples = PROMPTS * GENERATIONS
    for m in lines[1:]:
        assert m["train/reward"] == 0.0 and m["train/raw_reward"] == 0.0
        # Every sample went to math_with_judge and came back at the first attempt, with no failed check.
        assert m["train/gym/requests"] == samples and m["train/gym/math_with_judge/count"] == samples
        assert m["train/gym/retries"] == 0 and m["train/gym/failures"] == 0 and m["train/gym/masked"] == 0
        assert m["train/gym/math_with_judge/reward_mean"] == 0.0
        assert m["train/num_valid_samples"] == samples

    # The positive control: servers were found while the run went on (pre-flight's and rlvr's, each its own).
    servers = gym_run["servers_seen"]
    assert servers and all("--kind math" in cmd for cmd in servers.values()), servers
    assert len(servers) >= 2, f"expected the pre-flight's and the rlvr stage's servers, saw {servers}"
    assert gym_run["left"] == {}, f"processes of the run still alive after it ended: {gym_run['left']}"

    ckpt = run / "rlvr" / "checkpoint_megatron"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (ckpt / "iter_0000002").is_dir()
    assert json.loads((run / "rlvr" / "summary.json").read_text())["final_step"] == 2
    assert (run / "report" / "report.md").is_file() and (run / "megatron_to_hf" / "hf").is_dir()


def test_refused_external_server_stops_the_run_before_training(gym_run, tmp_path):
    """An external URL that refuses connections: non-zero rc, an error naming the server and URL, no training."""
    assert gym_run["rc"] == 0, "the upstream outputs come from the full run, which failed"
    upstream = gym_run["cwd"] / RUN
    run = tmp_path / RUN
    for name in ("tiny_data", "tiny_sft", "hf_to_megatron", "rl_prep"):  # copy2 keeps mtimes: all up to date
        shutil.copytree(upstream / name, run / name)
    # A port bound but not listening refuses every connection, and no other process can take it meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        tag = uuid.uuid4().hex
        rc, out, err, seen = run_nemotron(
            tmp_path,
            [*TINY, *CPU, *gym_run["data"], f"env.nemo_gym.resource_servers.math_with_judge.url={url}"],
            tag,
            timeout_s=300,
        )
    assert rc != 0, out[-2000:] + err[-3000:]
    log = (run / "logs" / "reward_preflight.log").read_text()
    assert "NeMo-Gym resource server(s) not reachable" in log and f"math_with_judge ({url})" in log, log
    assert "ConnectionRefusedError" in log and "Traceback" not in log, log
    assert f"math_with_judge ({url})" in err  # the failed rule's log is shown on screen (show-failed-logs)
    for name in ("tiny_sft", "hf_to_megatron", "rl_prep"):  # nothing upstream re-ran
        assert not (run / "logs" / f"{name}.log").exists(), name
    assert not (run / "reward_preflight" / "report.json").exists()
    assert not (run / "rlvr").exists(), "the rlvr stage started although the pre-flight failed"
    assert seen == {} and wait_until_gone(tag) == {}  # an external server: nothing started locally
