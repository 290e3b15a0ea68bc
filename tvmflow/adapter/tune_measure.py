"""The builders and runners that measure MetaSchedule's candidates for :mod:`.tune`.

Why not the stock ``LocalBuilder``: it starts a fresh process pool for every batch, and its
build function imports ``tvm.s_tir.tensor_intrin`` in each worker (15-22 s on 2 cores), so
on a small machine most of the build budget goes to imports and batches time out.
:class:`FastBuilder` (:func:`make_builder`) keeps one pool of workers for the whole tune
(recycled after ``max_uses`` builds, MetaSchedule's reason for restarting is a slow leak) and
builds with :func:`fast_build`, which needs only ``tvm`` (no tensor intrinsics: tvmflow's
schedule rules for CPU do not use them).  For a cross target (aarch64 board) each candidate
is exported as a ``.so`` linked with the cross compiler, so the board needs no compiler.

Runners: MetaSchedule's LocalRunner and RPCRunner with TVM's thread count set where the
candidates run, and a dry runner that measures nothing (``tune --dry-run``).
"""

from __future__ import annotations

import os
import tempfile

from tvmflow.errors import TvmflowError


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
    from tvmflow.adapter.lean import lean_workers
    lean_workers()                  # its workers start without torch (tvmflow.adapter.lean)
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
    from tvmflow.adapter.lean import lean_workers
    lean_workers()
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
    from tvmflow.adapter.lean import lean_workers
    lean_workers()
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
