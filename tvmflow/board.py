"""An emulated 64-bit ARM board: a Debian arm64 root run under qemu-user, serving TVM RPC.

``tvmflow board setup`` builds (once, cached) an arm64 Debian bookworm root with
``debootstrap`` and a venv holding the aarch64 ``apache-tvm`` wheels; qemu-user-static runs
its binaries through binfmt_misc.  ``tvmflow board start`` runs ``python -m
tvm.exec.rpc_server`` inside that root (``chroot``, own session) on 127.0.0.1, registered with
an RPC tracker under a key (default ``rpi4-emu``, the key a real Raspberry Pi 4 would use
with a ``-emu`` suffix), so the host can cross-compile for aarch64, upload, run and time code
"on the board" exactly as it would on a Raspberry Pi.  Times measured there are emulation
times, not Cortex-A72 times: use it to check the flow, not to rank variants.

Layout under ``$TVMFLOW_CACHE_DIR`` (default ``~/.cache/tvmflow``)::

    board/arm64-bookworm/rootfs/      the Debian root (venv at /opt/tvm-venv inside)
    board/arm64-bookworm/wheels/      the aarch64 wheels installed there
    board/arm64-bookworm/setup.json   marker, written last: what was installed
    board/state.json                  running boards, the tracker started for them, mounts
    board/logs/                       setup.log, tracker.log, <board>.log

Several boards (``--name``) share one root and may run at once under one key.  /proc, /sys
and /dev are mounted into the root while a board runs; stopping the last board unmounts
them and kills anything still running inside the root.

Library API (used by tests and by later bench / tune code): :func:`ensure_setup`,
:func:`start` -> :class:`BoardInfo`, :func:`stop`, :func:`status`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .adapter import rpc
from .errors import TvmflowError

DEFAULT_KEY = "rpi4-emu"
BOARD_TARGET = "rpi4"                # the preset the board stands in for (its num-cores)
DEFAULT_NAME = "emu0"
SUITE = "bookworm"
ARCH = "arm64"
ROOT_NAME = f"{ARCH}-{SUITE}"
PYTHON_VERSION = "3.11"              # bookworm's python3
VENV = "/opt/tvm-venv"
SETUP_FORMAT = 1
DEB_PACKAGES = ("python3", "python3-venv", "python3-pip")
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_24_aarch64",
                   "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
REQUIREMENTS = ("apache-tvm==0.27.0.post1",
                # the same pin as the host: 0.1.15.x segfaults in tvm.ir.save_json
                "apache-tvm-ffi>=0.1.14,<0.1.15",
                "numpy", "ml_dtypes", "typing_extensions", "psutil", "cloudpickle", "tornado")
# (command, Debian package that provides it)
TOOLS = (("qemu-aarch64-static", "qemu-user-static"), ("update-binfmts", "binfmt-support"),
         ("debootstrap", "debootstrap"), ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
         ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"), ("chroot", "coreutils"),
         ("mount", "mount"))
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"
MOUNTS = (("proc", "proc"), ("sys", "sys"), ("dev", "dev"))   # (host path under /, root path)
START_TIMEOUT = 300.0     # importing tvm under qemu takes a while on a busy 2-core host

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- paths, state


def cache_dir() -> Path:
    base = os.environ.get("TVMFLOW_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "tvmflow"


def board_dir() -> Path:
    return cache_dir() / "board"


def root_home() -> Path:
    return board_dir() / ROOT_NAME


def rootfs() -> Path:
    return root_home() / "rootfs"


def marker_path() -> Path:
    return root_home() / "setup.json"


def logs_dir() -> Path:
    return board_dir() / "logs"


def _state_path() -> Path:
    return board_dir() / "state.json"


@contextlib.contextmanager
def _locked_state() -> Iterator[dict[str, Any]]:
    """The state dict under a file lock; written back on a clean exit of the block."""
    from filelock import FileLock
    board_dir().mkdir(parents=True, exist_ok=True)
    with FileLock(str(board_dir() / "state.lock"), timeout=600):
        path = _state_path()
        try:
            state = json.loads(path.read_text()) if path.exists() else {}
        except json.JSONDecodeError:
            state = {}
        state.setdefault("boards", {})
        state.setdefault("tracker", None)
        state.setdefault("starting", {})
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(path)


def _which(cmd: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(cmd, path=path)


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise TvmflowError(f"{what} needs root (debootstrap, chroot and mount do)",
                           hint=f"run it with sudo: sudo tvmflow board {what.split()[-1]}")


# --------------------------------------------------------------------------- host checks


def missing_tools() -> list[tuple[str, str]]:
    """``(command, apt package)`` for each tool the board needs that is not installed."""
    return [(cmd, pkg) for cmd, pkg in TOOLS if _which(cmd) is None]


def check_tools() -> None:
    missing = missing_tools()
    if missing:
        pkgs = " ".join(dict.fromkeys(pkg for _, pkg in missing))
        cmds = ", ".join(cmd for cmd, _ in missing)
        raise TvmflowError(f"the emulated board needs {cmds}, not installed",
                           hint=f"apt-get install -y {pkgs}")


def binfmt_state() -> str:
    """``"enabled"``, ``"disabled"``, ``"missing"`` (not registered) or ``"unmounted"``."""
    if not (BINFMT_DIR / "status").exists():
        return "unmounted"
    entry = BINFMT_DIR / BINFMT_ENTRY
    if not entry.exists():
        return "missing"
    return "enabled" if entry.read_text().splitlines()[0].strip() == "enabled" else "disabled"


def binfmt_fixes_binary() -> bool:
    """Whether the qemu-aarch64 entry has the F flag (interpreter opened at registration, so
    the root does not need its own copy of qemu)."""
    entry = BINFMT_DIR / BINFMT_ENTRY
    try:
        flags = [ln for ln in entry.read_text().splitlines() if ln.startswith("flags:")]
    except OSError:
        return False
    return bool(flags) and "F" in flags[0].split(":", 1)[1]


def ensure_binfmt(say: Say = _quiet) -> None:
    """Mount binfmt_misc when needed and enable qemu-aarch64 (else: "Exec format error")."""
    state = binfmt_state()
    if state == "enabled":
        return
    _need_root("board setup")
    if state == "unmounted":
        say(f"mounting binfmt_misc on {BINFMT_DIR}")
        _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mount binfmt_misc")
    if binfmt_state() != "enabled":
        say(f"enabling {BINFMT_ENTRY} (update-binfmts)")
        _run([_which("update-binfmts") or "update-binfmts", "--enable", BINFMT_ENTRY],
             "update-binfmts --enable qemu-aarch64")
    if binfmt_state() != "enabled":
        raise TvmflowError(f"binfmt_misc has no enabled {BINFMT_ENTRY} entry after update-binfmts",
                           hint="reinstall qemu-user-static and binfmt-support")


def _parse_sources(text: str, deb822: bool) -> list[tuple[str, list[str]]]:
    """``(uri, suites)`` of the binary (``deb``) entries of an apt sources file."""
    entries = []
    if deb822:
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    else:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if not parts or parts[0] != "deb":
                continue
            parts = [p for p in parts[1:] if not p.startswith("[")]
            # drop "[arch=... signed-by=...]" options spread over several tokens
            while parts and (parts[0].endswith("]") or "=" in parts[0]):
                parts = parts[1:]
            if len(parts) >= 2:
                entries.append((parts[0], [parts[1]]))
    return entries


def debian_mirror(etc: str | Path = "/etc/apt") -> str:
    """The Debian archive this machine's apt uses (never a hard-coded host)."""
    etc = Path(etc)
    entries: list[tuple[str, list[str]]] = []
    files = [etc / "sources.list", *sorted(glob.glob(str(etc / "sources.list.d" / "*.list"))),
             *sorted(glob.glob(str(etc / "sources.list.d" / "*.sources")))]
    for name in files:
        path = Path(name)
        if path.is_file():
            entries += _parse_sources(path.read_text(errors="replace"), path.suffix == ".sources")
    # the main archive: a Debian URI whose suites are plain releases (not -security/-updates)
    for uri, suites in entries:
        if "security" in uri or "debian" not in uri:
            continue
        if any("-" not in s and "/" not in s for s in suites):
            return uri.rstrip("/")
    raise TvmflowError("found no Debian archive in the apt sources (/etc/apt/sources.list, "
                       "/etc/apt/sources.list.d/)",
                       hint="pass one with `tvmflow board setup --mirror URL`")


