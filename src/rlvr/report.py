"""The run report: curves, the validation table, sample rollouts and the data card of one GRPO run.

``write_report`` writes, into one folder: ``report.md`` (the summary a person reads first), ``curves.png`` (mean
training reward and validation accuracy per step), ``validation.html`` (every validation/* metric per validation
step), ``rollouts.html`` (the first rows of the last step's rollout dump, or why there is none) and
``data_card.html`` (rl_prep's data card). The HTML files are small self-contained pages: ``snakemake --report``
embeds them, with the curves, as the run's results (rules/report.smk, captions in report/).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlvr.grpo.signal_guard import DEFAULT_PATIENCE
from rlvr.grpo.signal_guard import METRIC as ZERO_STD
from rlvr.utils.atomic import atomic_dir

ROLLOUT_ROWS = 8  # rows of the last step's dump shown in the report
ROLLOUT_TEXT = 600  # characters of a prompt or response shown (the dump keeps them whole)
_STEP_FILE = re.compile(r"step_(\d+)\.jsonl$")
_PAGE = (
    "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title><style>"
    "body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse}} "
    "td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}} "
    "td.num{{text-align:right}} pre{{white-space:pre-wrap;margin:0}}</style></head>"
    "<body><h3>{title}</h3>{body}</body></html>\n"
)


@dataclass(frozen=True)
class ReportInputs:
    """What the report reads; rules/report.smk declares each (the rollout folder is rlvr's, see there)."""

    metrics: Path  # rlvr's metrics.jsonl
    summary: Path  # rlvr's summary.json
    data_card: Path  # rl_prep's data_card.json
    rollouts: Path  # rlvr's rollouts/ folder of step_<N>.jsonl dumps; absent when dumps are off
    sft_policy: Path | None = None  # the tiny SFT policy folder (its sft_metrics.json), when the run made one


def _load_json(path: Path | None) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _plot(metrics: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [m for m in metrics if "train/reward" in m]
    val = [m for m in metrics if "validation/accuracy" in m]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].plot([m["step"] for m in train], [m["train/reward"] for m in train], lw=1, label="train/reward")
    axes[0].set(title="Mean training reward", xlabel="GRPO step", ylabel="reward")
    axes[1].plot([m["step"] for m in val], [m["validation/accuracy"] for m in val], "o-", label="validation/accuracy")
    axes[1].set(title="Validation accuracy (mean reward)", xlabel="GRPO step", ylabel="accuracy")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _signal_lines(metrics: list[dict[str, Any]], summary: dict[str, Any]) -> list[str]:
    """How many steps had no learning signal (every group's rewards equal), and a warning when it lasted."""
    fracs = [(m["step"], m[ZERO_STD]) for m in metrics if m.get(ZERO_STD) is not None]
    if not fracs:
        return []
    patience = (summary.get("zero_signal") or {}).get("patience", DEFAULT_PATIENCE)
    streak = longest = dead = 0
    for _, frac in fracs:
        streak = streak + 1 if frac >= 1.0 else 0
        dead += frac >= 1.0
        longest = max(longest, streak)
    mean = sum(f for _, f in fracs) / len(fracs)
    lines = [
        f"- groups with no reward spread ({ZERO_STD}): mean {mean:.3f}; {dead} of {len(fracs)} steps had "
        f"none with any spread (longest streak {longest})"
    ]
    if dead == len(fracs) or (patience and longest >= patience):
        what = "at any step" if dead == len(fracs) else f"for {longest} consecutive steps"
        lines.insert(
            0,
            f"- **WARNING (no_learning_signal): no learning signal {what}**: every group of samples got "
            f"the same reward, so every advantage was 0 and those steps trained nothing. A change of "
            f"+0.000 here is not a result; check the policy, the reward function and max_new_tokens.",
        )
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"<td class='num'>{value:.4g}</td>"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"<td class='num'>{value}</td>"
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) > ROLLOUT_TEXT:
        text = text[:ROLLOUT_TEXT] + f"… ({len(text) - ROLLOUT_TEXT} more characters)"
    return f"<td><pre>{html.escape(text)}</pre></td>"


def _table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(r.get(c, "")) for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def validation_page(metrics: list[dict[str, Any]]) -> str:
    """Every validation/* metric at each step that validated."""
    rows = [m for m in metrics if any(k.startswith("validation/") for k in m)]
    if not rows:
        return _PAGE.format(title="Validation", body="<p>No validation ran (grpo.val_period, val_at_start/end).</p>")
    columns = ["step", *sorted({k for m in rows for k in m if k.startswith("validation/")})]
    return _PAGE.format(title="Validation", body=_table(columns, rows))


