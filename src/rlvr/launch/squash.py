"""Container images as ``.sqsh`` files: imported once with ``enroot import``, reused by every later run.

pyxis can pull an image at every ``srun --container-image=<ref>``, on every node, which for an image of ~20 GB is
minutes per job and a registry hammered by N nodes at once. Importing it once into a squashfs file on the shared
filesystem and pointing pyxis at that file removes both costs. The file name is derived from the image reference
only (upstream Nemotron's rule), so a second run finds it: every character outside ``[A-Za-z0-9_]`` becomes
``_``, runs of ``_`` collapse to one and the ends are stripped::

    nvcr.io/nvidia/nemo-rl:v0.6.0  →  nvcr_io_nvidia_nemo_rl_v0_6_0.sqsh

``--force-squash`` deletes the file and imports again (a moved tag, a corrupt file). The import runs on a compute
node (``salloc ... srun enroot import``) because login nodes rarely have the disk or the enroot set-up for it.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from rlvr.errors import UserError
from rlvr.launch.profile import SquashSettings

# enroot's transports; a bare reference means a registry image (docker://).
URI_SCHEMES = ("docker://", "dockerd://", "podman://", "docker-archive://", "oci-archive://")
_ARCHIVE_SCHEMES = ("docker-archive://", "oci-archive://")


def squash_name(image: str) -> str:
    """The ``.sqsh`` file name of an image reference; archives are named by their file's basename."""
    ref = image.strip()
    if ref.startswith(_ARCHIVE_SCHEMES):
        ref = Path(ref.split("://", 1)[1]).name
    elif "://" in ref:
        ref = ref.split("://", 1)[1]
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9_]", "_", ref)).strip("_")
    if not safe:
        raise UserError(f"container image '{image}' has no usable characters for a .sqsh file name")
    return f"{safe}.sqsh"


def enroot_uri(image: str) -> str:
    """enroot's URI for an image: ``docker://[REGISTRY#]IMAGE[:TAG]`` unless a scheme is given.

    enroot separates the registry host with ``#``: ``nvcr.io/nvidia/nemo-rl:v0.6.0`` is
    ``docker://nvcr.io#nvidia/nemo-rl:v0.6.0``. The first path component is a registry when it looks like a host
    (has a ``.`` or a ``:port``, or is ``localhost``), as Docker decides it.
    """
    ref = image.strip()
    if ref.startswith(URI_SCHEMES):
        return ref
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{first}#{rest}"
    return f"docker://{ref}"


def is_squash_file(image: str) -> bool:
    return image.strip().endswith(".sqsh")


def import_launcher(settings: SquashSettings) -> list[str]:
    """The command prefix that places ``enroot import`` on a compute node (empty: run it here)."""
    if settings.via == "local":
        return []
    where = [f"--time={settings.time}"]
    where += [f"--partition={settings.partition}"] if settings.partition else []
    where += [f"--account={settings.account}"] if settings.account else []
    step = ["srun", "--nodes=1", "--ntasks=1", "--export=ALL"]
    if settings.via == "srun":
        return [*step, *where]
    return ["salloc", "--nodes=1", "--ntasks-per-node=1", *where, *step]


def import_command(image: str, sqsh: Path, launcher: Sequence[str]) -> list[str]:
    """``[launcher...] enroot import --output <sqsh> <uri>``."""
    return [*launcher, "enroot", "import", "--output", str(sqsh), enroot_uri(image)]


def enroot_env(squash_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """enroot's scratch paths under ``<squash dir>/.enroot``: layers are big and /tmp on nodes is small."""
    env = dict(os.environ if base is None else base)
    root = squash_dir / ".enroot"
    for name in ("RUNTIME", "CACHE", "DATA"):
        env.setdefault(f"ENROOT_{name}_PATH", str(root / name.lower()))
    return env


def ensure_squashed(
    image: str,
    squash_dir: Path,
    *,
    force: bool,
    launcher: Sequence[str],
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    say: Callable[[str], None] = print,
) -> Path:
    """The ``.sqsh`` for ``image``: reused when present (unless ``force``), else imported with enroot.

    An image that already is a ``.sqsh`` path is returned as it is (``force`` does not apply to a user's file).
    A failed import leaves no file behind, so the next run does not reuse half an image.
    """
    if is_squash_file(image):
        path = Path(image).expanduser()
        if not path.is_file():
            raise UserError(f"container image {path} does not exist")
        return path
    squash_dir = Path(squash_dir).expanduser().resolve()
    target = squash_dir / squash_name(image)
    if target.is_file() and not force:
        say(f"Using existing squashed image: {target}")
        return target
    squash_dir.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    cmd = import_command(image, target, launcher)
    say(f"Importing {image} into {target}: {' '.join(cmd)}")
    try:
        proc = run(cmd, env=enroot_env(squash_dir), capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise UserError(
            f"cannot import {image}: {exc.filename} is not installed here; run it where enroot "
            f"is (squash.via: salloc or srun) or give container.image a .sqsh file"
        ) from None
    if proc.returncode != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise UserError(f"enroot import of {image} failed (exit {proc.returncode}): {detail}")
    return target
