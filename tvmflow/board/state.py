"""The state of the boards started from one state directory: typed records in ``state.json``.

:class:`StateStore` reads it (:meth:`~StateStore.read`, no lock) or holds it under a file lock
and writes it back atomically (:meth:`~StateStore.locked`).  Records: :class:`BoardInfo` (a
board), :class:`TrackerEntry` (the tracker started for boards), :class:`Reservation` (a board
being started by a live process), all in :class:`BoardState`.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

from tvmflow.adapter import rpc
from tvmflow.board.paths import state_dir
from tvmflow.board.supervisor import server_alive, tracker_alive


def _known(cls, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class BoardInfo:
    """A running emulated board (an RPC server inside the arm64 root)."""

    name: str
    key: str
    host: str
    port: int
    pid: int
    tracker: str                 # "host:port"
    tracker_owned: bool          # started by `board start` (stopped with the last board)
    log: str
    root: str
    started: float = field(default_factory=time.time)
    threads: int | None = None   # TVM_NUM_THREADS of its server

    @property
    def tracker_host(self) -> str:
        return rpc.parse_hostport(self.tracker)[0]

    @property
    def tracker_port(self) -> int:
        return rpc.parse_hostport(self.tracker)[1]

    def alive(self) -> bool:
        return server_alive(self.pid)

    def request(self, timeout: float = 60.0, **kw):
        """An RPC session to a board under this key (any board with the key may answer)."""
        return rpc.request(self.tracker_host, self.tracker_port, self.key, timeout, **kw)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BoardInfo":
        return cls(**_known(cls, data))


@dataclass
class TrackerEntry:
    """The tracker ``start`` started for boards given no ``--tracker``."""

    pid: int
    host: str
    port: int
    log: str | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return tracker_alive(self.pid)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TrackerEntry":
        return cls(**_known(cls, data))


@dataclass
class Reservation:
    """A board being started: ``owner`` is the starting process, ``tracker`` its tracker."""

    owner: int
    tracker: str

    def alive(self) -> bool:
        return rpc.pid_alive(self.owner)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Reservation":
        return cls(int(data["owner"]), str(data["tracker"]))


@dataclass
class BoardState:
    boards: dict[str, BoardInfo] = field(default_factory=dict)
    tracker: TrackerEntry | None = None
    starting: dict[str, Reservation] = field(default_factory=dict)

    def live_boards(self) -> list[BoardInfo]:
        return [b for b in self.boards.values() if b.alive()]

    def live_reservations(self) -> dict[str, Reservation]:
        """Boards being started right now (their starting process is alive); drops the rest."""
        self.starting = {n: r for n, r in self.starting.items() if r.alive()}
        return self.starting

    def to_json(self) -> dict[str, Any]:
        return {"boards": {n: b.to_json() for n, b in self.boards.items()},
                "tracker": self.tracker.to_json() if self.tracker else None,
                "starting": {n: r.to_json() for n, r in self.starting.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "BoardState":
        tracker = data.get("tracker")
        return cls({n: BoardInfo.from_json(b) for n, b in (data.get("boards") or {}).items()},
                   TrackerEntry.from_json(tracker) if tracker else None,
                   {n: Reservation.from_json(r) for n, r in (data.get("starting") or {}).items()})


class StateStore:
    """``state.json`` of one state directory (see :func:`tvmflow.board.paths.state_dir`)."""

    def __init__(self, directory: str | Path | None = None):
        self.dir = state_dir(directory)

    @property
    def path(self) -> Path:
        return self.dir / "state.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def read(self) -> BoardState:
        """The state as last written (empty when missing or unreadable)."""
        try:
            return BoardState.from_json(json.loads(self.path.read_text()))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            return BoardState()

    @contextlib.contextmanager
    def locked(self) -> Iterator[BoardState]:
        """The state under a file lock; written back (atomically) on a clean exit of the block."""
        from filelock import FileLock
        self.dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.dir / "state.lock"), timeout=600):
            state = self.read()
            yield state
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state.to_json(), indent=2))
            tmp.replace(self.path)
