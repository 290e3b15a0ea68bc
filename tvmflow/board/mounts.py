"""The root's mounts and processes, and who uses the root.

/proc, /sys and /dev are bind-mounted into the root while a board runs.  Boards of several
state directories (a developer's and a test's) share one root, so the root keeps its own
register of users (``users.json`` beside it, under ``root.lock``): one entry per board being
started or running, alive while its process is.  The mounts go, and any process left inside
the root is killed, only when the last user is gone and no RPC server runs in the root any
more (one started by an older tvmflow, without an entry, counts too).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from tvmflow.adapter import rpc
from tvmflow.errors import TvmflowError
from tvmflow.board.host import Say, need_root, quiet, run
from tvmflow.board.paths import root_home, rootfs
from tvmflow.board.supervisor import SERVER_MODULE

MOUNTS = (("proc", "proc"), ("sys", "sys"), ("dev", "dev"))   # (host path under /, root path)


def mounts_under(root: Path | None = None) -> list[str]:
    """Mount points inside ``root`` (default: the board root), deepest first."""
    root = root or rootfs()
    prefix = str(root.resolve() if root.exists() else root)
    points = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def mount_root(root: Path | None = None) -> list[str]:
    """Mount /proc, /sys and /dev into the root (idempotent); returns the mount points."""
    root = root or rootfs()
    have = set(mounts_under(root))
    points = []
    for host, inside in MOUNTS:
        target = root / inside
        target.mkdir(parents=True, exist_ok=True)
        if str(target.resolve()) not in have:
            if host == "proc":
                run(["mount", "-t", "proc", "proc", str(target)], f"mount proc on {target}")
            else:
                run(["mount", "--bind", f"/{host}", str(target)], f"mount --bind /{host} {target}")
        points.append(str(target))
    return points


def unmount_root(root: Path | None = None) -> None:
    """Unmount everything mounted inside the root (lazily when a mount stays busy)."""
    root = root or rootfs()
    for point in mounts_under(root):
        for _ in range(20):
            res = subprocess.run(["umount", point], capture_output=True, text=True)
            if res.returncode == 0 or point not in mounts_under(root):
                break
            time.sleep(0.25)
        else:
            subprocess.run(["umount", "-l", point], capture_output=True)
    left = mounts_under(root)
    if left:
        raise TvmflowError(f"could not unmount {', '.join(left)}", hint="umount them by hand")


def root_processes(root: Path | None = None) -> list[int]:
    """Processes whose root directory is the board root (servers, their workers, setup)."""
    root_path = str((root or rootfs()).resolve())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/root") == root_path and rpc.pid_alive(int(entry)):
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def root_servers(root: Path | None = None) -> list[int]:
    """RPC server processes running inside the root (whoever started them)."""
    return [p for p in root_processes(root) if SERVER_MODULE in rpc.pid_cmdline(p)]


def kill_root_processes(root: Path | None = None, timeout: float = 5.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = root_processes(root)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and root_processes(root):
            time.sleep(0.05)


# --------------------------------------------------------------------------- users


@dataclass
class RootUser:
    """A board that uses the root: ``pid`` is the process that starts it, then its server."""

    pid: int
    state_dir: str
    board: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RootUser":
        return cls(int(data["pid"]), str(data["state_dir"]), str(data["board"]))

    @property
    def token(self) -> str:
        return user_token(self.state_dir, self.board)


def user_token(state_dir: str | Path, board: str) -> str:
    return f"{Path(state_dir).resolve()}::{board}"


@contextlib.contextmanager
def root_users() -> Iterator[dict[str, RootUser]]:
    """The live users of the root by token, under the root's lock; written back on exit."""
    from filelock import FileLock
    home = root_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "users.json"
    with FileLock(str(home / "root.lock"), timeout=600):
        try:
            raw = json.loads(path.read_text()) if path.exists() else {}
            users = {t: RootUser.from_json(u) for t, u in raw.get("users", {}).items()}
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            users = {}
        users = {t: u for t, u in users.items() if rpc.pid_alive(u.pid)}
        yield users
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"users": {t: u.to_json() for t, u in users.items()}}, indent=2))
        tmp.replace(path)


def claim_root(user: RootUser) -> None:
    """Record ``user`` and mount the root for it."""
    with root_users() as users:
        users[user.token] = user
        mount_root()


def set_user_pid(token: str, pid: int) -> None:
    with root_users() as users:
        if token in users:
            users[token].pid = pid


def root_in_use() -> bool:
    """Whether any board (of any state directory) uses the root or a server runs in it."""
    with root_users() as users:
        return bool(users) or (rootfs().exists() and bool(root_servers()))


def release_root(tokens: list[str], say: Say = quiet) -> None:
    """Drop ``tokens``; with no user and no server left, kill what still runs in the root
    and unmount it."""
    with root_users() as users:
        for token in tokens:
            users.pop(token, None)
        if users or not rootfs().exists():
            return
        if root_servers():
            say("an RPC server not started from here still runs in the root: mounts kept")
            return
        if mounts_under() or root_processes():
            need_root("board stop")
            kill_root_processes()
            unmount_root()
            say("no board left: root unmounted, no process left in it")
