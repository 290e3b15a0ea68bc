"""Trackers and servers as subprocesses: ``python -m tvm.exec.rpc_tracker`` / ``rpc_server``.

Everything binds 127.0.0.1 unless a host is given; any other address prints a warning,
because TVM RPC has no authentication (whoever reaches the port runs code).  A process
started here dies with tvmflow unless ``outlive=True`` (see :mod:`.procs`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from tvmflow.errors import TvmflowError
from tvmflow.adapter.rpc.net import LOOPBACK, find_free_port, parse_hostport, warn_if_exposed
from tvmflow.adapter.rpc.procs import RpcProcess, spawn
from tvmflow.adapter.rpc.tracker import wait_registered


def _python_m(python: Sequence[str] | None, module: str) -> list[str]:
    """``python -m module``; with this interpreter through :mod:`tvmflow.adapter.lean` (the
    process and its PopenPool workers start without torch, which they never use)."""
    if python is None:
        from tvmflow.adapter.lean import command
        return command(module)
    return [*python, "-m", module]


def tracker_command(host: str, port: int, python: Sequence[str] | None = None) -> list[str]:
    return [*_python_m(python, "tvm.exec.rpc_tracker"), "--host", host,
            "--port", str(port), "--port-end", str(port + 1)]


def server_command(host: str, port: int, *, tracker: str | None = None, key: str = "",
                   python: Sequence[str] | None = None) -> list[str]:
    cmd = [*_python_m(python, "tvm.exec.rpc_server"), "--host", host,
           "--port", str(port), "--port-end", str(port + 1)]
    if tracker:
        cmd += ["--tracker", tracker, "--key", key]
    return cmd


def start_tracker(host: str = LOOPBACK, port: int | None = None, *, log: str | Path | None = None,
                  timeout: float = 30.0, outlive: bool = False) -> RpcProcess:
    """A tracker on ``host:port`` (a free port when None), listening when this returns."""
    port = port or find_free_port(host)
    warn_if_exposed(host, port, "the RPC tracker")
    return spawn("tracker", tracker_command(host, port), host, port, log=log, timeout=timeout,
                 outlive=outlive)


def start_server(host: str = LOOPBACK, port: int | None = None, *, tracker: str | None = None,
                 key: str = "", python: Sequence[str] | None = None, env: dict | None = None,
                 log: str | Path | None = None, timeout: float = 60.0, cwd: str | None = None,
                 register_timeout: float | None = None, threads: int | None = None,
                 outlive: bool = False) -> RpcProcess:
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
                 host, port, log=log, env=env, timeout=timeout, key=key, tracker=tracker, cwd=cwd,
                 outlive=outlive)
    if tracker:
        try:
            wait_registered(tracker, key, port, register_timeout or timeout, alive=proc.alive,
                            log=proc.log)
        except BaseException:
            proc.stop(2.0)
            raise
    return proc
