"""An emulated 64-bit ARM board: a Debian arm64 root run under qemu-user, serving TVM RPC.

``tvmflow board setup`` builds (once, cached) an arm64 Debian bookworm root with
``debootstrap`` and a venv holding the aarch64 ``apache-tvm`` wheels; qemu-user-static runs
its binaries through binfmt_misc.  ``tvmflow board start`` runs ``python -m
tvm.exec.rpc_server`` inside that root (``chroot``, own session) on 127.0.0.1, registered with
an RPC tracker under a key (default ``rpi4-emu``, the key a real Raspberry Pi 4 would use
with a ``-emu`` suffix), so the host can cross-compile for aarch64, upload, run and time code
"on the board" exactly as it would on a Raspberry Pi.  Times measured there are emulation
times, not Cortex-A72 times: use it to check the flow, not to rank variants.

Several boards (``--name``) share one root and may run at once under one key.  The package:

* :mod:`.paths` -- constants, the cached root, the state directory (``state_dir=``,
  ``$TVMFLOW_BOARD_STATE_DIR``, else ``$TVMFLOW_CACHE_DIR/board``);
* :mod:`.host` -- tools, binfmt_misc, the Debian mirror, commands;
* :mod:`.builder` -- :func:`setup` / :func:`ensure_setup` and the :class:`SetupMarker`;
* :mod:`.mounts` -- /proc, /sys, /dev in the root, and the root's users across state dirs;
* :mod:`.supervisor` -- start, stop and liveness of a board's server and of the tracker;
* :mod:`.state` -- the typed records of ``state.json`` (:class:`BoardInfo` ...);
* here -- :func:`start` -> :class:`BoardInfo`, :func:`stop`, :func:`running`, :func:`status`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tvmflow.adapter import rpc
from tvmflow.errors import TvmflowError
from tvmflow.board import mounts, supervisor
from tvmflow.board.host import (Say, binfmt_state, check_tools, debian_mirror, ensure_binfmt, missing_tools,
                   need_root, quiet)
from tvmflow.board.mounts import RootUser, mounts_under, root_processes, user_token
from tvmflow.board.paths import (BOARD_TARGET, DEFAULT_KEY, DEFAULT_NAME, START_TIMEOUT, root_home, rootfs,
                    state_dir)
from tvmflow.board.builder import SetupInfo, SetupMarker, ensure_setup, read_marker, setup
from tvmflow.board.state import BoardInfo, BoardState, Reservation, StateStore, TrackerEntry

__all__ = ["BOARD_TARGET", "DEFAULT_KEY", "DEFAULT_NAME", "BoardInfo", "BoardStatus", "SetupInfo",
           "SetupMarker", "check_tools", "debian_mirror", "ensure_setup", "mounts_under",
           "root_processes", "rootfs", "running", "running_boards", "setup", "start",
           "state_dir", "status", "stop"]


def running_boards(state_dir: str | Path | None = None) -> list[BoardInfo]:
    """Boards recorded in the state whose server process is alive."""
    return StateStore(state_dir).read().live_boards()


def _check_start(name: str, key: str, tracker: str | None) -> None:
    need_root("board start")
    if not name or "/" in name or name.startswith("."):
        raise TvmflowError(f"bad board name {name!r}")
    if not key:
        raise TvmflowError("the board key must not be empty")
    check_tools()
    if read_marker() is None:
        raise TvmflowError("the emulated board is not set up", hint="run `tvmflow board setup` first")
    if tracker is not None:
        thost, tport = rpc.parse_hostport(tracker, what="tracker address")
        rpc.tracker_summary(thost, tport, timeout=10)       # reachable, and a tracker


def _reserve(store: StateStore, name: str, tracker: str | None, say: Say) -> tuple[str, bool]:
    """Check that ``name`` is free, find or start the tracker, record a reservation and claim
    the root (mounted).  Returns ``(tracker, owned)``.

    The state lock is held only to check and record, not while the server starts (~40 s
    under qemu): boards start in parallel; the reservation keeps a concurrent ``stop`` from
    stopping the tracker meanwhile, the root's user entry from unmounting the root."""
    with store.locked() as state:
        old = state.boards.get(name)
        if old and old.alive():
            raise TvmflowError(f"board {name!r} is already running (port {old.port}, "
                               f"key {old.key!r})", hint=f"tvmflow board stop --name {name}")
        if name in state.live_reservations():
            raise TvmflowError(f"board {name!r} is being started by another process")
        state.boards.pop(name, None)
        owned = tracker is None
        if owned:
            if state.tracker is None or not state.tracker.alive():
                say("starting an RPC tracker on 127.0.0.1")
                proc = supervisor.start_tracker(store.logs / "tracker.log")
                state.tracker = TrackerEntry(proc.pid, proc.host, proc.port, proc.log)
            tracker = state.tracker.address
        mounts.claim_root(RootUser(os.getpid(), str(store.dir.resolve()), name))
        state.starting[name] = Reservation(os.getpid(), tracker)
    return tracker, owned


