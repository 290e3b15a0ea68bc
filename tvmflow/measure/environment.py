"""What a bench report records about the run's machine, software and route."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow.artifact.package import tvmflow_version
from tvmflow.runtime.session import Route


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _gpu() -> str:
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().replace("\n", "; ")
    except (OSError, Exception):
        pass
    return "none"


def _norm(addr: str | None) -> str | None:
    if not addr:
        return None
    host, _, port = addr.rpartition(":")
    return f"{'127.0.0.1' if host in ('localhost', '::1') else host}:{port}"


def emulated_board(route: Route) -> bool:
    """Whether the route leads to a running emulated board (``tvmflow board start``)."""
    try:
        from tvmflow import board
        for info in board.running_boards():
            if route.mode == "tracker" and info.key == route.key and \
                    _norm(info.tracker) == _norm(route.address):
                return True
            if route.mode == "rpc" and _norm(f"{info.host}:{info.port}") == _norm(route.address):
                return True
    except Exception:  # board state unreadable: not emulated as far as we can tell
        return False
    return False


def device_is_this_machine(route: Route) -> bool:
    """Baselines run in this process: only comparable when the device is this machine."""
    from tvmflow.adapter.rpc import is_loopback, parse_hostport
    if route.mode in ("local", "local-rpc"):
        return True
    return is_loopback(parse_hostport(route.address)[0])


def environment(preset, route: Route, session=None, threads: int | None = None) -> dict[str, Any]:
    """What the report records about the run's machine, software and route.

    ``threads``: the thread count asked of every runner (``threads_requested``); the counts
    each runner's process reports go to ``threads`` once measured
    (:func:`tvmflow.measure.rounds.thread_counts`).
    """
    from tvmflow import adapter
    from tvmflow.target.presets import _cpu_model, host_cores
    env: dict[str, Any] = {
        "tvmflow": tvmflow_version(), "tvm": adapter.tvm_version(),
        "tvm_ffi": adapter.ffi_version(), "torch": _version("torch"),
        "onnxruntime": _version("onnxruntime"), "numpy": np.__version__,
        "python": platform.python_version(), "host": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}", "cpu": _cpu_model(),
        "host_cores": host_cores(), "gpu": _gpu(), "target": preset.name,
        "target_dict": preset.target, "target_host": preset.host,
        "target_detected": preset.detected, "device": preset.device,
        "route": route.describe(), "route_mode": route.mode,
        "emulated": bool(preset.emulated) or emulated_board(route),
    }
    if session is not None:
        env["server_address"] = session.address
        env["server_arch"] = session.arch()
        env["device_cpu"] = (env["cpu"] if route.mode in ("local", "local-rpc")
                             else preset.description)
    if threads is not None:
        env["threads_requested"] = int(threads)
    env["load_avg_start"] = list(os.getloadavg())
    governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    env["cpu_governor"] = governor.read_text().strip() if governor.exists() else "unknown"
    return env
