"""Tracker client: the tracker's summary, servers under a key, waiting for a registration.

Every exchange runs on a socket with a timeout, so an unreachable or silent tracker is a
:class:`~tvmflow.errors.TvmflowError` within the given time, never a hang.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Callable

from tvmflow.errors import TvmflowError
from tvmflow.adapter.rpc.net import parse_hostport, unreachable_reason

# tvm/rpc/base.py (checked against TVM by tests/test_rpc_deadlines.py); kept here so that a
# tracker query does not import TVM
RPC_TRACKER_MAGIC = 0x2F271
TRACKER_SUCCESS = 0
TRACKER_REQUEST = 4
TRACKER_SUMMARY = 6


def _send_json(sock: socket.socket, value: Any) -> None:
    import json
    import struct
    data = json.dumps(value).encode("utf-8")
    sock.sendall(struct.pack("<i", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(left)
        if not chunk:
            raise ConnectionResetError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _recv_json(sock: socket.socket) -> Any:
    import json
    import struct
    size = struct.unpack("<i", _recv_exact(sock, 4))[0]
    return json.loads(_recv_exact(sock, size).decode("utf-8"))


def tracker_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket to a tracker, with the magic exchanged, every later call bounded
    by ``timeout``; TvmflowError otherwise."""
    import struct
    try:
        sock = socket.create_connection((host, port), timeout=max(timeout, 0.1))
    except OSError as exc:
        raise TvmflowError(f"cannot reach the RPC tracker at {host}:{port} "
                           f"({unreachable_reason(exc)})",
                           hint="start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 "
                                "--port 9190` or `tvmflow board start`") from None
    try:
        sock.sendall(struct.pack("<i", RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", _recv_exact(sock, 4))[0]
    except OSError as exc:
        sock.close()
        raise TvmflowError(f"no RPC tracker answered at {host}:{port} "
                           f"({unreachable_reason(exc)})") from None
    if magic != RPC_TRACKER_MAGIC:
        sock.close()
        raise TvmflowError(f"{host}:{port} is not a TVM RPC tracker")
    return sock


def tracker_call(host: str, port: int, message: list, timeout: float,
                 on_error: Callable[[OSError], TvmflowError] | None = None) -> Any:
    """Send one message to the tracker and return its answer, all within ``timeout``."""
    sock = tracker_socket(host, port, timeout)
    try:
        _send_json(sock, message)
        return _recv_json(sock)
    except OSError as exc:
        if on_error is not None:
            raise on_error(exc) from None
        raise TvmflowError(f"the RPC tracker at {host}:{port} did not answer "
                           f"({unreachable_reason(exc)})") from None
    finally:
        sock.close()


def tracker_summary(host: str, port: int, timeout: float = 10.0) -> dict[str, Any]:
    """The tracker's summary: ``{"servers": [{"key", "host", "port"}], "queue": {key: {...}}}``.

    ``queue`` maps each key to ``{"free": n, "pending": n}`` as the tracker reports it; ``raw``
    holds TVM's own dict.
    """
    value = tracker_call(host, port, [TRACKER_SUMMARY], timeout)
    if not isinstance(value, list) or not value or value[0] != TRACKER_SUCCESS:
        raise TvmflowError(f"the RPC tracker at {host}:{port} answered {value!r}")
    raw = value[1]
    servers = []
    for item in raw.get("server_info", []):
        key = str(item.get("key", ""))
        servers.append({"key": key.split(":", 1)[1] if key.startswith("server:") else key,
                        "host": item["addr"][0], "port": int(item["addr"][1])})
    return {"servers": servers, "queue": dict(raw.get("queue_info", {})), "raw": raw}


def servers_under(summary: dict[str, Any], key: str) -> list[dict[str, Any]]:
    return [s for s in summary["servers"] if s["key"] == key]


def count_servers(host: str, port: int, key: str, timeout: float = 10.0) -> int:
    """How many servers the tracker at ``host:port`` lists under ``key``."""
    return len(servers_under(tracker_summary(host, port, timeout=timeout), key))


def wait_for_key(host: str, port: int, key: str, timeout: float) -> dict[str, Any]:
    """Poll the tracker until some server is registered (or free) under ``key``, at most
    ``timeout`` seconds; returns the last summary."""
    deadline = time.monotonic() + timeout
    while True:
        summary = tracker_summary(host, port, timeout=max(0.5, deadline - time.monotonic()))
        if servers_under(summary, key) or summary["queue"].get(key, {}).get("free", 0):
            return summary
        if time.monotonic() >= deadline:
            known = sorted({s["key"] for s in summary["servers"]})
            raise TvmflowError(
                f"no RPC server is registered under key {key!r} at the tracker {host}:{port} "
                f"(waited {timeout:g} s; keys there: {', '.join(known) or 'none'})",
                hint="start one with `tvmflow board start` or `python -m tvm.exec.rpc_server "
                     f"--tracker {host}:{port} --key {key}`")
        time.sleep(0.25)


def wait_registered(tracker: str, key: str, port: int, timeout: float,
                    alive: Callable[[], bool] | None = None, log: str | None = None) -> None:
    """Wait until the tracker lists a server on ``port`` under ``key``; ``alive`` tells
    whether that server still runs (its ``log`` is quoted when it exited)."""
    from tvmflow.adapter.rpc.procs import tail
    host, tport = parse_hostport(tracker, what="tracker address")
    deadline = time.monotonic() + timeout
    while True:
        summary = tracker_summary(host, tport, timeout=max(1.0, deadline - time.monotonic()))
        if any(s["port"] == port for s in servers_under(summary, key)):
            return
        if alive is not None and not alive():
            raise TvmflowError(f"the RPC server on port {port} exited: {tail(log)}")
        if time.monotonic() > deadline:
            raise TvmflowError(f"the RPC server on port {port} did not register with the tracker "
                               f"{tracker} under key {key!r} within {timeout:g} s")
        time.sleep(0.2)
