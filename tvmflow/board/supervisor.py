"""The board's processes: its RPC server inside the root and the tracker started for boards.

Both are meant to outlive the command that started them (``tvmflow board start`` returns
while the board serves), so neither gets a parent-death signal or a watchdog
(``outlive=True``); ``tvmflow board stop`` ends them.  A pid alone is not trusted: a process
counts as a board's server or tracker only while its command line says so.
"""

from __future__ import annotations

from pathlib import Path

from tvmflow.adapter import rpc
from tvmflow.board.host import chroot, chroot_env
from tvmflow.board.paths import VENV, rootfs

SERVER_MODULE = "tvm.exec.rpc_server"
TRACKER_MODULE = "tvm.exec.rpc_tracker"


def server_alive(pid: int) -> bool:
    return rpc.pid_alive(pid) and SERVER_MODULE in rpc.pid_cmdline(pid)


def tracker_alive(pid: int) -> bool:
    return rpc.pid_alive(pid) and TRACKER_MODULE in rpc.pid_cmdline(pid)


def start_tracker(log: Path, timeout: float = 120.0) -> rpc.RpcProcess:
    """A tracker on 127.0.0.1 (a free port) for boards started without ``--tracker``."""
    return rpc.start_tracker(rpc.LOOPBACK, log=log, timeout=timeout, outlive=True)


def start_server(host: str, port: int | None, tracker: str, key: str, threads: int, log: Path,
                 timeout: float) -> rpc.RpcProcess:
    """``python -m tvm.exec.rpc_server`` inside the root under qemu, registered with
    ``tracker`` under ``key``, TVM running ``threads`` threads; returns once registered."""
    from tvmflow.threads import child_env
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    return rpc.start_server(host, port, tracker=tracker, key=key,
                            python=chroot(rootfs(), f"{VENV}/bin/python"),
                            env=child_env(threads, base=chroot_env()), log=log, timeout=timeout,
                            cwd="/", outlive=True)


def stop(pid: int, timeout: float = 5.0) -> None:
    """Stop the process group of a board's server or tracker (its session workers too)."""
    rpc.kill_group(pid, timeout)
