"""The one runtime: load a compiled module on a device and run or time it, here or remote.

A :class:`RuntimeSession` always wraps a TVM ``RPCSession``: an ``rpc.LocalSession`` for this
process (``mode="local"``), or a session to an RPC server (a board, a GPU machine, the loopback
server tvmflow starts).  Local and remote are then the same calls -- ``upload``,
``load_module``, the session's device, the Relax VM, ``time_evaluator`` -- and
:meth:`RuntimeSession.load` returns a :class:`LoadedModule`:

* ``set_input(x)`` copies the input to the device once;
* ``first_run()`` -- the very first call of ``main`` after load, timed on its own (host wall
  clock around one synchronous call; for a remote device the RPC round trip measured just
  before is subtracted and reported);
* ``run(n)``, ``output()`` (the first output of the last call, as numpy) and ``infer(x)``
  (input, one run, output);
* ``time(repeat, number=1)`` -- ``repeat`` samples of ``main``, timed ON the device by TVM's
  ``time_evaluator`` (``number=1``: one run per sample, no means of means);
* ``kernels()`` -- per-kernel timing for ``tvmflow profile`` (:mod:`tvmflow.adapter.profile`;
  in this process only: TVM's VM instrument is a Python callback, which RPC cannot carry).

Every remote call runs inside :func:`tvmflow.adapter.rpc.remote_errors`, so a server that dies
mid-benchmark ends in a TvmflowError, not a traceback or a hang.
"""

from __future__ import annotations

import contextlib
import itertools
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.adapter import rpc
from tvmflow.adapter.arch import elf_arch, normalize_arch, triple_arch

# a module built in this process, handed to the LocalSession as load_module hands over a file's
_TAKE = "tvmflow.runtime.take_module"
_HELD: dict[str, Any] = {}
_TOKENS = itertools.count()


