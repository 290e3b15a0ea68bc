"""CPU thread counts: one number per run, the same for TVM, PyTorch eager and ONNX Runtime.

TVM 0.27 sizes a CPU thread pool from the environment of the process that runs the code
(``src/runtime/threading_backend.cc``, ``MaxConcurrency()``): ``TVM_NUM_THREADS``, else
``OMP_NUM_THREADS``, else ``std::thread::hardware_concurrency()``, halved on x86-64 to "ignore
hyper-threading" -- one thread on a 2-vCPU VM.  The pool is created per calling thread, at its
first parallel launch (or first ``runtime.NumThreads`` call), with that many workers, and
``runtime.config_threadpool`` can set the count it uses only up to those workers.  So the count
must be in the environment before TVM runs anything:

* in this process: :func:`scoped` (set while a local run lasts, restored after);
* in a child process: :func:`child_env` (the RPC servers tvmflow starts, the emulated board)
  or :func:`export` run first thing inside it (MetaSchedule's runner workers).

The count is resolved once, where a command starts (:func:`resolve`): ``--threads N`` when
given, else ``TVM_NUM_THREADS`` as the caller's environment has it, else the target preset's
``num-cores`` (detected for ``host``).  The same integer is then handed to every runner.

Extra thread-pool knobs (:data:`KNOBS`) can be passed through with the count; tvmflow sets none
of them by default.  No TVM import here: the measuring side is
:func:`tvmflow.adapter.runtime.local_threads` / ``RuntimeSession.use_threads``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Iterator, Mapping

from tvmflow.errors import TvmflowError

ENV = "TVM_NUM_THREADS"
# other environment variables TVM 0.27's thread pool reads (see README, "Threads")
KNOBS = ("TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT", "TVM_EXCLUDE_WORKER0")
# keys of BenchReport.environment["threads"], per runner kind
REPORT_KEYS = {"tvm": "tvm", "torch": "pytorch", "onnxruntime": "onnxruntime"}


def check(n: Any, what: str = "--threads") -> int:
    """``n`` as a thread count (an integer >= 1); anything else is a TvmflowError."""
    if isinstance(n, str) and n.strip().lstrip("-").isdigit():
        n = int(n.strip())
    if isinstance(n, bool) or not isinstance(n, int):
        raise TvmflowError(f"{what} must be a whole number of threads, got {n!r}")
    if n < 1:
        raise TvmflowError(f"{what} must be at least 1, got {n}")
    return n


def from_environment(environ: Mapping[str, str] | None = None) -> int | None:
    """``TVM_NUM_THREADS`` from the environment (None when unset or empty)."""
    value = (os.environ if environ is None else environ).get(ENV, "").strip()
    if not value:
        return None
    return check(value, f"{ENV}={value!r} in the environment")


def preset_cores(preset) -> int:
    """The preset's ``num-cores`` (its target's, else its host's), else this machine's cores."""
    for part in (getattr(preset, "target", None), getattr(preset, "host", None)):
        value = (part or {}).get("num-cores")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return host_cores()


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve(preset=None, threads: int | None = None, *,
            environ: Mapping[str, str] | None = None) -> int:
    """The one thread count of a run: ``threads`` (``--threads``), else ``TVM_NUM_THREADS``
    in the environment, else ``preset``'s ``num-cores`` (this machine's cores without one)."""
    if threads is not None:
        return check(threads)
    from_env = from_environment(environ)
    if from_env is not None:
        return from_env
    return preset_cores(preset)


def settings(n: int, extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment variables that give TVM ``n`` threads (plus ``extra`` TVM_* knobs)."""
    out = {ENV: str(check(n))}
    for key, value in (extra or {}).items():
        if not str(key).startswith("TVM_"):
            raise TvmflowError(f"{key} is not a TVM thread-pool setting",
                               hint=f"known: {', '.join(KNOBS)}")
        out[str(key)] = str(value)
    return out


def child_env(n: int, base: Mapping[str, str] | None = None,
              extra: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment for a child process that will run TVM code with ``n`` threads:
    ``base`` (default: this process's environment) with :func:`settings` on top."""
    env = dict(os.environ if base is None else base)
    env.update(settings(n, extra))
    return env


def export(env: Mapping[str, str]) -> None:
    """Put ``env`` (from :func:`settings`) into this process's environment.

    For a worker process, before it runs any TVM code: MetaSchedule's runner pool calls it as
    the worker initializer, so a restarted worker gets it again.
    """
    os.environ.update({str(k): str(v) for k, v in env.items()})


@contextlib.contextmanager
def scoped(n: int, extra: Mapping[str, Any] | None = None) -> Iterator[int]:
    """``n`` TVM threads for code run in THIS process while the block runs.

    TVM reads ``TVM_NUM_THREADS`` when a thread's pool starts and, for the single-thread
    shortcut, at every parallel launch, so it stays set for the whole block; the previous
    values come back afterwards (a library call leaves the caller's environment as it was).
    A pool that already started with another count is not changed by this: check with
    :func:`tvmflow.adapter.runtime.local_threads`.
    """
    new = settings(n, extra)
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield n
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mismatch(asked: int, measured: int | None, where: str) -> str | None:
    """A warning sentence when TVM at ``where`` runs another thread count than asked."""
    if measured is None or measured == asked:
        return None
    return (f"TVM on {where} runs {measured} thread{'s' if measured != 1 else ''}, "
            f"{asked} were asked for")
