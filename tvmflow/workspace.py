"""Where tvmflow reads and writes: the user's workspace, and the data shipped with tvmflow.

The **workspace** holds everything a user makes: tuning logs (``schedules/``), compiled
modules (``artifacts/``), reports (``reports/``) and variant and target files (``models/``,
``targets/``).  It is the working directory, unless ``TVMFLOW_HOME`` or ``--workspace``
names another.  Nothing is ever written anywhere else.

The **shipped** variants, targets and schedules are package data, read through
:mod:`importlib.resources` and never written.  The workspace is searched before them.  In a
source checkout whose root is the working directory the two coincide; they are then one
directory, listed once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tvmflow.errors import TvmflowError

KINDS = ("models", "targets", "schedules")
ENV_HOME = "TVMFLOW_HOME"

_override: Path | None = None


def shipped_dir(kind: str) -> Path:
    """The read-only directory of shipped ``models``, ``targets`` or ``schedules``."""
    if kind not in KINDS:
        raise ValueError(f"unknown shipped kind {kind!r}")
    return Path(str(resources.files("tvmflow") / "shipped" / kind))


def set_workspace(path: str | Path | None) -> None:
    """Choose the workspace for this process (``--workspace``); None: back to the default."""
    global _override
    if path is None:
        _override = None
        return
    root = Path(path).expanduser()
    if root.exists() and not root.is_dir():
        raise TvmflowError(f"workspace {root} is not a directory")
    _override = root.resolve()


@dataclass(frozen=True)
class Workspace:
    """A user's working area: every file tvmflow writes goes below ``root``."""

    root: Path

    @classmethod
    def current(cls) -> "Workspace":
        if _override is not None:
            return cls(_override)
        env = os.environ.get(ENV_HOME)
        return cls(Path(env).expanduser().resolve() if env else Path.cwd())

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def targets(self) -> Path:
        return self.root / "targets"

    @property
    def schedules(self) -> Path:
        return Path(os.environ.get("TVMFLOW_SCHEDULES") or self.root / "schedules")

    @property
    def artifacts(self) -> Path:
        return Path(os.environ.get("TVMFLOW_ARTIFACTS_DIR") or self.root / "artifacts")

    @property
    def reports(self) -> Path:
        return self.root / "reports"


def is_shipped(path: str | Path) -> bool:
    """Whether ``path`` lies in the data shipped with tvmflow: read-only, always (in a source
    checkout too, where the workspace's directories may be the shipped ones)."""
    real = Path(path).resolve()
    for kind in KINDS:
        ship = shipped_dir(kind).resolve()
        if real == ship or ship in real.parents:
            return True
    return False


def check_writable(path: str | Path) -> None:
    """Refuse to write into the shipped data, naming the way out."""
    if is_shipped(path):
        raise TvmflowError(
            f"{path} is in the data shipped with tvmflow, which is read-only",
            hint="run tvmflow from another directory, or choose one with --workspace DIR or "
                 f"{ENV_HOME}=DIR")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False


def search_dirs(kind: str, env_var: str | None = None) -> list[Path]:
    """Directories to look in for ``kind``, first wins: ``env_var``'s list, the workspace's,
    then the shipped one (a directory named twice is searched once)."""
    extra = [Path(p) for p in os.environ.get(env_var or "", "").split(os.pathsep) if p]
    dirs = extra + [getattr(Workspace.current(), kind), shipped_dir(kind)]
    out: list[Path] = []
    for d in dirs:
        if not any(_same(d, o) for o in out):
            out.append(d)
    return out