@dataclass
class RuntimeSession:
    """Where modules run: this process (an ``rpc.LocalSession``) or an RPC server."""

    mode: str                          # "local", "rpc", "tracker" or "local-rpc"
    address: str = "this process"      # "host:port" of the server (or tracker) for remote
    key: str | None = None
    remote: Any = field(default=None, repr=False)   # tvm.rpc.RPCSession (LocalSession: local)
    device_kind: str = "cpu"
    _arch: str | None = field(default=None, repr=False)
    _loaded: int = field(default=0, repr=False)

    @property
    def is_local(self) -> bool:
        return self.mode == "local"

    @property
    def is_remote(self) -> bool:
        return not self.is_local

    @property
    def where(self) -> str:
        if self.mode == "tracker":
            return f"the board under key {self.key!r} (tracker {self.address})"
        return "this machine" if self.is_local else f"the RPC server {self.address}"

    def server_id(self) -> str | None:
        """Tells the servers behind one tracker key apart: the server's work directory."""
        return None if self.is_local else rpc.server_workdir(self.remote)

    def _guard(self, what: str):
        return _local_errors(what) if self.is_local else rpc.remote_errors(f"{what} on {self.where}")

    def check_device(self) -> None:
        """A CUDA session in this process needs a GPU here: name what is missing, before any
        slow compile (a remote server says so itself when asked for its device)."""
        if self.is_local and self.device_kind == "cuda":
            from tvmflow.adapter.cuda import probe_gpu
            gpu = probe_gpu()
            if not gpu.ok:
                raise TvmflowError(f"no CUDA device on this machine: {gpu.missing}",
                                   hint="run a CUDA target on a machine with its GPU, or "
                                        "through RPC (--rpc / --tracker)")

    def device(self):
        with self._guard("cannot open the device"):
            return self.remote.cuda(0) if self.device_kind == "cuda" else self.remote.cpu(0)

    def arch(self) -> str | None:
        """The server's CPU architecture (``x86_64``, ``aarch64``); None when unknown."""
        if self._arch is None:
            if self.is_local:
                self._arch = normalize_arch(platform.machine())
            else:
                try:
                    f = self.remote.get_function("target.llvm_get_system_triple")
                    self._arch = triple_arch(str(f()))
                except Exception:  # a runtime-only TVM on the board has no LLVM: unknown
                    self._arch = None
        return self._arch

    def round_trip(self, n: int = 5) -> float:
        """Median seconds of an empty call to the device (0 in this process)."""
        if self.is_local:
            return 0.0
        dev = self.device()
        times = []
        with self._guard("cannot reach the device"):
            for _ in range(n):
                t0 = time.perf_counter()
                dev.sync()
                times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def check_arch(self, path: str | Path, expected: str | None = None) -> str | None:
        """Refuse a module built for another CPU than the server's, before uploading it.

        ``expected`` is the module's arch from its sidecar (target triple); the ELF header of
        the ``.so`` is checked as well.  Returns the server arch (None when it cannot tell).
        """
        server = self.arch()
        module = elf_arch(path) or normalize_arch(expected)
        if server and module and server != module:
            raise TvmflowError(
                f"module {Path(path).name} is built for {module} but {self.where} is {server}",
                hint="compile for the board's target (e.g. --target rpi4 for an aarch64 board) "
                     "or connect to a board of that architecture")
        return server

    def load(self, module, expected_arch: str | None = None) -> "LoadedModule":
        """Upload and load ``module`` -- a compiled ``.so`` path, or (this process only) an
        executable built here -- and create its Relax VM on the device."""
        from tvm import relax
        if isinstance(module, (str, Path)):
            path = Path(module)
            rt_mod, name = self._upload(path, expected_arch), path.name
        else:
            rt_mod, name, path = self._hand_over(module), "the built module", None
        dev = self.device()
        with self._guard(f"cannot start the Relax VM of {name}"):
            vm = relax.VirtualMachine(rt_mod, dev)
        return LoadedModule(self, vm, dev, name, path if path is not None else module)

    def _upload(self, path: Path, expected_arch: str | None):
        if not path.is_file():
            raise TvmflowError(f"compiled module {path} does not exist")
        self.check_arch(path, expected_arch)
        # a unique name per upload: the server caches loaded libraries by path
        self._loaded += 1
        what = f"cannot load {path}" if self.is_local else f"cannot upload {path.name}"
        with self._guard(what):
            name = f"tvmflow-{self._loaded}-{path.name}"
            self.remote.upload(str(path), target=name)
            return self.remote.load_module(name)

    def _hand_over(self, executable):
        """An executable built in this process, as the LocalSession's module (the way its
        ``load_module`` hands over a loaded file: a global function returns it)."""
        import tvm
        if not self.is_local:
            raise TvmflowError(f"a module built in this process cannot run on {self.where} "
                               "without a file", hint="compile it (tvmflow compile) and bench it")
        if not tvm.get_global_func(_TAKE, allow_missing=True):
            tvm.register_global_func(_TAKE, _HELD.pop, override=True)
        token = f"m{next(_TOKENS)}"
        with self._guard("cannot load the built module"):
            _HELD[token] = (executable.jit() if isinstance(executable, tvm.runtime.Executable)
                            else executable)
            try:
                return self.remote.get_function(_TAKE)(token)
            finally:
                _HELD.pop(token, None)

    def num_threads(self) -> int:
        """TVM's thread count where this session runs its modules, asked there:
        ``runtime.NumThreads`` on the server, or :func:`local_threads` in this process."""
        if self.is_local:
            return _measure_local_threads()
        with self._guard("cannot ask TVM's thread count"):
            return int(self.remote.get_function("runtime.NumThreads")())

    def use_threads(self, n: int) -> int:
        """Make TVM run ``n`` threads where this session runs; returns the count measured.

        On a server, ``runtime.config_threadpool(1, n)`` when it runs another count: that sets
        the count of its pool up to the workers the pool started with (its
        ``TVM_NUM_THREADS``), past TVM's default cap at the number of cores; the caller
        compares and warns.  In this process see :func:`local_threads` (a count that cannot
        be had is an error).
        """
        if self.is_local:
            return local_threads(n)
        measured = self.num_threads()
        if measured != n:
            with self._guard("cannot configure TVM's thread pool"):
                self.remote.get_function("runtime.config_threadpool")(1, int(n))
            measured = self.num_threads()
        return measured

    def close(self) -> None:
        self.remote = None


def _measure_local_threads() -> int:
    """The number of threads TVM's parallel launches from this thread use.

    ``TVMBackendParallelLaunch`` (thread_pool.cc) runs the work inline when
    ``MaxConcurrency()`` (``TVM_NUM_THREADS``) is 1, without creating a pool; otherwise it
    uses this thread's pool (created at the first launch) with ``runtime.NumThreads``
    threads.  Creating a pool binds the creating thread to its first cores
    (``TVM_BIND_THREADS``), so ``MaxConcurrency()`` is read in a throw-away thread (a fresh
    pool there, configured to all its workers), and this thread's pool is asked only when
    that is more than 1, i.e. when a run would create it anyway.
    """
    import threading
    import tvm
    num = tvm.get_global_func("runtime.NumThreads")
    config = tvm.get_global_func("runtime.config_threadpool")
    box: dict[str, int] = {}

    def max_concurrency():
        config(1, 1 << 16)          # min(workers = MaxConcurrency(), 65536)
        box["n"] = int(num())
    probe = threading.Thread(target=max_concurrency, daemon=True)
    probe.start()
    probe.join()
    if box.get("n", 1) <= 1:
        return 1
    return int(num())


def local_threads(n: int) -> int:
    """Check (and where possible make) that TVM code run from this thread uses ``n`` threads.

    Call it with ``TVM_NUM_THREADS`` already set (:func:`tvmflow.threads.scoped`).  A pool
    that runs another count is set to ``n`` (``runtime.config_threadpool``: TVM caps its
    default at the number of cores, and a pool this thread started earlier may have more
    workers); a pool with fewer than ``n`` workers cannot grow, and that is a TvmflowError
    rather than a measurement with the wrong count.
    """
    measured = _measure_local_threads()
    if measured != n:
        import tvm
        tvm.get_global_func("runtime.config_threadpool")(1, int(n))
        measured = _measure_local_threads()
    if measured != n:
        raise TvmflowError(
            f"TVM's thread pool in this process already runs {measured} thread"
            f"{'s' if measured != 1 else ''}, {n} were asked for: TVM reads TVM_NUM_THREADS "
            "when a thread's pool starts, and its count cannot be raised afterwards",
            hint="run it in a fresh process (the tvmflow command does), or through an RPC "
                 "server (--via rpc)")
    return measured


