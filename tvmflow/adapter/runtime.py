"""Load and time a compiled module on a device: local, or remote through a TVM RPC session.

One code path for both: a :class:`RuntimeSession` wraps either nothing (this process) or an
``RPCSession``; :meth:`RuntimeSession.load` uploads (remote) and loads the ``.so`` and returns
a :class:`LoadedModule`, whose calls are identical in both cases:

* ``set_input(x)`` copies the input to the device once;
* ``first_run()`` -- the very first call of ``main`` after load, timed on its own (host wall
  clock around one synchronous call; for a remote device the RPC round trip measured just
  before is subtracted and reported);
* ``output()`` -- the output of the last call, as numpy (for the check against PyTorch);
* ``time(repeat)`` -- ``repeat`` single runs of ``main``, timed ON the device by TVM's
  ``time_evaluator`` (``number=1``: one run per sample, no means of means).

Every remote call runs inside :func:`tvmflow.adapter.rpc.remote_errors`, so a server that dies
mid-benchmark ends in a TvmflowError, not a traceback or a hang.
"""

from __future__ import annotations

import contextlib
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tvmflow.errors import TvmflowError
from tvmflow.adapter import rpc

# ELF e_machine values
_ELF_MACHINES = {3: "i386", 40: "arm", 62: "x86_64", 183: "aarch64", 243: "riscv64", 21: "ppc64"}
_ARCH_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "arm64": "aarch64", "armv7l": "arm",
                 "armv7": "arm", "armv8": "aarch64"}


def normalize_arch(name: str | None) -> str | None:
    if not name:
        return None
    name = name.lower()
    return _ARCH_ALIASES.get(name, name)


def triple_arch(triple: str | None) -> str | None:
    """``"aarch64-linux-gnu"`` -> ``"aarch64"``."""
    return normalize_arch(triple.split("-", 1)[0]) if triple else None


def elf_arch(path: str | Path) -> str | None:
    """The CPU architecture a shared library was built for (from its ELF header)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(20)
    except OSError:
        return None
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    machine = struct.unpack(endian + "H", head[18:20])[0]
    return _ELF_MACHINES.get(machine, f"elf-machine-{machine}")


@dataclass
class RuntimeSession:
    """Where modules run: this process (``remote is None``) or an RPC server."""

    mode: str                          # "local", "rpc", "tracker" or "local-rpc"
    address: str = "this process"      # "host:port" of the server (or tracker) for remote
    key: str | None = None
    remote: Any = field(default=None, repr=False)   # tvm.rpc.RPCSession
    device_kind: str = "cpu"
    _arch: str | None = field(default=None, repr=False)
    _loaded: int = field(default=0, repr=False)

    @property
    def where(self) -> str:
        if self.mode == "tracker":
            return f"the board under key {self.key!r} (tracker {self.address})"
        return f"the RPC server {self.address}" if self.is_remote else "this machine"

    def server_id(self) -> str | None:
        """Tells the servers behind one tracker key apart: the server's work directory."""
        if not self.is_remote:
            return None
        return rpc.server_workdir(self.remote)

    @property
    def is_remote(self) -> bool:
        return self.remote is not None

    def _guard(self, what: str):
        if self.is_remote:
            return rpc.remote_errors(f"{what} on {self.where}")
        return _local_errors(what)

    def device(self):
        import tvm
        if self.is_remote:
            with self._guard("cannot open the device"):
                return self.remote.cuda(0) if self.device_kind == "cuda" else self.remote.cpu(0)
        return tvm.cuda(0) if self.device_kind == "cuda" else tvm.cpu(0)

    def arch(self) -> str | None:
        """The server's CPU architecture (``x86_64``, ``aarch64``); None when unknown."""
        if self._arch is None:
            if not self.is_remote:
                self._arch = normalize_arch(platform.machine())
            else:
                try:
                    f = self.remote.get_function("target.llvm_get_system_triple")
                    self._arch = triple_arch(str(f()))
                except Exception:  # a runtime-only TVM on the board has no LLVM: unknown
                    self._arch = None
        return self._arch

    def round_trip(self, n: int = 5) -> float:
        """Median seconds of an empty call to the device (0 locally)."""
        if not self.is_remote:
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

    def load(self, path: str | Path, expected_arch: str | None = None) -> "LoadedModule":
        """Upload (remote) and load ``path`` and create its Relax VM on the device."""
        import tvm
        from tvm import relax
        path = Path(path)
        if not path.is_file():
            raise TvmflowError(f"compiled module {path} does not exist")
        self.check_arch(path, expected_arch)
        if self.is_remote:
            # a unique name per upload: the server caches loaded libraries by path
            self._loaded += 1
            with self._guard(f"cannot upload {path.name}"):
                name = f"tvmflow-{self._loaded}-{path.name}"
                self.remote.upload(str(path), target=name)
                mod = self.remote.load_module(name)
        else:
            with self._guard(f"cannot load {path}"):
                mod = tvm.runtime.load_module(str(path))
        dev = self.device()
        with self._guard(f"cannot start the Relax VM of {path.name}"):
            vm = relax.VirtualMachine(mod, dev)
        return LoadedModule(self, vm, dev, path.name)

    def num_threads(self) -> int:
        """TVM's thread count where this session runs its modules, asked there:
        ``runtime.NumThreads`` on the server, or :func:`local_threads` in this process."""
        if not self.is_remote:
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
        if not self.is_remote:
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
    calls: int = 0
    _input: Any = field(default=None, repr=False)

    def set_input(self, x: np.ndarray) -> None:
        import tvm
        with self.session._guard(f"cannot copy the input of {self.name} to the device"):
            self._input = tvm.runtime.tensor(np.ascontiguousarray(x), self.dev)
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

    def time(self, repeat: int) -> np.ndarray:
        """``repeat`` single-run latencies (seconds), timed on the device.

        TVM's time_evaluator makes one untimed call first, then ``repeat`` samples of
        ``number=1`` run each.
        """
        repeat = max(int(repeat), 1)
        with self.session._guard(f"{self.name}: timing failed"):
            fn = self.vm.time_evaluator("invoke_stateful", self.dev, number=1, repeat=repeat)
            res = fn("main")
            self.calls += repeat + 1
            return np.asarray(res.results, dtype=np.float64)


def local_session(device_kind: str = "cpu") -> RuntimeSession:
    return RuntimeSession("local", device_kind=device_kind)


def remote_session(remote, mode: str, address: str, key: str | None = None,
                   device_kind: str = "cpu") -> RuntimeSession:
    return RuntimeSession(mode, address, key, remote, device_kind)


def export_executable(executable, path: str | Path, cross_cc: str | None = None) -> Path:
    """Write a built executable as a shared library (tests and tools that skip compile)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if cross_cc:
        from tvm.support import cc
        executable.export_library(str(path), fcompile=cc.cross_compiler(cross_cc))
    else:
        executable.export_library(str(path))
    return path


def build_variant_library(variant: str, path: str | Path, target: dict[str, Any],
                          seed: int = 0, cross_cc: str | None = None) -> Path:
    """Untuned build of a registry variant into ``path`` (.so) -- for tests without compile."""
    from tvmflow.ir.frontend import import_model
    from tvmflow.adapter.build import build
    from tvmflow.adapter.target import make_target
    model = import_model(variant, seed=seed)
    return export_executable(build(model.mod, make_target(target)), path, cross_cc)
