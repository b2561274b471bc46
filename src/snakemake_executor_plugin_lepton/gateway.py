"""The plugin's only door to Lepton: the ``leptonai`` SDK's ``APIClient``, used for the job endpoints.

Works with both SDK generations that install here: 0.21.x (``leptonai.api.v1``) and 0.4x
(``leptonai.api.v2``); the wire format of the job endpoints is the same. What comes from the SDK: workspace,
token and URL resolution (arguments, then ``LEPTON_WORKSPACE_ID/TOKEN/URL``, then the ``lep login`` record),
the authenticated HTTP session, the typed ``LeptonJob`` model that checks a spec before it is sent,
``job.delete``, ``job.get_replicas``, ``job.get_log`` and the SDK's HTTP error types.

Some calls go through the SDK's session as plain JSON instead of its typed methods, on purpose:

* job creation and status: the 0.21 models reject states newer than that SDK (``Queueing``, ``Stopped``,
  ...). ``job.create`` parses the created job, so a job queued at once would be created on the service yet
  reported as a failed submission (an orphan), and a queued job would look like an API error forever.
  The spec is still checked by the SDK's ``LeptonJob`` model before it is sent;
* node groups: only ``metadata.id``/``name`` are needed, and the typed model's required fields changed;
* archived logs (``GET /logs``): 0.21 has no log API. Live replica logs vanish with the pod, archived ones
  stay, so a failure is explained even after the job's containers are gone.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlvr.errors import ConfigError

from .polling import JobStatus

_LIVE_LOG_BYTES = 4 << 20  # enough for any tail we print; protects against a never-ending stream


class LeptonAPIError(RuntimeError):
    """A failed call to the Lepton API (HTTP error or no connection); ``status`` is the HTTP code or None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Sdk:
    version: str
    api: str
    client_cls: type
    job_cls: type
    http_errors: tuple[type, ...]


def load_sdk() -> _Sdk:
    """Import the newest SDK API generation that is installed (v2, else v1)."""
    try:
        version = importlib.metadata.version("leptonai")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    for api in ("v2", "v1"):
        try:
            client = importlib.import_module(f"leptonai.api.{api}.client")
            job = importlib.import_module(f"leptonai.api.{api}.types.job")
            resource = importlib.import_module(f"leptonai.api.{api}.api_resource")
        except ImportError:
            continue
        return _Sdk(version, api, client.APIClient, job.LeptonJob, (resource.ClientError, resource.ServerError))
    raise ConfigError(
        "The Lepton executor needs the leptonai SDK: pip install 'rlvr[lepton]' "
        "(or pip install leptonai) into the environment that runs Snakemake."
    )


def parse_archived_log(data: Any) -> list[str]:
    """Lines of a Loki-style ``GET /logs`` answer (``data.result[].values[[ts_ns, line]]``) in time order."""
    if not isinstance(data, dict):
        return []
    result = (data.get("data") or {}).get("result") or []
    entries = [(int(ts), line) for stream in result for ts, line in (stream.get("values") or [])]
    return [line.rstrip("\n") for _, line in sorted(entries, key=lambda e: e[0])]


