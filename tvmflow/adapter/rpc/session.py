"""Client sessions, each step under a deadline: connect, request, upload, small queries.

TVM opens a session in C++ (``rpc.connect``): a TCP connect, then the RPC handshake, both
blocking without a timeout -- a socket that accepts and never answers hangs it for good.  So
:func:`connect` first exchanges the handshake itself, on a socket with a timeout and with a
key no server has (a TVM server answers "mismatch" and goes on waiting, no session is
opened); only then does TVM connect, in a thread that is abandoned at the deadline
(:func:`call_with_deadline`).  :func:`request` asks a tracker for a server under a key,
bounded the same way.  :func:`remote_errors` turns a lost session into a TvmflowError.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from tvmflow.errors import TvmflowError
from tvmflow.adapter.rpc.net import unreachable_reason
from tvmflow.adapter.rpc.tracker import (TRACKER_REQUEST, TRACKER_SUCCESS, servers_under, tracker_call,
                      wait_for_key)

# tvm/rpc/base.py (checked against TVM by tests/test_rpc_deadlines.py)
RPC_MAGIC = 0xFF271
RPC_ANSWERS = {RPC_MAGIC: "success", RPC_MAGIC + 1: "duplicate", RPC_MAGIC + 2: "mismatch"}
PROBE_KEY = "client:tvmflow-handshake-probe"
CALL_TIMEOUT = 120.0          # a query (work directory, thread count) to a server
UPLOAD_TIMEOUT = 600.0        # upload + load_module of a library (a slow board under qemu)

T = TypeVar("T")


@contextlib.contextmanager
def remote_errors(what: str) -> Iterator[None]:
    """Turn an RPC failure inside the block into ``TvmflowError("<what>: ...")``.

    A server that dies mid-call closes the socket and TVM raises (``TVMError``, ``RPCError``,
    ``RuntimeError`` or ``OSError``); the message keeps its last line.
    """
    try:
        yield
    except TvmflowError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:  # tvm.error.TVMError/RPCError are RuntimeError
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        detail = lines[-1] if lines else type(exc).__name__
        raise TvmflowError(f"{what}: {detail}",
                           hint="the RPC server may have died or lost the network; check it "
                                "with `tvmflow board status` or the tracker") from None


def call_with_deadline(fn: Callable[[], T], timeout: float, what: str) -> T:
    """``fn()`` in a daemon thread; its result, its exception, or a TvmflowError naming
    ``what`` when it has not returned after ``timeout`` seconds (the thread is abandoned)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            done.set()
    threading.Thread(target=run, name=f"tvmflow-rpc {what}", daemon=True).start()
    if not done.wait(max(timeout, 0.0)):
        raise TvmflowError(f"{what}: no answer within {timeout:.3g} s",
                           hint="the RPC server may be hung, busy with another session, or "
                                "not a TVM RPC server; raise --timeout if it is just slow")
    if "error" in box:
        raise box.pop("error")
    return box.pop("value")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionResetError("connection closed")
        data += chunk
    return data


def probe_server(host: str, port: int, timeout: float) -> str:
    """Exchange the RPC handshake with ``host:port`` within ``timeout`` seconds; returns the
    server's answer ("mismatch" from a TVM server).  TvmflowError when nothing answers."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=max(timeout, 0.05))
    except OSError as exc:
        raise TvmflowError(f"cannot reach the RPC server at {host}:{port} "
                           f"({unreachable_reason(exc)})") from None
    with sock:
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.05))
            key = PROBE_KEY.encode()
            sock.sendall(struct.pack("<ii", RPC_MAGIC, len(key)) + key)
            code = struct.unpack("<i", _recv_exact(sock, 4))[0]
        except TimeoutError:
            raise TvmflowError(f"the RPC server at {host}:{port} accepted the connection but did "
                               f"not answer the RPC handshake within {timeout:g} s",
                               hint="is it a TVM RPC server? One busy with another session "
                                    "answers only when that session ends") from None
        except OSError as exc:
            raise TvmflowError(f"{host}:{port} closed the connection during the RPC handshake "
                               f"({unreachable_reason(exc)}): not a TVM RPC server?") from None
    if code not in RPC_ANSWERS:
        raise TvmflowError(f"{host}:{port} is not a TVM RPC server (handshake answer {code:#x})")
    return RPC_ANSWERS[code]


def _tvm_rpc():
    """``tvm.rpc``, imported before any handshake: the import takes seconds on a busy
    machine, and a tracker-registered server gives a handed-out key up after ~8 s unused."""
    from tvm import rpc
    return rpc


def _open(host: str, port: int, key: str, deadline: float, session_timeout: float, what: str):
    """TVM's ``rpc.connect``, abandoned at ``deadline`` (a ``time.monotonic()`` value)."""
    tvm_rpc = _tvm_rpc()

    def open_session():
        with remote_errors(what):
            return tvm_rpc.connect(host, port, key, session_timeout=session_timeout)
    return call_with_deadline(open_session, max(0.5, deadline - time.monotonic()), what)


