"""MetaSchedule tuning: the search, a progress callback, an eager task scheduler.

The builders and runners that measure the candidates (a fast builder with one pool of
workers for the whole tune, local / RPC / dry runners) are :mod:`.tune_measure`'s, and
importable from here too.

:func:`run_tuning` wires it together: tasks -> TuneContexts (MetaSchedule's loggers write to
``<work_dir>/logs``, not the terminal) -> ``tune_tasks`` with the XGBoost cost model, a
JSONDatabase in ``work_dir`` and :class:`ProgressCallback` after each measured batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable

from tvmflow.adapter.tune_measure import (
    builder_env, evaluator, export_so, export_tar, fast_build, make_builder, make_dry_runner,
    make_local_runner, make_rpc_runner, runner_threads, stock_builder, worker_threads)
from tvmflow.errors import TvmflowError

DB_WORKLOAD = "database_workload.json"
DB_RECORDS = "database_tuning_record.json"
FAILED_SECS = 1e9  # a run_secs at or above this is a failed measurement (MetaSchedule uses 1e10)

#: the tuning API in one place: the search here, the builders and runners of .tune_measure
__all__ = ["DB_RECORDS", "DB_WORKLOAD", "FAILED_SECS", "builder_env", "design_spaces",
           "evaluator", "export_so", "export_tar", "fast_build", "intrin_arch",
           "light_tensor_intrin_import", "local_gpu", "make_builder", "make_callback",
           "make_dry_runner", "make_local_runner", "make_rpc_runner", "make_scheduler",
           "native_stderr_to", "open_database", "run_tuning", "runner_threads",
           "search_strategy", "stock_builder", "stock_tune_relax", "task_info", "tvm_version",
           "worker_threads"]


# --------------------------------------------------------------------------- design spaces


def design_spaces(tasks) -> list[dict[str, Any]]:
    """Per task: how many design spaces its target's schedule rules give, and how many of
    them pass the target's postprocessors (for CUDA: thread binding, VerifyGPUCode).

    The check a new target needs before any tuning: a missing target attribute (e.g.
    ``max_threads_per_block``) raises here, as it would at the start of ``tune``.
    """
    from tvm.s_tir import meta_schedule as ms
    if tasks:
        light_tensor_intrin_import(intrin_arch(tasks[0].target))
    out = []
    for task in tasks:
        ctx = ms.TuneContext(mod=task.dispatched[0], target=task.target,
                             space_generator="post-order-apply", search_strategy="evolutionary",
                             task_name=task.task_name)
        spaces = ctx.generate_design_space()
        passing = 0
        for space in spaces:
            sch = space.copy()
            passing += all(p.apply(sch) for p in ctx.space_generator.postprocs)
        out.append({"task": task.task_name, "spaces": len(spaces), "passing": passing})
    return out


# --------------------------------------------------------------------------- progress


def make_callback(on_batch: Callable[[dict[str, Any]], None]):
    """A MeasureCallback calling ``on_batch(info)`` after each measured batch.

    ``info`` = ``{"task_id", "task_name", "n", "valid", "best_s", "error"}`` (best_s: best
    mean run time of this batch in seconds, None when every candidate failed; error: the
    first build or run error of the batch, None when there was none).
    """
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
    from tvm.ir.utils import derived_object

    @derived_object
    class ProgressCallback(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results,
                  runner_results):
            best = None
            valid = 0
            error = None
            for b, r in zip(builder_results, runner_results):
                if b.error_msg is not None or r.error_msg is not None or not r.run_secs:
                    if error is None:
                        error = (f"build: {b.error_msg}" if b.error_msg is not None else
                                 f"run: {r.error_msg}" if r.error_msg is not None else
                                 "run: no run time measured")
                    continue
                secs = [float(s) for s in r.run_secs]
                mean = sum(secs) / len(secs)
                if mean >= FAILED_SECS:
                    error = error or f"run: failed (run time {mean:g} s)"
                    continue
                valid += 1
                best = mean if best is None else min(best, mean)
            name = str(task_scheduler.tasks_[task_id].ctx.task_name)
            on_batch({"task_id": int(task_id), "task_name": name, "n": len(measure_candidates),
                      "valid": valid, "best_s": best, "error": error})

    return ProgressCallback()


def make_scheduler(best: dict[int, float], prior_rounds: dict[int, int] | None = None):
    """A task scheduler that commits every batch as soon as it is measured.

    MetaSchedule's gradient scheduler joins a task's runner results (and only then writes its
    records to the database) when that task is picked again -- after a whole round-robin pass
    at first -- so Ctrl-C would lose many measured batches.  This one joins every pending
    batch before choosing the next task, then picks: each task once (round robin), after
    that the task with the largest ``weight * best latency / sqrt(rounds)``, i.e. the one
    that costs most end to end, discounted by how often it was tuned already.
    ``best`` (task id -> best seconds) is filled by the progress callback; on a resumed tune
    it starts with the best latency each task already has in the log, and ``prior_rounds``
    (task id -> rounds already tuned) skips those tasks in the round-robin pass and carries
    their discount over, so the budget goes on where it pays instead of again on every task.
    """
    import math
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class EagerScheduler(PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.rounds: dict[int, int] = dict(prior_rounds or {})
            self.rr = 0

        def next_task_id(self) -> int:
            tasks = self._outer().tasks_
            for i, t in enumerate(tasks):
                if t.runner_futures is not None:
                    self.join_running_task(i)
            live = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not live:
                return -1
            while self.rr < len(tasks):
                i = self.rr
                self.rr += 1
                if i in live and not (self.rounds.get(i) and i in best):
                    self.rounds[i] = self.rounds.get(i, 0) + 1
                    return i
            def score(i):
                lat = best.get(i)
                if lat is None:  # every candidate failed so far: try it again soon
                    return float("inf")
                return float(tasks[i].task_weight) * lat / math.sqrt(self.rounds.get(i, 1))
            pick = max(live, key=score)
            self.rounds[pick] = self.rounds.get(pick, 0) + 1
            return pick

    return EagerScheduler()


@contextlib.contextmanager
def native_stderr_to(path: str):
    """Send what TVM's C++ side prints on stderr (fd 2) to ``path`` while tuning.

    MetaSchedule's schedule rules warn once per task and round through LOG(WARNING), which
    writes to fd 2 directly, past Python's ``sys.stderr``; the terminal keeps only tvmflow's
    progress and errors (raised as exceptions, printed after fd 2 is restored).
    """
    import sys
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except ValueError:
                pass
            os.dup2(saved, 2)
            os.close(saved)


def _quiet_meta_schedule_console() -> None:
    """MetaSchedule logs to stdout and to work_dir/logs; keep only the files.  A handler
    without a name on its logger (one a host program added) is dropped too: MetaSchedule
    names every handler of that logger in its dictConfig and fails on None."""
    for name in ("tvm.s_tir.meta_schedule",):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if h.get_name() is None or (isinstance(h, logging.StreamHandler)
                                        and not isinstance(h, logging.FileHandler)):
                lg.removeHandler(h)


# --------------------------------------------------------------------------- tuning


def open_database(work_dir: str, allow_missing: bool = True):
    from tvm.s_tir.meta_schedule.database import JSONDatabase
    return JSONDatabase(path_workload=os.path.join(work_dir, DB_WORKLOAD),
                        path_tuning_record=os.path.join(work_dir, DB_RECORDS),
                        allow_missing=allow_missing)


def task_info(tasks) -> list[dict[str, Any]]:
    return [{"name": t.task_name, "weight": int(t.weight)} for t in tasks]


def light_tensor_intrin_import(arch: str = "x86") -> bool:
    """Register only the tensor intrinsics the schedule rules of ``arch`` need.

    TuneContext runs ``import tvm.s_tir.tensor_intrin``, whose ``__init__`` registers every
    intrinsic of every target (15-60 s on 2 busy cores).  The schedule rules only look up
    their own architecture's intrinsics, so the package is put in ``sys.modules`` without
    running its ``__init__`` and only ``arch``'s module (``x86``, ``arm_cpu`` or ``cuda``) is
    imported from it; a later call for another arch adds that one.  Not done when the real
    package is already imported (everything is registered then).
    """
    import importlib
    import importlib.util
    import sys
    import types
    name = "tvm.s_tir.tensor_intrin"
    pkg = sys.modules.get(name)
    if pkg is None:
        spec = importlib.util.find_spec(name)
        pkg = types.ModuleType(name)
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__package__ = name
        pkg.__tvmflow_light__ = True
        sys.modules[name] = pkg
    elif not getattr(pkg, "__tvmflow_light__", False):
        return False
    sub = {"arm": "arm_cpu", "x86": "x86", "cuda": "cuda"}[arch]
    with _cheap_outer_frames():
        importlib.import_module(f"{name}.{sub}")
    return True


@contextlib.contextmanager
def _cheap_outer_frames():
    """TVMScript's ``@T.prim_func`` calls ``inspect.stack()``, which looks up the source of
    every outer frame; for a frame without a file (importlib's frozen frames) that is a
    scan of all of ``sys.modules`` each time: 20-40 s for the CUDA intrinsics in a process
    that has torch loaded.  While they register, such frames get no source context (the
    parser reads the context of the frames of real files only)."""
    import inspect
    import sys
    real = inspect.stack

    def stack(context: int = 1):
        frames = []
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code.co_filename.startswith("<"):
                frames.append(inspect.FrameInfo(frame, frame.f_code.co_filename, frame.f_lineno,
                                                frame.f_code.co_name, None, None))
            else:
                info = inspect.getframeinfo(frame, context)
                frames.append(inspect.FrameInfo(frame, *info, positions=info.positions))
            frame = frame.f_back
        return frames

    inspect.stack = stack
    try:
        yield
    finally:
        inspect.stack = real


def intrin_arch(target) -> str:
    """Which tensor intrinsics ``target``'s schedule rules look up (:func:`light_tensor_intrin_import`)."""
    if target.kind.name == "cuda":
        return "cuda"
    triple = str(target.attrs.get("mtriple", "") or "")
    return "arm" if triple.startswith(("aarch64", "arm")) else "x86"


def search_strategy(population: int = 256, genetic_iters: int = 3):
    """Evolutionary search, with a smaller population than the default 512 (2 cores)."""
    from tvm.s_tir.meta_schedule.search_strategy import EvolutionarySearch
    return EvolutionarySearch(population_size=population, genetic_num_iters=genetic_iters,
                              init_min_unmeasured=min(50, population // 4))


def run_tuning(tasks, work_dir: str, *, trials: int, trials_per_task: int | None,
               per_round: int, seed: int, builder, runner, on_batch=None,
               search_threads: int | str = "physical", stock: bool = False,
               population: int = 256, prior: dict[int, tuple[float | None, int]] | None = None):
    """Tune ``tasks`` (ExtractedTasks) into the JSONDatabase in ``work_dir``.

    ``prior``: task index -> (best seconds or None, trials already in the log), from a
    resumed log's metadata; see :func:`make_scheduler`.
    """
    from tvm.s_tir import meta_schedule as ms
    if not tasks:
        raise TvmflowError("the model has no tunable tasks")
    target = tasks[0].target
    if not stock:
        light_tensor_intrin_import(intrin_arch(target))
    strategy = "evolutionary" if stock else search_strategy(population)
    import io
    native_log = os.path.join(work_dir, "logs", "tvm-native.log")
    _quiet_meta_schedule_console()  # before too: its dictConfig fails on an unnamed handler
    with contextlib.redirect_stdout(io.StringIO()), native_stderr_to(native_log):
        # its console logger binds sys.stdout here
        ctxs, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            tasks, work_dir, seed=seed, num_threads=search_threads, strategy=strategy)
    _quiet_meta_schedule_console()
    callbacks = list(ms.measure_callback.MeasureCallback.create("default"))
    best: dict[int, float] = {i: b for i, (b, _n) in (prior or {}).items() if b}
    prior_rounds = {i: max(1, -(-n // per_round)) for i, (_b, n) in (prior or {}).items() if n > 0}

    def record(info):
        if info["best_s"] is not None:
            i = info["task_id"]
            best[i] = min(best.get(i, float("inf")), info["best_s"])
        if on_batch is not None:
            on_batch(info)

    callbacks.append(make_callback(record))
    scheduler = "gradient" if stock else make_scheduler(best, prior_rounds)
    database = "json" if stock else open_database(work_dir)
    with native_stderr_to(native_log):
        return ms.tune_tasks(tasks=ctxs, task_weights=weights, work_dir=work_dir,
                             max_trials_global=trials, max_trials_per_task=trials_per_task,
                             num_trials_per_iter=per_round, builder=builder, runner=runner,
                             database=database, cost_model="xgb", measure_callbacks=callbacks,
                             task_scheduler=scheduler)


def stock_tune_relax(mod, target, work_dir: str, *, trials: int, per_round: int, seed: int = 0):
    """MetaSchedule's own ``tune_relax`` with its defaults (LocalBuilder, LocalRunner, the
    gradient task scheduler), for comparisons (``benchmarks/tune_throughput.py``)."""
    from tvm.s_tir import meta_schedule as ms
    return ms.relax_integration.tune_relax(mod, {}, target, work_dir, max_trials_global=trials,
                                           num_trials_per_iter=per_round, seed=seed)


def tvm_version() -> str:
    import tvm
    return str(tvm.__version__)


def local_gpu():
    """:class:`.cuda.GpuProbe` of this machine (``ok``, ``arch``, or the ``missing`` piece)."""
    from tvmflow.adapter.cuda import probe_gpu
    return probe_gpu()
