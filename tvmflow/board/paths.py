"""Where the board lives: the shared, cached root and the per-caller state directory.

Under ``$TVMFLOW_CACHE_DIR`` (default ``~/.cache/tvmflow``)::

    board/arm64-bookworm/rootfs/      the Debian root (venv at /opt/tvm-venv inside)
    board/arm64-bookworm/wheels/      the aarch64 wheels installed there
    board/arm64-bookworm/setup.json   marker, written last: what was installed
    board/arm64-bookworm/users.json   who uses the root now (any state directory), root.lock
    board/logs/setup.log

The state directory (``state_dir=`` of the API, else ``$TVMFLOW_BOARD_STATE_DIR``, else
``$TVMFLOW_CACHE_DIR/board``) holds ``state.json`` (the boards started from it, their
tracker), ``state.lock`` and ``logs/`` (tracker.log, <board>.log).  Tests use their own, so
they never see or stop a developer's boards.
"""

from __future__ import annotations

import os
from pathlib import Path

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
START_TIMEOUT = 300.0     # importing tvm under qemu takes a while on a busy 2-core host
STATE_ENV = "TVMFLOW_BOARD_STATE_DIR"


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


def setup_log() -> Path:
    return board_dir() / "logs" / "setup.log"


def state_dir(directory: str | Path | None = None) -> Path:
    """The state directory: ``directory``, else ``$TVMFLOW_BOARD_STATE_DIR``, else the
    board directory of the cache."""
    if directory is not None:
        return Path(directory)
    env = os.environ.get(STATE_ENV)
    return Path(env) if env else board_dir()
