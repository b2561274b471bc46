"""``nemotron steps list | show | run``: the Nemotron Steps CLI over the Snakemake workflow.

``run`` compiles the step's config with the shared loader (so every config error surfaces here, before any
compute), prints it, hands the resolved request to the profile's executor (:mod:`rlvr.launch.executors`), and runs
the Snakemake command it returns, which builds the step's target and whatever it depends on. Its exit code is
Snakemake's. Option parsing follows the upstream splitter: our flags may appear anywhere, ``key=value`` tokens not
starting with ``-`` are config overrides and everything else is passed through to Snakemake.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from rlvr.errors import UserError
from rlvr.launch.supervise import run_attached
from rlvr.steps.index import StepInfo, discover, resolve_step
from rlvr.utils.runlock import RunLock

if TYPE_CHECKING:  # the CLI imports the config loader and the launchers only when a command needs them
    from rlvr.config import StepConfig
    from rlvr.launch.request import Launch, RunRequest

CATEGORY_TITLES = {"rl": "Reinforcement Learning", "data_prep": "Data Preparation", "convert": "Conversion"}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _types(artifacts) -> str:
    return ", ".join(a.type for a in artifacts) or "-"


def list_steps(category=None, consumes=None, produces=None, tag=None, tree=False, as_json=False) -> int:
    steps = [
        s
        for s in discover()
        if (category is None or s.category == category)
        and (consumes is None or any(a.type == consumes for a in s.consumes))
        and (produces is None or any(a.type == produces for a in s.produces))
        and (tag is None or tag in s.tags)
    ]
    if as_json:
        print(json.dumps([s.to_json() for s in steps], indent=2))
        return 0
    if not steps:
        print("No steps matched.")
        return 0
    if tree:
        print("Available Steps")
        for cat in sorted({s.category for s in steps}):
            print(f"├── {cat} — {CATEGORY_TITLES.get(cat, cat.title())}")
            for s in (s for s in steps if s.category == cat):
                print(f"│   └── {s.id}  {_first_line(s.description)}")
        return 0
    rows = [("ID", "Category", "Consumes", "Produces", "Description")]
    rows += [(s.id, s.category, _types(s.consumes), _types(s.produces), _first_line(s.description)) for s in steps]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    print("Available Steps")
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4])
    return 0


def show_step(step_id: str, as_json: bool = False) -> int:
    step = resolve_step(step_id)
    if as_json:
        print(json.dumps(step.to_json(with_runspec=True), indent=2))
        return 0
    print(f"{step.id} — {step.name}\n{step.path}\n\n{step.description}\n")
    print("Consumes")
    for a in step.consumes:
        print(f"  • {a.type}{'' if a.required else ' (optional)'} — {a.description}")
    print("Produces")
    for a in step.produces:
        print(f"  • {a.type} — {a.description}")
    print("Parameters")
    for p in step.parameters:
        default = f" (default={p.default})" if p.has_default else ""
        choices = f" (choices: {', '.join(map(str, p.choices))})" if p.choices else ""
        print(f"  • {p.name}{default}{choices} — {p.description}")
    rs = step.runspec
    if rs:
        res = rs.get("resources", {})
        print("Runspec")
        print(
            f"  launcher: {rs.get('launch', '-')}\n  image: {rs.get('image') or '-'}\n"
            f"  resources: nodes={res.get('nodes', 1)} gpus_per_node={res.get('gpus_per_node', 0)}\n"
            f"  config dir: {step.config_dir}\n  default config: {step.default_config}"
        )
    return 0


@dataclass
class RunArgs:
    step_id: str | None = None
    config: str | None = None
    run_profile: str | None = None
    batch_profile: str | None = None
    name: str | None = None
    dry_run: bool = False
    force_squash: bool = False
    dotlist: list[str] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)


_VALUE_FLAGS = {
    "-c": "config",
    "--config": "config",
    "-r": "run_profile",
    "--run": "run_profile",
    "-b": "batch_profile",
    "--batch": "batch_profile",
    "--name": "name",
}
_BOOL_FLAGS = {"-d": "dry_run", "--dry-run": "dry_run", "--force-squash": "force_squash"}
# Upstream's splitter accepts --stage and then ignores it; a flag that does nothing is refused here instead.
_REFUSED_FLAGS = {"--stage": "--stage does nothing in the Nemotron Steps CLI (nothing reads it); remove it"}


# ``~key.path`` removes a key (it then takes its schema default); without this it would reach Snakemake as a target.
_REMOVAL = re.compile(r"^~[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


def split_run_args(tokens: list[str]) -> RunArgs:
    """The upstream token splitter: our options anywhere, ``k=v`` → override, the rest → Snakemake."""
    args = RunArgs()
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, eq, inline = tok.partition("=")
        if tok in _VALUE_FLAGS or (eq and name in _VALUE_FLAGS and name.startswith("--")):
            if not eq:
                if i + 1 >= len(tokens):
                    raise UserError(f"option {tok} needs a value")
                i += 1
                inline = tokens[i]
            setattr(args, _VALUE_FLAGS[name], inline)
        elif tok in _BOOL_FLAGS:
            setattr(args, _BOOL_FLAGS[tok], True)
        elif tok in _REFUSED_FLAGS:
            raise UserError(_REFUSED_FLAGS[tok])
        elif ("=" in tok and not tok.startswith("-")) or _REMOVAL.match(tok):
            args.dotlist.append(tok)
        elif args.step_id is None and not tok.startswith("-"):
            args.step_id = tok
        else:
            args.passthrough.append(tok)
        i += 1
    if args.step_id is None:
        raise UserError(
            "usage: nemotron steps run STEP_ID [-c CONFIG] [--name RUN] [-r PROFILE | -b PROFILE] [-d] "
            "[--force-squash] [key=value ...] [passthrough ...]"
        )
    if args.run_profile and args.batch_profile:
        raise UserError("-r/--run (attached) and -b/--batch (detached) exclude each other; pass one of them")
    return args


def _run_section(args: RunArgs, step: StepInfo, run_dir: Path, profile: str, executor: str) -> dict:
    mode = "run" if args.run_profile else "batch" if args.batch_profile else "local"
    return {
        "mode": mode,
        "profile": profile,
        "executor": executor,
        "run_dir": str(run_dir),
        "cli": {"dotlist": args.dotlist, "passthrough": args.passthrough, "config": args.config},
        "recipe": {"name": step.runspec.get("name", step.id), "step": step.id},
    }


def _print_panel(title: str, data: dict) -> None:
    print(f"── {title} " + "─" * max(0, 60 - len(title)))
    print(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=120).rstrip())


def summarize_plan(output: str) -> list[str]:
    """``rule: reason`` lines from Snakemake's dry-run output."""
    lines, rule = [], None
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
        elif line.startswith("reason:") and rule and rule != "all":
            lines.append(f"  {rule}: {line[len('reason:') :].strip()}")
            rule = None
    return lines


