"""`snakemake --report` of a finished run: a self-contained HTML that a browser renders with the curves.

The session's whole small tiny run (tests/workflow/conftest.py: a 10-step SFT policy of two layers, 2 GRPO steps of
4 x 4 rollouts, validation at start and end on 8 prompts; shared with the secrets and chat-template tests); ``snakemake
--report report.html`` then writes the report and headless Chromium takes a screenshot of it. Chromium is
required, not optional: install it with ``apt-get install -y chromium`` (.ci/run does so when it is missing).
The run takes most of the time; the tests after it about 30 s.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from rlvr.workflow import REQUEST_KEY, WorkflowRequest
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(whole_small_run) -> Path:
    """The working folder of the session's whole small tiny run (tests/workflow/conftest.py: two GRPO steps,
    validated at the start and the end on 8 prompts), ``results/tiny`` inside."""
    return whole_small_run["work"]


@pytest.fixture(scope="module")
def report_html(finished_run, whole_small_run) -> Path:
    request = WorkflowRequest(step="rl/nemo_rl/rlvr", config="tiny", overrides=whole_small_run["overrides"])
    html = finished_run / "report.html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO_ROOT / "Snakefile"),
            "--directory",
            str(finished_run),
            "--config",
            f"{REQUEST_KEY}={request.to_cli_value()}",
            "--report",
            str(html),
        ],
        env=whole_small_run["env"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return html


def test_the_report_folder_has_every_page(finished_run):
    report = finished_run / "results" / "tiny" / "report"
    assert sorted(p.name for p in report.iterdir()) == [
        "curves.png",
        "data_card.html",
        "report.md",
        "rollouts.html",
        "validation.html",
    ]
    validation = (report / "validation.html").read_text()
    assert validation.count("<tr>") == 3  # the header, step 0 and step 2
    metrics = [json.loads(line) for line in (finished_run / "results" / "tiny" / "rlvr" / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics if "validation/accuracy" in m] == [0, 2]


def test_the_report_html_embeds_the_curves_and_every_item(report_html):
    text = report_html.read_text()
    curves = (report_html.parent / "results" / "tiny" / "report" / "curves.png").read_bytes()
    assert base64.b64encode(curves).decode() in text  # the PNG itself, embedded: the file is self-contained
    for name in ("curves.png", "validation.html", "rollouts.html", "data_card.html"):
        assert name in text
    for caption in ("mean training reward", "validation/*", "rollout dump", "data card written by"):
        assert caption in text


def _png_size_and_colours(path: Path) -> tuple[int, int, int]:
    """Width, height and the number of distinct pixel values of an 8-bit RGB(A) PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        if data[pos + 4 : pos + 8] == b"IDAT":
            chunks.append(data[pos + 8 : pos + 8 + length])
        pos += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    channels = {2: 3, 6: 4}[colour]
    assert depth == 8
    stride = width * channels + 1  # a filter byte per row; filtered bytes still differ where pixels differ
    rows = {raw[r * stride + 1 : (r + 1) * stride] for r in range(height)}
    return width, height, len(rows)


def test_chromium_renders_the_report(report_html, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: apt-get install -y chromium (Debian; .ci/run installs it)")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",  # let the report's scripts render before the screenshot
            f"--screenshot={shot}",
            "--window-size=1280,900",
            f"file://{report_html}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    width, height, distinct_rows = _png_size_and_colours(shot)
    assert (width, height) == (1280, 900)
    assert distinct_rows > 20, "the screenshot is blank"
    assert re.search(r"<title>[^<]*</title>", report_html.read_text())
