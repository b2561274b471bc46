"""Container squashing: deterministic .sqsh names, enroot URIs, and import-once / reuse / --force-squash.

The import is exercised with a fake ``enroot`` executable on PATH (enroot cannot be installed here) that writes
its ``--output`` file and records each call, so the reuse and force logic is checked against real processes.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rlvr.errors import UserError
from rlvr.launch.profile import SquashSettings
from rlvr.launch.squash import enroot_uri, ensure_squashed, import_command, import_launcher, squash_name

IMAGE = "nvcr.io/nvidia/nemo-rl:v0.6.0"


@pytest.mark.parametrize(
    "image,name",
    [
        (IMAGE, "nvcr_io_nvidia_nemo_rl_v0_6_0.sqsh"),  # the upstream example
        ("docker://nvcr.io#nvidia/pytorch:25.05-py3", "nvcr_io_nvidia_pytorch_25_05_py3.sqsh"),
        ("ubuntu", "ubuntu.sqsh"),
        ("--weird//__name--", "weird_name.sqsh"),  # runs collapse, ends are stripped
        ("docker-archive:///data/images/my-img.tar", "my_img_tar.sqsh"),  # archives: by basename only
    ],
)
def test_squash_name_is_derived_from_the_reference_only(image, name):
    """Every non-[A-Za-z0-9_] character → '_', runs collapsed, ends stripped; archives by their basename."""
    assert squash_name(image) == name


def test_squash_name_of_nothing_usable_is_an_error():
    with pytest.raises(UserError, match="no usable characters"):
        squash_name("://")


@pytest.mark.parametrize(
    "image,uri",
    [
        (IMAGE, "docker://nvcr.io#nvidia/nemo-rl:v0.6.0"),  # enroot separates the registry with '#'
        ("localhost:5000/img:1", "docker://localhost:5000#img:1"),
        ("nvidia/cuda:12.4", "docker://nvidia/cuda:12.4"),  # Docker Hub: no registry part
        ("ubuntu", "docker://ubuntu"),
        ("podman://local/img", "podman://local/img"),  # an explicit scheme is kept
    ],
)
def test_enroot_uri(image, uri):
    """A bare reference becomes enroot's docker:// URI with the registry host before '#'."""
    assert enroot_uri(image) == uri


def test_import_runs_on_a_compute_node_by_default():
    """salloc (one node, the profile's partition/account/time) then srun runs `enroot import` there."""
    launcher = import_launcher(SquashSettings(partition="cpu", account="acct", time="00:30:00"))
    assert launcher == [
        "salloc",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--time=00:30:00",
        "--partition=cpu",
        "--account=acct",
        "srun",
        "--nodes=1",
        "--ntasks=1",
        "--export=ALL",
    ]
    assert import_launcher(SquashSettings(via="srun"))[:1] == ["srun"]
    assert import_launcher(SquashSettings(via="local")) == []
    assert import_command(IMAGE, Path("/s/x.sqsh"), ["srun"]) == [
        "srun",
        "enroot",
        "import",
        "--output",
        "/s/x.sqsh",
        "docker://nvcr.io#nvidia/nemo-rl:v0.6.0",
    ]


@pytest.fixture
def fake_enroot(tmp_path, monkeypatch) -> Path:
    """An `enroot` on PATH: `enroot import --output F URI` writes F (or fails when FAKE_ENROOT_FAIL is set)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "enroot_calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "enroot"
    script.write_text(f"""#!/bin/sh
echo "$@ cache=$ENROOT_CACHE_PATH" >> {calls}
[ -n "$FAKE_ENROOT_FAIL" ] && {{ echo "[ERROR] pull denied" >&2; exit 1; }}
[ "$1" = import ] && [ "$2" = --output ] && echo "squashfs of $4" > "$3"
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_import_once_then_reuse_then_force(fake_enroot, tmp_path):
    """First call imports; second reuses without calling enroot; force deletes and imports again."""
    said: list[str] = []
    squash_dir = tmp_path / "sqsh"
    first = ensure_squashed(IMAGE, squash_dir, force=False, launcher=[], say=said.append)
    assert first == squash_dir.resolve() / "nvcr_io_nvidia_nemo_rl_v0_6_0.sqsh"
    assert first.read_text() == "squashfs of docker://nvcr.io#nvidia/nemo-rl:v0.6.0\n"
    calls = fake_enroot.read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith(f"import --output {first} docker://nvcr.io#nvidia/nemo-rl")
    assert f"cache={squash_dir.resolve() / '.enroot' / 'cache'}" in calls[0]  # layers go to the shared dir

    first.write_text("an older import")
    again = ensure_squashed(IMAGE, squash_dir, force=False, launcher=[], say=said.append)
    assert again == first and first.read_text() == "an older import"
    assert len(fake_enroot.read_text().splitlines()) == 1
    assert said[-1] == f"Using existing squashed image: {first}"

    forced = ensure_squashed(IMAGE, squash_dir, force=True, launcher=[], say=said.append)
    assert forced.read_text().startswith("squashfs of docker://")
    assert len(fake_enroot.read_text().splitlines()) == 2


def test_a_failed_import_leaves_no_file(fake_enroot, tmp_path, monkeypatch):
    """enroot's error is reported and no (partial) .sqsh stays behind to be reused later."""
    monkeypatch.setenv("FAKE_ENROOT_FAIL", "1")
    with pytest.raises(UserError, match="enroot import of .* failed \\(exit 1\\): \\[ERROR\\] pull denied"):
        ensure_squashed(IMAGE, tmp_path, force=False, launcher=[], say=lambda _: None)
    assert list(tmp_path.glob("*.sqsh")) == []


def test_a_sqsh_image_is_used_as_it_is(fake_enroot, tmp_path):
    """A .sqsh path is never re-imported, even with force; a missing one is an error."""
    own = tmp_path / "mine.sqsh"
    own.write_text("x")
    assert ensure_squashed(str(own), tmp_path / "d", force=True, launcher=[]) == own
    assert not fake_enroot.exists()
    with pytest.raises(UserError, match="does not exist"):
        ensure_squashed(str(tmp_path / "gone.sqsh"), tmp_path, force=False, launcher=[])


def test_missing_enroot_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError, match="enroot is not installed here"):
        ensure_squashed(IMAGE, tmp_path, force=False, launcher=[], say=lambda _: None)
