"""MetaSchedule tuning: a fast builder, local / RPC runners, a progress callback.

Why not the stock ``LocalBuilder``: it starts a fresh process pool for every batch, and its
build function imports ``tvm.s_tir.tensor_intrin`` in each worker (15-22 s on 2 cores), so
on a small machine most of the build budget goes to imports and batches time out.
:class:`FastBuilder` keeps one pool of workers for the whole tune (recycled after
``max_uses`` builds, MetaSchedule's reason for restarting is a slow leak) and builds with
:func:`fast_build`, which needs only ``tvm`` (no tensor intrinsics: tvmflow's schedule rules
for CPU do not use them).  For a cross target (aarch64 board) each candidate is exported as a
``.so`` linked with the cross compiler, so the board needs no compiler.

:func:`run_tuning` wires it together: tasks -> TuneContexts (MetaSchedule's loggers write to
``<work_dir>/logs``, not the terminal) -> ``tune_tasks`` with the XGBoost cost model, a
JSONDatabase in ``work_dir`` and :class:`ProgressCallback` after each measured batch.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from typing import Any, Callable

from tvmflow.errors import TvmflowError

DB_WORKLOAD = "database_workload.json"
DB_RECORDS = "database_tuning_record.json"
FAILED_SECS = 1e9  # a run_secs at or above this is a failed measurement (MetaSchedule uses 1e10)


# --------------------------------------------------------------------------- build / export


def fast_build(mod, target, _params=None):
    """Build one candidate without importing ``tvm.s_tir.tensor_intrin``.

    Inside ``with target:``: where a CUDA driver is loaded, TVM compiles a CUDA candidate's
    kernels with NVRTC, for the arch of ``Target.current()``; without a current target it
    would open the GPU in every builder worker to ask it (and get sm_90a for an sm_90 target).
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with target:
        return tvm_build(mod, target=target)


def export_tar(rt_mod) -> str:
    from tvm.support.tar import tar
    path = os.path.join(tempfile.mkdtemp(prefix="tvmflow-cand-"), "cand." + tar.output_format)
    rt_mod.export_library(path, fcompile=tar)
    return path


def export_so(rt_mod, cross_compiler: str | None) -> str:
    """A shared library the remote side can load without a compiler of its own."""
    from tvm.support import cc
    path = os.path.join(tempfile.mkdtemp(prefix="tvmflow-cand-"), "cand.so")
    fcompile = cc.cross_compiler(cross_compiler) if cross_compiler else cc.create_shared
    rt_mod.export_library(path, fcompile=fcompile)
    return path


def _worker_init(env: dict[str, str] | None = None) -> None:
    os.environ.update(env or {})
    import tvm  # noqa: F401  (import once per worker, not per candidate)
    import tvm.s_tir.transform  # noqa: F401  pyflakes: side-effect import


def builder_env(target) -> dict[str, str]:
    """What a builder worker needs in its environment for ``target``.

    CUDA: ``CUDA_PATH``, the toolkit root NVRTC takes the CUDA headers from (TVM's own guess,
    two folders above ``which nvcc``, fails when nvcc is a wrapper script); found from nvcc
    (:func:`.cuda.cuda_home`).  Nothing is set when there is no nvcc: then the build fails in
    the first round with NVRTC's own message, and the tune stops there.
    """
    if target.kind.name != "cuda":
        return {}
    from tvmflow.adapter.cuda import cuda_home, find_nvcc
    try:
        home = cuda_home(find_nvcc())
    except TvmflowError:
        return {}
    return {"CUDA_PATH": home} if home else {}


def _build_one(mod, target, export: str, cross_compiler: str | None) -> str:
    rt_mod = fast_build(mod, target)
    if export == "so":
        return export_so(rt_mod, cross_compiler)
    return export_tar(rt_mod)


def make_builder(max_workers: int = 2, timeout_sec: float = 60.0, export: str = "tar",
                 cross_compiler: str | None = None, max_uses: int = 256,
                 env: dict[str, str] | None = None):
    """A :class:`FastBuilder` (class made on first use: it needs tvm imported); ``env`` is set
    in each worker before it imports TVM (:func:`builder_env`)."""
    import functools
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.ir.utils import derived_object
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class FastBuilder(PyBuilder):
        """Persistent PopenPool builder: one pool for all batches, :func:`fast_build`."""

        def __init__(self):
            super().__init__()
            self.pool = None
            self.uses = 0

        def _get_pool(self):
            if self.pool is None or self.uses >= max_uses:
                if self.pool is not None:
                    self.pool.shutdown()
                self.pool = PopenPoolExecutor(max_workers=max_workers, timeout=timeout_sec,
                                              initializer=functools.partial(_worker_init, env))
                self.uses = 0
            return self.pool

        def build(self, build_inputs):
            pool = self._get_pool()
            self.uses += len(build_inputs)
            results = []
            args = [(b.mod, b.target) for b in build_inputs]
            for res in pool.map_with_error_catching(
                    lambda a: _build_one(a[0], a[1], export, cross_compiler), args):
                if res.status == StatusKind.COMPLETE:
                    results.append(BuilderResult(res.value, None))
                elif res.status == StatusKind.TIMEOUT:
                    results.append(BuilderResult(None, f"FastBuilder: timeout after {timeout_sec} s"))
                else:
                    results.append(BuilderResult(None, f"FastBuilder: {res.value}"))
            return results

        def shutdown(self):
            if self.pool is not None:
                self.pool.shutdown()
                self.pool = None

    return FastBuilder()