def rollouts_page(folder: Path) -> str:
    """The first rows of the last step's dump (``step_<N>.jsonl``), or why there is none."""
    dumps = sorted((int(m.group(1)), p) for p in folder.glob("step_*.jsonl") if (m := _STEP_FILE.search(p.name)))
    if not dumps:
        body = (
            f"<p>No rollout dumps in {html.escape(str(folder))}: rollout dumps were off for this run (turn them on "
            "with the logger's rollout dump key to see prompts, responses, rewards and advantages here). The rlvr "
            "log prints logger.num_val_samples_to_print validation samples.</p>"
        )
        return _PAGE.format(title="Sample rollouts", body=body)
    step, path = dumps[-1]
    rows = _read_jsonl(path)[:ROLLOUT_ROWS]
    first = ["prompt", "response", "reward", "advantage"]
    columns = [c for c in first if any(c in r for r in rows)]
    columns += sorted({k for r in rows for k in r} - set(columns))
    title = f"Sample rollouts: the first {len(rows)} rows of step {step}"
    return _PAGE.format(title=title, body=f"<p>From {html.escape(str(path))}.</p>" + _table(columns, rows))


def data_card_page(card: dict[str, Any] | None) -> str:
    if card is None:
        return _PAGE.format(title="Data card", body="<p>rl_prep wrote no data card.</p>")
    rows = [{"field": key, "value": value} for key, value in sorted(card.items())]
    return _PAGE.format(title="Data card (rl_prep)", body=_table(["field", "value"], rows))


def _summary_lines(name: str, metrics: list[dict[str, Any]], summary: dict[str, Any], sft: dict | None) -> list[str]:
    val = [m for m in metrics if "validation/accuracy" in m]
    steps = [m for m in metrics if "timing/train/total_step_time" in m]
    lines = [f"# rlvr run report: {name}", ""]
    if val:
        first, last = val[0], val[-1]
        lines += [
            f"- validation/accuracy: {first['validation/accuracy']:.3f} at step {first['step']} -> "
            f"{last['validation/accuracy']:.3f} at step {last['step']} "
            f"(change {last['validation/accuracy'] - first['validation/accuracy']:+.3f})"
        ]
    if steps:
        mean_step = sum(m["timing/train/total_step_time"] for m in steps) / len(steps)
        lines += [
            f"- GRPO steps: {len(steps)} (mean {mean_step:.2f} s/step); training wall time "
            f"{summary.get('seconds', 0):.0f} s"
        ]
    lines += _signal_lines(metrics, summary)
    if summary.get("artifact"):
        lines += [f"- final checkpoint_megatron: `{summary['artifact']}`"]
    if sft:
        lines += [f"- tiny SFT policy: {json.dumps({k: v for k, v in sft.items() if 'accuracy' in k})}"]
    return lines


def write_report(inputs: ReportInputs, out: Path) -> Path:
    """Write the report folder ``out`` (module docstring) from ``inputs``; return ``out/report.md``."""
    metrics = _read_jsonl(inputs.metrics)
    summary = _load_json(inputs.summary) or {}
    card = _load_json(inputs.data_card)
    sft = _load_json(inputs.sft_policy / "sft_metrics.json" if inputs.sft_policy else None)
    lines = _summary_lines(Path(out).resolve().parent.name, metrics, summary, sft)  # the run folder's name
    if card:
        lines += ["", "## Data card", "", "```json", json.dumps(card, indent=2, sort_keys=True), "```"]
    val = [m for m in metrics if "validation/accuracy" in m]
    lines += ["", "## Curves", "", "![curves](curves.png)", "", "## Validation history", ""]
    lines += ["| step | validation/accuracy |", "|---:|---:|"]
    lines += [f"| {m['step']} | {m['validation/accuracy']:.4f} |" for m in val]
    with atomic_dir(out) as tmp:
        _plot(metrics, tmp / "curves.png")
        (tmp / "validation.html").write_text(validation_page(metrics))
        (tmp / "rollouts.html").write_text(rollouts_page(Path(inputs.rollouts)))
        (tmp / "data_card.html").write_text(data_card_page(card))
        (tmp / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return Path(out) / "report.md"
