"""A real single-node Slurm cluster (Debian's slurm-wlm 22.05 + munge) under a temporary prefix, for the tests.

No systemd and no cgroups: the daemons are started directly, every path (config, state, sockets, pid files, logs)
lives under the prefix, and :meth:`LocalSlurm.stop` kills exactly the processes it started (by pid file) and then
checks with ``ps`` that none is left. There is no slurmdbd, so ``sacct`` fails ("accounting storage is
disabled"); the project's profiles must therefore poll with ``squeue`` (MinJobAge is one hour so finished jobs
stay visible to it).

The config is *not* linked to ``/etc/slurm/slurm.conf``: clients find it through ``SLURM_CONF``, which the
snakemake-executor-plugin-slurm-jobstep strips before its nested ``srun``. ``nemotron steps run`` handles that
itself (see :mod:`rlvr.launch.slurm`), and the tests prove it does.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the test cluster (no root, no apt, or the install failed)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _wait_for(check, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SlurmUnavailable(f"timed out after {timeout_s:.0f} s waiting for {what}")


def ensure_installed() -> None:
    """``apt-get install`` the Slurm and munge packages when ``sbatch`` is missing (root only)."""
    if shutil.which("sbatch") and shutil.which("slurmctld") and shutil.which("munged"):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SlurmUnavailable("Slurm is not installed and installing it needs root and apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        # The packages' postinst scripts try to start the services; without systemd that is refused, harmlessly.
        if proc.returncode:
            raise SlurmUnavailable(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")


class LocalSlurm:
    """munged + slurmctld + slurmd on 127.0.0.1, node ``localhost`` with ``cpus`` CPUs, partition ``debug``."""

    def __init__(self, prefix: Path, cpus: int = 2, mem_mb: int | None = None):
        self.prefix = Path(prefix)
        self.cpus = cpus
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        self.mem_mb = mem_mb or int(total_mb * 0.5)
        self.munge_dir = self.prefix / "munge"
        self.slurm_dir = self.prefix / "slurm"
        self.conf = self.slurm_dir / "etc" / "slurm.conf"
        self.munge_socket = self.munge_dir / "run" / "munge.socket.2"
        self.pid_files = {
            "slurmd": self.slurm_dir / "run" / "slurmd.pid",
            "slurmctld": self.slurm_dir / "run" / "slurmctld.pid",
            "munged": self.munge_dir / "run" / "munged.pid",
        }

    @property
    def env(self) -> dict[str, str]:
        """What a client needs: only ``SLURM_CONF`` (nothing is installed into /etc)."""
        return {"SLURM_CONF": str(self.conf)}

    @property
    def state_dir(self) -> Path:
        """slurmctld's StateSaveLocation: it keeps every submitted batch script (``hash.*/job.*/script``)."""
        return self.slurm_dir / "state"

    def configure(self) -> None:
        for sub in ("etc", "run", "log", "lib"):
            (self.munge_dir / sub).mkdir(parents=True, exist_ok=True)
        for sub in ("etc", "state", "spool", "log", "run"):
            (self.slurm_dir / sub).mkdir(parents=True, exist_ok=True)
        key = self.munge_dir / "etc" / "munge.key"
        if not key.exists():
            subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True)
        munge = pwd.getpwnam("munge")
        for path in [self.munge_dir, *self.munge_dir.rglob("*")]:
            os.chown(path, munge.pw_uid, munge.pw_gid)
        for sub in ("etc", "log", "lib"):
            (self.munge_dir / sub).chmod(0o700)
        self.munge_dir.chmod(0o755)
        (self.munge_dir / "run").chmod(0o755)
        key.chmod(0o600)
        self.conf.write_text(self._slurm_conf())

    def _slurm_conf(self) -> str:
        s = self.slurm_dir
        return f"""# written by tests/slurm/local_slurm.py: one node, no accounting, no cgroups
ClusterName=rlvrtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket}
StateSaveLocation={s}/state
SlurmdSpoolDir={s}/spool
SlurmctldPidFile={self.pid_files["slurmctld"]}
SlurmdPidFile={self.pid_files["slurmd"]}
SlurmctldLogFile={s}/log/slurmctld.log
SlurmdLogFile={s}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem reserves the whole node and jobs run one at a time
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
InactiveLimit=0
KillWait=5
# finished jobs stay visible to squeue for an hour: the profiles poll with squeue (there is no slurmdbd)
MinJobAge=3600
SlurmctldTimeout=30
SlurmdTimeout=60
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""

    def _client(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run(
            list(args), env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )

    def start(self) -> None:
        """Start the three daemons (each daemonizes itself) and wait until the node is idle."""
        if not _alive(self.pid_files["munged"]):
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    "munge",
                    "--",
                    "munged",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.munge_dir / 'etc' / 'munge.key'}",
                    f"--log-file={self.munge_dir / 'log' / 'munged.log'}",
                    f"--pid-file={self.pid_files['munged']}",
                    f"--seed-file={self.munge_dir / 'lib' / 'munged.seed'}",
                ],
                check=True,
            )
        _wait_for(lambda: _alive(self.pid_files["munged"]) and self.munge_socket.exists(), 10, "munged")
        env = {**os.environ, **self.env}
        if not _alive(self.pid_files["slurmctld"]):
            subprocess.run(["slurmctld", "-f", str(self.conf)], env=env, check=True)
        _wait_for(lambda: "UP" in self._client("scontrol", "ping").stdout, 30, "slurmctld (scontrol ping)")
        if not _alive(self.pid_files["slurmd"]):
            subprocess.run(["slurmd", "-f", str(self.conf), "-N", "localhost"], env=env, check=True)
        _wait_for(
            lambda: self._client("sinfo", "-h", "-o", "%T").stdout.strip() in ("idle", "mixed", "allocated"),
            60,
            "the node to become idle (sinfo)",
        )

    def stop(self) -> list[str]:
        """Cancel every job, stop the daemons (slurmd, slurmctld, munged) and return any process left over."""
        if _alive(self.pid_files["slurmctld"]):
            self._client("scancel", "--full", "--user", "root")
        for name in ("slurmd", "slurmctld", "munged"):
            pid = _alive(self.pid_files[name])
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            # Wait for the process itself, not its pid file: munged removes the file before it has exited.
            if not _exits(pid, within=15):
                os.kill(pid, signal.SIGKILL)
                _exits(pid, within=5)
        return self.leftover_processes()

    def leftover_processes(self) -> list[str]:
        """``ps`` lines of live processes that belong to this cluster: its daemons (their command lines name the
        prefix) and any ``slurmstepd`` (no other Slurm runs on a test machine)."""
        ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
        lines = [line.strip() for line in ps.splitlines() if "ps -eo" not in line]
        return [
            line for line in lines if line.split()[1][:1] != "Z" and (str(self.prefix) in line or "slurmstepd" in line)
        ]


def _exits(pid: int, within: float) -> bool:
    """Whether process ``pid`` is gone (or a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False