def connect(host: str, port: int, timeout: float = 10.0, *, session_timeout: float = 0):
    """An RPC session to the server at ``host:port``, open within ``timeout`` seconds
    (handshake included), else a TvmflowError."""
    _tvm_rpc()
    deadline = time.monotonic() + timeout
    probe_server(host, port, timeout)
    return _open(host, port, "", deadline, session_timeout,
                 f"cannot open an RPC session to {host}:{port}")


def request(tracker_host: str, tracker_port: int, key: str, timeout: float = 30.0, *,
            session_timeout: float = 0, priority: int = 1):
    """An RPC session to a free server registered under ``key`` at the tracker.

    Waits at most ``timeout`` seconds in all: for the tracker to answer, for a server under
    ``key`` to be registered, for one of them to be free, and for its handshake.  Each
    failure is a TvmflowError naming the tracker, the key and the keys the tracker knows.
    """
    _tvm_rpc()                 # before a server's key is handed out to us
    deadline = time.monotonic() + timeout
    where = f"{tracker_host}:{tracker_port}"
    summary = wait_for_key(tracker_host, tracker_port, key, timeout)
    n = len(servers_under(summary, key))

    def busy(_: OSError) -> TvmflowError:
        return TvmflowError(f"no free RPC server under key {key!r} at the tracker {where} within "
                            f"{timeout:g} s ({n} registered, all busy or gone)")
    value = tracker_call(tracker_host, tracker_port, [TRACKER_REQUEST, key, "", priority],
                         max(0.5, deadline - time.monotonic()), on_error=busy)
    if not isinstance(value, list) or not value or value[0] != TRACKER_SUCCESS:
        raise TvmflowError(f"the RPC tracker at {where} refused the request for {key!r}: {value!r}")
    url, port, matchkey = value[1]
    probe_server(url, port, max(0.5, deadline - time.monotonic()))
    return _open(url, port, matchkey, deadline, session_timeout,
                 f"cannot open an RPC session to the server {url}:{port} under key {key!r}")


def _query(session, name: str, args: tuple, what: str, timeout: float) -> Any:
    """``session.get_function(name)(*args)`` under a deadline."""
    def call():
        with remote_errors(what):
            return session.get_function(name)(*args)
    return call_with_deadline(call, timeout, what)


def server_workdir(session, timeout: float = CALL_TIMEOUT) -> str:
    """The server's working directory for this session (differs between servers)."""
    return str(_query(session, "tvm.rpc.server.workpath", ("",), "cannot query the RPC server",
                      timeout))


def num_threads(session, timeout: float = CALL_TIMEOUT) -> int:
    """TVM's thread count on the server behind ``session`` (``runtime.NumThreads`` there)."""
    return int(_query(session, "runtime.NumThreads", (),
                      "cannot ask the RPC server for TVM's thread count", timeout))


def upload_module(session, path: str | Path, timeout: float = UPLOAD_TIMEOUT):
    """Upload a compiled ``.so`` and load it on the server; returns the remote module.

    Each upload gets a fresh remote name: writing over a library the server still has
    loaded (uploading the same file twice in one session) crashes the server's worker.
    """
    import uuid
    path = Path(path)
    remote_name = f"{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}"
    what = f"cannot upload {path.name} to the RPC server"

    def upload():
        with remote_errors(what):
            session.upload(str(path), target=remote_name)
            return session.load_module(remote_name)
    return call_with_deadline(upload, timeout, what)