def start(name: str = DEFAULT_NAME, tracker: str | None = None, key: str = DEFAULT_KEY, *,
          port: int | None = None, host: str = rpc.LOOPBACK, timeout: float = START_TIMEOUT,
          threads: int | None = None, state_dir: str | Path | None = None,
          say: Say = quiet) -> BoardInfo:
    """Start board ``name``: the RPC server inside the root, registered under ``key``.

    ``tracker`` is ``"HOST:PORT"``; without it a tracker is started on 127.0.0.1 (or the one a
    previous ``start`` started is reused) and stopped with the last board.  Returns when the
    tracker lists the board.  Its TVM runs ``threads`` threads (default ``TVM_NUM_THREADS``,
    else the ``rpi4`` preset's ``num-cores``, 4), as a Raspberry Pi 4's TVM would.  The board
    is recorded in ``state_dir`` (see :func:`tvmflow.board.paths.state_dir`).
    """
    _check_start(name, key, tracker)
    from tvmflow.target.presets import get_target
    from tvmflow.threads import resolve
    threads = resolve(get_target(BOARD_TARGET), threads)
    ensure_binfmt(say)
    store = StateStore(state_dir)
    tracker, owned = _reserve(store, name, tracker, say)
    say(f"starting board {name!r} (RPC server under qemu, key {key!r}, tracker {tracker})")
    log = store.logs / f"{name}.log"
    try:
        proc = supervisor.start_server(host, port, tracker, key, threads, log, timeout)
    except BaseException:
        with store.locked() as state:
            state.starting.pop(name, None)
            _release_unused(store, state, [name], say)
        raise
    info = BoardInfo(name, key, host, proc.port, proc.pid, tracker, owned, str(log),
                     str(rootfs()), threads=threads)
    mounts.set_user_pid(user_token(store.dir, name), proc.pid)
    with store.locked() as state:
        state.starting.pop(name, None)
        state.boards[name] = info
    say(f"board {name!r} serving on {host}:{info.port}, registered with {tracker} as {key!r}")
    return info


def _release_unused(store: StateStore, state: BoardState, gone: list[str], say: Say) -> None:
    """After boards ``gone`` stopped (or failed to start): stop the owned tracker once no
    board of this state uses it, and give the root back (unmounted once nobody uses it)."""
    users = [b.tracker for b in state.live_boards()]
    users += [r.tracker for r in state.live_reservations().values()]
    owned = state.tracker
    if owned and owned.address not in users:
        if owned.alive():                 # its last board is gone
            supervisor.stop(owned.pid)
            say(f"stopped the RPC tracker on {owned.address}")
        state.tracker = None
    mounts.release_root([user_token(store.dir, n) for n in gone], say)


def stop(name: str | None = None, *, all: bool = False, state_dir: str | Path | None = None,
         say: Say = quiet) -> list[str]:
    """Stop board ``name`` (default :data:`DEFAULT_NAME`) or, with ``all``, every board of
    the state directory.

    When no board of the state is left, the tracker ``start`` started goes too; when no board
    of any state uses the root, so do the processes still inside it and the /proc, /sys,
    /dev mounts.  Returns the names stopped.
    """
    store = StateStore(state_dir)
    stopped = []
    with store.locked() as state:
        names = list(state.boards) if all else [name or DEFAULT_NAME]
        if not all and names[0] not in state.boards:
            known = ", ".join(sorted(state.boards)) or "none"
            raise TvmflowError(f"no board named {names[0]!r} (boards: {known})")
        for n in names:
            info = state.boards.pop(n)
            if info.alive():
                supervisor.stop(info.pid)
                say(f"stopped board {n!r} (pid {info.pid}, port {info.port})")
            stopped.append(n)
        _release_unused(store, state, stopped, say)
    return stopped


