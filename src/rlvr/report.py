"""The run report: reward and validation-accuracy curves (PNG) and a Markdown summary of a run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlvr.grpo.signal_guard import DEFAULT_PATIENCE
from rlvr.grpo.signal_guard import METRIC as ZERO_STD
from rlvr.utils.atomic import atomic_dir


def _load_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


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


def write_report(run_dir: Path, out: Path) -> Path:
    """Write ``out/report.md`` and ``out/curves.png`` from ``run_dir``'s metrics, summary and data card."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "rlvr" / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    summary = _load_json(run_dir / "rlvr" / "summary.json") or {}
    card = _load_json(run_dir / "rl_prep" / "data_card.json")
    sft = _load_json(run_dir / "tiny_sft" / "policy" / "sft_metrics.json")
    val = [m for m in metrics if "validation/accuracy" in m]
    steps = [m for m in metrics if "timing/train/total_step_time" in m]
    lines = [f"# rlvr run report: {run_dir.name}", ""]
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
    if card:
        lines += ["", "## Data card", "", "```json", json.dumps(card, indent=2, sort_keys=True), "```"]
    lines += [
        "",
        "## Curves",
        "",
        "![curves](curves.png)",
        "",
        "## Validation history",
        "",
        "| step | validation/accuracy |",
        "|---:|---:|",
    ]
    lines += [f"| {m['step']} | {m['validation/accuracy']:.4f} |" for m in val]
    with atomic_dir(out) as tmp:
        _plot(metrics, tmp / "curves.png")
        (tmp / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8]))
    return Path(out) / "report.md"