def run_step(tokens: list[str]) -> int:
    """``steps run``: parse, load and print the config, let the profile's executor prepare, then run or plan."""
    from rlvr.launch.executors import prepare_launch

    args = split_run_args(tokens)
    step = resolve_step(args.step_id)
    cfg, request = resolve_request(args, step)
    _print_compiled(args, step, cfg, request)
    launch = prepare_launch(request)
    if request.dry_run:
        return _dry_run(launch, request, cfg)
    return _run(launch, request, step, cfg, tokens)


def resolve_request(args: RunArgs, step: StepInfo) -> tuple[StepConfig, RunRequest]:
    """The loaded config and the :class:`~rlvr.launch.request.RunRequest` handed to the executor."""
    from rlvr.config import load_step_config
    from rlvr.config.files import is_path_like
    from rlvr.config.secrets import secret_env_vars
    from rlvr.launch.profile import load_profile
    from rlvr.launch.request import RunRequest
    from rlvr.launch.secret_env import mark_config_secrets
    from rlvr.workflow import DEFAULT_STEP, WorkflowRequest, find_profile, run_dir

    if args.name is not None:
        # --name is the run.name override, applied last; JSON quoting keeps "007" a string for the YAML parser.
        args.dotlist.append(f"run.name={json.dumps(args.name)}")
    cfg = load_step_config(step, args.config, args.dotlist)
    profile = load_profile(find_profile(args.run_profile or args.batch_profile or "local"))
    run_name = (cfg.resolved.get("run") or {}).get("name")  # "run" is optional in the rl_prep and convert configs
    # The Snakefile re-loads the config: hand it an absolute path (cwd-independent) or the name.
    config_ref = str(cfg.path) if is_path_like(args.config or "") else (args.config or step.default_config)
    request = RunRequest(
        workflow=WorkflowRequest(step=step.id, config=config_ref, overrides=args.dotlist),
        profile=profile,
        run_dir=run_dir(step.id, cfg.name, run_name),
        run_name=run_name or cfg.name,
        env=mark_config_secrets(dict(os.environ), secret_env_vars(cfg.resolved, cfg.unresolved)),
        passthrough=list(args.passthrough),
        cluster=cfg.resolved["cluster"] if step.id == DEFAULT_STEP else None,
        dry_run=args.dry_run,
        detach=args.batch_profile is not None,
        force_squash=args.force_squash,
    )
    return cfg, request


