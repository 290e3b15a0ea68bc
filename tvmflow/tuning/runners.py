"""Where a tune measures its candidates: locally, on a board through an RPC tracker, or
nowhere (``--dry-run``); how many builders; and the stop for a task whose candidates all fail."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from tvmflow.errors import TvmflowError

ALL_FAILED_STOP = 16
"""A task whose first this many candidates (one round of 16 as tvmflow tunes, several smaller
ones) all failed stops the tune: one design space may fail now and then (TVM's lowering
refuses some pooling schedules on CUDA), every one of 16 failing is a target or toolchain
problem, and the task would otherwise take the whole budget (its score stays infinite)."""


class AllFailed(Exception):
    """Raised from the batch callback to stop MetaSchedule after an all-failed round."""


def resolve_tracker(tracker: str | None, key: str | None) -> tuple[str, int, str] | None:
    """``--tracker``/``--key`` or TVM_TRACKER_HOST/PORT/KEY; None for local measurement."""
    if tracker is None and os.environ.get("TVM_TRACKER_HOST"):
        tracker = f"{os.environ['TVM_TRACKER_HOST']}:{os.environ.get('TVM_TRACKER_PORT', '9190')}"
    if tracker is None:
        if key:
            raise TvmflowError("--key names a board at a tracker; give --tracker HOST:PORT "
                               "(or TVM_TRACKER_HOST)")
        return None
    host, sep, port = tracker.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise TvmflowError(f"bad tracker address {tracker!r}: expected HOST:PORT, e.g. 127.0.0.1:9190")
    key = key or os.environ.get("TVM_TRACKER_KEY")
    if not key:
        raise TvmflowError("--tracker needs --key (or TVM_TRACKER_KEY): the RPC key the board registered")
    return host, int(port), key


def boards_under_key(host: str, port: int, key: str, cap: int = 8) -> int:
    """How many servers the tracker lists under ``key`` (1 when it cannot tell): the
    default number of RPC runner workers, so each board measures candidates in parallel."""
    from tvmflow.adapter import rpc as ad_rpc
    try:
        n = ad_rpc.count_servers(host, port, key, timeout=10)
    except TvmflowError:
        return 1
    return max(1, min(cap, n))


def board_threads(rpc: tuple[str, int, str], threads: int) -> int | None:
    """TVM's thread count on a board under the key once set to ``threads`` as the runner's
    sessions set it (None when no board answers in time)."""
    from tvmflow.adapter import rpc as ad_rpc
    from tvmflow.adapter.runtime import remote_session
    try:
        remote = ad_rpc.request(*rpc, timeout=30)
        return remote_session(remote, "tracker", f"{rpc[0]}:{rpc[1]}", rpc[2]).use_threads(threads)
    except TvmflowError:
        return None


def default_workers(preset) -> int:
    """Builder processes when ``--workers`` is not given: on a CUDA target every core but two
    (a GPU machine has many, and each candidate is a full NVRTC compile; two are left for
    the runner and the search), else ``min(2, cores)`` (the runner shares the cores)."""
    from tvmflow.target.presets import host_cores
    cores = host_cores()
    return max(1, cores - 2) if preset.is_cuda else max(1, min(2, cores))


def check_runnable(preset, rpc, dry_run: bool = False) -> None:
    """Refuse a tune that has nowhere to measure (a CUDA target without a GPU here, a cross
    target without a board)."""
    if rpc is not None or dry_run:
        return
    if preset.is_cuda:
        from tvmflow.adapter.tune import local_gpu
        gpu = local_gpu()
        if not gpu.ok:
            raise TvmflowError(f"cannot tune for {preset.name}: no CUDA GPU here to measure "
                               f"candidates on: {gpu.missing}",
                               hint=f"pass --tracker HOST:PORT --key {preset.rpc_key} for a board "
                                    "with the GPU, or --dry-run to build every candidate "
                                    "without measuring")
    elif preset.is_cross:
        raise TvmflowError(f"cannot tune for {preset.name} ({preset.cpu_triple}) on this machine "
                           "without a board", hint=f"pass --tracker HOST:PORT --key {preset.rpc_key}")


def measured_on(rpc, rpc_workers: int, dry_run: bool) -> str:
    """meta.json's ``measured_on``."""
    if rpc:
        return (f"rpc {rpc[0]}:{rpc[1]} key {rpc[2]} ({rpc_workers} runner "
                f"worker{'s' if rpc_workers > 1 else ''})")
    return "nowhere (dry run: made-up run times)" if dry_run else "local"


def make_measurer(ad, tgt, preset, *, rpc, workers: int, rpc_workers: int, threads, dry_run):
    """(builder, runner, {"requested", "tvm"}: TVM's thread count where candidates are timed,
    asked there -- the runner's worker or a board)."""
    cross = preset.cross_compiler if preset.is_cross else None
    builder = ad.make_builder(max_workers=workers, timeout_sec=60.0,
                              export="so" if rpc else "tar", cross_compiler=cross,
                              env=ad.builder_env(tgt))
    if dry_run:
        runner = ad.make_dry_runner()
    elif rpc:
        runner = ad.make_rpc_runner(*rpc, max_workers=rpc_workers, threads=threads)
    else:
        runner = ad.make_local_runner(threads=threads)
    measured = board_threads(rpc, threads) if rpc else ad.runner_threads(runner)
    return builder, runner, {"requested": threads, "tvm": measured}


def short_error(message: str, limit: int = 400) -> str:
    """The telling line of a build or run error (a traceback's last ``...Error: ...`` line)."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return "(no message)"
    telling = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    line = telling[-1] if telling else lines[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def all_failed_error(info: dict[str, Any], log_dir: Path) -> TvmflowError:
    return TvmflowError(
        f"tuning stopped: every candidate of task {info['task_name']} failed "
        f"({info['failed']} of {info['failed']}, in {info['rounds']} "
        f"round{'s' if info['rounds'] != 1 else ''}); the first error of the last round: "
        f"{short_error(info.get('error') or '').rstrip('.')}",
        hint=f"the records committed before are kept; TVM's own messages are in {log_dir}/logs")