def _start_all(names: list[str], tracker: str | None, key: str, kw: dict[str, Any],
               infos: list[BoardInfo]) -> None:
    """Start ``names`` in parallel, appending each started board to ``infos``; the first
    error is raised once all have finished."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = [pool.submit(start, n, tracker, key, **kw) for n in names]
        errors = []
        for fut in futures:
            try:
                infos.append(fut.result())
            except BaseException as exc:  # noqa: BLE001 - re-raised after the others finish
                errors.append(exc)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def running(names: tuple[str, ...] | list[str] = (DEFAULT_NAME,), tracker: str | None = None,
            key: str = DEFAULT_KEY, *, timeout: float = START_TIMEOUT, threads: int | None = None,
            state_dir: str | Path | None = None, say: Say = quiet) -> Iterator[list[BoardInfo]]:
    """Boards ``names`` started in parallel under ``key`` and stopped on exit (also on errors
    and Ctrl-C).  For pytest fixtures and scripts::

        with board.running(["a", "b"], tracker="127.0.0.1:9190", key="rpi4-emu") as boards:
            sess = boards[0].request(timeout=60)
    """
    ensure_setup(say)
    kw = dict(timeout=timeout, threads=threads, state_dir=state_dir, say=say)
    infos: list[BoardInfo] = []
    names = list(names)
    try:
        if tracker is None and len(names) > 1:   # one owned tracker for all, started first
            infos.append(start(names[0], None, key, **kw))
            tracker, names = infos[0].tracker, names[1:]
        _start_all(names, tracker, key, kw, infos)
        yield infos
    finally:
        live = {b.name for b in running_boards(state_dir)}
        for info in infos:
            if info.name in live:
                with contextlib.suppress(TvmflowError):
                    stop(info.name, state_dir=state_dir)


# --------------------------------------------------------------------------- status


@dataclass
class BoardView:
    """A recorded board as :func:`status` sees it."""

    info: BoardInfo
    alive: bool
    registered: bool | None        # listed by its tracker (None: not alive)

    def to_json(self) -> dict[str, Any]:
        return {**self.info.to_json(), "alive": self.alive, "registered": self.registered}


@dataclass
class BoardStatus:
    """What is set up (root, wheels, tools, binfmt) and what runs (boards, tracker, mounts)."""

    root: str
    root_present: bool
    setup: SetupMarker | None
    wheels: list[str]
    missing_tools: list[str]
    binfmt: str
    state_dir: str
    tracker: TrackerEntry | None
    tracker_alive: bool
    boards: list[BoardView] = field(default_factory=list)
    starting: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    processes: list[int] = field(default_factory=list)

    @property
    def setup_complete(self) -> bool:
        return self.setup is not None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(setup=self.setup.to_json() if self.setup else None,
                   setup_complete=self.setup_complete,
                   tracker=self.tracker.to_json() if self.tracker else None,
                   boards=[b.to_json() for b in self.boards])
        return out


def _registered(info: BoardInfo) -> bool:
    try:
        summary = rpc.tracker_summary(info.tracker_host, info.tracker_port, timeout=3)
    except TvmflowError:
        return False
    return any(s["port"] == info.port for s in rpc.servers_under(summary, info.key))


def status(state_dir: str | Path | None = None) -> BoardStatus:
    """What is set up and what runs: root, wheels, boards of the state, tracker, mounts."""
    store = StateStore(state_dir)
    state = store.read()
    views = []
    for info in state.boards.values():
        alive = info.alive()
        views.append(BoardView(info, alive, _registered(info) if alive else None))
    root = rootfs()
    present = root.exists()
    return BoardStatus(
        root=str(root), root_present=present, setup=read_marker(),
        wheels=sorted(p.name for p in (root_home() / "wheels").glob("*.whl")),
        missing_tools=[f"{cmd} ({pkg})" for cmd, pkg in missing_tools()],
        binfmt=binfmt_state(), state_dir=str(store.dir), tracker=state.tracker,
        tracker_alive=bool(state.tracker and state.tracker.alive()), boards=views,
        starting=sorted(state.live_reservations()),
        mounts=mounts_under(root) if present else [],
        processes=root_processes(root) if present else [])