# --------------------------------------------------------------------------- commands


def _run(cmd: list[str], what: str, log: Path | None = None, timeout: float = 1800,
         env: dict[str, str] | None = None) -> str:
    """Run ``cmd``; output appended to ``log``; a failure is a TvmflowError with its tail."""
    try:
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout, env=env)
    except FileNotFoundError:
        raise TvmflowError(f"{what}: {cmd[0]} not found") from None
    except subprocess.TimeoutExpired:
        raise TvmflowError(f"{what}: still running after {timeout:g} s") from None
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(cmd)}\n{res.stdout}{res.stderr}\n[exit {res.returncode}]\n")
    if res.returncode != 0:
        tail = " | ".join((res.stdout + res.stderr).strip().splitlines()[-6:])
        raise TvmflowError(f"{what} failed (exit {res.returncode}): {tail}",
                           hint=f"full output in {log}" if log else None)
    return res.stdout


def _chroot_env() -> dict[str, str]:
    return {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1"}


def _chroot(root: Path, *argv: str) -> list[str]:
    return [_which("chroot") or "chroot", str(root), *argv]


# --------------------------------------------------------------------------- mounts, processes


def mounts_under(root: Path | None = None) -> list[str]:
    """Mount points inside ``root`` (default: the board root), deepest first."""
    root = str((root or rootfs()).resolve() if (root or rootfs()).exists() else (root or rootfs()))
    points = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
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
                _run(["mount", "-t", "proc", "proc", str(target)], f"mount proc on {target}")
            else:
                _run(["mount", "--bind", f"/{host}", str(target)], f"mount --bind /{host} {target}")
        points.append(str(target))
    return points


def unmount_root(root: Path | None = None) -> None:
    """Unmount everything mounted inside the root (lazily when a mount stays busy)."""
    root = root or rootfs()
    for point in mounts_under(root):
        for attempt in range(20):
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
    root = str((root or rootfs()).resolve())
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/root") == root and rpc.pid_alive(int(entry)):
                pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def _kill_root_processes(root: Path | None = None, timeout: float = 5.0) -> None:
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


# --------------------------------------------------------------------------- setup


@dataclass
class SetupInfo:
    root: str
    reused: bool
    seconds: float
    marker: dict[str, Any]


def read_marker() -> dict[str, Any] | None:
    """The setup marker when the root is complete and matches this tvmflow, else None."""
    try:
        marker = json.loads(marker_path().read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if marker.get("format") != SETUP_FORMAT or marker.get("requirements") != list(REQUIREMENTS):
        return None
    if not (rootfs() / VENV.lstrip("/") / "bin" / "python").exists():
        return None
    return marker


def _download_wheels(dest: Path, log: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version",
           PYTHON_VERSION, "--implementation", "cp", "-d", str(dest)]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    _run(cmd + list(REQUIREMENTS), "pip download of the aarch64 wheels", log, timeout=1200)
    return sorted(p.name for p in dest.glob("*.whl"))


def setup(*, force: bool = False, mirror: str | None = None, say: Say = _quiet) -> SetupInfo:
    """Build the arm64 root with TVM in a venv, or reuse the cached one.

    Rebuilds when ``force``, when the marker is missing (an interrupted setup) or when it
    records other requirements.  Needs root and the apt packages in :data:`TOOLS`.
    """
    t0 = time.monotonic()
    check_tools()
    marker = None if force else read_marker()
    if marker is not None:
        ensure_binfmt(say)
        return SetupInfo(str(rootfs()), True, time.monotonic() - t0, marker)
    _need_root("board setup")
    ensure_binfmt(say)
    if running_boards():
        raise TvmflowError("boards are running from the root that setup would rebuild",
                           hint="stop them first: tvmflow board stop --all")
    mirror = mirror or debian_mirror()
    home = root_home()
    home.mkdir(parents=True, exist_ok=True)
    logs_dir().mkdir(parents=True, exist_ok=True)
    log = logs_dir() / "setup.log"
    log.write_text("")
    marker_path().unlink(missing_ok=True)
    partial = home / "rootfs.partial"
    for old in (partial, rootfs()):
        if old.exists():
            _kill_root_processes(old)
            unmount_root(old)
            _run(["rm", "-rf", "--one-file-system", str(old)], f"removing {old}")

    say(f"debootstrap {SUITE} {ARCH} from {mirror} (first stage)")
    _run([_which("debootstrap") or "debootstrap", f"--arch={ARCH}", "--foreign", "--variant=minbase",
          f"--include={','.join(DEB_PACKAGES)}", SUITE, str(partial), mirror],
         "debootstrap (first stage)", log)
    if not binfmt_fixes_binary():  # the interpreter must then exist inside the root
        interp = Path("/usr/bin/qemu-aarch64-static")
        shutil.copy2(interp, partial / "usr/bin" / interp.name)
    say("debootstrap second stage (under qemu)")
    try:
        _run(_chroot(partial, "/debootstrap/debootstrap", "--second-stage"),
             "debootstrap (second stage)", log, env=_chroot_env())
    finally:
        _kill_root_processes(partial)
        unmount_root(partial)

    say("downloading the aarch64 wheels (pip download)")
    wheels = _download_wheels(home / "wheels", log)
    inside = partial / "tmp" / "tvmflow-wheels"
    shutil.rmtree(inside, ignore_errors=True)
    shutil.copytree(home / "wheels", inside)
    say(f"installing {len(wheels)} wheels into {VENV} (under qemu)")
    try:
        mount_root(partial)
        _run(_chroot(partial, "/usr/bin/python3", "-m", "venv", VENV), "python3 -m venv", log,
             env=_chroot_env())
        _run(_chroot(partial, f"{VENV}/bin/python", "-m", "pip", "install", "--no-index",
                     "--no-cache-dir", "--disable-pip-version-check", "--find-links",
                     "/tmp/tvmflow-wheels", *REQUIREMENTS), "pip install in the root", log,
             env=_chroot_env())
        say("checking `import tvm` inside the root")
        probe = _run(_chroot(partial, f"{VENV}/bin/python", "-c",
                             "import platform, sys, tvm, numpy; print(platform.machine()); "
                             "print(sys.version.split()[0]); print(tvm.__version__); "
                             "print(numpy.__version__)"),
                     "import tvm inside the root", log, env=_chroot_env(), timeout=600)
    finally:
        _kill_root_processes(partial)
        unmount_root(partial)
    shutil.rmtree(inside, ignore_errors=True)
    machine, pyver, tvm_version, np_version = probe.split()[-4:]
    if machine != "aarch64":
        raise TvmflowError(f"the root runs as {machine}, not aarch64 (binfmt/qemu misconfigured)")
    partial.rename(rootfs())
    marker = {"format": SETUP_FORMAT, "suite": SUITE, "arch": ARCH, "mirror": mirror,
              "deb_packages": list(DEB_PACKAGES), "requirements": list(REQUIREMENTS),
              "wheels": wheels, "python": pyver, "tvm": tvm_version, "numpy": np_version,
              "venv": VENV, "seconds": round(time.monotonic() - t0, 1),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    marker_path().write_text(json.dumps(marker, indent=2))
    say(f"board root ready in {marker['seconds']:.0f} s: {rootfs()}")
    return SetupInfo(str(rootfs()), False, time.monotonic() - t0, marker)


def ensure_setup(say: Say = _quiet) -> SetupInfo:
    """:func:`setup` without force: reuses the cached root (fast) or builds it (~5 min)."""
    return setup(force=False, say=say)


# --------------------------------------------------------------------------- start / stop


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
        return _server_alive(self.pid)

    def request(self, timeout: float = 60.0, **kw):
        """An RPC session to a board under this key (any board with the key may answer)."""
        return rpc.request(self.tracker_host, self.tracker_port, self.key, timeout, **kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _server_alive(pid: int) -> bool:
    return rpc.pid_alive(pid) and "tvm.exec.rpc_server" in rpc.pid_cmdline(pid)


def _tracker_alive(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and rpc.pid_alive(entry["pid"]) and \
        "tvm.exec.rpc_tracker" in rpc.pid_cmdline(entry["pid"])


def running_boards() -> list[BoardInfo]:
    """Boards recorded in the state whose server process is alive."""
    try:
        state = json.loads(_state_path().read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [BoardInfo(**b) for b in state.get("boards", {}).values() if _server_alive(b["pid"])]


def start(name: str = DEFAULT_NAME, tracker: str | None = None, key: str = DEFAULT_KEY, *,
          port: int | None = None, host: str = rpc.LOOPBACK, timeout: float = START_TIMEOUT,
          threads: int | None = None, say: Say = _quiet) -> BoardInfo:
    """Start board ``name``: the RPC server inside the root, registered under ``key``.

    ``tracker`` is ``"HOST:PORT"``; without it a tracker is started on 127.0.0.1 (or the one a
    previous ``start`` started is reused) and stopped with the last board.  Returns when the
    tracker lists the board.  Its TVM runs ``threads`` threads (default ``TVM_NUM_THREADS``,
    else the ``rpi4`` preset's ``num-cores``, 4), as a Raspberry Pi 4's TVM would.
    """
    _need_root("board start")
    if not name or "/" in name or name.startswith("."):
        raise TvmflowError(f"bad board name {name!r}")
    if not key:
        raise TvmflowError("the board key must not be empty")
    from .targets import get_target
    from .threads import child_env, resolve
    threads = resolve(get_target(BOARD_TARGET), threads)
    check_tools()
    if read_marker() is None:
        raise TvmflowError("the emulated board is not set up", hint="run `tvmflow board setup` first")
    if tracker is not None:
        thost, tport = rpc.parse_hostport(tracker, what="tracker address")
        rpc.tracker_summary(thost, tport, timeout=10)       # reachable, and a tracker
    ensure_binfmt(say)
    logs_dir().mkdir(parents=True, exist_ok=True)
    # the state lock is held only to check and record, not while the server starts (~40 s
    # under qemu): boards start in parallel; a reservation in state["starting"] keeps a
    # concurrent `stop` from unmounting the root or stopping the tracker meanwhile
    with _locked_state() as state:
        old = state["boards"].get(name)
        if old and _server_alive(old["pid"]):
            raise TvmflowError(f"board {name!r} is already running (port {old['port']}, "
                               f"key {old['key']!r})", hint=f"tvmflow board stop --name {name}")
        if name in _live_reservations(state):
            raise TvmflowError(f"board {name!r} is being started by another process")
        state["boards"].pop(name, None)
        owned = False
        if tracker is None:
            entry = state["tracker"]
            if not _tracker_alive(entry):
                say("starting an RPC tracker on 127.0.0.1")
                proc = rpc.start_tracker(rpc.LOOPBACK, log=logs_dir() / "tracker.log", outlive=True)
                entry = state["tracker"] = proc.to_json()
            tracker, owned = f"{entry['host']}:{entry['port']}", True
        mount_root()
        state["starting"][name] = {"owner": os.getpid(), "tracker": tracker}
    say(f"starting board {name!r} (RPC server under qemu, key {key!r}, tracker {tracker})")
    log = logs_dir() / f"{name}.log"
    log.write_text("")
    try:
        proc = rpc.start_server(host, port, tracker=tracker, key=key,
                                python=_chroot(rootfs(), f"{VENV}/bin/python"),
                                env=child_env(threads, base=_chroot_env()), log=log,
                                timeout=timeout, cwd="/", outlive=True)
    except BaseException:
        with _locked_state() as state:
            state["starting"].pop(name, None)
            _release_unused(state, say)
        raise
    info = BoardInfo(name, key, host, proc.port, proc.pid, tracker, owned, str(log),
                     str(rootfs()), threads=threads)
    with _locked_state() as state:
        state["starting"].pop(name, None)
        state["boards"][name] = info.to_dict()
    say(f"board {name!r} serving on {host}:{info.port}, registered with {tracker} as {key!r}")
    return info


def _live_reservations(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Boards being started right now (their starting process is alive)."""
    live = {n: r for n, r in state["starting"].items() if rpc.pid_alive(r["owner"])}
    state["starting"] = live
    return live


def _release_unused(state: dict[str, Any], say: Say = _quiet) -> None:
    """Stop the owned tracker once no board uses it, and unmount / clean the root once no
    board runs or starts."""
    users = [b["tracker"] for b in state["boards"].values() if _server_alive(b["pid"])]
    users += [r["tracker"] for r in _live_reservations(state).values()]
    owned = state.get("tracker")
    if owned and f"{owned['host']}:{owned['port']}" not in users:
        if _tracker_alive(owned):       # its last board is gone
            rpc.kill_group(owned["pid"])
            say(f"stopped the RPC tracker on {owned['host']}:{owned['port']}")
        state["tracker"] = None
    if not users and (mounts_under() or (rootfs().exists() and root_processes())):
        _need_root("board stop")
        _kill_root_processes()
        unmount_root()
        say("no board left: root unmounted, no process left in it")


def stop(name: str | None = None, *, all: bool = False, say: Say = _quiet) -> list[str]:
    """Stop board ``name`` (default :data:`DEFAULT_NAME`) or, with ``all``, every board.

    When no board is left running, the tracker ``start`` started, any process still inside
    the root and the /proc, /sys, /dev mounts go too.  Returns the names stopped.
    """
    stopped = []
    with _locked_state() as state:
        names = list(state["boards"]) if all else [name or DEFAULT_NAME]
        if not all and names[0] not in state["boards"]:
            known = ", ".join(sorted(state["boards"])) or "none"
            raise TvmflowError(f"no board named {names[0]!r} (boards: {known})")
        for n in names:
            entry = state["boards"].pop(n)
            if _server_alive(entry["pid"]):
                rpc.kill_group(entry["pid"])
                say(f"stopped board {n!r} (pid {entry['pid']}, port {entry['port']})")
            stopped.append(n)
        _release_unused(state, say)
    return stopped


@contextlib.contextmanager
def running(names: tuple[str, ...] | list[str] = (DEFAULT_NAME,), tracker: str | None = None,
            key: str = DEFAULT_KEY, *, timeout: float = START_TIMEOUT,
            threads: int | None = None, say: Say = _quiet) -> Iterator[list[BoardInfo]]:
    """Boards ``names`` started in parallel under ``key`` and stopped on exit (also on errors
    and Ctrl-C).  For pytest fixtures and scripts::

        with board.running(["a", "b"], tracker="127.0.0.1:9190", key="rpi4-emu") as boards:
            sess = boards[0].request(timeout=60)
    """
    from concurrent.futures import ThreadPoolExecutor
    ensure_setup(say)
    if tracker is None and len(names) > 1:   # one owned tracker for all, started first
        first = start(names[0], None, key, timeout=timeout, threads=threads, say=say)
        rest, infos = list(names[1:]), [first]
        tracker = first.tracker
    else:
        rest, infos = list(names), []
    try:
        with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:
            futures = [pool.submit(start, n, tracker, key, timeout=timeout, threads=threads,
                                   say=say) for n in rest]
            errors = []
            for fut in futures:
                try:
                    infos.append(fut.result())
                except BaseException as exc:  # noqa: BLE001 - re-raised after the others finish
                    errors.append(exc)
            if errors:
                raise errors[0]
        yield infos
    finally:
        live = {b.name for b in running_boards()}
        for info in infos:
            if info.name in live:
                with contextlib.suppress(TvmflowError):
                    stop(info.name)


# --------------------------------------------------------------------------- status


def status() -> dict[str, Any]:
    """What is set up and what runs: root, wheels, boards, tracker, mounts, processes."""
    marker = read_marker()
    try:
        state = json.loads(_state_path().read_text())
    except (OSError, json.JSONDecodeError):
        state = {"boards": {}, "tracker": None}
    boards = []
    for b in state.get("boards", {}).values():
        b = dict(b)
        b["alive"] = _server_alive(b["pid"])
        b["registered"] = None
        if b["alive"]:
            try:
                thost, tport = rpc.parse_hostport(b["tracker"])
                summary = rpc.tracker_summary(thost, tport, timeout=3)
                b["registered"] = any(s["port"] == b["port"] for s in
                                      rpc.servers_under(summary, b["key"]))
            except TvmflowError:
                b["registered"] = False
        boards.append(b)
    tracker = state.get("tracker")
    if tracker:
        tracker = dict(tracker, alive=_tracker_alive(tracker))
    root = rootfs()
    return {
        "root": str(root),
        "root_present": root.exists(),
        "setup_complete": marker is not None,
        "setup": marker,
        "wheels": sorted(p.name for p in (root_home() / "wheels").glob("*.whl")),
        "missing_tools": [f"{cmd} ({pkg})" for cmd, pkg in missing_tools()],
        "binfmt": binfmt_state(),
        "tracker": tracker,
        "boards": boards,
        "starting": sorted(state.get("starting", {})),
        "mounts": mounts_under(root) if root.exists() else [],
        "processes": root_processes(root) if root.exists() else [],
    }
