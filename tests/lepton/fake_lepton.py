"""A loopback stand-in for the Lepton workspace API, talked to by the real ``leptonai`` client.

Only because the real service cannot be reached from here. It is a real HTTP server (``http.server`` on
127.0.0.1, ephemeral port) implementing the endpoints the SDK and the plugin use, with the wire format the
SDK sends and parses (see slurm_lepton_notes.md, section C):

==========================================  ====================================================
``POST /jobs``                              create; 409 on a duplicate id, 400 on a bad id or unknown secret
``GET /jobs[?page=N]``                      list (paged: page >= 2 is empty, or the SDK pages forever)
``GET /jobs/{id}``                          job with ``status.state``; 404 once deleted
``DELETE /jobs/{id}``                       kills the job's processes, then 404 for it
``GET /jobs/{id}/replicas``                 one replica per worker
``GET /jobs/{id}/replicas/{rid}/log``       live log (text); 404 when ``live_logs`` is off
``GET /logs?job=&replica=``                 archived log, Loki-style ``data.result[].values``
``GET /dedicated-node-groups``              the node groups in ``node_groups``
==========================================  ====================================================

Every request is recorded (method, path, query, JSON body) in ``requests``; a wrong bearer token gets 401.

What a created job does is ``behaviour`` (or ``decide(payload)``):

* ``execute``: run ``spec.container.command`` for real, one local process per worker, with the spec's env
  vars (secret references resolved from ``secrets``) and Lepton's worker variables; Completed when every
  worker exits 0, else Failed, logs = the processes' output. Paths are this machine's: the "shared mount"
  is the local disk.
* ``succeed`` / ``fail``: Queueing, then Running, then Completed / Failed (logs: ``fail_log``).
* ``hang``: Running until deleted.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

JOB_ID = re.compile(r"^[a-z][a-z0-9-]{0,35}$")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    body: object


@dataclass
class FakeJob:
    id: str
    payload: dict
    behaviour: str
    state: str = "Queueing"
    polls: int = 0
    deleted: bool = False
    logs: dict = field(default_factory=dict)  # replica id -> list of lines
    procs: list = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0

    @property
    def workers(self) -> int:
        return int(self.payload.get("spec", {}).get("completions") or 1)

    def replica_ids(self) -> list[str]:
        return [f"{self.id}-{i}-r{i}" for i in range(self.workers)]


class FakeLepton:
    """The fake workspace; use as a context manager. ``url`` is what LEPTON_WORKSPACE_URL should be."""

    def __init__(self, token: str = "test-token", workspace: str = "ws1", home: str | None = None):
        self.token, self.workspace, self.home = token, workspace, home or os.environ.get("HOME", "/tmp")
        self.behaviour = "execute"
        self.decide: Callable[[dict], str] | None = None
        self.fail_log = ["fake: step 1", "fake: boom, the job failed"]
        self.live_logs = True
        self.secrets: dict[str, str] = {}
        self.node_groups: dict[str, str] = {}  # id -> name
        self.requests: list[Recorded] = []
        self.jobs: dict[str, FakeJob] = {}
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v2/workspaces/{self.workspace}"

    def __enter__(self) -> FakeLepton:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            _kill(job)
        self._server.shutdown()
        self._server.server_close()

    # -- what tests look at -------------------------------------------------------------------------------
    def calls(self, method: str, prefix: str = "") -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.method == method and r.path.startswith(prefix)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"fake Lepton: {what} not reached within {timeout} s")
            time.sleep(0.05)

    # -- job lifecycle ------------------------------------------------------------------------------------
    def create(self, payload: dict) -> tuple[int, object]:
        job_id = (payload.get("metadata") or {}).get("id") or ""
        if not JOB_ID.match(job_id) or job_id.endswith("-"):
            return 400, {"code": "InvalidJobName", "message": f"invalid job id {job_id!r}"}
        for env in payload.get("spec", {}).get("envs") or []:
            ref = (env.get("value_from") or {}).get("secret_name_ref")
            if ref is not None and ref not in self.secrets:
                return 400, {"code": "SecretNotFound", "message": f"secret {ref} not found"}
        with self.lock:
            if job_id in self.jobs and not self.jobs[job_id].deleted:
                return 409, {"code": "AlreadyExists", "message": f"job {job_id} already exists"}
            behaviour = self.decide(payload) if self.decide else self.behaviour
            job = self.jobs[job_id] = FakeJob(job_id, payload, behaviour)
        if behaviour == "execute":
            threading.Thread(target=self._execute, args=(job,), daemon=True).start()
        elif behaviour == "hang":
            job.state = "Running"
        return 200, self.job_json(job)

    def poll(self, job: FakeJob) -> None:
        """Advance the scripted behaviours by one status query."""
        job.polls += 1
        if job.behaviour in ("succeed", "fail") and job.state not in ("Completed", "Failed"):
            if job.polls >= 3:
                ok = job.behaviour == "succeed"
                job.state = "Completed" if ok else "Failed"
                job.succeeded, job.failed = (job.workers, 0) if ok else (0, job.workers)
                lines = ["fake: ok"] if ok else list(self.fail_log)
                job.logs = {rid: lines for rid in job.replica_ids()}
            elif job.polls == 2:
                job.state = "Running"

    def _execute(self, job: FakeJob) -> None:
        spec = job.payload["spec"]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "LANG": "C.UTF-8",
            "LEPTON_JOB_NAME": job.id,
            "LEPTON_JOB_SERVICE_PREFIX": job.id,
            "LEPTON_SUBDOMAIN": f"{job.id}-job-svc",
            "LEPTON_WORKSPACE_ID": self.workspace,
            "LEPTON_JOB_TOTAL_WORKERS": str(job.workers),
        }
        for item in spec.get("envs") or []:
            ref = (item.get("value_from") or {}).get("secret_name_ref")
            env[item["name"]] = self.secrets[ref] if ref is not None else item.get("value", "")
        with self.lock:
            if job.deleted:
                return
            job.state = "Running"
            for rank, rid in enumerate(job.replica_ids()):
                proc = subprocess.Popen(
                    spec["container"]["command"],
                    env={**env, "LEPTON_JOB_WORKER_INDEX": str(rank)},
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
                job.procs.append(proc)
                job.logs[rid] = []
        readers = [
            threading.Thread(target=_read_lines, args=(p, job.logs[rid]), daemon=True)
            for p, rid in zip(job.procs, job.replica_ids())
        ]
        for reader in readers:
            reader.start()
        codes = [p.wait() for p in job.procs]
        for reader in readers:
            reader.join(timeout=5)
        with self.lock:
            if not job.deleted:
                job.succeeded = sum(c == 0 for c in codes)
                job.failed = len(codes) - job.succeeded
                job.state = "Completed" if job.failed == 0 else "Failed"

    def job_json(self, job: FakeJob) -> dict:
        return {
            "metadata": {"id": job.id, "name": job.id, "created_at": 1},
            "spec": job.payload.get("spec", {}),
            "status": {
                "state": job.state,
                "ready": 0,
                "active": int(job.state == "Running") * job.workers,
                "failed": job.failed,
                "succeeded": job.succeeded,
                "job_history": [],
            },
        }

    def replicas_json(self, job: FakeJob) -> list:
        return [
            {
                "metadata": {"id": rid},
                "id": rid,
                "status": {"node": {"name": "fake-node", "id": "fake-node"}, "public_ip": "127.0.0.1"},
            }
            for rid in job.replica_ids()
        ]


def _read_lines(proc: subprocess.Popen, sink: list) -> None:
    for line in proc.stdout:
        sink.append(line.rstrip("\n"))


def _kill(job: FakeJob) -> None:
    for proc in job.procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _handler_for(fake: FakeLepton) -> type:
    prefix = f"/api/v2/workspaces/{fake.workspace}"

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _reply(self, code: int, body: object, content_type: str = "application/json") -> None:
            data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            url = urlsplit(self.path)
            query = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            path = url.path[len(prefix) :] if url.path.startswith(prefix) else None
            with fake.lock:
                fake.requests.append(Recorded(method, path or url.path, query, body))
            if path is None:
                return self._reply(404, {"code": "NotFound", "message": f"no workspace at {url.path}"})
            if self.headers.get("Authorization") != f"Bearer {fake.token}":
                return self._reply(401, {"code": "Unauthorized", "message": "invalid token"})
            code, answer, ctype = _route(fake, method, path, query, body)
            self._reply(code, answer, ctype)

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

        def do_PATCH(self):
            self._handle("PATCH")

    return Handler


def _route(fake: FakeLepton, method: str, path: str, query: dict, body) -> tuple[int, object, str]:
    js = "application/json"
    parts = [p for p in path.split("/") if p]
    if parts == ["jobs"] and method == "POST":
        code, answer = fake.create(body or {})
        return code, answer, js
    if parts == ["jobs"] and method == "GET":
        with fake.lock:
            alive = [fake.job_json(j) for j in fake.jobs.values() if not j.deleted]
        if "page" in query:
            return 200, {"jobs": alive if str(query["page"]) == "1" else []}, js
        return 200, alive, js
    if parts == ["dedicated-node-groups"] and method == "GET":
        return (
            200,
            [{"metadata": {"id": i, "name": n}, "spec": {}, "status": {}} for i, n in fake.node_groups.items()],
            js,
        )
    if parts == ["logs"] and method == "GET":
        job = fake.jobs.get(query.get("job", ""))
        if job is None:
            return 200, {"data": {"result": []}}, js
        rids = [query["replica"]] if "replica" in query else job.replica_ids()
        # Newest first, as the service answers with direction=backward; the client must sort by time.
        result = [
            {
                "stream": {"job": job.id, "replica": rid},
                "values": [[str(1_000 + i), line] for i, line in enumerate(job.logs.get(rid, []))][::-1],
            }
            for rid in rids
        ]
        return 200, {"status": "success", "data": {"resultType": "streams", "result": result}}, js
    if len(parts) >= 2 and parts[0] == "jobs":
        with fake.lock:
            job = fake.jobs.get(parts[1])
        if job is None or job.deleted:
            return 404, {"code": "NotFound", "message": f"job {parts[1]} not found"}, js
        if len(parts) == 2 and method == "GET":
            with fake.lock:
                fake.poll(job)
                return 200, fake.job_json(job), js
        if len(parts) == 2 and method == "DELETE":
            with fake.lock:
                job.deleted, job.state = True, "Deleted"
            _kill(job)
            return 200, {}, js
        if parts[2:] == ["replicas"] and method == "GET":
            return 200, fake.replicas_json(job), js
        if len(parts) == 5 and parts[2] == "replicas" and parts[4] == "log" and method == "GET":
            if not fake.live_logs:
                return 404, {"code": "NotFound", "message": "replica is gone"}, js
            return 200, "".join(f"{line}\n" for line in job.logs.get(parts[3], [])), "text/plain"
        if parts[2:] == ["events"] and method == "GET":
            return 200, [], js
    return 404, {"code": "NotFound", "message": f"{method} {path} is not implemented by the fake"}, js
