"""The ``nemotron`` console script: ``steps list|show|run`` (Nemotron Steps CLI) and ``rewards score``.

User errors (bad config, unknown step or profile, bad data) and OS errors (a full disk, a read-only folder) print
one message without a traceback and exit 1.
"""

from __future__ import annotations

import argparse
import sys

from rlvr.errors import UserError, describe_os_error

USAGE = """usage: nemotron steps list [--category C] [--consumes T] [--produces T] [--tag G] [--tree] [--json]
       nemotron steps show STEP_ID [--json]
       nemotron steps run STEP_ID [-c CONFIG] [-r PROFILE | -b PROFILE] [-d] [--force-squash]
                           [key=value ...] [passthrough ...]
       nemotron rewards score --data ROWS.jsonl --responses RESPONSES.jsonl [--output SCORES.jsonl]
                              [--env-name math|code] [--input-key K] [--output-key K]"""


def _list(argv: list[str]) -> int:
    from rlvr.cli.steps import list_steps

    p = argparse.ArgumentParser(prog="nemotron steps list")
    p.add_argument("--category")
    p.add_argument("--consumes")
    p.add_argument("--produces")
    p.add_argument("--tag")
    p.add_argument("--tree", action="store_true")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    return list_steps(a.category, a.consumes, a.produces, a.tag, a.tree, a.json)


def _show(argv: list[str]) -> int:
    from rlvr.cli.steps import show_step

    p = argparse.ArgumentParser(prog="nemotron steps show")
    p.add_argument("step_id")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    return show_step(a.step_id, a.json)


def _score(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="nemotron rewards score", description="Score responses against their rows with the rows' verifiers."
    )
    p.add_argument("--data", required=True, help="rows JSONL: rl_prep output or raw rows in any format rl_prep reads")
    p.add_argument("--responses", required=True, help='JSONL of {"response": str}, one per row, in row order')
    p.add_argument("--output", help="write scores JSONL here instead of printing")
    p.add_argument(
        "--env-name",
        choices=["math", "code"],
        help="kind of the raw rows (as data.*.env_name); default: code if rows hold 'tests', else math",
    )
    p.add_argument("--input-key", help="column of the problem in raw rows (as data.*.input_key)")
    p.add_argument("--output-key", help="column of the answer / tests in raw rows (as data.*.output_key)")
    a = p.parse_args(argv)
    from rlvr.rewards.score_cli import score_files

    return score_files(
        a.data, a.responses, a.output, env_name=a.env_name, input_key=a.input_key, output_key=a.output_key
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    group, rest = argv[0], argv[1:]
    try:
        if group == "steps" and rest and rest[0] == "list":
            return _list(rest[1:])
        if group == "steps" and rest and rest[0] == "show":
            return _show(rest[1:])
        if group == "steps" and rest and rest[0] == "run":
            if len(rest) > 1 and rest[1] in ("-h", "--help"):
                print(USAGE)
                return 0
            from rlvr.cli.steps import run_step

            return run_step(rest[1:])
        if group == "rewards" and rest and rest[0] == "score":
            return _score(rest[1:])
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk, a read-only or unwritable folder: one line, never a traceback
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
