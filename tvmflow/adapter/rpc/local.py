"""A loopback tracker and host servers for one command (``--via rpc``, compare, tests).

They die with tvmflow (parent-death signal and watchdog, see :mod:`.procs`), and
:func:`local_rpc` stops them on exit of its block, exceptions and Ctrl-C included.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tvmflow.adapter.rpc.net import LOOPBACK
from tvmflow.adapter.rpc.procs import RpcProcess
from tvmflow.adapter.rpc.servers import start_server, start_tracker
from tvmflow.adapter.rpc.session import request
from tvmflow.adapter.rpc.tracker import tracker_summary


@dataclass
class LocalRpc:
    """What :func:`local_rpc` started: a tracker and servers on loopback."""

    tracker: RpcProcess
    servers: list[RpcProcess]
    key: str

    @property
    def tracker_host(self) -> str:
        return self.tracker.host

    @property
    def tracker_port(self) -> int:
        return self.tracker.port

    @property
    def tracker_address(self) -> str:
        return self.tracker.address

    def request(self, timeout: float = 30.0, **kw):
        return request(self.tracker.host, self.tracker.port, self.key, timeout, **kw)

    def summary(self) -> dict[str, Any]:
        return tracker_summary(self.tracker.host, self.tracker.port)

    def stop(self) -> None:
        for proc in [*self.servers, self.tracker]:
            with contextlib.suppress(Exception):
                proc.stop()


@contextlib.contextmanager
def local_rpc(servers: int = 1, key: str = "local", *, host: str = LOOPBACK,
              log_dir: str | Path | None = None, timeout: float = 60.0,
              threads: int | None = None) -> Iterator[LocalRpc]:
    """A tracker and ``servers`` host RPC servers under ``key``, all stopped on exit.

    The tracker and servers bind ``host`` (loopback by default) on free ports; each server is
    listed by the tracker before this yields.  Logs go to ``log_dir`` (tracker.log,
    server-<i>.log) when given.  Each server runs TVM with ``threads`` threads (default: this
    machine's count, see :func:`~.servers.start_server`).
    """
    log_dir = Path(log_dir) if log_dir else None
    started: list[RpcProcess] = []
    try:
        tracker = start_tracker(host, log=log_dir / "tracker.log" if log_dir else None,
                                timeout=timeout)
        started.append(tracker)
        for i in range(servers):
            started.append(start_server(host, tracker=tracker.address, key=key, timeout=timeout,
                                        log=log_dir / f"server-{i}.log" if log_dir else None,
                                        threads=threads))
        yield LocalRpc(tracker, started[1:], key)
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()
