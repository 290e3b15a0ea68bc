"""Per-kernel timing of a compiled Relax module with TVM's own instrumentation.

TVM 0.27's Relax VM has no ``profile=True`` mode any more; what it has is
``VirtualMachine.set_instrument``: a callback invoked before and after every ``call``
instruction of the VM with the callee's symbol and its arguments.  Profiling is two steps:

1. :func:`record_calls` runs ``main`` once with an instrument that records, in program order,
   every call into the compiled library (each TIR PrimFunc = each fused operator = each
   MetaSchedule task), together with the argument tensors of that call (VM builtins such as
   ``vm.builtin.alloc_tensor`` are skipped);
2. :func:`time_call` times one recorded call with ``Module.time_evaluator`` on the library
   module that holds the PrimFunc (device-synchronised, first call discarded), and
   :func:`time_main` times the whole ``main`` the same way (``VirtualMachine.time_evaluator``).

The recorded argument tensors keep their storage alive, so each kernel is timed on buffers of
exactly the shapes (and layouts) it sees in the real run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tvmflow.errors import TvmflowError

BUILTIN_PREFIXES = ("vm.builtin.", "vm.", "runtime.", "relax.")


@dataclass
class KernelCall:
    """One call of a compiled PrimFunc inside ``main``, in program order."""

    index: int
    name: str
    shapes: list[tuple[int, ...]]
    args: list[Any] = field(default_factory=list, repr=False)


@dataclass
class Session:
    """A loaded module on a device, ready to be recorded and timed."""

    rt_mod: Any
    device: Any
    vm: Any
    lib_for: dict[str, Any] = field(default_factory=dict, repr=False)


def device(kind: str, index: int = 0):
    import tvm
    if kind == "cpu":
        return tvm.cpu(index)
    if kind == "cuda":
        from tvmflow.adapter.cuda import probe_gpu
        gpu = probe_gpu()
        if not gpu.ok:
            raise TvmflowError(f"no CUDA device on this machine: {gpu.missing}",
                               hint="profile a CUDA target on a machine with its GPU")
        return tvm.cuda(index)
    raise TvmflowError(f"cannot profile on device kind {kind!r} locally")


def load_library(path):
    """A compiled ``.so`` as a runtime module (it stays usable after the file is removed)."""
    import tvm
    if not Path(path).is_file():
        raise TvmflowError(f"compiled module {path} does not exist")
    return tvm.runtime.load_module(str(path))


def load(executable_or_path, device_kind: str = "cpu") -> Session:
    """A VM session for a built executable, a runtime module or a compiled ``.so`` path."""
    import tvm
    from tvm import relax
    dev = device(device_kind)
    obj = executable_or_path
    if isinstance(obj, (str, Path)):
        obj = load_library(obj)
    if isinstance(obj, tvm.runtime.Executable):
        obj = obj.jit()
    return Session(rt_mod=obj, device=dev, vm=relax.VirtualMachine(obj, dev))


def to_device(session: Session, x: np.ndarray):
    import tvm
    return tvm.runtime.tensor(np.ascontiguousarray(x), session.device)


def _is_builtin(symbol: str) -> bool:
    return symbol.startswith(BUILTIN_PREFIXES)


def _shape(arg) -> tuple[int, ...] | None:
    shape = getattr(arg, "shape", None)
    if shape is None:
        return None
    try:
        return tuple(int(d) for d in shape)
    except TypeError:
        return None


def record_calls(session: Session, x) -> list[KernelCall]:
    """Run ``main`` once and return the library calls it makes, in order."""
    calls: list[KernelCall] = []

    def instrument(func, symbol, before_run, ret_value, *args):  # noqa: ARG001 - TVM's signature
        symbol = str(symbol)
        if before_run and not _is_builtin(symbol):
            shapes = [s for s in (_shape(a) for a in args) if s is not None]
            calls.append(KernelCall(len(calls), symbol, shapes, list(args)))
        return 0  # VMInstrumentReturnKind.NO_OP: run the call normally

    from tvm import relax
    vm = relax.VirtualMachine(session.rt_mod, session.device)  # its own VM: timing stays clean
    vm.set_instrument(instrument)
    vm["main"](x)
    if not calls:
        raise TvmflowError("the compiled module made no kernel calls; nothing to profile")
    return calls


def _modules(mod):
    yield mod
    for sub in getattr(mod, "imports", ()) or ():
        yield from _modules(sub)


def _library_of(session: Session, name: str):
    lib = session.lib_for.get(name)
    if lib is None:
        for mod in _modules(session.rt_mod):
            if mod.kind != "relax.VMExecutable" and mod.implements_function(name, False):
                lib = mod
                break
        else:
            raise TvmflowError(f"kernel {name!r} is not in the compiled library")
        session.lib_for[name] = lib
    return lib


def time_call(session: Session, call: KernelCall, *, number: int = 1, repeat: int = 1,
              min_repeat_ms: int = 0) -> list[float]:
    """Seconds per run of one recorded kernel call (``repeat`` samples, each a mean of ``number``)."""
    lib = _library_of(session, call.name)
    timer = lib.time_evaluator(call.name, session.device, number=number, repeat=repeat,
                               min_repeat_ms=min_repeat_ms)
    return [float(t) for t in timer(*call.args).results]


def time_main(session: Session, x, *, number: int = 1, repeat: int = 1,
              min_repeat_ms: int = 0) -> list[float]:
    """Seconds per run of the whole ``main`` (the VM's own time_evaluator)."""
    timer = session.vm.time_evaluator("main", session.device, number=number, repeat=repeat,
                                      min_repeat_ms=min_repeat_ms)
    return [float(t) for t in timer(x).results]
