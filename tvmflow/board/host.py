"""What the host needs and does for the board: tools, binfmt_misc, the Debian mirror, commands."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from tvmflow.errors import TvmflowError
from tvmflow.board.paths import VENV

Say = Callable[[str], None]

# (command, Debian package that provides it)
TOOLS = (("qemu-aarch64-static", "qemu-user-static"), ("update-binfmts", "binfmt-support"),
         ("debootstrap", "debootstrap"), ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
         ("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"), ("chroot", "coreutils"),
         ("mount", "mount"))
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_ENTRY = "qemu-aarch64"


def quiet(_: str) -> None:
    pass


def which(cmd: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(cmd, path=path)


def need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise TvmflowError(f"{what} needs root (debootstrap, chroot and mount do)",
                           hint=f"run it with sudo: sudo tvmflow board {what.split()[-1]}")


def missing_tools() -> list[tuple[str, str]]:
    """``(command, apt package)`` for each tool the board needs that is not installed."""
    return [(cmd, pkg) for cmd, pkg in TOOLS if which(cmd) is None]


def check_tools() -> None:
    missing = missing_tools()
    if missing:
        pkgs = " ".join(dict.fromkeys(pkg for _, pkg in missing))
        cmds = ", ".join(cmd for cmd, _ in missing)
        raise TvmflowError(f"the emulated board needs {cmds}, not installed",
                           hint=f"apt-get install -y {pkgs}")


def run(cmd: list[str], what: str, log: Path | None = None, timeout: float = 1800,
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


def chroot_env() -> dict[str, str]:
    return {"PATH": f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TMPDIR": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1"}


def chroot(root: Path, *argv: str) -> list[str]:
    return [which("chroot") or "chroot", str(root), *argv]


# --------------------------------------------------------------------------- binfmt


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


def ensure_binfmt(say: Say = quiet) -> None:
    """Mount binfmt_misc when needed and enable qemu-aarch64 (else: "Exec format error")."""
    state = binfmt_state()
    if state == "enabled":
        return
    need_root("board setup")
    if state == "unmounted":
        say(f"mounting binfmt_misc on {BINFMT_DIR}")
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mount binfmt_misc")
    if binfmt_state() != "enabled":
        say(f"enabling {BINFMT_ENTRY} (update-binfmts)")
        run([which("update-binfmts") or "update-binfmts", "--enable", BINFMT_ENTRY],
            "update-binfmts --enable qemu-aarch64")
    if binfmt_state() != "enabled":
        raise TvmflowError(f"binfmt_misc has no enabled {BINFMT_ENTRY} entry after update-binfmts",
                           hint="reinstall qemu-user-static and binfmt-support")


# --------------------------------------------------------------------------- Debian mirror


def _deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
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
    return entries


def _one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    entries = []
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
            text = path.read_text(errors="replace")
            entries += _deb822_entries(text) if path.suffix == ".sources" else _one_line_entries(text)
    # the main archive: a Debian URI whose suites are plain releases (not -security/-updates)
    for uri, suites in entries:
        if "security" in uri or "debian" not in uri:
            continue
        if any("-" not in s and "/" not in s for s in suites):
            return uri.rstrip("/")
    raise TvmflowError("found no Debian archive in the apt sources (/etc/apt/sources.list, "
                       "/etc/apt/sources.list.d/)",
                       hint="pass one with `tvmflow board setup --mirror URL`")
