"""TVM RPC: trackers and servers as subprocesses, sessions with bounded waits.

This is the only module that touches ``tvm.rpc``.  Processes:

* :func:`start_tracker` / :func:`start_server` launch ``python -m tvm.exec.rpc_tracker`` /
  ``python -m tvm.exec.rpc_server`` in their own session (``setsid``), so that
  :meth:`RpcProcess.stop` can kill the whole process group -- the server forks a worker per
  session, and a worker left behind keeps the port.
* Everything binds 127.0.0.1 unless a host is given; any other address prints a warning,
  because TVM RPC has no authentication (whoever reaches the port runs code).
* :func:`local_rpc` is a context manager with a loopback tracker and N host servers under one
  key, stopped on exit (exceptions and Ctrl-C included).

Sessions:

* :func:`connect` opens a session to one server, :func:`request` asks a tracker for a server
  registered under a key.  TVM's own ``request`` waits forever when no server has the key;
  here every wait is bounded and ends in a :class:`~tvmflow.errors.TvmflowError`.
* :func:`tracker_summary` returns the tracker's view (servers per key, free / pending).
* :func:`remote_errors` turns a lost session (server killed, network gone) into a
  TvmflowError; :func:`upload_module` and :func:`run_add_check` use it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from tvmflow.errors import TvmflowError

LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}
INSECURE_WARNING = ("Warning: TVM RPC has no authentication; {what} listening on {host} lets anyone "
                    "who can reach {host}:{port} run code on this machine. Bind 127.0.0.1 unless "
                    "the network is trusted.")


# --------------------------------------------------------------------------- addresses


def parse_hostport(text: str, *, what: str = "address", default_port: int | None = None
                   ) -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; a bad value is a TvmflowError."""
    host, sep, port = str(text).rpartition(":")
    if not sep:
        host, port = str(text), "" if default_port is None else str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TvmflowError(f"bad {what} {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    return host, int(port)


def is_loopback(host: str) -> bool:
    return host in _LOOPBACK_NAMES or host.startswith("127.")


def warn_if_exposed(host: str, port: int | str, what: str) -> bool:
    """Print the no-authentication warning on stderr when ``host`` is not loopback."""
    if is_loopback(host):
        return False
    print(INSECURE_WARNING.format(what=what, host=host, port=port), file=sys.stderr, flush=True)
    return True


def find_free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host if host not in ("", "0.0.0.0") else LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _listening_ports() -> set[int] | None:
    """Ports with a TCP socket in LISTEN state, from /proc/net/tcp{,6} (None off Linux)."""
    ports: set[int] = set()
    found = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if len(parts) > 3 and parts[3] == "0A":  # TCP_LISTEN
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
            found = True
        except (OSError, StopIteration, ValueError):
            continue
    return ports if found else None


def is_listening(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something listens on ``port``.

    Locally this reads /proc/net/tcp instead of connecting: a probe connection makes a
    tracker-registered TVM server drop its tracker link and register again.
    """
    if is_loopback(host) or host in ("", "0.0.0.0"):
        ports = _listening_ports()
        if ports is not None:
            return port in ports
    probe = LOOPBACK if host in ("", "0.0.0.0") else host
    try:
        with socket.create_connection((probe, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- processes


def _tail(path: Path | None, lines: int = 8) -> str:
    if path is None or not Path(path).exists():
        return ""
    text = Path(path).read_text(errors="replace").strip().splitlines()
    return " | ".join(text[-lines:])


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pid_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def group_pids(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


def kill_group(pgid: int, timeout: float = 5.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            raise TvmflowError(f"not allowed to stop process group {pgid}",
                               hint="run as the user who started it") from None
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_pids(pgid):
                return
            time.sleep(0.05)


@dataclass
class RpcProcess:
    """A tracker or server started with :func:`spawn` (its own process group)."""

    kind: str                      # "tracker" or "server"
    pid: int
    host: str
    port: int
    log: str | None = None
    key: str | None = None
    tracker: str | None = None     # "host:port" a server registered with
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)

    def stop(self, timeout: float = 5.0) -> None:
        kill_group(self.pid, timeout)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "popen"}


def spawn(kind: str, argv: Sequence[str], host: str, port: int, *, log: str | Path | None = None,
          env: dict[str, str] | None = None, timeout: float = 30.0, key: str | None = None,
          tracker: str | None = None, cwd: str | None = None) -> RpcProcess:
    """Start ``argv`` in a new session and wait until ``host:port`` accepts connections.

    The process is killed again when it does not listen within ``timeout`` seconds or exits
    first; the error quotes the end of its log.
    """
    if is_listening(host, port):
        raise TvmflowError(f"cannot start the RPC {kind}: port {port} is already in use",
                           hint="pick another --port or leave it out for a free one")
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")
    else:
        out = subprocess.DEVNULL
    try:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=cwd)
    except FileNotFoundError as exc:
        raise TvmflowError(f"cannot start the RPC {kind}: {exc.filename} not found") from None
    finally:
        if log is not None:
            out.close()
    proc = RpcProcess(kind, popen.pid, host, port, str(log) if log else None, key, tracker, popen)
    deadline = time.monotonic() + timeout
    try:
        while not is_listening(host, port):
            if popen.poll() is not None:
                raise TvmflowError(f"the RPC {kind} exited with code {popen.returncode} before "
                                   f"listening on {host}:{port}: {_tail(proc.log)}")
            if time.monotonic() > deadline:
                raise TvmflowError(f"the RPC {kind} did not listen on {host}:{port} within "
                                   f"{timeout:g} s: {_tail(proc.log)}")
            time.sleep(0.1)
    except BaseException:  # also Ctrl-C: never leave a half-started process behind
        proc.stop(1.0)
        raise
    return proc


def tracker_command(host: str, port: int, python: Sequence[str] | None = None) -> list[str]:
    return [*(python or [sys.executable]), "-m", "tvm.exec.rpc_tracker", "--host", host,
            "--port", str(port), "--port-end", str(port + 1)]


def server_command(host: str, port: int, *, tracker: str | None = None, key: str = "",
                   python: Sequence[str] | None = None) -> list[str]:
    cmd = [*(python or [sys.executable]), "-m", "tvm.exec.rpc_server", "--host", host,
           "--port", str(port), "--port-end", str(port + 1)]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    return cmd


def start_tracker(host: str = LOOPBACK, port: int | None = None, *, log: str | Path | None = None,
                  timeout: float = 30.0) -> RpcProcess:
    """A tracker on ``host:port`` (a free port when None), listening when this returns."""
    port = port or find_free_port(host)
    warn_if_exposed(host, port, "the RPC tracker")
    return spawn("tracker", tracker_command(host, port), host, port, log=log, timeout=timeout)


def start_server(host: str = LOOPBACK, port: int | None = None, *, tracker: str | None = None,
                 key: str = "", python: Sequence[str] | None = None, env: dict | None = None,
                 log: str | Path | None = None, timeout: float = 60.0, cwd: str | None = None,
                 register_timeout: float | None = None, threads: int | None = None) -> RpcProcess:
    """An RPC server on ``host:port``; with ``tracker`` it registers there under ``key``.

    ``python`` is the interpreter command (default: this one); the emulated board passes
    ``["chroot", ROOT, "/opt/tvm-venv/bin/python"]``.  With a tracker this also waits (up to
    ``register_timeout``, default ``timeout``) until the tracker lists the server.

    The server runs TVM with ``threads`` threads (``TVM_NUM_THREADS`` in its environment:
    ``env``, default this process's).  None: for a host server (``python`` not given) this
    machine's count (:func:`tvmflow.threads.resolve`: ``TVM_NUM_THREADS`` if set, else the
    cores); with another interpreter, ``env`` as given.
    """
    from tvmflow import threads as _threads
    if threads is None and python is None:
        threads = _threads.resolve(environ=env)
    if threads is not None:
        env = _threads.child_env(threads, base=env)
    port = port or find_free_port(host)
    if tracker:
        parse_hostport(tracker, what="tracker address")
        if not key:
            raise TvmflowError("an RPC server registered with a tracker needs a key")
    warn_if_exposed(host, port, "the RPC server")
    proc = spawn("server", server_command(host, port, tracker=tracker, key=key, python=python),
                 host, port, log=log, env=env, timeout=timeout, key=key, tracker=tracker, cwd=cwd)
    if tracker:
        try:
            wait_registered(tracker, key, port, register_timeout or timeout, proc=proc)
        except BaseException:
            proc.stop(2.0)
            raise
    return proc


# --------------------------------------------------------------------------- tracker queries


def _tracker_socket(host: str, port: int, timeout: float) -> socket.socket:
    """A connected socket to a tracker, with the magic exchanged; TvmflowError otherwise."""
    from tvm.rpc import base
    try:
        sock = socket.create_connection((host, port), timeout=max(timeout, 0.1))
    except OSError as exc:
        why = "connection refused" if exc.errno == errno.ECONNREFUSED else (str(exc) or "timed out")
        raise TvmflowError(f"cannot reach the RPC tracker at {host}:{port} ({why})",
                           hint="start one with `python -m tvm.exec.rpc_tracker --host 127.0.0.1 "
                                "--port 9190` or `tvmflow board start`") from None
    try:
        sock.sendall(base.struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = base.struct.unpack("<i", base.recvall(sock, 4))[0]
    except (OSError, RuntimeError) as exc:
        sock.close()
        raise TvmflowError(f"no RPC tracker answered at {host}:{port} ({exc or 'timed out'})") from None
    if magic != base.RPC_TRACKER_MAGIC:
        sock.close()
        raise TvmflowError(f"{host}:{port} is not a TVM RPC tracker")
    return sock


def tracker_summary(host: str, port: int, timeout: float = 10.0) -> dict[str, Any]:
    """The tracker's summary: ``{"servers": [{"key", "host", "port"}], "queue": {key: {...}}}``.

    ``queue`` maps each key to ``{"free": n, "pending": n}`` as the tracker reports it; ``raw``
    holds TVM's own dict.
    """
    from tvm.rpc import base
    sock = _tracker_socket(host, port, timeout)
    try:
        base.sendjson(sock, [base.TrackerCode.SUMMARY])
        value = base.recvjson(sock)
    except OSError as exc:
        raise TvmflowError(f"the RPC tracker at {host}:{port} did not answer ({exc or 'timed out'})") from None
    finally:
        sock.close()
    if value[0] != base.TrackerCode.SUCCESS:
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


def wait_registered(tracker: str, key: str, port: int, timeout: float,
                    proc: RpcProcess | None = None) -> None:
    """Wait until the tracker lists a server on ``port`` under ``key``."""
    host, tport = parse_hostport(tracker, what="tracker address")
    deadline = time.monotonic() + timeout
    while True:
        summary = tracker_summary(host, tport, timeout=max(1.0, deadline - time.monotonic()))
        if any(s["port"] == port for s in servers_under(summary, key)):
            return
        if proc is not None and not proc.alive():
            raise TvmflowError(f"the RPC server on port {port} exited: {_tail(proc.log)}")
        if time.monotonic() > deadline:
            raise TvmflowError(f"the RPC server on port {port} did not register with the tracker "
                               f"{tracker} under key {key!r} within {timeout:g} s")
        time.sleep(0.2)


# --------------------------------------------------------------------------- sessions


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


def connect(host: str, port: int, timeout: float = 10.0, *, session_timeout: float = 0):
    """An RPC session to the server at ``host:port`` (TvmflowError when unreachable)."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        why = "connection refused" if exc.errno == errno.ECONNREFUSED else (str(exc) or "timed out")
        raise TvmflowError(f"cannot reach the RPC server at {host}:{port} ({why})") from None
    from tvm import rpc
    with remote_errors(f"cannot open an RPC session to {host}:{port}"):
        return rpc.connect(host, port, session_timeout=session_timeout)


def request(tracker_host: str, tracker_port: int, key: str, timeout: float = 30.0, *,
            session_timeout: float = 0, priority: int = 1):
    """An RPC session to a free server registered under ``key`` at the tracker.

    Waits at most ``timeout`` seconds in all: for the tracker to answer, for a server under
    ``key`` to be registered, and for one of them to be free.  Each failure is a TvmflowError
    naming the tracker, the key and the keys the tracker does know.
    """
    from tvm import rpc
    from tvm.rpc import base
    deadline = time.monotonic() + timeout
    where = f"{tracker_host}:{tracker_port}"
    # 1. some server under the key (a board may still be registering: poll, bounded)
    while True:
        summary = tracker_summary(tracker_host, tracker_port, timeout=max(0.5, deadline - time.monotonic()))
        if servers_under(summary, key) or summary["queue"].get(key, {}).get("free", 0):
            break
        if time.monotonic() >= deadline:
            known = sorted({s["key"] for s in summary["servers"]})
            raise TvmflowError(
                f"no RPC server is registered under key {key!r} at the tracker {where} "
                f"(waited {timeout:g} s; keys there: {', '.join(known) or 'none'})",
                hint="start one with `tvmflow board start` or `python -m tvm.exec.rpc_server "
                     f"--tracker {where} --key {key}`")
        time.sleep(0.25)
    # 2. ask for one; the tracker answers when a server is free
    sock = _tracker_socket(tracker_host, tracker_port, max(0.5, deadline - time.monotonic()))
    try:
        sock.settimeout(max(0.5, deadline - time.monotonic()))
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", priority])
        value = base.recvjson(sock)
    except OSError:
        n = len(servers_under(summary, key))
        raise TvmflowError(f"no free RPC server under key {key!r} at the tracker {where} within "
                           f"{timeout:g} s ({n} registered, all busy or gone)") from None
    finally:
        sock.close()
    if value[0] != base.TrackerCode.SUCCESS:
        raise TvmflowError(f"the RPC tracker at {where} refused the request for {key!r}: {value!r}")
    url, port, matchkey = value[1]
    with remote_errors(f"cannot open an RPC session to the server {url}:{port} under key {key!r}"):
        return rpc.connect(url, port, matchkey, session_timeout=session_timeout)


def server_workdir(session) -> str:
    """The server's working directory for this session (differs between servers)."""
    with remote_errors("cannot query the RPC server"):
        return str(session.get_function("tvm.rpc.server.workpath")(""))


def num_threads(session) -> int:
    """TVM's thread count on the server behind ``session`` (``runtime.NumThreads`` there)."""
    with remote_errors("cannot ask the RPC server for TVM's thread count"):
        return int(session.get_function("runtime.NumThreads")())


def upload_module(session, path: str | Path):
    """Upload a compiled ``.so`` and load it on the server; returns the remote module.

    Each upload gets a fresh remote name: writing over a library the server still has
    loaded (uploading the same file twice in one session) crashes the server's worker.
    """
    import uuid
    path = Path(path)
    remote_name = f"{path.stem}-{uuid.uuid4().hex[:8]}{path.suffix}"
    with remote_errors(f"cannot upload {path.name} to the RPC server"):
        session.upload(str(path), target=remote_name)
        return session.load_module(remote_name)


# --------------------------------------------------------------------------- local cluster


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
    machine's count, see :func:`start_server`).
    """
    log_dir = Path(log_dir) if log_dir else None
    started: list[RpcProcess] = []
    cluster = None
    try:
        tracker = start_tracker(host, log=log_dir / "tracker.log" if log_dir else None,
                                timeout=timeout)
        started.append(tracker)
        procs = []
        for i in range(servers):
            proc = start_server(host, tracker=tracker.address, key=key, timeout=timeout,
                                log=log_dir / f"server-{i}.log" if log_dir else None,
                                threads=threads)
            started.append(proc)
            procs.append(proc)
        cluster = LocalRpc(tracker, procs, key)
        yield cluster
    finally:
        for proc in reversed(started):
            with contextlib.suppress(Exception):
                proc.stop()


# --------------------------------------------------------------------------- smoke test


AARCH64_TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72",
                  "mattr": ["+neon"], "num-cores": 4}


def build_add_module(path: str | Path, target: dict[str, Any] | None = None, n: int = 1024,
                     cross_cc: str | None = None) -> Path:
    """Compile a tiny float32 ``add(a, b, c)`` (c = a + b, length ``n``) into ``path`` (.so).

    ``target`` defaults to the host; with an aarch64 target pass ``cross_cc`` (e.g.
    ``aarch64-linux-gnu-gcc``): the library is linked with it through
    ``tvm.support.cc.cross_compiler``.  Used to check that a board runs what the host built.
    """
    import shutil

    import tvm
    from tvm import te
    from tvm.support import cc

    A = te.placeholder((n,), "float32", name="A")
    B = te.placeholder((n,), "float32", name="B")
    C = te.compute((n,), lambda i: A[i] + B[i], name="C")
    add = te.create_prim_func([A, B, C]).with_attr("global_symbol", "add")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tgt = tvm.target.Target(dict(target)) if target else tvm.target.Target("llvm")
    lib = tvm.compile(tvm.IRModule({"add": add}), target=tgt)
    if cross_cc:
        if shutil.which(cross_cc) is None:
            raise TvmflowError(f"cross compiler {cross_cc} not found",
                               hint="apt-get install gcc-aarch64-linux-gnu g++-aarch64-linux-gnu")
        lib.export_library(str(path), fcompile=cc.cross_compiler(cross_cc))
    else:
        lib.export_library(str(path))
    return path


def run_add_check(session, lib_path: str | Path, n: int = 1024, seed: int = 0) -> float:
    """Upload ``lib_path`` (from :func:`build_add_module`), run it remotely on random inputs and
    return the largest absolute difference to numpy's ``a + b`` (0.0 when all is right)."""
    import numpy as np
    import tvm
    rng = np.random.default_rng(seed)
    a_np = rng.standard_normal(n).astype("float32")
    b_np = rng.standard_normal(n).astype("float32")
    mod = upload_module(session, lib_path)
    with remote_errors("the RPC server failed while running add"):
        dev = session.cpu(0)
        a = tvm.runtime.tensor(a_np, dev)
        b = tvm.runtime.tensor(b_np, dev)
        c = tvm.runtime.tensor(np.zeros(n, "float32"), dev)
        mod["add"](a, b, c)
        out = c.numpy()
    return float(np.max(np.abs(out - (a_np + b_np))))


def time_remote(session, lib, n: int = 1024, number: int = 100, repeat: int = 3) -> float:
    """Mean seconds of one remote ``add`` call (time_evaluator on the server).

    ``lib`` is the path of a library from :func:`build_add_module` (uploaded here) or a
    module :func:`upload_module` returned.
    """
    import numpy as np
    import tvm
    mod = lib if hasattr(lib, "time_evaluator") else upload_module(session, lib)
    with remote_errors("the RPC server failed while timing add"):
        dev = session.cpu(0)
        a = tvm.runtime.tensor(np.ones(n, "float32"), dev)
        c = tvm.runtime.tensor(np.zeros(n, "float32"), dev)
        ev = mod.time_evaluator("add", dev, number=number, repeat=repeat)
        return float(ev(a, a, c).mean)