@contextlib.contextmanager
def _local_errors(what: str) -> Iterator[None]:
    try:
        yield
    except TvmflowError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        raise TvmflowError(f"{what}: {lines[-1] if lines else type(exc).__name__}") from None


@dataclass
class LoadedModule:
    """A module's Relax VM on a device (this process or remote), input set once."""

    session: RuntimeSession
    vm: Any = field(repr=False)
    dev: Any = field(repr=False)
    name: str
    source: Any = field(default=None, repr=False)   # the .so path, or the executable built here
    calls: int = 0
    _input: Any = field(default=None, repr=False)
    _x: Any = field(default=None, repr=False)

    def set_input(self, x: np.ndarray) -> None:
        import tvm
        self._x = np.ascontiguousarray(x)
        with self.session._guard(f"cannot copy the input of {self.name} to the device"):
            self._input = tvm.runtime.tensor(self._x, self.dev)
            self.vm.set_input("main", self._input)

    def _call(self) -> None:
        self.vm.invoke_stateful("main")
        self.dev.sync()
        self.calls += 1

    def first_run(self) -> dict[str, float]:
        """Time one synchronous call of ``main`` on the host clock.

        Meant to be the very first call after load (cold caches, lazy allocations): returns
        ``{"wall_s", "rpc_round_trip_s", "latency_s"}`` (latency = wall - round trip).
        """
        rt = self.session.round_trip()
        with self.session._guard(f"{self.name}: the first run failed"):
            t0 = time.perf_counter()
            self._call()
            wall = time.perf_counter() - t0
        return {"wall_s": wall, "rpc_round_trip_s": rt, "latency_s": max(wall - rt, 0.0),
                "was_first_call": self.calls == 1}

    def run(self, n: int = 1) -> None:
        with self.session._guard(f"{self.name}: a run failed"):
            for _ in range(n):
                self._call()

    def output(self) -> np.ndarray:
        """The first output of the last call, as numpy."""
        with self.session._guard(f"{self.name}: cannot read the output"):
            outs = self.vm.get_outputs("main")
            while isinstance(outs, (tuple, list)):
                outs = outs[0]
            return outs.numpy()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Set ``x``, run ``main`` once, return its first output."""
        self.set_input(x)
        self.run(1)
        return self.output()

    def time(self, repeat: int, number: int = 1) -> np.ndarray:
        """``repeat`` latencies (seconds; each the mean of ``number`` runs), timed on the device.

        TVM's time_evaluator makes one untimed call first, then ``repeat`` samples.
        """
        repeat, number = max(int(repeat), 1), max(int(number), 1)
        with self.session._guard(f"{self.name}: timing failed"):
            fn = self.vm.time_evaluator("invoke_stateful", self.dev, number=number,
                                        repeat=repeat)
            res = fn("main")
            self.calls += repeat * number + 1
            return np.asarray(res.results, dtype=np.float64)

    def kernels(self):
        """The kernel calls of ``main`` with the input set, each timeable on its own
        (:class:`tvmflow.adapter.profile.KernelTimer`), in this process only."""
        import tvm
        from tvmflow.adapter.profile import KernelTimer
        if not self.session.is_local:
            raise TvmflowError(f"per-kernel timing runs in this process, not on {self.session.where}: "
                               "TVM's VM instrument is a Python callback, which RPC cannot carry",
                               hint="profile on the machine itself (tvmflow profile)")
        if self._x is None:
            raise TvmflowError(f"{self.name}: set the input before timing its kernels")
        with self.session._guard(f"cannot load {self.name} for per-kernel timing"):
            src = self.source
            if isinstance(src, Path):
                src = tvm.runtime.load_module(str(src))
            elif isinstance(src, tvm.runtime.Executable):
                src = src.jit()
            dev = tvm.cuda(0) if self.session.device_kind == "cuda" else tvm.cpu(0)
            return KernelTimer.record(src, dev, tvm.runtime.tensor(self._x, dev))


def local_session(device_kind: str = "cpu") -> RuntimeSession:
    """This process, through TVM's ``rpc.LocalSession`` (the same calls as a server)."""
    import logging
    from tvm import rpc as tvm_rpc
    logging.getLogger("RPCServer").setLevel(logging.WARNING)   # its load_module INFO line
    return RuntimeSession("local", remote=tvm_rpc.LocalSession(), device_kind=device_kind)


def remote_session(remote, mode: str, address: str, key: str | None = None,
                   device_kind: str = "cpu") -> RuntimeSession:
    return RuntimeSession(mode, address, key, remote, device_kind)
