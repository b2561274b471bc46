"""Secrets and config hand-off, end to end: data_prep/rl_prep run on its own through the CLI and Snakemake.

The user's setting: data and tokenizer folder given through ``${oc.env:DATA_DIR}``, ordinary keys named
``*_key``/``tokenizer``, and a secret under a neutral key. After the run the secret's value must be nowhere: not in
the output, the written configs, the logs, ``.snakemake/metadata``, nor in the argv of any Python process (a
``sitecustomize`` on the ``PYTHONPATH`` records ``/proc/self/cmdline`` of each one: the ``ps`` view). The same
checks on the session's whole small tiny run (all eight stages, two GRPO steps; tests/workflow/conftest.py). About
3.5 minutes on two busy cores.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from rlvr.workflow import REQUEST_KEY, WorkflowRequest
from tests.conftest import REPO_ROOT, nemotron_env
from tests.workflow.conftest import ARGV_SPY, SECRET

pytestmark = pytest.mark.slow

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
OVERRIDES = [
    "tokenizer=${oc.env:DATA_DIR}/tok",
    "data.train.data_path=${oc.env:DATA_DIR}/train.jsonl",
    "data.validation.data_path=${oc.env:DATA_DIR}/val.jsonl",
    "data.default.input_key=question",
    "data.default.output_key=answer",
    "run.env.env_vars.OTHER=Bearer ${oc.env:MY_API_KEY}",
]


def user_data(folder: Path) -> None:
    """A user's data folder: an HF tokenizer folder with a chat template, and JSONL with their own column names."""
    vocab = {"<unk>": 0, "<|user|>": 1, "<|assistant|>": 2, "\n": 3}
    for c in range(32, 127):
        vocab.setdefault(chr(c), len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", additional_special_tokens=["<|user|>", "<|assistant|>"]
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(folder / "tok"))
    for name, rows in (("train", range(12)), ("val", range(50, 54))):
        (folder / f"{name}.jsonl").write_text(
            "".join(json.dumps({"question": f"{i}+1", "answer": str(i + 1)}) + "\n" for i in rows)
        )


@pytest.fixture(scope="module")
def rl_prep_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    data, work, spy, argv_dir = (root / n for n in ("data", "work", "spy", "argv"))
    for folder in (data, work, spy, argv_dir):
        folder.mkdir()
    user_data(data)
    (spy / "sitecustomize.py").write_text(ARGV_SPY)
    env = nemotron_env()
    env.update(
        DATA_DIR=str(data), MY_API_KEY=SECRET, RLVR_TEST_ARGV_DIR=str(argv_dir), PYTHONPATH=f"{spy}:{env['PYTHONPATH']}"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "data_prep/rl_prep", *OVERRIDES, "--cores", "1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {
        "work": work,
        "data": data,
        "argv": argv_dir,
        "env": env,
        "proc": proc,
        "run": work / "results" / "rl_prep-default",
    }


