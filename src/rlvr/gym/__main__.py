"""``python -m rlvr.gym --kind math|code``: run one of our resource servers (:mod:`rlvr.gym.server`) until SIGTERM.

It listens on ``--host``/``--port`` (default 127.0.0.1, an ephemeral port), writes ``{"url": ...}`` to
``--ready-file`` (atomically) or prints it, and with ``--parent-pid`` exits once that process is gone, so a server
started by a training run never outlives it. ``--options`` is a JSON object of verifier options
(:func:`rlvr.gym.verifiers.make_verifier`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

from rlvr.gym.server import ResourceServer
from rlvr.utils.atomic import atomic_file


def _exit_with_parent(parent_pid: int) -> None:
    """Send ourselves SIGTERM once ``parent_pid`` is gone (we were re-parented), so no server outlives its run."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlvr.gym", description="Run an rlvr NeMo-Gym resource server.")
    parser.add_argument("--kind", required=True, choices=["math", "code"])
    parser.add_argument("--options", default="{}", help="JSON object of verifier options")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = an ephemeral port")
    parser.add_argument("--ready-file", help='where to write {"url": ...} once listening')
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    server = ResourceServer(args.kind, json.loads(args.options), args.host, args.port)
    if args.ready_file:
        with atomic_file(args.ready_file) as fh:
            json.dump({"url": server.url}, fh)
    else:
        print(json.dumps({"url": server.url}), flush=True)
    if args.parent_pid:
        threading.Thread(target=_exit_with_parent, args=(args.parent_pid,), daemon=True).start()
    try:
        server.serve_forever()
    except (SystemExit, KeyboardInterrupt):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