def stock_builder(max_workers: int = 2, timeout_sec: float = 60.0):
    """MetaSchedule's own LocalBuilder (default build function), for comparisons."""
    from tvm.s_tir.meta_schedule.builder import LocalBuilder
    return LocalBuilder(max_workers=max_workers, timeout_sec=timeout_sec)


def evaluator(number: int = 3, repeat: int = 1, min_repeat_ms: int = 40):
    from tvm.s_tir.meta_schedule.runner import EvaluatorConfig
    return EvaluatorConfig(number=number, repeat=repeat, min_repeat_ms=min_repeat_ms,
                           enable_cpu_cache_flush=False)


def make_local_runner(timeout_sec: float = 30.0, threads: int | None = None, **eval_kw):
    """MetaSchedule's LocalRunner; its worker process runs TVM with ``threads`` threads.

    The worker is a PopenPool process: its initializer (run first in every worker, also one
    restarted after a timeout) puts ``TVM_NUM_THREADS`` into the worker's environment before
    any TVM code runs there and sets its thread pool to that count (:func:`_runner_init`).
    """
    import functools
    from tvm.s_tir.meta_schedule.runner import LocalRunner
    initializer = None
    if threads is not None:
        from tvmflow.threads import settings
        initializer = functools.partial(_runner_init, settings(threads), int(threads))
    return LocalRunner(timeout_sec=timeout_sec, evaluator_config=evaluator(**eval_kw),
                       initializer=initializer)


def _runner_init(env: dict[str, str], threads: int) -> None:
    """LocalRunner worker initializer: ``threads`` TVM threads in this worker process."""
    from tvmflow.threads import export
    from tvmflow.adapter.runtime import local_threads
    export(env)
    local_threads(threads)


def worker_threads() -> int:
    """TVM's thread count in the process this runs in (a PopenPool worker)."""
    from tvmflow.adapter.runtime import _measure_local_threads
    return _measure_local_threads()


def runner_threads(runner, timeout: float = 60.0) -> int | None:
    """TVM's thread count inside a LocalRunner's worker, asked there (None: no local pool)."""
    pool = getattr(runner, "pool", None)
    if pool is None or not hasattr(runner, "evaluator_config") or hasattr(runner, "rpc_config"):
        return None
    return int(pool.submit(worker_threads).result(timeout=timeout))


def make_rpc_runner(host: str, port: int, key: str, timeout_sec: float = 60.0,
                    max_workers: int = 1, threads: int | None = None, **eval_kw):
    """MetaSchedule's RPCRunner; with ``threads`` each of its sessions first sets the board's
    TVM pool to that count (:func:`_rpc_alloc_argument`), as bench does."""
    import functools
    from tvm.s_tir.meta_schedule.runner import RPCConfig, RPCRunner
    cfg = RPCConfig(tracker_host=host, tracker_port=int(port), tracker_key=key,
                    session_timeout_sec=int(timeout_sec), session_priority=1)
    alloc = functools.partial(_rpc_alloc_argument, int(threads)) if threads else None
    return RPCRunner(rpc_config=cfg, evaluator_config=evaluator(**eval_kw),
                     max_workers=max_workers, f_alloc_argument=alloc)


def _rpc_alloc_argument(threads: int, session, device, args_info, alloc_repeat):
    """RPCRunner step 3 with the board's pool set to ``threads`` first: the server runs the
    session's calls in one thread, whose pool ``runtime.config_threadpool`` sets (up to the
    workers the server's TVM_NUM_THREADS gave it)."""
    from tvm.s_tir.meta_schedule.runner.rpc_runner import default_alloc_argument
    session.get_function("runtime.config_threadpool")(1, threads)
    return default_alloc_argument(session, device, args_info, alloc_repeat)


def make_dry_runner(fail: str | None = None):
    """A runner that measures nothing: each built candidate gets a made-up run time.

    For ``tune(dry_run=True)``: the whole tuning path (design spaces, the search, every
    candidate built, records committed) on a machine without the device, e.g. a CUDA target
    on a CPU-only machine.  The time is a function of the built artifact's bytes (1-2 us,
    stable across runs), so the cost model has something consistent to fit.  ``fail``: every
    run fails with that message instead (to exercise the failure paths).
    """
    import hashlib
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import LocalRunnerFuture, PyRunner

    @derived_object
    class DryRunner(PyRunner):
        def run(self, runner_inputs):
            futures = []
            for inp in runner_inputs:
                if fail is not None:
                    futures.append(LocalRunnerFuture(error_message=fail))
                    continue
                with open(inp.artifact_path, "rb") as fh:
                    digest = hashlib.sha256(fh.read()).digest()
                secs = 1e-6 * (1.0 + int.from_bytes(digest[:4], "little") / 2 ** 32)
                futures.append(LocalRunnerFuture(res=[secs] * 3))
            return futures

    return DryRunner()


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
    """MetaSchedule logs to stdout and to work_dir/logs; keep only the files."""
    for name in ("tvm.s_tir.meta_schedule",):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
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
    importlib.import_module(f"{name}.{sub}")
    return True


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


def tvm_version() -> str:
    import tvm
    return str(tvm.__version__)


def local_gpu():
    """:class:`.cuda.GpuProbe` of this machine (``ok``, ``arch``, or the ``missing`` piece)."""
    from tvmflow.adapter.cuda import probe_gpu
    return probe_gpu()
