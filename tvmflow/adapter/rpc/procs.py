"""Process groups: spawn a tracker or server in its own session, watch it, kill it whole.

A TVM RPC server forks a popen worker and a process per session; a worker left behind keeps
the port.  So every process starts in a new session (its pid is its process group) and is
stopped with :func:`kill_group`.

Processes started for one command must not outlive tvmflow, even when tvmflow is killed by
SIGKILL.  Two guards, unless ``outlive=True`` (the emulated boards of ``tvmflow board start``,
meant to keep running):

* a parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) on the group leader.  Linux
  sends it when the *thread* that forked the child exits, so it is set only when spawning from
  the main thread, whose end is the end of the process;
* a watchdog process (:mod:`._watchdog`), one per tvmflow process, holding the read end of a
  pipe: when tvmflow dies the pipe closes and the watchdog kills every registered group,
  the leader's children (popen workers, session workers) included.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tvmflow.errors import TvmflowError
from tvmflow.adapter.rpc.net import is_listening

_PR_SET_PDEATHSIG = 1


def tail(path: str | Path | None, lines: int = 8) -> str:
    """The last ``lines`` lines of a log file, joined by `` | `` ("" when there is none)."""
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
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            raise TvmflowError(f"not allowed to stop process group {pgid}",
                               hint="run as the user who started it") from None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not group_pids(pgid):
                return
            time.sleep(0.05)


# --------------------------------------------------------------------------- the two guards


def parent_death_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` that gives the child SIGKILL when this process dies (None when it
    cannot: not Linux, or not the main thread, whose exit alone ends the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl     # looked up before the fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:          # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


class Watchdog:
    """The per-process watchdog (see the module docstring); started on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner = 0
        self._groups: set[int] = set()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._owner == os.getpid() else None

    def _start(self) -> None:
        script = Path(__file__).with_name("_watchdog.py")
        self._proc = subprocess.Popen([sys.executable, "-I", str(script)], stdin=subprocess.PIPE,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True, bufsize=0)
        self._owner = os.getpid()
        for pgid in self._groups:
            self._proc.stdin.write(f"+{pgid}\n".encode())

    def _send(self, line: str) -> None:
        if self._owner != os.getpid() or self._proc is None or self._proc.poll() is not None:
            self._start()                    # first use, after a fork, or it died
        try:
            self._proc.stdin.write(line.encode())
        except (BrokenPipeError, OSError):
            self._start()

    def watch(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        with self._lock:
            if pgid in self._groups:
                self._groups.discard(pgid)
                if self._owner == os.getpid() and self._proc is not None and self._proc.poll() is None:
                    with contextlib.suppress(OSError):
                        self._proc.stdin.write(f"-{pgid}\n".encode())


WATCHDOG = Watchdog()


# --------------------------------------------------------------------------- spawn


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
        WATCHDOG.forget(self.pid)

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "popen"}


def _popen(kind: str, argv: Sequence[str], log: str | Path | None, env: dict[str, str] | None,
           cwd: str | None, outlive: bool) -> subprocess.Popen:
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab") if log is not None else subprocess.DEVNULL
    try:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                 cwd=cwd, preexec_fn=None if outlive else parent_death_preexec())
    except FileNotFoundError as exc:
        raise TvmflowError(f"cannot start the RPC {kind}: {exc.filename} not found") from None
    finally:
        if log is not None:
            out.close()
    if not outlive:
        WATCHDOG.watch(popen.pid)
    return popen


def spawn(kind: str, argv: Sequence[str], host: str, port: int, *, log: str | Path | None = None,
          env: dict[str, str] | None = None, timeout: float = 30.0, key: str | None = None,
          tracker: str | None = None, cwd: str | None = None, outlive: bool = False) -> RpcProcess:
    """Start ``argv`` in a new session and wait until ``host:port`` accepts connections.

    The process is killed again when it does not listen within ``timeout`` seconds or exits
    first; the error quotes the end of its log.  Unless ``outlive``, it dies with this process
    (see the module docstring).
    """
    if is_listening(host, port):
        raise TvmflowError(f"cannot start the RPC {kind}: port {port} is already in use",
                           hint="pick another --port or leave it out for a free one")
    popen = _popen(kind, argv, log, env, cwd, outlive)
    proc = RpcProcess(kind, popen.pid, host, port, str(log) if log else None, key, tracker, popen)
    deadline = time.monotonic() + timeout
    try:
        while not is_listening(host, port):
            if popen.poll() is not None:
                raise TvmflowError(f"the RPC {kind} exited with code {popen.returncode} before "
                                   f"listening on {host}:{port}: {tail(proc.log)}")
            if time.monotonic() > deadline:
                raise TvmflowError(f"the RPC {kind} did not listen on {host}:{port} within "
                                   f"{timeout:g} s: {tail(proc.log)}")
            time.sleep(0.1)
    except BaseException:  # also Ctrl-C: never leave a half-started process behind
        proc.stop(1.0)
        raise
    return proc
