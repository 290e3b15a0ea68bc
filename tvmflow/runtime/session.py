"""The ONE session factory: where ``bench`` / ``compare`` / ``sweep`` run their modules.

:func:`open_session` yields a :class:`tvmflow.adapter.runtime.RuntimeSession` (``run``,
``profile`` and ``verify`` open its local kind, ``adapter.runtime.local_session``, directly);
whatever the route, the caller then does the same upload / load / run calls -- in this
process too, through TVM's ``rpc.LocalSession``:

* ``rpc="HOST:PORT"``            -- straight to one RPC server;
* ``tracker="HOST:PORT"`` + key  -- a server registered under ``key`` at a tracker (also from
  ``TVM_TRACKER_HOST`` / ``TVM_TRACKER_PORT`` / ``TVM_TRACKER_KEY``);
* ``via="rpc"`` (no address)     -- a tracker and one RPC server on 127.0.0.1 started for this
  run and stopped afterwards (:func:`tvmflow.adapter.rpc.local_rpc`): the real RPC path, on
  this machine;
* ``via="local"``                -- this process, no RPC.

Every wait is bounded by ``timeout`` and fails with a TvmflowError.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from tvmflow.errors import TvmflowError

VIAS = ("local", "rpc")
ENV_HOST, ENV_PORT, ENV_KEY = "TVM_TRACKER_HOST", "TVM_TRACKER_PORT", "TVM_TRACKER_KEY"
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Route:
    """How to reach the device, resolved from options and environment."""

    mode: str                  # "local", "local-rpc", "rpc" or "tracker"
    address: str | None = None
    key: str | None = None

    def describe(self) -> str:
        if self.mode == "local":
            return "local (this process, no RPC)"
        if self.mode == "local-rpc":
            return "TVM RPC server on 127.0.0.1 started by tvmflow"
        if self.mode == "rpc":
            return f"TVM RPC server {self.address}"
        return f"TVM RPC tracker {self.address}, key {self.key!r}"


def resolve_route(*, via: str | None = None, rpc: str | None = None, tracker: str | None = None,
                  key: str | None = None, default_key: str | None = None,
                  default_via: str = "local", environ: dict | None = None) -> Route:
    """Pick the route from explicit options first, then the TVM_TRACKER_* environment."""
    env = os.environ if environ is None else environ
    if via is not None and via not in VIAS:
        raise TvmflowError(f"unknown --via {via!r}; choose one of {', '.join(VIAS)}")
    if rpc and tracker:
        raise TvmflowError("give either --rpc HOST:PORT or --tracker HOST:PORT, not both")
    if (rpc or tracker) and via == "local":
        raise TvmflowError("--via local runs in this process; it cannot be combined with "
                           "--rpc or --tracker")
    if key and not tracker and (rpc or via is not None or not env.get(ENV_HOST)):
        raise TvmflowError("--key names a board at a tracker; give --tracker HOST:PORT "
                           "(or TVM_TRACKER_HOST)")
    from tvmflow.adapter.rpc import parse_hostport
    if rpc:
        host, port = parse_hostport(rpc, what="RPC server address")
        return Route("rpc", f"{host}:{port}")
    if not tracker and via is None and env.get(ENV_HOST):
        port = env.get(ENV_PORT, "9190")
        tracker = f"{env[ENV_HOST]}:{port}"
        key = key or env.get(ENV_KEY)
    if tracker:
        host, port = parse_hostport(tracker, what="tracker address")
        key = key or env.get(ENV_KEY) or default_key
        if not key:
            raise TvmflowError("a tracker needs a key (--key or TVM_TRACKER_KEY)")
        return Route("tracker", f"{host}:{port}", key)
    via = via or default_via
    return Route("local" if via == "local" else "local-rpc")


def preflight(route: Route, timeout: float = DEFAULT_TIMEOUT, *, arch: str | None = None,
              target: str = "") -> None:
    """Fail fast (before compiling) when the server or tracker is unreachable, the key has
    no board, or (``arch`` given) the board's CPU is not the one the target compiles for;
    bounded by ``timeout``.  Local routes need nothing."""
    _reachable(route, timeout)
    if arch and route.mode in ("rpc", "tracker"):
        with open_session(route, timeout=timeout) as sess:
            server, where = sess.arch(), sess.where
        if server and server != arch:
            raise TvmflowError(
                f"target {target or '?'} compiles for {arch} but {where} is {server}",
                hint="pick the target preset of that board (tvmflow targets)")


def _reachable(route: Route, timeout: float) -> None:
    import socket
    import time
    from tvmflow.adapter import rpc
    if route.mode not in ("rpc", "tracker"):
        return
    host, port = rpc.parse_hostport(route.address)
    if route.mode == "rpc":
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            why = "connection refused" if isinstance(exc, ConnectionRefusedError) else (str(exc) or "timed out")
            raise TvmflowError(f"cannot reach the RPC server at {host}:{port} ({why})",
                               hint="check the address, or start one with `python -m "
                                    "tvm.exec.rpc_server --host 127.0.0.1 --port 9090`") from None
        return
    deadline = time.monotonic() + timeout
    while True:
        summary = rpc.tracker_summary(host, port, timeout=max(0.5, deadline - time.monotonic()))
        if rpc.servers_under(summary, route.key):
            return
        if time.monotonic() >= deadline:
            known = sorted({s["key"] for s in summary["servers"]})
            raise TvmflowError(
                f"no RPC server is registered under key {route.key!r} at the tracker "
                f"{route.address} (waited {timeout:g} s; keys there: {', '.join(known) or 'none'})",
                hint="start the board (`tvmflow board start`) or pass the key it registered with")
        time.sleep(0.25)


@contextlib.contextmanager
def open_session(route: Route, *, device_kind: str = "cpu", timeout: float = DEFAULT_TIMEOUT,
                 log_dir=None, threads: int | None = None) -> Iterator:
    """A RuntimeSession for ``route``; servers started here are stopped on exit.

    ``threads``: TVM's thread count where tvmflow decides it -- this process (``local``, set
    while the session is open) and the server started for ``local-rpc``.  Servers and boards
    started by others keep their TVM_NUM_THREADS (``RuntimeSession.use_threads`` sets the
    count as far as that allows).
    """
    from tvmflow.adapter import rpc
    from tvmflow.adapter import runtime
    if route.mode == "local":
        if threads is None:
            yield runtime.local_session(device_kind)
            return
        from tvmflow.threads import scoped
        with scoped(threads):
            yield runtime.local_session(device_kind)
        return
    if route.mode == "local-rpc":
        if device_kind != "cpu":
            raise TvmflowError("a local RPC server runs host CPU modules only",
                               hint="use --rpc/--tracker for a GPU board, or --via local")
        with rpc.local_rpc(1, key="tvmflow-local", log_dir=log_dir, timeout=max(timeout, 60),
                           threads=threads) as c:
            remote = rpc.request(c.tracker_host, c.tracker_port, c.key, timeout)
            sess = runtime.remote_session(remote, "local-rpc", c.servers[0].address, c.key,
                                          device_kind)
            try:
                yield sess
            finally:
                sess.close()
        return
    host, port = rpc.parse_hostport(route.address)
    if route.mode == "rpc":
        remote = rpc.connect(host, port, timeout)
    else:
        remote = rpc.request(host, port, route.key, timeout)
    sess = runtime.remote_session(remote, route.mode, route.address, route.key, device_kind)
    try:
        yield sess
    finally:
        sess.close()