def test_rl_prep_on_its_own_templates_with_the_tokenizer_folder(rl_prep_run):
    run = rl_prep_run["run"]
    rows = [json.loads(line) for line in (run / "rl_prep" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["prompt"] == "<|user|>0+1\n<|assistant|>" and rows[0]["ground_truth"] == "1"
    card = json.loads((run / "rl_prep" / "data_card.json").read_text())
    assert card["tokenizer"] == str(rl_prep_run["data"] / "tok") and card["validation"]["rows_out"] == 4


def test_the_secret_value_is_in_no_file_output_or_metadata(rl_prep_run):
    work, proc = rl_prep_run["work"], rl_prep_run["proc"]
    files = [p for p in work.rglob("*") if p.is_file()]
    assert any(".snakemake/metadata" in str(p) for p in files) and any(p.suffix == ".log" for p in files)
    assert [p for p in files if SECRET.encode() in p.read_bytes()] == []
    assert SECRET not in proc.stdout + proc.stderr and "******" in proc.stdout
    written = yaml.safe_load((rl_prep_run["run"] / "config.yaml").read_text())
    assert written["run"]["env"]["env_vars"]["OTHER"] == "Bearer ${oc.env:MY_API_KEY}"
    assert written["data"]["default"]["input_key"] == "question"  # an ordinary key, in clear


def test_rule_params_hold_a_digest_and_a_path_not_config_values(rl_prep_run):
    records = [json.loads(p.read_text()) for p in (rl_prep_run["work"] / ".snakemake" / "metadata").iterdir()]
    (record,) = [r for r in records if r["rule"] == "rl_prep"]
    digest, path = (p.strip("'") for p in record["params"])
    assert re.fullmatch(r"[0-9a-f]{16}", digest) and path == "results/rl_prep-default/stage_configs/rl_prep.yaml"
    assert str(rl_prep_run["data"]) not in record["shellcmd"] and "question" not in record["shellcmd"]


def test_the_stage_argv_holds_no_config_value(rl_prep_run):
    """``ps`` of every Python process of the run: the stage sees its config file and output path, nothing else."""
    argvs = [p.read_bytes().rstrip(b"\0").decode().split("\0") for p in rl_prep_run["argv"].iterdir()]
    assert not [a for a in argvs if any(SECRET in token for token in a)]
    stages = [a for a in argvs if "rlvr.stages" in a]
    assert len(stages) == 1, argvs
    assert stages[0][1:] == [
        "-m",
        "rlvr.stages",
        "rl_prep",
        "--config",
        "results/rl_prep-default/stage_configs/rl_prep.yaml",
        "--out",
        "results/rl_prep-default/rl_prep",
    ]


def test_the_written_config_re_plans_and_a_rerun_has_nothing_to_do(rl_prep_run):
    work, env = rl_prep_run["work"], rl_prep_run["env"]
    again = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "data_prep/rl_prep", *OVERRIDES, "-d"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr
    # A key rl_prep reads (the seed would not do: it only seeds split_validation_size splits, and there is none).
    changed = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlvr.cli.main",
            "steps",
            "run",
            "data_prep/rl_prep",
            *OVERRIDES,
            "data.allow_overlap=true",
            "-d",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert re.search(r"rl_prep: .*[Pp]arams", changed.stdout), changed.stdout + changed.stderr
    reuse = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlvr.cli.main",
            "steps",
            "run",
            "data_prep/rl_prep",
            "-c",
            "results/rl_prep-default/config.yaml",
            "-d",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert reuse.returncode == 0, reuse.stdout + reuse.stderr
    # The same run folder (its name is in the record's first line) and the same digest: nothing to re-run.
    assert "nothing to do" in reuse.stdout and SECRET not in reuse.stdout + reuse.stderr
    assert "OTHER: '******'" in reuse.stdout


def test_every_stage_command_of_the_rlvr_dag_is_paths_only(tmp_path):
    """The shell command of each rule (``snakemake -n -p``): a config file and paths, no JSON, no secret."""
    request = WorkflowRequest(
        step="rl/nemo_rl/rlvr", config="tiny", overrides=["logger.wandb.name=${oc.env:MY_API_KEY}"]
    )
    env = {**nemotron_env(), "MY_API_KEY": SECRET}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-p",
            "--directory",
            str(tmp_path),
            "--config",
            f"{REQUEST_KEY}={request.to_cli_value()}",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout + proc.stderr
    commands = [line.split("-m rlvr.stages ", 1)[1] for line in proc.stdout.splitlines() if "-m rlvr.stages " in line]
    assert len(commands) == 8
    for command in commands:
        tokens = shlex.split(command.split(" > ")[0].split(" 2>&1")[0])
        values = [t for t in tokens[1:] if not t.startswith("--")]
        assert all(v.startswith("results/tiny") for v in values), command
    assert not (tmp_path / "results").exists()


def test_a_whole_small_tiny_run_keeps_the_secret_out_of_everything(whole_small_run):
    """All eight stages run (tests/workflow/conftest.py, ``whole_small_run``); the rlvr stage resolves the secret
    itself and records only its reference."""
    work, run, proc = whole_small_run["work"], whole_small_run["run"], whole_small_run["proc"]
    assert (run / "report" / "report.md").is_file()
    for record in (run / "config.yaml", run / "rlvr" / "config.yaml", run / "stage_configs" / "rlvr.yaml"):
        assert yaml.safe_load(record.read_text())["logger"]["wandb"]["name"] == "team-${oc.env:MY_API_KEY}"
    assert [p for p in work.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
    assert SECRET not in proc.stdout + proc.stderr
    argvs = [p.read_bytes().rstrip(b"\0").decode().split("\0") for p in whole_small_run["argv"].iterdir()]
    assert not [a for a in argvs if any(SECRET in token for token in a)]
    stages = [a[3:] for a in argvs if a[1:3] == ["-m", "rlvr.stages"]]  # (not the Ray launcher that starts one)
    assert sorted(s[0] for s in stages) == sorted(
        ["tiny_data", "tiny_sft", "hf_to_megatron", "rl_prep", "reward_preflight", "rlvr", "megatron_to_hf", "report"]
    )
    for stage in stages:
        assert all(v.startswith("results/tiny") for v in stage[1:] if not v.startswith("--")), stage
