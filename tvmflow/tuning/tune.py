"""``tvmflow tune``: MetaSchedule (XGBoost cost model) into ``schedules/<target>/<cpu>/<variant>/``.

The log is the set of the CPU the tune runs on (``<cpu>``: the preset's ``cpu_key``, the
detected CPU for ``host``; recorded in meta.json as ``cpu``).

``tune(variant, target, trials=...)`` imports the variant, runs the shared pipeline's
:func:`~tvmflow.adapter.pipeline.prepare`, extracts the tasks and tunes them with tvmflow's
fast builder (:mod:`tvmflow.adapter.tune`) into the log directory's JSON database.

* ``trials`` is the budget of the log: a second tune resumes and runs ``trials - done``
  more (``fresh=True`` starts over).  Every measured candidate is appended to the database
  as it finishes, so Ctrl-C or a crash loses at most the batch in flight; a truncated last
  line is repaired before the next run.
* One tune per log directory at a time (filelock); a second one is refused with a message.
* Runs measure locally, or on a board through an RPC tracker (``tracker="host:port"``,
  ``key``); for a cross target each candidate is linked into a ``.so`` by the cross compiler.
* ``adapt=True`` (or a CPU name: ``adapt="emeraldrapids"``) first re-measures the best
  ``adapt_top_k`` records per task of another CPU's set (the nearest one, or the named one)
  on this CPU and commits them, with their new run times and this CPU's target, to this
  CPU's log (:mod:`tvmflow.adapter.adapt`); the search then warm-starts from them
  (MetaSchedule's evolutionary search seeds its population with the database's best records
  of each task) and the scheduler treats the adapted tasks as tuned for one round, so the
  budget goes on where it pays.  Re-measurements are not search trials: they are not counted
  in ``trials``; meta.json lists them under ``adapted_from``.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tvmflow.tuning import schedules
from tvmflow.errors import TvmflowError

DEFAULT_SEED = 0
DEFAULT_PER_ROUND = 32
KEEP_BEST = 3
ADAPT_TOP_K = 3


@dataclass
class TaskResult:
    name: str
    weight: int
    trials: int
    best_ms: float | None

    @property
    def weighted_ms(self) -> float | None:
        return None if self.best_ms is None else self.best_ms * self.weight


@dataclass
class TuneResult:
    variant: str
    target: str
    log_dir: Path
    trials_before: int
    trials_run: int
    trials_total: int
    valid: int
    wall_s: float
    tasks: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False
    skipped: bool = False
    adapted: dict[str, Any] | None = None   # what --adapt re-measured (see _adapt)
    threads: dict[str, Any] = field(default_factory=dict)  # {"requested": N, "tvm": measured}

    @property
    def est_total_ms(self) -> float | None:
        known = [t.weighted_ms for t in self.tasks if t.weighted_ms is not None]
        return sum(known) if known else None

    @property
    def trials_per_min(self) -> float:
        return 60.0 * self.trials_run / self.wall_s if self.wall_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(variant=self.variant, target=self.target, log_dir=str(self.log_dir),
                    trials_before=self.trials_before, trials_run=self.trials_run,
                    trials_total=self.trials_total, valid=self.valid, wall_s=self.wall_s,
                    est_total_ms=self.est_total_ms, interrupted=self.interrupted,
                    skipped=self.skipped, adapted=self.adapted, threads=self.threads,
                    tasks=[dict(name=t.name, weight=t.weight, trials=t.trials, best_ms=t.best_ms)
                           for t in self.tasks])


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


def _board_threads(rpc: tuple[str, int, str], threads: int) -> int | None:
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


def _check_runnable(preset, rpc, dry_run: bool = False) -> None:
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


def tune(variant: str, target: str = "host", *, trials: int = 256,
         trials_per_task: int | None = None, per_round: int = DEFAULT_PER_ROUND,
         seed: int = DEFAULT_SEED, fresh: bool = False, tracker: str | None = None,
         key: str | None = None, root: Path | None = None, workers: int | None = None,
         options=None, keep_best: int | None = None, frontend: str = "torch",
         adapt: bool | str | None = None, adapt_top_k: int = ADAPT_TOP_K,
         on_adapt: Callable[[dict[str, Any]], None] | None = None,
         rpc_workers: int | None = None, on_batch: Callable[[dict[str, Any]], None] | None = None,
         on_start: Callable[[dict[str, Any]], None] | None = None,
         threads: int | None = None, dry_run: bool = False) -> TuneResult:
    """Tune one variant for one target preset; returns a :class:`TuneResult`.

    ``threads``: TVM's thread count in the runner that measures the candidates (default
    ``TVM_NUM_THREADS``, else the target's ``num-cores``; on a board each session sets it, up
    to what the board's TVM_NUM_THREADS allows); the count measured where the candidates run
    is recorded in ``meta.json`` (``threads``).

    ``adapt``: True (the nearest other CPU's set) or a CPU name: re-measure that set's best
    ``adapt_top_k`` records per task here first (see the module doc); ``on_adapt`` receives
    the summary (``TuneResult.adapted``).

    ``workers``: builder processes (default :func:`default_workers`).  ``dry_run``: build
    every candidate but measure none (each gets a made-up run time,
    :func:`tvmflow.adapter.tune.make_dry_runner`): checks a target's whole tuning path on a
    machine without its device.  A dry-run log is marked so in meta.json; dry-run and
    measured records never share a log.

    A task whose first :data:`ALL_FAILED_STOP` candidates all fail stops the tune with the
    first build or run error (the records committed so far are kept): a task that never
    builds would otherwise take the whole budget.
    """
    from tvmflow.target.presets import get_target
    if trials < 1:
        raise TvmflowError(f"--trials must be at least 1, got {trials}")
    if per_round < 1:
        raise TvmflowError(f"--per-round must be at least 1, got {per_round}")
    preset = get_target(target)
    from tvmflow.threads import resolve as resolve_threads
    threads = resolve_threads(preset, threads)
    rpc = resolve_tracker(tracker, key)
    if dry_run and rpc is not None:
        raise TvmflowError("--dry-run measures nothing; it takes no --tracker")
    _check_runnable(preset, rpc, dry_run)
    if workers is not None and workers < 1:
        raise TvmflowError(f"--workers must be at least 1, got {workers}")
    if rpc_workers is not None and rpc_workers < 1:
        raise TvmflowError(f"--rpc-workers must be at least 1, got {rpc_workers}")
    if rpc_workers is not None and rpc is None:
        raise TvmflowError("--rpc-workers counts boards at a tracker; give --tracker HOST:PORT")
    if adapt and dry_run:
        raise TvmflowError("--adapt re-measures records here; --dry-run measures nothing")
    if rpc is not None:
        from tvmflow.adapter import rpc as ad_rpc
        ad_rpc.count_servers(*rpc, timeout=10)  # an unreachable tracker fails before any build
    if rpc is not None and rpc_workers is None:
        rpc_workers = boards_under_key(*rpc)
    from tvmflow.spec.registry import get_spec
    spec = get_spec(variant)
    log_dir = schedules.schedule_dir(preset, spec.name, root)
    from tvmflow.workspace import check_writable
    check_writable(log_dir)
    if not fresh and root is None:
        schedules.seed_from_shipped(preset, spec.name, log_dir)
    source = None
    if adapt:
        if adapt_top_k < 1:
            raise TvmflowError(f"adapt_top_k must be at least 1, got {adapt_top_k}")
        source = schedules.adapt_source(preset, spec.name, adapt, root)
    lk = schedules.lock(log_dir)
    try:
        return _tune_locked(spec, preset, log_dir, trials=trials, trials_per_task=trials_per_task,
                            per_round=per_round, seed=seed, fresh=fresh, rpc=rpc,
                            workers=workers or default_workers(preset), options=options,
                            keep_best=keep_best, frontend=frontend, on_batch=on_batch,
                            adapt=source, adapt_top_k=adapt_top_k, on_adapt=on_adapt,
                            on_start=on_start, rpc_workers=rpc_workers or 1, threads=threads,
                            dry_run=dry_run)
    finally:
        lk.release()


def _clear(log_dir: Path) -> None:
    for name in (schedules.DB_WORKLOAD, schedules.DB_RECORDS, schedules.META):
        (log_dir / name).unlink(missing_ok=True)
    shutil.rmtree(log_dir / "logs", ignore_errors=True)


def _tune_locked(spec, preset, log_dir: Path, *, trials, trials_per_task, per_round, seed, fresh,
                 rpc, workers, options, keep_best, frontend, on_batch, on_start,
                 adapt=None, adapt_top_k: int = ADAPT_TOP_K, on_adapt=None,
                 rpc_workers: int = 1, threads: int | None = None,
                 dry_run: bool = False) -> TuneResult:
    from tvmflow.adapter import pipeline
    from tvmflow.adapter import tune as ad
    from tvmflow.ir.frontend import import_model

    if fresh:
        _clear(log_dir)
    repaired = schedules.repair(log_dir)
    meta = schedules.read_meta(log_dir)
    if meta or schedules.record_count(log_dir):
        if bool(meta.get("dry_run")) != dry_run:
            raise TvmflowError(f"{log_dir} holds {'dry-run' if meta.get('dry_run') else 'measured'}"
                               f" records; a {'dry' if dry_run else 'measured'} run does not "
                               "add to them",
                               hint="pass --fresh to start over (or set TVMFLOW_SCHEDULES to "
                                    "another folder for dry runs)")
    if meta:
        if meta.get("target") and schedules._target_mismatch(preset.target, meta["target"]):
            raise TvmflowError(f"{log_dir} holds records for another target "
                               f"({meta['target']}); this target is {preset.target}",
                               hint="pass --fresh to start over")
        if options is not None:  # the NCHWc block as tuned, from the target
            options = options.resolved(preset.tvm_target())
        if meta.get("pipeline") and options is not None and \
                pipeline.PipelineOptions.from_json(meta["pipeline"]) != options:
            raise TvmflowError(f"{log_dir} was tuned with pipeline {meta['pipeline']}, not "
                               f"{options.to_json()}", hint="pass --fresh to start over")
    if adapt is not None and options is None and not meta.get("pipeline"):
        # a new log adapted from another CPU's set: its workloads come from that set's pipeline
        options = pipeline.PipelineOptions.from_json(adapt[2].get("pipeline"))
    model = import_model(spec.name, frontend=frontend)
    tgt = preset.tvm_target()
    if options is None:  # the log's pipeline, or the target's default for a new log
        options = (pipeline.PipelineOptions.from_json(meta["pipeline"]) if meta.get("pipeline")
                   else pipeline.default_options(tgt, model.mod))
    opts = options.resolved(tgt)
    done = max(int(meta.get("trials", 0)), 0)
    if not meta:
        done = schedules.record_count(log_dir)

    mod = pipeline.prepare(model.mod, tgt, opts)
    tasks = pipeline.extract_tasks(mod, tgt, prepared=True)
    names = [t.task_name for t in tasks]
    weights = {t.task_name: int(t.weight) for t in tasks}
    n_trials_task: dict[str, int] = dict(meta.get("task_trials", {}))
    best_ms: dict[str, float] = {k: v for k, v in (meta.get("best_ms") or {}).items() if v}
    remaining = trials - done
    wall_before = float(meta.get("wall_s", 0.0))
    meta.update(target=dict(preset.target), target_name=preset.name, variant=spec.name,
                tvm_version=ad.tvm_version(), mcpu=preset.target.get("mcpu"), cpu=preset.cpu_key,
                pipeline=opts.to_json(), seed=seed, per_round=per_round,
                n_tasks=len(tasks), tasks=names, weights=weights, frontend=frontend,
                measured_on=(f"rpc {rpc[0]}:{rpc[1]} key {rpc[2]} ({rpc_workers} runner "
                             f"worker{'s' if rpc_workers > 1 else ''})" if rpc else
                             "nowhere (dry run: made-up run times)" if dry_run else "local"),
                detected=preset.detected, builders=workers)
    if dry_run:
        meta["dry_run"] = True
    meta.setdefault("created", schedules.now_iso())
    result = TuneResult(spec.name, preset.name, log_dir, done, 0, done, 0, 0.0)
    if repaired is not None and not repaired.ok:
        meta["repaired"] = meta.get("repaired", []) + [f"{schedules.now_iso()}: {repaired.describe()}"]

    records_at_start = {"n": schedules.record_count(log_dir)}

    def finish(interrupted: bool, wall: float):
        # the database is the ground truth for what was kept: a batch committed by
        # MetaSchedule but interrupted before our callback saw it still counts
        committed = schedules.record_count(log_dir) - records_at_start["n"]
        result.trials_total = max(result.trials_total, result.trials_before + committed)
        meta["trials"] = result.trials_total
        meta["wall_s"] = round(wall_before + wall, 1)
        meta["task_trials"] = n_trials_task
        meta["best_ms"] = best_ms
        tuned = [n for n in names if best_ms.get(n)]
        meta["n_tuned_tasks"] = len(tuned)
        meta["est_total_ms"] = (round(sum(best_ms[n] * weights[n] for n in tuned), 4)
                                if tuned else None)
        meta["records"] = schedules.record_count(log_dir)
        meta["updated"] = schedules.now_iso()
        meta["interrupted"] = interrupted
        schedules.write_meta(log_dir, meta)
        result.tasks = [TaskResult(n, weights[n], n_trials_task.get(n, 0), best_ms.get(n))
                        for n in names]

    if adapt is not None:
        sha = schedules.db_sha256(adapt[0])
        if any(a.get("sha256") == sha and not a.get("interrupted")
               for a in meta.get("adapted_from") or []):
            result.adapted = {"cpu": adapt[1], "path": str(adapt[0]), "records": 0,
                              "skipped": "already adapted from these records"}
            if on_adapt:
                on_adapt(dict(result.adapted, log_dir=str(log_dir)))
            adapt = None

    if remaining <= 0 and adapt is None:
        result.skipped = True
        finish(False, 0.0)
        return result

    t0 = time.time()

    sigint = {"hit": False}
    failed_round: dict[str, Any] = {}
    failed: dict[str, int] = {}        # per task never measured: candidates failed so far

    def batch(info: dict[str, Any]) -> None:
        name = info["task_name"]
        result.trials_run += info["n"]
        result.trials_total += info["n"]
        result.valid += info["valid"]
        n_trials_task[name] = n_trials_task.get(name, 0) + info["n"]
        if info["best_s"] is not None:
            ms_ = info["best_s"] * 1e3
            if name not in best_ms or ms_ < best_ms[name]:
                best_ms[name] = ms_
        result.wall_s = time.time() - t0
        finish(False, result.wall_s)  # meta.json follows the database batch by batch
        if on_batch:
            est = sum(best_ms[n] * weights[n] for n in names if n in best_ms) or None
            on_batch(dict(info, done=result.trials_total, budget=trials, est_total_ms=est,
                          tuned_tasks=sum(1 for n in names if n in best_ms), n_tasks=len(names)))
        if sigint["hit"]:          # Ctrl-C during the batch: it is committed and counted
            raise KeyboardInterrupt
        # a task none of whose candidates ever built and ran: stop, and say why
        if info["n"] and not info["valid"] and name not in best_ms:
            failed[name] = failed.get(name, 0) + info["n"]
            if failed[name] >= min(ALL_FAILED_STOP, trials):
                failed_round.update(info, failed=failed[name],
                                    rounds=failed[name] // max(info["n"], 1))
                raise _AllFailed

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
    # TVM's thread count where candidates are timed, asked there (runner worker or a board)
    meta["threads"] = result.threads = {
        "requested": threads,
        "tvm": _board_threads(rpc, threads) if rpc else ad.runner_threads(runner)}
    interrupted = False
    # Ctrl-C may surface from inside TVM as a plain RuntimeError (its C++ loops check for
    # signals); remember that it happened so it is reported as an interrupt, not a crash
    # The first Ctrl-C only sets a flag: raising at an arbitrary point inside TVM's C++ can
    # end in std::terminate (a segfault, seen here); the batch callback raises instead, right
    # after the batch's records are committed.  A second Ctrl-C interrupts at once.
    prev_handler = None
    if threading.current_thread() is threading.main_thread():
        def _on_sigint(signum, frame):
            if sigint["hit"]:
                raise KeyboardInterrupt
            sigint["hit"] = True
            from tvmflow.ui import err_console
            err_console.print("interrupt: stopping after the batch being measured "
                              "(Ctrl-C again to stop now)", highlight=False)
        prev_handler = signal.signal(signal.SIGINT, _on_sigint)
    try:
        if adapt is not None:
            def adapt_stop(_entry):
                if sigint["hit"]:           # Ctrl-C: stop after the task being re-measured
                    raise KeyboardInterrupt
            try:
                result.adapted = _adapt(tasks, adapt, log_dir, tgt, preset, builder=builder,
                                        runner=runner, top_k=adapt_top_k, best_ms=best_ms,
                                        meta=meta, on_task=adapt_stop)
            finally:
                records_at_start["n"] = schedules.record_count(log_dir)  # not search trials
            finish(False, time.time() - t0)
            if on_adapt:
                on_adapt(dict(result.adapted, log_dir=str(log_dir)))
        # what the log already holds per task (trials, and records adapted from another
        # CPU): the scheduler resumes instead of starting over
        adapted_n: dict[str, int] = {}
        for a in meta.get("adapted_from") or []:
            for n, k in (a.get("task_records") or {}).items():
                adapted_n[n] = adapted_n.get(n, 0) + int(k)
        prior = {i: ((best_ms[n] / 1e3) if best_ms.get(n) else None,
                     int(n_trials_task.get(n, 0)) + adapted_n.get(n, 0))
                 for i, n in enumerate(names) if n_trials_task.get(n) or adapted_n.get(n)}
        if remaining <= 0:
            result.skipped = True
        else:
            if on_start:
                on_start({"tasks": names, "budget": trials, "done": done, "remaining": remaining,
                          "log_dir": str(log_dir), "best_ms": dict(best_ms), "weights": weights})
            ad.run_tuning(tasks, str(log_dir), trials=remaining, trials_per_task=trials_per_task,
                          per_round=per_round, seed=seed, builder=builder, runner=runner,
                          on_batch=batch, prior=prior)
    except KeyboardInterrupt:
        interrupted = True
        raise
    except TvmflowError:
        raise
    except Exception as exc:
        if failed_round:
            raise _all_failed_error(failed_round, log_dir) from None
        if sigint["hit"] or "KeyboardInterrupt" in f"{type(exc).__name__}: {exc}":
            interrupted = True
            raise KeyboardInterrupt from None
        raise
    finally:
        if prev_handler is not None:
            signal.signal(signal.SIGINT, prev_handler)
        builder.shutdown()
        result.interrupted = interrupted
        result.wall_s = time.time() - t0
        finish(interrupted, result.wall_s)
    if keep_best:
        schedules.compact(log_dir, keep_best)
        finish(False, result.wall_s)
    return result


ALL_FAILED_STOP = 16
"""A task whose first this many candidates (one round of 16 as tvmflow tunes, several smaller
ones) all failed stops the tune: one design space may fail now and then (TVM's lowering
refuses some pooling schedules on CUDA), every one of 16 failing is a target or toolchain
problem, and the task would otherwise take the whole budget (its score stays infinite)."""


class _AllFailed(Exception):
    """Raised from the batch callback to stop MetaSchedule after an all-failed round."""


def short_error(message: str, limit: int = 400) -> str:
    """The telling line of a build or run error (a traceback's last ``...Error: ...`` line)."""
    import re
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return "(no message)"
    telling = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
    line = telling[-1] if telling else lines[-1]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _all_failed_error(info: dict[str, Any], log_dir: Path) -> TvmflowError:
    return TvmflowError(
        f"tuning stopped: every candidate of task {info['task_name']} failed "
        f"({info['failed']} of {info['failed']}, in {info['rounds']} "
        f"round{'s' if info['rounds'] != 1 else ''}); the first error of the last round: "
        f"{short_error(info.get('error') or '').rstrip('.')}",
        hint=f"the records committed before are kept; TVM's own messages are in {log_dir}/logs")


def _adapt(tasks, source, log_dir: Path, tgt, preset, *, builder, runner, top_k: int,
           best_ms: dict[str, float], meta: dict[str, Any], on_task=None) -> dict[str, Any]:
    """Re-measure ``source``'s best records here (see the module doc); update ``best_ms`` and
    ``meta["adapted_from"]`` (also when interrupted: what was committed is recorded, marked
    ``interrupted``, and a rerun adapts again); returns the summary."""
    from tvmflow.adapter.adapt import remeasure
    src_dir, src_cpu, src_meta = source
    names = [t.task_name for t in tasks]
    weights = {t.task_name: int(t.weight) for t in tasks}
    known = [n for n in names if best_ms.get(n)]
    est_log_before = sum(best_ms[n] * weights[n] for n in known) if known else None
    entries: list[dict[str, Any]] = []
    done = False
    try:
        remeasure(tasks, str(src_dir), str(log_dir), tgt, builder=builder, runner=runner,
                  top_k=top_k, on_task=on_task, out=entries)
        done = True
    finally:
        info = _adapt_summary(entries, source, preset, names, weights, top_k, best_ms,
                              est_log_before)
        if not done:
            info["interrupted"] = True
        meta.setdefault("adapted_from", []).append(info)
    return info


def _adapt_summary(entries, source, preset, names, weights, top_k, best_ms,
                   est_log_before) -> dict[str, Any]:
    src_dir, src_cpu, src_meta = source
    task_records: dict[str, int] = {}
    est_there = est_here = 0.0
    errors: list[str] = []
    for e in entries:
        errors += e["errors"]
        here = [m for m in e["measured_s"] if m is not None]
        if not here:
            continue
        there = [s for s in e["source_s"] if s is not None]
        name = e["task_name"]
        task_records[name] = e["committed"]
        est_here += e["weight"] * min(here) * 1e3
        est_there += e["weight"] * (min(there) if there else min(here)) * 1e3
        if min(here) * 1e3 < best_ms.get(name, float("inf")):
            best_ms[name] = min(here) * 1e3
    known = [n for n in names if best_ms.get(n)]
    info = {"cpu": src_cpu, "path": str(src_dir), "sha256": schedules.db_sha256(src_dir),
            "running_on": preset.cpu_key, "top_k": top_k,
            "records": sum(task_records.values()),
            "failed": sum(e["failed"] for e in entries), "errors": errors[:5],
            "tasks": len(task_records), "n_tasks": len(names),
            "source_trials": src_meta.get("trials"),
            "est_source_ms": round(est_there, 4) if task_records else None,
            "est_here_ms": round(est_here, 4) if task_records else None,
            "est_log_before_ms": None if est_log_before is None else round(est_log_before, 4),
            "est_log_after_ms": (round(sum(best_ms[n] * weights[n] for n in known), 4)
                                 if known else None),
            "task_records": task_records, "when": schedules.now_iso()}
    return info


def adapt_message(info: dict[str, Any]) -> str:
    """The terminal lines for what ``--adapt`` did."""
    if info.get("skipped"):
        return f"adapt: {info['cpu']} set {info['path']}: {info['skipped']}; nothing re-measured"

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f} ms"
    lines = [f"adapted {info['records']} records of {info['cpu']} ({info['path']}), the best "
             f"{info['top_k']} per task, re-measured on {info['running_on']}: {info['tasks']}/"
             f"{info['n_tasks']} tasks"
             + (f", {info['failed']} records failed here" if info.get("failed") else ""),
             f"  est. total of those tasks: {fmt(info['est_source_ms'])} as measured on "
             f"{info['cpu']} -> {fmt(info['est_here_ms'])} re-measured on {info['running_on']}",
             f"  est. total of this log: before {fmt(info['est_log_before_ms'])} -> after "
             f"{fmt(info['est_log_after_ms'])}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- terminal


class TuneProgress:
    """A rich progress bar: trials done / budget, current task, best estimated latency."""

    def __init__(self, console=None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        from tvmflow.ui import console as default_console
        self.progress = Progress(TextColumn("[bold]{task.fields[label]}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                 TimeElapsedColumn(), console=console or default_console,
                                 transient=False)
        self.task = None

    def start(self, info: dict[str, Any], label: str) -> None:
        est = sum(info["best_ms"].get(n, 0) * info["weights"][n] for n in info["tasks"]) or None
        self.progress.start()
        self.task = self.progress.add_task("tune", total=info["budget"], completed=info["done"],
                                           label=label, status=self._status("-", est, None))

    @staticmethod
    def _status(task: str, est: float | None, tuned: str | None) -> str:
        e = f"{est:.3f} ms" if est else "n/a"
        t = f" ({tuned} tasks)" if tuned else ""
        return f"task {task[:38]:38s} best est. {e}{t}"

    def batch(self, info: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=min(info["done"], info["budget"]),
                             status=self._status(info["task_name"], info["est_total_ms"],
                                                 f"{info['tuned_tasks']}/{info['n_tasks']}"))

    def stop(self) -> None:
        self.progress.stop()


def tune_variants(variants: list[str], target: str, *, quiet: bool = False, **kw) -> list[TuneResult]:
    """Tune several variants in turn, with a progress bar and a per-task table each."""
    from tvmflow.ui import console
    results = []
    name = getattr(target, "name", target)  # a preset or its name
    for v in variants:
        bar = None if quiet else TuneProgress()
        try:
            res = tune(v, target, on_start=(bar and (lambda info, v=v: bar.start(info, f"{name}/{v}"))),
                       on_batch=(bar and bar.batch),
                       on_adapt=(None if quiet else
                                 lambda info: console.print(adapt_message(info), highlight=False)),
                       **kw)
        except KeyboardInterrupt:
            d = schedules.schedule_dir(target, v, kw.get("root"))
            from tvmflow.ui import err_console
            err_console.print(f"interrupted: {schedules.record_count(d)} records kept in {d}; "
                              "run the same command to resume", highlight=False)
            raise
        finally:
            if bar is not None and bar.task is not None:
                bar.stop()
        results.append(res)
        if not quiet:
            print_task_table(res)
            if res.skipped:
                console.print(f"{name}/{v}: {res.trials_total} trials already done "
                              f"(budget {kw.get('trials')}); raise --trials to tune more")
    return results


def print_task_table(res: TuneResult) -> None:
    from tvmflow.ui import console, print_table
    rows = [[t.name, t.weight, t.trials, "-" if t.best_ms is None else f"{t.best_ms:.4f}",
             "-" if t.weighted_ms is None else f"{t.weighted_ms:.4f}"] for t in res.tasks]
    est = res.est_total_ms
    rows.append(["total", "", res.trials_total, "", "-" if est is None else f"{est:.4f}"])
    print_table(f"{res.target}/{res.variant}: {res.trials_run} trials this run "
                f"({res.valid} valid, {res.trials_per_min:.0f}/min), {res.trials_total} in the log",
                ["task", "weight", "trials", "best ms", "weighted ms"], rows)
    thr = res.threads or {}
    if thr.get("tvm") is not None:
        console.print(f"TVM threads where the candidates ran: {thr['tvm']}"
                      + (f" (Warning: {thr['requested']} were asked for)"
                         if thr.get("requested") not in (None, thr["tvm"]) else ""),
                      highlight=False)
    console.print(f"log: {res.log_dir}")
