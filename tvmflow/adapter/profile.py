"""Per-kernel timing of a compiled Relax module with TVM's own instrumentation.

TVM 0.27's Relax VM has no ``profile=True`` mode any more; what it has is
``VirtualMachine.set_instrument``: a callback invoked before and after every ``call``
instruction of the VM with the callee's symbol and its arguments.  Profiling is two steps,
both through :meth:`tvmflow.adapter.runtime.LoadedModule.kernels`:

1. :meth:`KernelTimer.record` runs ``main`` once with an instrument that records, in program
   order, every call into the compiled library (each TIR PrimFunc = each fused operator = each
   MetaSchedule task), together with the argument tensors of that call (VM builtins such as
   ``vm.builtin.alloc_tensor`` are skipped);
2. :meth:`KernelTimer.time` times one recorded call with ``Module.time_evaluator`` on the
   library module that holds the PrimFunc (device-synchronised, first call discarded).

The recorded argument tensors keep their storage alive, so each kernel is timed on buffers of
exactly the shapes (and layouts) it sees in the real run.  The instrument is a Python
callback, so this runs in this process (RPC cannot carry it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tvmflow.errors import TvmflowError

BUILTIN_PREFIXES = ("vm.builtin.", "vm.", "runtime.", "relax.")


@dataclass
class KernelCall:
    """One call of a compiled PrimFunc inside ``main``, in program order."""

    index: int
    name: str
    shapes: list[tuple[int, ...]]
    args: list[Any] = field(default_factory=list, repr=False)


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


def _modules(mod):
    yield mod
    for sub in getattr(mod, "imports", ()) or ():
        yield from _modules(sub)


@dataclass
class KernelTimer:
    """The kernel calls of one run of ``main``, each timeable on its recorded arguments."""

    rt_mod: Any = field(repr=False)
    device: Any = field(repr=False)
    calls: list[KernelCall]
    _lib_for: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def record(cls, rt_mod, device, x) -> "KernelTimer":
        """Run ``main(x)`` once on a VM of its own and record the library calls it makes."""
        from tvm import relax
        calls: list[KernelCall] = []

        def instrument(func, symbol, before_run, ret_value, *args):  # noqa: ARG001 - TVM's
            symbol = str(symbol)
            if before_run and not _is_builtin(symbol):
                shapes = [s for s in (_shape(a) for a in args) if s is not None]
                calls.append(KernelCall(len(calls), symbol, shapes, list(args)))
            return 0  # VMInstrumentReturnKind.NO_OP: run the call normally

        vm = relax.VirtualMachine(rt_mod, device)
        vm.set_instrument(instrument)
        vm["main"](x)
        if not calls:
            raise TvmflowError("the compiled module made no kernel calls; nothing to profile")
        return cls(rt_mod, device, calls)

    def _library_of(self, name: str):
        lib = self._lib_for.get(name)
        if lib is None:
            for mod in _modules(self.rt_mod):
                if mod.kind != "relax.VMExecutable" and mod.implements_function(name, False):
                    lib = mod
                    break
            else:
                raise TvmflowError(f"kernel {name!r} is not in the compiled library")
            self._lib_for[name] = lib
        return lib

    def time(self, call: KernelCall, *, number: int = 1, repeat: int = 1) -> list[float]:
        """Seconds per run of one recorded kernel call (``repeat`` samples, each a mean of
        ``number``)."""
        lib = self._library_of(call.name)
        timer = lib.time_evaluator(call.name, self.device, number=number, repeat=repeat)
        return [float(t) for t in timer(*call.args).results]
