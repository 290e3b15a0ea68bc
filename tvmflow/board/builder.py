"""The board root: an arm64 Debian (debootstrap under qemu-user) with TVM's aarch64 wheels.

:func:`setup` builds it once into ``rootfs.partial`` and renames it to ``rootfs`` when
``import tvm`` works inside; the :class:`SetupMarker` (``setup.json``), written last, records
what was installed.  A root without a marker that matches this tvmflow is rebuilt.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError
from tvmflow.board.host import (Say, binfmt_fixes_binary, check_tools, chroot, chroot_env, debian_mirror,
                   ensure_binfmt, need_root, quiet, run, which)
from tvmflow.board.mounts import kill_root_processes, mount_root, root_in_use, unmount_root
from tvmflow.board.paths import (ARCH, DEB_PACKAGES, PYTHON_VERSION, REQUIREMENTS, SETUP_FORMAT, SUITE, VENV,
                    WHEEL_PLATFORMS, marker_path, root_home, rootfs, setup_log)

PROBE = ("import platform, sys, tvm, numpy; print(platform.machine()); "
         "print(sys.version.split()[0]); print(tvm.__version__); print(numpy.__version__)")


@dataclass
class SetupMarker:
    """What ``setup`` installed (``setup.json``)."""

    format: int
    suite: str
    arch: str
    mirror: str
    deb_packages: list[str]
    requirements: list[str]
    wheels: list[str]
    python: str
    tvm: str
    numpy: str
    venv: str
    seconds: float
    created: str

    def current(self) -> bool:
        """Whether it records what this tvmflow would install."""
        return self.format == SETUP_FORMAT and list(self.requirements) == list(REQUIREMENTS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SetupMarker":
        missing = [f.name for f in fields(cls) if f.name not in data]
        if missing:
            raise ValueError(f"setup marker lacks {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass
class SetupInfo:
    root: str
    reused: bool
    seconds: float
    marker: SetupMarker


def read_marker() -> SetupMarker | None:
    """The setup marker when the root is complete and matches this tvmflow, else None."""
    try:
        marker = SetupMarker.from_json(json.loads(marker_path().read_text()))
    except (OSError, json.JSONDecodeError, ValueError, TypeError):
        return None
    if not marker.current() or not (rootfs() / VENV.lstrip("/") / "bin" / "python").exists():
        return None
    return marker


def _download_wheels(dest: Path, log: Path) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version",
           PYTHON_VERSION, "--implementation", "cp", "-d", str(dest)]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    run(cmd + list(REQUIREMENTS), "pip download of the aarch64 wheels", log, timeout=1200)
    return sorted(p.name for p in dest.glob("*.whl"))


def _clear(path: Path) -> None:
    if path.exists():
        kill_root_processes(path)
        unmount_root(path)
        run(["rm", "-rf", "--one-file-system", str(path)], f"removing {path}")


def _debootstrap(partial: Path, mirror: str, log: Path, say: Say) -> None:
    say(f"debootstrap {SUITE} {ARCH} from {mirror} (first stage)")
    run([which("debootstrap") or "debootstrap", f"--arch={ARCH}", "--foreign",
         "--variant=minbase", f"--include={','.join(DEB_PACKAGES)}", SUITE, str(partial), mirror],
        "debootstrap (first stage)", log)
    if not binfmt_fixes_binary():  # the interpreter must then exist inside the root
        interp = Path("/usr/bin/qemu-aarch64-static")
        shutil.copy2(interp, partial / "usr/bin" / interp.name)
    say("debootstrap second stage (under qemu)")
    try:
        run(chroot(partial, "/debootstrap/debootstrap", "--second-stage"),
            "debootstrap (second stage)", log, env=chroot_env())
    finally:
        kill_root_processes(partial)
        unmount_root(partial)


def _install_wheels(partial: Path, wheels_dir: Path, log: Path, say: Say) -> list[str]:
    """pip-install the wheels into the root's venv; returns the probe's four lines."""
    inside = partial / "tmp" / "tvmflow-wheels"
    shutil.rmtree(inside, ignore_errors=True)
    shutil.copytree(wheels_dir, inside)
    env = chroot_env()
    try:
        mount_root(partial)
        run(chroot(partial, "/usr/bin/python3", "-m", "venv", VENV), "python3 -m venv", log,
            env=env)
        run(chroot(partial, f"{VENV}/bin/python", "-m", "pip", "install", "--no-index",
                   "--no-cache-dir", "--disable-pip-version-check", "--find-links",
                   "/tmp/tvmflow-wheels", *REQUIREMENTS), "pip install in the root", log, env=env)
        say("checking `import tvm` inside the root")
        probe = run(chroot(partial, f"{VENV}/bin/python", "-c", PROBE),
                    "import tvm inside the root", log, env=env, timeout=600)
    finally:
        kill_root_processes(partial)
        unmount_root(partial)
    shutil.rmtree(inside, ignore_errors=True)
    return probe.split()[-4:]


def _build(mirror: str, t0: float, say: Say) -> SetupMarker:
    home = root_home()
    home.mkdir(parents=True, exist_ok=True)
    log = setup_log()
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    marker_path().unlink(missing_ok=True)
    partial = home / "rootfs.partial"
    for old in (partial, rootfs()):
        _clear(old)
    _debootstrap(partial, mirror, log, say)
    say("downloading the aarch64 wheels (pip download)")
    wheels = _download_wheels(home / "wheels", log)
    say(f"installing {len(wheels)} wheels into {VENV} (under qemu)")
    machine, pyver, tvm_version, np_version = _install_wheels(partial, home / "wheels", log, say)
    if machine != "aarch64":
        raise TvmflowError(f"the root runs as {machine}, not aarch64 (binfmt/qemu misconfigured)")
    partial.rename(rootfs())
    marker = SetupMarker(SETUP_FORMAT, SUITE, ARCH, mirror, list(DEB_PACKAGES), list(REQUIREMENTS),
                         wheels, pyver, tvm_version, np_version, VENV,
                         round(time.monotonic() - t0, 1), time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    tmp = marker_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(marker.to_json(), indent=2))
    tmp.replace(marker_path())
    return marker


def setup(*, force: bool = False, mirror: str | None = None, say: Say = quiet) -> SetupInfo:
    """Build the arm64 root with TVM in a venv, or reuse the cached one.

    Rebuilds when ``force``, when the marker is missing (an interrupted setup) or when it
    records other requirements.  Needs root and the apt packages in :data:`.host.TOOLS`.
    """
    t0 = time.monotonic()
    check_tools()
    marker = None if force else read_marker()
    if marker is not None:
        ensure_binfmt(say)
        return SetupInfo(str(rootfs()), True, time.monotonic() - t0, marker)
    need_root("board setup")
    ensure_binfmt(say)
    if root_in_use():
        raise TvmflowError("boards are running from the root that setup would rebuild",
                           hint="stop them first: tvmflow board stop --all")
    marker = _build(mirror or debian_mirror(), t0, say)
    say(f"board root ready in {marker.seconds:.0f} s: {rootfs()}")
    return SetupInfo(str(rootfs()), False, time.monotonic() - t0, marker)


def ensure_setup(say: Say = quiet) -> SetupInfo:
    """:func:`setup` without force: reuses the cached root (fast) or builds it (~5 min)."""
    return setup(force=False, say=say)
