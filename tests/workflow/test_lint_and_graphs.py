"""Snakemake's own tools on the Snakefile: `--lint` (one explained lint) and `--dag` / `--rulegraph` without `--cores`.

``make lint`` runs the lint test; each test is one or two parses of the Snakefile (a few seconds).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, nemotron_env

# The one lint left, with its reason in the Snakefile's header comment.
EXPLAINED_LINTS = {"Specify a conda environment or container for each rule."}


def snakemake(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(tmp_path)]
        + list(args),
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_snakemake_lint_finds_only_the_explained_lint(tmp_path):
    proc = snakemake(tmp_path, "--lint")
    text = proc.stdout + proc.stderr
    lints = set(re.findall(r"^    \* (.+?):?$", text, re.MULTILINE))
    assert lints == EXPLAINED_LINTS, text[-3000:]
    assert "Specify a conda environment or container" in (REPO_ROOT / "Snakefile").read_text()


@pytest.mark.parametrize("graph", ["--dag", "--rulegraph"])
def test_graphs_need_no_cores(graph, tmp_path):
    """`threads:` asks for every core without `workflow.cores`, which would demand --cores here."""
    proc = snakemake(tmp_path, graph)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.lstrip().startswith("digraph") and "rlvr" in proc.stdout and "tiny_sft" in proc.stdout
    assert not (tmp_path / "results").exists()