class LeptonGateway:
    """Create, watch, cancel Lepton jobs and fetch their logs; every failure is a LeptonAPIError or ConfigError."""

    def __init__(self, *, url: str | None = None, workspace_id: str | None = None, token: str | None = None):
        self.sdk = load_sdk()
        try:
            self._client = self.sdk.client_cls(
                workspace_id=workspace_id or None, auth_token=token or None, url=url or None
            )
        except RuntimeError as e:
            raise ConfigError(
                f"No Lepton workspace: {e}. Log in once with `lep login -c <workspace_id>:<token>`,"
                " or set LEPTON_WORKSPACE_ID and LEPTON_WORKSPACE_TOKEN (and LEPTON_WORKSPACE_URL "
                "for a non-default gateway), or --lepton-workspace-id/--lepton-workspace-url."
            ) from e
        self._node_groups: dict[str, str] | None = None

    @property
    def url(self) -> str:
        return self._client.url

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        """Run one SDK call, turning HTTP and connection failures into LeptonAPIError."""
        import requests

        try:
            return fn(*args, **kwargs)
        except self.sdk.http_errors as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            raise LeptonAPIError(f"Lepton API: {what} failed: {e}", status) from e
        except requests.RequestException as e:
            raise LeptonAPIError(f"Lepton API: {what} failed, {self.url} not reachable: {e}") from e

    def _get_json(self, what: str, path: str, params: dict | None = None, allow_404: bool = False):
        response = self._call(what, self._client._get, path, params=params)
        if allow_404 and response.status_code == 404:
            return None
        return self._call(what, self._client.job.ensure_json, response)

    def create(self, payload: dict) -> str:
        """Submit one job exactly as ``payload`` says; returns its id.

        The SDK's ``LeptonJob`` model first checks the fields it knows (types, required keys). Fields newer
        than the installed SDK (``shared_memory_size`` for 0.21) are sent as given rather than dropped, as
        the model's own serialization would do: the service, not the client, defines the job schema.
        """
        job_id = payload["metadata"]["id"]
        try:
            self.sdk.job_cls(**payload)
        except ValueError as e:  # pydantic.ValidationError is a ValueError
            raise ConfigError(f"Lepton job spec for {job_id} rejected by leptonai {self.sdk.version}: {e}") from e
        response = self._call(f"create job {job_id}", self._client._post, "/jobs", json=payload)
        created = self._call(f"create job {job_id}", self._client.job.ensure_json, response)
        return ((created or {}).get("metadata") or {}).get("id") or job_id

    def status(self, job_id: str) -> JobStatus:
        """Current state of a job (also of archived ones); ``exists=False`` if the service no longer knows it."""
        data = self._get_json(
            f"get job {job_id}", f"/jobs/{job_id}", {"job_query_mode": "alive_and_archive"}, allow_404=True
        )
        if data is None:
            return JobStatus(state="", exists=False)
        status, spec = data.get("status") or {}, data.get("spec") or {}
        return JobStatus(
            state=str(status.get("state") or ""),
            succeeded=int(status.get("succeeded") or 0),
            failed=int(status.get("failed") or 0),
            workers=int(spec.get("completions") or 1),
        )

    def delete(self, job_id: str) -> bool:
        """Cancel and remove a job; False if it was already gone."""
        try:
            self._call(f"delete job {job_id}", self._client.job.delete, job_id)
        except LeptonAPIError as e:
            if e.status == 404:
                return False
            raise
        return True

    def node_group_id(self, name_or_id: str) -> str:
        """The id of a dedicated node group given by name or id (the API's affinity wants ids)."""
        if self._node_groups is None:
            groups = self._get_json("list node groups", "/dedicated-node-groups") or []
            self._node_groups = {}
            for group in groups:
                meta = group.get("metadata") or {}
                if meta.get("id"):
                    self._node_groups[meta["id"]] = meta["id"]
                    self._node_groups.setdefault(meta.get("name") or meta["id"], meta["id"])
        if name_or_id not in self._node_groups:
            known = ", ".join(sorted(self._node_groups)) or "none"
            raise ConfigError(
                f"Lepton node group '{name_or_id}' not found in this workspace (known names and "
                f"ids: {known}); fix lepton-node-group or the rule's lepton_node_group resource."
            )
        return self._node_groups[name_or_id]

    def logs(self, job_id: str, max_lines: int = 200, timeout_s: float = 30.0) -> list[str]:
        """The last ``max_lines`` log lines of every worker (prefixed by replica id when there are several).

        Live replica logs first, the archive (``GET /logs``) when a replica has none; bounded by ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        try:
            replicas = self._call(f"list replicas of {job_id}", self._client.job.get_replicas, job_id)
        except LeptonAPIError:
            replicas = []
        ids = [getattr(r.metadata, "id_", None) or r.id_ for r in replicas]
        if not ids:
            return self._archived_log(job_id, None)[-max_lines:]
        lines: list[str] = []
        for rid in ids:
            text = self._live_log(job_id, rid, deadline)
            own = text.splitlines() if text.strip() else self._archived_log(job_id, rid)
            lines += [f"[{rid}] {line}" if len(ids) > 1 else line for line in own[-max_lines:]]
        return lines[-max_lines:]

    def _live_log(self, job_id: str, replica_id: str, deadline: float) -> str:
        chunks: list[str] = []
        size = 0
        try:
            stream = self._client.job.get_log(job_id, replica_id, timeout=max(1.0, deadline - time.monotonic()))
            for chunk in stream:
                chunks.append(chunk)
                size += len(chunk)
                if size > _LIVE_LOG_BYTES or time.monotonic() > deadline:
                    break
        except Exception:  # noqa: BLE001 - a missing live log only means: try the archive
            return ""
        return "".join(chunks)

    def _archived_log(self, job_id: str, replica_id: str | None) -> list[str]:
        params = {"job": job_id, **({"replica": replica_id} if replica_id else {})}
        try:
            return parse_archived_log(self._get_json(f"get logs of {job_id}", "/logs", params))
        except (LeptonAPIError, ValueError, TypeError):
            return []
