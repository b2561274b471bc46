"""Run names: `--name` / `run.name` pick the run folder, for the CLI and for Snakemake alike (dry runs only)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT, nemotron_env


def test_two_names_of_one_config_plan_two_run_folders(tmp_path):
    """The CLI's run panel and the Snakefile's outputs both use the name; a bad name is one clear error."""
    outs = {}
    for name in ("exp-a", "exp-b"):
        proc = subprocess.run(
            [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rlvr", "-c", "tiny", "--name", name, "-d"],
            cwd=tmp_path,
            env=nemotron_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outs[name] = proc.stdout
    assert "run_dir: results/exp-a" in outs["exp-a"] and "run_dir: results/exp-b" in outs["exp-b"]
    assert not (tmp_path / "results").exists()
    # Snakemake itself, with the request the CLI hands it: every output sits under results/exp-a/.
    request = {"step": "rl/nemo_rl/rlvr", "config": "tiny", "overrides": ['run.name="exp-a"']}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO_ROOT / "Snakefile"),
            "--directory",
            str(tmp_path),
            "-n",
            "--config",
            f"rlvr_request={json.dumps(request)}",
        ],
        cwd=tmp_path,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "results/exp-a/rlvr/" in proc.stdout and "results/tiny/" not in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rlvr", "-c", "tiny", "--name", "../escape", "-d"],
        cwd=tmp_path,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "'run.name'" in bad.stderr + bad.stdout
