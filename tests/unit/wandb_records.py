"""Read a W&B offline run folder back: its ``run-<id>.wandb`` record log, parsed with wandb's own protobuf types.

The file is a LevelDB-style log (what ``wandb sync`` uploads): a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks, each ``crc32 (4) | length (2, little endian) | type (1: full, 2: first, 3: middle,
4: last) | payload``; a record is one chunk or a first..last run of them, and holds a serialized
``wandb_internal_pb2.Record``. wandb has no public reader of this file, so the tests carry this small one.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _payloads(data: bytes):
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left_in_block = _BLOCK - pos % _BLOCK
        if left_in_block < _HEADER:  # block trailer: padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        chunk = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
        elif kind == 0 and length == 0:  # zero padding at a block's end
            pos += _BLOCK - pos % _BLOCK if pos % _BLOCK else 0


def read_offline_run(run_folder: Path, wait_s: float = 60.0) -> dict[str, Any]:
    """``{"run": Record.run, "config": {key: value}, "history": [{key: value, "_step": n}], "summary": {...},
    "files": [paths saved]}`` of one ``offline-run-*`` folder.

    ``run.finish()`` returns once the run is handed to the wandb-core process, which may still be writing the log:
    wait (up to ``wait_s``) for its last record, ``exit``."""
    deadline = time.monotonic() + wait_s
    while True:
        [log] = Path(run_folder).glob("run-*.wandb")
        records = _records(log.read_bytes())
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return _collect(records)
        time.sleep(0.2)


def _records(data: bytes) -> list:
    from wandb.proto import wandb_internal_pb2

    out = []
    for payload in _payloads(data):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def _collect(records: list) -> dict[str, Any]:
    out: dict[str, Any] = {"run": None, "config": {}, "history": [], "summary": {}, "files": []}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"].update({i.key: json.loads(i.value_json) for i in record.run.config.update})
        elif kind == "config":
            out["config"].update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(i): json.loads(i.value_json) for i in record.summary.update})
        elif kind == "files":
            out["files"] += [f.path for f in record.files.files]
    return out


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)
