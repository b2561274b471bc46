"""`-c tiny` with two data-parallel CPU ranks learns as the single-process run does (issue 16).

``nemotron steps run rl/nemo_rl/rlvr -c tiny cluster.num_workers=2`` from an empty folder: the same pipeline as
``test_tiny_learns.py``, but the GRPO policy is two Ray actors training one FSDP2-sharded model over gloo, with
one HF generation replica beside each (colocated, refitted after every step, prompts split between them). The
goal is the single-process run's: ``validation/accuracy`` at the last validation at least 0.20 above step 0
(README "Topology" records both curves, step for step). Nothing here is timed; it runs with
``make test-learning`` (``pytest -m learning``), not with ``make test``.
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.workflow.conftest import metric_rows, run_whole_tiny

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.learning]


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("tiny_two_workers")
    stdout = run_whole_tiny(cwd, "--name", "w2", "cluster.num_workers=2")
    return cwd / "results" / "w2", stdout


def test_two_ranks_reach_the_single_process_learning_goal(two_worker_run):
    run, stdout = two_worker_run
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["cluster"]["num_workers"] == 2
    assert "2 training rank(s); 2 generation engine(s), colocated" in stdout  # the plan the trainer followed
    val = {m["step"]: m["validation/accuracy"] for m in metric_rows(run) if "validation/accuracy" in m}
    first, last = min(val), max(val)
    assert (first, last) == (0, config["grpo"]["max_num_steps"])
    print("validation/accuracy by step:", json.dumps(val))
    assert val[last] - val[first] >= 0.20, val