def _print_compiled(args: RunArgs, step: StepInfo, cfg: StepConfig, request: RunRequest) -> None:
    """The run and config panels (secrets as ******) and, for rlvr, the memory estimate."""
    from rlvr.workflow import DEFAULT_STEP

    profile_name = args.run_profile or args.batch_profile or "local"
    print("\nCompiled Configuration")
    _print_panel("run", _run_section(args, step, request.run_dir, profile_name, request.profile.executor))
    _print_panel("config", cfg.redacted())
    if step.id == DEFAULT_STEP:
        _print_memory_plan(cfg.resolved, request.run_dir, local=request.profile.executor == "local")
        _print_placement(cfg.resolved)


def _dry_run(launch: Launch, request: RunRequest, cfg: StepConfig) -> int:
    """``-d``: the plans of the run, each under its own heading: Snakemake's (which rules would run, and why),
    then what the run will need at run time. Nothing is written."""
    from rlvr.config.facts import plan_notes

    proc = subprocess.run(launch.argv, capture_output=True, text=True, env=launch.env)
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode
    plan = summarize_plan(proc.stdout)
    print("── plan " + "─" * 56)
    print("\n".join(plan) if plan else "  nothing to do: every output is up to date")
    for note in plan_notes(cfg.resolved):
        print(f"  note: {note}")
    return 0


def _run(launch: Launch, request: RunRequest, step: StepInfo, cfg: StepConfig, tokens: list[str]) -> int:
    """Lock the run folder, record the config, then run Snakemake attached or hand it off (``-b``)."""
    try:
        lock = _lock_run_folder(request.run_dir, step, cfg)
        try:
            _write_config_record(request.run_dir, cfg)
            if request.detach:
                print(launch.detach(lock))
                return 0
            return run_attached(
                launch.argv,
                launch.env,
                unlock_argv=launch.unlock_argv,
                on_interrupt=lambda: _print_resume_hint(request.run_dir, tokens),
            )
        finally:
            lock.release()
    finally:
        launch.cleanup()  # after a successful -b the detached run owns what it needs: nothing is removed


def _print_memory_plan(resolved: dict, rdir: Path, *, local: bool) -> None:
    from rlvr.config.memory import memory_plan

    made_here = rdir / "tiny_sft" / "policy"  # -c tiny: the policy the DAG made, once it exists
    policy = str(made_here) if (resolved.get("tiny") or {}).get("enabled") else None
    print("── memory (estimate per training process) " + "─" * 22)
    print("\n".join(memory_plan(resolved, policy_path=policy, local=local)))


def _print_placement(resolved: dict) -> None:
    """Which process runs on which node and device; a layout that wastes or over-subscribes a device stops here."""
    from rlvr.launch.placement import plan_placement

    print("── placement " + "─" * 51)
    print("\n".join(plan_placement(resolved).lines()))


def _lock_run_folder(rdir: Path, step: StepInfo, cfg) -> RunLock:
    """Refuse a second run into a run folder in use (Snakemake's own lock lives in the working folder)."""
    lock = RunLock(rdir, what=f"nemotron steps run {step.id} -c {cfg.name}").acquire()
    if note := lock.takeover_note():
        print(note, file=sys.stderr)
    return lock


def _print_resume_hint(rdir: Path, tokens: list[str]) -> None:
    ckpts = sorted((rdir / "rlvr" / "ckpts").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    kept = f"the newest complete step checkpoint is {ckpts[-1]}" if ckpts else "no step checkpoint was written yet"
    command = " ".join(["nemotron", "steps", "run", *tokens])
    print(
        f"stopped: every process of the run has ended and the locks are released; {kept}.\n"
        f"resume with the same command: {command}",
        file=sys.stderr,
    )


def _write_config_record(rdir: Path, cfg) -> None:
    from rlvr.config.secrets import config_yaml
    from rlvr.utils.atomic import atomic_file

    # Secrets stay ${oc.env:...} references (never values, never ******) so that `-c <run>/config.yaml` re-runs it.
    # The overrides are already in the resolved config: the header names them without repeating their values.
    with atomic_file(rdir / "config.yaml") as fh:
        fh.write(
            f"# {cfg.step_id} -c {cfg.name} (resolved, secrets as ${{oc.env:...}} references; "
            f"re-use with: -c {rdir / 'config.yaml'})\n"
        )
        fh.write(config_yaml(cfg.engine_view()))
