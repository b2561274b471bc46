"""Planning loads no training library: a dry run imports neither torch nor transformers, in the CLI or in Snakemake.

The config checks, the memory estimate, the placement plan and the Snakefile's rules need only the config; importing
torch and transformers used to be most of a dry run's time, and the workflow tests plan about a hundred times. A
sitecustomize on PYTHONPATH records, in every Python process of one real dry run, which of them were imported by
the time the process exits.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import nemotron_env

HEAVY = ("torch", "transformers")
IMPORTS_SPY = f"""import atexit, json, os, sys
_dir = os.environ.get("RLVR_TEST_IMPORTS_DIR")
if _dir:  # which training libraries this process imported, written when it exits
    def _record():
        with open(os.path.join(_dir, f"{{os.getpid()}}.json"), "w") as fh:
            json.dump({{"argv": sys.argv, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}, fh)
    atexit.register(_record)
"""


def test_a_dry_run_imports_neither_torch_nor_transformers(tmp_path):
    spy, records, work = tmp_path / "spy", tmp_path / "records", tmp_path / "work"
    for folder in (spy, records, work):
        folder.mkdir()
    (spy / "sitecustomize.py").write_text(IMPORTS_SPY)
    env = nemotron_env()
    env["PYTHONPATH"] = f"{spy}:{env['PYTHONPATH']}"
    env["RLVR_TEST_IMPORTS_DIR"] = str(records)
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "tiny", "-d"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    # The plan was made: the memory estimate, the placement and Snakemake's jobs were printed.
    assert "── memory" in proc.stdout and "── placement" in proc.stdout and "rlvr: Missing output files" in proc.stdout
    by_program = {}
    for path in records.glob("*.json"):
        record = json.loads(path.read_text())
        program = "snakemake" if "snakemake" in record["argv"][0] else record["argv"][0].rsplit("/", 1)[-1]
        by_program[program] = record["heavy"]
    assert by_program == {"main.py": [], "snakemake": []}
